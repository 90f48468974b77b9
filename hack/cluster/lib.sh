# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# shellcheck disable=SC2034 # settings read by hack/cluster.sh, hack/kind.sh and the files they source
# Shared settings and helpers for hack/cluster.sh; sourced, never run.

# Pinned versions: changing one rebuilds only that component (see stamp files).
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
CONTAINERD_VERSION=v2.4.2
RUNC_VERSION=v1.5.3
HELM_VERSION=v4.3.1
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2

BLIXT_CACHE=${BLIXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt}
BIN_DIR=$BLIXT_CACHE/bin
STAMP_DIR=$BLIXT_CACHE/stamps
SRC_DIR=$BLIXT_CACHE/src
IMAGE_DIR=$BLIXT_CACHE/images
# Everything a running cluster writes (certs, data, logs, pid files) lives here.
STATE_DIR=${BLIXT_CLUSTER_STATE:-$BLIXT_CACHE/cluster}
LOG_DIR=$STATE_DIR/logs
PID_DIR=$STATE_DIR/pids
PKI_DIR=$STATE_DIR/pki
KUBECONFIG_PATH=$STATE_DIR/kubeconfig

# Network layout: the node lives in its own netns behind one veth. 198.18.0.0/15 is the
# benchmarking range (RFC 2544), so it never collides with a real network.
NODE_NETNS=${BLIXT_NODE_NETNS:-blixt-node}
NODE_NAME=blixt-node
VETH_ROOT=blixt-veth0          # root-namespace end
VETH_NODE=eth0                 # node-namespace end, named like a real node's uplink
ROOT_IP=198.18.0.1
NODE_IP=198.18.0.2
SEGMENT_PREFIX=24              # 198.18.0.0/24: node, root side and the Gateway address pool
GATEWAY_POOL_FIRST=198.18.0.100
GATEWAY_POOL_LAST=198.18.0.199
# Pods and Services exist only inside the node's netns, yet stay inside 198.18.0.0/15 too,
# clear of everything else this machine uses there (docs/kind.md, "Addresses").
POD_CIDR=198.19.224.0/20       # the node gets 198.19.224.0/24 (--node-cidr-mask-size 24)
SERVICE_CIDR=198.19.240.0/21   # 198.19.240.0-198.19.247.255
KUBERNETES_SERVICE_IP=${SERVICE_CIDR%0/*}1
CLUSTER_DOMAIN=cluster.local

GATEWAY_API_CRDS=hack/gateway-api/v1.6.3/standard-install.yaml

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs a command inside the node's network namespace. nsenter, not `ip netns exec`,
# because the latter remounts /sys and hides /sys/fs/bpf and /sys/fs/cgroup.
in_node() { nsenter --net="/var/run/netns/$NODE_NETNS" -- "$@"; }

stamp_ok() { [[ -f $STAMP_DIR/$1 && $(cat "$STAMP_DIR/$1") == "$2" ]]; }
stamp_set() { mkdir -p "$STAMP_DIR" && printf '%s\n' "$2" >"$STAMP_DIR/$1"; }

# ensure_debs PKG... installs the Debian packages that are missing (apt-get update first).
ensure_debs() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
