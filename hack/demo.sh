#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# blixt's main job end to end, in one command: a real one-node Kubernetes cluster on this
# machine (hack/cluster.sh), blixt installed by its Helm chart (hack/install.sh), a Gateway
# with a TCP and a UDP listener, a weighted TCPRoute and a UDPRoute over three echo backends
# (hack/demo/*.yaml, namespace blixt-demo), then real TCP connections and UDP datagrams from
# this machine's root network namespace, outside the node, to the Gateway's address. It
# checks that the flows spread as the weights say, that the backends saw the client's own
# address and that replies came from the Gateway's address; it fails, saying which, when not.
#
# The cluster stays up afterwards; the demo is safe to rerun. Run as root. The first run on a
# fresh machine builds the cluster (~15 min on an idle 2-core machine) and blixt's image.
#
#   hack/demo.sh            (hack/lab-demo.sh is the same dataplane in a netns lab, no Kubernetes)
#   hack/demo.sh --kind     the same on a 3-node kind cluster (hack/kind.sh; docs/kind.md): the
#                           backends spread over the nodes, most of them on another node than
#                           the one that announces the Gateway's address
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

on_kind="" cluster_script=hack/cluster.sh
case ${1:-} in
  --kind) on_kind=1 cluster_script=hack/kind.sh ;;
  "") ;;
  *) echo "usage: hack/demo.sh [--kind]" >&2; exit 2 ;;
esac

namespace=blixt-demo
gateway=demo
tcp_route=echo-tcp
udp_route=echo-udp
flows=${BLIXT_DEMO_FLOWS:-300}

start=$SECONDS
step_start=$SECONDS
step_name=""
# Bold step lines on a terminal, plain text in a log.
if [[ -t 1 ]]; then bold() { printf '\033[1m%s\033[0m\n' "$*"; }; else bold() { printf '%s\n' "$*"; }; fi
step() {
  [[ -z $step_name ]] || printf '    (took %d s)\n' "$((SECONDS - step_start))"
  step_name=$1 step_start=$SECONDS
  printf '\n'
  bold "==> [$(date -u +%H:%M:%S) +$((SECONDS - start))s] $1"
}
fail() { printf '\ndemo: FAILED: %s\n' "$*" >&2; exit 1; }
# Whatever stops the script early names the step it was in.
on_exit() {
  local rc=$?
  [[ $rc == 0 || -z $step_name ]] ||
    printf '\ndemo: FAILED during "%s" (exit %d), after %d s; the cluster is left as it is\n' "$step_name" "$rc" "$((SECONDS - start))" >&2
}
trap on_exit EXIT

[[ $(id -u) == 0 ]] || fail "run as root: the cluster needs network namespaces, mounts and cgroups"

step "dependencies (hack/deps.sh: Debian packages and node_modules, only what is missing)"
hack/deps.sh

if [[ -n $on_kind ]]; then
  step "a 3-node kind cluster with blixt (hack/kind.sh up, hack/kind.sh install)"
  hack/kind.sh up
  hack/kind.sh install
  eval "$(hack/kind.sh env)"
  # shellcheck disable=SC2016 # expanded by the inner bash
  cache=$(bash -c 'source hack/cluster/lib.sh && echo "$BLIXT_CACHE"')
  # The client is this machine's root namespace on the kind network's bridge (its device is
  # looked up once the Gateway has an address).
  root_ip=198.19.253.1
  veth=""
  import_image() { hack/kind.sh load "$1"; }
else
  step "blixt on the local cluster (hack/install.sh)"
  hack/install.sh
  eval "$(hack/cluster.sh env)"
  # shellcheck disable=SC2016 # expanded by the inner bash
  read -r root_ip veth cache < <(bash -c 'source hack/cluster/lib.sh && echo "$ROOT_IP $VETH_ROOT $BLIXT_CACHE"')
  import_image() { hack/cluster.sh import "$1"; }
fi

step "sample: namespace $namespace, echo backends, Gateway $gateway, TCPRoute and UDPRoute (hack/demo/*.yaml)"
# The echo image answers with its name and the client it saw (ECHO_NAME); hack/cluster.sh
# imports it when the cluster starts, and this refreshes it in a cluster started earlier.
if ! import_output=$(import_image "$cache/images/echo.tar" 2>&1); then
  printf '%s\n' "$import_output" >&2
  fail "importing the echo image ($cache/images/echo.tar) failed"
fi
kubectl apply -f hack/demo/
# The tag stays blixt.local/echo:v1 when the echo server is rebuilt, so the pods carry the
# archive's digest in an annotation: a rebuilt image rolls them, an unchanged one does not.
echo_digest=$(sha256sum <"$cache/images/echo.tar" | cut -c1-12)
for deployment in $(kubectl -n "$namespace" get deployments -o name); do
  kubectl -n "$namespace" patch "$deployment" --type merge \
    -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"blixt.dev/echo-image\":\"$echo_digest\"}}}}}"
done
for deployment in $(kubectl -n "$namespace" get deployments -o name); do
  kubectl -n "$namespace" rollout status "$deployment" --timeout 120s ||
    fail "$deployment did not become ready; see: kubectl -n $namespace get pods; kubectl -n $namespace describe pods"
done

step "waiting for Gateway $namespace/$gateway to be Programmed (an address, and every node's dataplane has it)"
if ! kubectl -n "$namespace" wait --for condition=Programmed --timeout 120s "gateway/$gateway"; then
  kubectl -n "$namespace" get gateway "$gateway" -o json |
    jq -r '.status.conditions[]? | "  \(.type)=\(.status) \(.reason): \(.message)"' >&2 || true
  fail "Gateway $namespace/$gateway is not Programmed after 120 s (its conditions above); the controller's log: kubectl -n blixt-system logs deploy/blixt-controller"
fi
kubectl -n "$namespace" get gateway,tcproute,udproute
if [[ -n $on_kind ]]; then
  echo "backends by node (the address is announced by $(kubectl -n "$namespace" get dataplaneconfig "$gateway" -o jsonpath='{.spec.announcingNode}')):"
  kubectl -n "$namespace" get pods -o custom-columns=POD:.metadata.name,NODE:.spec.nodeName,IP:.status.podIP --no-headers | sed 's/^/  /'
fi
address=$(kubectl -n "$namespace" get gateway "$gateway" -o jsonpath='{.status.addresses[0].value}')
[[ -n $address ]] || fail "Gateway $namespace/$gateway is Programmed but has no address in status.addresses"
[[ -n $veth ]] || veth=$(ip -o route get "$address" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
# Each route's standing on its Gateway, as the controller reported it.
for route in "tcproute/$tcp_route" "udproute/$udp_route"; do
  kubectl -n "$namespace" get "$route" -o json | jq -r --arg route "$route" '
    "\($route): " + ([.status.parents[]?.conditions[]? | "\(.type)=\(.status)"] | join(" "))'
done
listener_port() { kubectl -n "$namespace" get gateway "$gateway" -o jsonpath="{.spec.listeners[?(@.name==\"$1\")].port}"; }
tcp_port=$(listener_port tcp)
udp_port=$(listener_port udp)
# NAME=WEIGHT for every backendRef of a route, weight 1 when unset (the spec's default).
route_weights() {
  kubectl -n "$namespace" get "$1" -o json |
    jq -r '[.spec.rules[].backendRefs[] | "\(.name)=\(.weight // 1)"] | join(",")'
}
tcp_weights=$(route_weights "tcproute/$tcp_route")
udp_weights=$(route_weights "udproute/$udp_route")
echo
echo "Gateway address: $address   (TCP listener port $tcp_port, UDP listener port $udp_port)"
echo "from this machine's root namespace: $(ip -o route get "$address" | sed 's/ *uid.*//; s/ *cache.*//')"
echo "  $address is on the $veth segment: the announcing node's dataplane answers ARP for it in the kernel"

# A backend pod that just rolled reaches the dataplane a moment after it is Ready (its
# EndpointSlice, then the controller, then the agent). Until a small probe gets answers from
# every backend of both routes, the counts below would measure that moment, not blixt.
probe_ready() {
  local deadline=$((SECONDS + 60))
  until npx --no-install tsx hack/demo/traffic.ts --protocol tcp --address "$address" --port "$tcp_port" \
    --weights "$tcp_weights" --client-ip "$root_ip" --count 30 --tolerance 100 --timeout 1000 >/dev/null 2>&1 &&
    npx --no-install tsx hack/demo/traffic.ts --protocol udp --address "$address" --port "$udp_port" \
      --weights "$udp_weights" --client-ip "$root_ip" --count 30 --tolerance 100 --timeout 1000 >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 2
  done
}
echo "probing until every backend answers (30 flows per protocol)"
probe_ready || echo "  not every backend answered within 60 s; measuring anyway"

failed=()
traffic() { # traffic PROTOCOL PORT WEIGHTS
  npx --no-install tsx hack/demo/traffic.ts --protocol "$1" --address "$address" --port "$2" \
    --weights "$3" --client-ip "$root_ip" --count "$flows" || failed+=("$1")
}
step "$flows TCP connections from the root namespace ($root_ip) to $address:$tcp_port (TCPRoute weights $tcp_weights)"
traffic tcp "$tcp_port" "$tcp_weights"
step "$flows UDP datagrams, each from a new source port, to $address:$udp_port (UDPRoute weights $udp_weights)"
traffic udp "$udp_port" "$udp_weights"
echo "  ARP entry for the Gateway: $(ip neigh show "$address" dev "$veth" | sed 's/ *$//')"

step "done"
((${#failed[@]} == 0)) || fail "the ${failed[*]} traffic checks failed (details above); the cluster is up for a look: eval \"\$($cluster_script env)\"; kubectl -n $namespace get all"
cat <<EOF
blixt forwarded every flow in the kernel: spread by the routes' weights, client address kept.
Total: $((SECONDS - start)) s. The cluster is still up.

Use it:      eval "\$($cluster_script env)"     # KUBECONFIG and PATH (kubectl, helm)
             kubectl get gateway,tcproute,udproute -n $namespace
             kubectl -n blixt-system get pods
             socat - TCP:$address:$tcp_port         # or: echo hi | socat - UDP:$address:$udp_port
Rerun:       hack/demo.sh${on_kind:+ --kind}                        # reuses the cluster and, when the sources are unchanged, the image
Clean up:    kubectl delete namespace $namespace
Take down:   $cluster_script down                # stops the cluster and removes everything it made
EOF
