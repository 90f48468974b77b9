#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the Gateway API conformance suite against blixt on minikube (Docker driver, Linux):
# starts minikube, builds blixt's image inside it, installs the Gateway API v1.6.3 CRDs and
# blixt's chart with an address pool from minikube's Docker network, then runs
# hack/conformance.sh against it, which writes the report and conformance/RESULTS.md.
# docs/conformance.md describes each step and what to expect.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${MINIKUBE_PROFILE:-blixt}
K8S_VERSION=${BLIXT_MINIKUBE_K8S_VERSION:-v1.36.3}
IMAGE=blixt.dev/blixt:dev
NAMESPACE=blixt-system
CRDS=hack/gateway-api/v1.6.3/standard-install.yaml

log() { printf '[minikube %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for cmd in minikube docker kubectl helm go jq node; do
  command -v "$cmd" >/dev/null || die "$cmd not found; docs/conformance.md lists what to install"
done

log "starting minikube profile $PROFILE (Kubernetes $K8S_VERSION, Docker driver)"
minikube start -p "$PROFILE" --driver=docker --kubernetes-version="$K8S_VERSION"

log "building $IMAGE inside minikube from the Dockerfile"
minikube -p "$PROFILE" image build -t "$IMAGE" .

kubeconfig=$(mktemp)
trap 'rm -f "$kubeconfig"' EXIT
kubectl config view --minify --flatten --context "$PROFILE" >"$kubeconfig"
k() { kubectl --kubeconfig "$kubeconfig" "$@"; }

log "installing the Gateway API v1.6.3 CRDs"
k apply --server-side -f "$CRDS"

# Gateway addresses come from minikube's Docker network (a /24 by default): Docker hands out
# container addresses from the bottom, so .200-.239 stay free. This host sits on that
# network's bridge, so it reaches the addresses directly, as a CI runner would.
subnet=$(docker network inspect "$PROFILE" -f '{{(index .IPAM.Config 0).Subnet}}')
[[ $subnet =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] ||
  die "minikube's network $PROFILE has subnet $subnet; set an address pool by hand (docs/conformance.md)"
prefix=${BASH_REMATCH[1]}
pool="$prefix.200-$prefix.239"
log "installing blixt (address pool $pool)"
helm upgrade --install blixt charts/blixt --kubeconfig "$kubeconfig" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set-json "addressPools=[{\"name\":\"minikube\",\"addresses\":[\"$pool\"]}]" \
  --wait --timeout 5m

log "running the conformance suite"
# The suite pulls its own images (echo-basic, coredns) from registry.k8s.io here. The last
# pool address is left for the static-address test; .250 lies outside the pool.
BLIXT_CONFORMANCE_USABLE_ADDRESS=$prefix.239 BLIXT_CONFORMANCE_UNUSABLE_ADDRESS=$prefix.250 \
  hack/conformance.sh run --kubeconfig "$kubeconfig" "$@"
