#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs blixt on the local cluster (hack/cluster.sh), ready for traffic:
#   1. brings the cluster up (the first time this builds it: ~15 min on an idle 2-core machine);
#   2. builds blixt's image (hack/image.sh), tagged by the content of the sources it is built
#      from, so a rerun with nothing changed reuses it and `helm upgrade` rolls the pods
#      exactly when the code changed;
#   3. imports it into the node and `helm upgrade --install`s charts/blixt with the cluster's
#      Gateway address pool, waiting until every role is ready.
# Safe to repeat. Run as root.
set -euo pipefail
# Steps run inside $(...); without this a failure there would not stop the script.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: hack/install.sh [--rebuild]

  --rebuild   build the image even when one for these sources is cached, and upgrade the
              release even when it already runs this image, pool and chart

environment: BLIXT_CACHE (cache dir, default ~/.cache/blixt), BLIXT_RELEASE (Helm release,
default blixt), BLIXT_NAMESPACE (default blixt-system)
USAGE
}

rebuild=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rebuild) rebuild=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

release=${BLIXT_RELEASE:-blixt}
namespace=${BLIXT_NAMESPACE:-blixt-system}
repository=blixt.dev/blixt
start=$SECONDS

log() { printf '[install %s +%ds] %s\n' "$(date -u +%H:%M:%S)" "$((SECONDS - start))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root: the cluster and the image build need it"
command -v git >/dev/null || die "git not found: the image tag is computed from the checkout (apt-get install git)"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
  die "$(pwd) is not a git checkout: the image tag is computed from the files git tracks; clone blixt with git"

# Everything hack/image/stage-app.sh puts into the image comes from these paths; the rest of
# the checkout (tests, docs, charts) does not change a byte of it.
image_inputs=(pepr.ts capabilities cli bpf hack/image hack/image.sh package.json package-lock.json tsconfig.json)

# source_tag: "src-" and 12 hex digits of the sha256 over the name and content of every file
# (committed, changed or new, but not ignored) under image_inputs. Content, not the commit:
# committing changes nothing, editing a source does.
source_tag() {
  local sum
  sum=$(git ls-files -z --cached --others --exclude-standard -- "${image_inputs[@]}" |
    sort -zu | while IFS= read -r -d '' file; do
      # A file deleted but not yet committed is still listed by --cached.
      if [[ -f $file ]]; then printf '%s %s\n' "$(sha256sum <"$file" | cut -d' ' -f1)" "$file"; fi
    done | sha256sum | cut -c1-12)
  printf 'src-%s\n' "$sum"
}

log "1/3 local cluster (hack/cluster.sh up; the first run builds it, ~15 min on an idle 2-core machine)"
hack/cluster.sh up || die "hack/cluster.sh up failed (its log lines above say where; hack/cluster.sh down cleans up)"
eval "$(hack/cluster.sh env)"
command -v helm >/dev/null || die "helm is not in the cluster's cache; rerun hack/cluster.sh build"

tag=$(source_tag)
image=$repository:$tag
cache=${BLIXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt}
archive=$cache/image/blixt-$tag.oci.tar
if [[ -f $archive && -z $rebuild ]]; then
  log "2/3 image $image: reusing $archive (the sources it was built from are unchanged)"
else
  log "2/3 image $image: building (hack/image.sh; 2-10 min, the first run also debootstraps Debian)"
  image_start=$SECONDS
  hack/image.sh --no-smoke --tag "$image" --out "$archive" >/dev/null ||
    die "hack/image.sh failed building $image (its output above says which step)"
  log "built $image in $((SECONDS - image_start)) s"
  # Archives of older sources are 150 MB each and never used again.
  find "$cache/image" -maxdepth 1 -name 'blixt-src-*.oci.tar' ! -path "$archive" -delete
fi
# ctr's progress is noise when it works and the diagnosis when it does not.
if ! import_output=$(hack/cluster.sh import "$archive" 2>&1); then
  printf '%s\n' "$import_output" >&2
  die "importing $archive into the node failed (ctr's output above)"
fi
log "imported $image into the node"

pool=$(bash -c 'source hack/cluster/lib.sh && echo "$GATEWAY_POOL_FIRST-$GATEWAY_POOL_LAST"')
# What this install deploys: the image, the pool and every file of the chart. When the
# release's current revision was made from exactly that, an upgrade would change nothing (it
# reuses the webhook certificate, which the controller renews) and only cost time.
chart_sum=$(find charts/blixt -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
wanted="release=$release namespace=$namespace image=$image pool=$pool chart=$chart_sum"
stamp=$cache/install/$release.stamp
current=$(helm status "$release" -n "$namespace" -o json 2>/dev/null | jq -r '"\(.info.status) \(.version)"' || true)
if [[ -z $rebuild && $current == deployed\ * && -f $stamp && $(cat "$stamp") == "$wanted revision=${current#deployed }" ]]; then
  log "3/3 release $release revision ${current#deployed } already runs $image with pool $pool and this chart; checking its pods are ready"
  for workload in $(kubectl -n "$namespace" get deployments,daemonsets -o name -l app.kubernetes.io/instance="$release"); do
    kubectl -n "$namespace" rollout status "$workload" --timeout 5m >/dev/null ||
      die "$workload in namespace $namespace is not ready; see: kubectl -n $namespace get pods; kubectl -n $namespace describe $workload"
  done
else
  log "3/3 helm upgrade --install $release (namespace $namespace, image $image, address pool $pool)"
  helm_start=$SECONDS
  # Helm creates a chart's crds/ on install and never touches them again: apply them first,
  # so an upgrade runs against the CRDs this checkout's code expects.
  kubectl apply --server-side --force-conflicts --field-manager=helm -f charts/blixt/crds/ >/dev/null ||
    die "applying charts/blixt/crds/ failed; see: kubectl get crd dataplaneconfigs.blixt.dev -o yaml"
  helm upgrade --install "$release" charts/blixt --namespace "$namespace" --create-namespace \
    --set image.repository="$repository" --set image.tag="$tag" \
    --set-json "addressPools=[{\"name\":\"local\",\"addresses\":[\"$pool\"]}]" \
    --wait --timeout 5m >/dev/null ||
    die "helm upgrade --install $release failed; see: kubectl -n $namespace get pods; kubectl -n $namespace describe pods"
  revision=$(helm status "$release" -n "$namespace" -o json | jq -r .version)
  mkdir -p "$(dirname "$stamp")"
  printf '%s revision=%s\n' "$wanted" "$revision" >"$stamp"
  log "release $release revision $revision ready in $((SECONDS - helm_start)) s"
fi
kubectl -n "$namespace" get pods -o wide >&2
log "blixt is installed ($image) in $((SECONDS - start)) s"
