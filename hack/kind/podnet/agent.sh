#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The pod network of hack/kind.sh's clusters, run on every node by the DaemonSet
# kube-system/blixt-podnet (host network, privileged). Every INTERVAL seconds it:
#   - writes the CNI configuration for this node's spec.podCIDR: the reference plugins ptp
#     (a veth per pod, a /32 route to it on the node) with host-local IPAM, and portmap;
#   - keeps one route per other node: its podCIDR via its InternalIP. All kind nodes share
#     one L2 network (the `kind` docker bridge), so this is all the routing pods need
#     ("host-gw"); nothing is masqueraded, pods see each other's own addresses;
#   - deletes the routes it made for nodes that are gone.
# A node that was powered off (docker stop/start) comes back with this pod restarted and
# without routes; the first round puts them back, and the other nodes' rounds follow its
# InternalIP if it changed. kubectl talks to the API server with the pod's ServiceAccount, at
# KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT.
set -uo pipefail

NODE_NAME=${NODE_NAME:?NODE_NAME must be set to this node name (spec.nodeName)}
INTERVAL=${INTERVAL:-10}
CNI_CONF_DIR=${CNI_CONF_DIR:-/etc/cni/net.d}
CONFLIST=$CNI_CONF_DIR/10-blixt-podnet.conflist
# The routes this agent owns carry this routing protocol number (unassigned in
# /etc/iproute2/rt_protos), so it never touches a route it did not make.
PROTO=${ROUTE_PROTO:-98}
IPAM_DIR=/run/cni-ipam-state # tmpfs in a kind node: leases go with the pods on a power-off

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "$NODE_NAME" "$*"; }

conflist() {
  cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "blixt-podnet",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "$IPAM_DIR",
        "ranges": [[{"subnet": "$1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

write_conflist() {
  local want
  want=$(conflist "$1")
  [[ -f $CONFLIST && $(cat "$CONFLIST") == "$want" ]] && return 0
  mkdir -p "$CNI_CONF_DIR"
  # Written aside and renamed: the runtime never reads half a file.
  printf '%s\n' "$want" >"$CONFLIST.tmp" && mv -f "$CONFLIST.tmp" "$CONFLIST" &&
    log "wrote $CONFLIST (pod subnet $1)"
}

# One line per node: NAME PODCIDR INTERNAL-IPS... (PODCIDR is "-" until the controller
# manager allocated one).
node_table() {
  # A short timeout: a connection that gets no answer (the control plane powered off, or the
  # Service address used before kube-proxy's rules exist) would otherwise hang for 30 s. (Not
  # kubectl's --request-timeout: with any such flag kubectl no longer falls back to the
  # in-cluster configuration.)
  timeout 5 kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{"- "}{range .status.addresses[?(@.type=="InternalIP")]}{.address}{" "}{end}{"\n"}{end}'
}

sync_once() {
  local table name cidr addrs ip a route
  table=$(node_table) || { log "listing the nodes failed; keeping what is in place"; return 1; }
  # The ptp plugin turns forwarding on with the first pod; a node with no pod yet must still
  # forward for the others.
  [[ $(cat /proc/sys/net/ipv4/ip_forward) == 1 ]] || echo 1 >/proc/sys/net/ipv4/ip_forward
  declare -A want=()
  while read -r name cidr addrs; do
    [[ -n $name ]] || continue
    cidr=${cidr%-}
    [[ -n $cidr ]] || continue
    if [[ $name == "$NODE_NAME" ]]; then
      write_conflist "$cidr"
      continue
    fi
    ip=""
    for a in $addrs; do [[ $a == *.* ]] && { ip=$a; break; }; done
    [[ -n $ip ]] && want[$cidr]=$ip
  done <<<"$table"
  for cidr in "${!want[@]}"; do
    route=$(ip -4 route show exact "$cidr" 2>/dev/null)
    [[ $route == "$cidr via ${want[$cidr]} "*"proto $PROTO"* ]] && continue
    if ip -4 route replace "$cidr" via "${want[$cidr]}" proto "$PROTO"; then
      log "route $cidr via ${want[$cidr]}${route:+ (was: $route)}"
    else
      log "could not add the route $cidr via ${want[$cidr]}"
    fi
  done
  while read -r cidr _; do
    [[ -n $cidr && -z ${want[$cidr]:-} ]] || continue
    ip -4 route del "$cidr" proto "$PROTO" && log "removed the route $cidr (no such node any more)"
  done < <(ip -4 route show proto "$PROTO")
}

# PID 1 of its container: without a handler, TERM would be ignored until the kubelet's KILL.
trap 'log "stopping"; exit 0' TERM INT
log "started; checking the pod network every $INTERVAL s"
while true; do
  pause=$INTERVAL
  sync_once || pause=1 # the API server was not reached: try again soon
  sleep "$pause" &
  wait $! # a TERM from the kubelet is handled during the sleep, not after it
done
