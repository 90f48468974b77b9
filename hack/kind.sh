#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A real multi-node kind cluster on this machine: Debian's docker engine, kind v0.33.0 from its
# Go module, and a kind node image built here (no registry is reachable) from the binaries
# hack/cluster builds. See docs/kind.md.
set -euo pipefail
shopt -s inherit_errexit

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HACK_CLUSTER=$HACK/cluster
HACK_KIND=$HACK/kind
REPO_ROOT=$(cd "$HACK/.." && pwd)
# shellcheck source=hack/cluster/lib.sh
source "$HACK_CLUSTER/lib.sh"
# shellcheck source=hack/cluster/build.sh
source "$HACK_CLUSTER/build.sh"
# shellcheck source=hack/cluster/images.sh
source "$HACK_CLUSTER/images.sh"
# shellcheck source=hack/kind/lib.sh
source "$HACK_KIND/lib.sh"
# shellcheck source=hack/kind/docker.sh
source "$HACK_KIND/docker.sh"
# shellcheck source=hack/kind/build.sh
source "$HACK_KIND/build.sh"
# shellcheck source=hack/kind/images.sh
source "$HACK_KIND/images.sh"
# shellcheck source=hack/kind/podnet.sh
source "$HACK_KIND/podnet.sh"

usage() {
  cat <<USAGE
usage: hack/kind.sh COMMAND

  up [--nodes N] [--recreate]
                      build what is missing, start dockerd, create the kind cluster
                      "$KIND_CLUSTER" (N nodes: one control plane, N-1 workers; default 3)
                      and install the Gateway API CRDs; prints each phase's time. An
                      existing cluster is reused once its API server answers; --recreate
                      deletes it first
  install             build blixt's image with the Dockerfile (docker build), kind load it,
                      helm upgrade --install charts/blixt with a pool on the kind network
  env                 print shell exports: eval "\$(hack/kind.sh env)"
  status              the node containers and the Kubernetes nodes
  check               pod network across nodes: a pod on every node pings the others and
                      reaches a Service backed by all of them
  stop-node NAME      stop a node's container as a powered-off machine would: docker kill
                      (SIGKILL, no shutdown: its agent cannot say goodbye)
  start-node NAME     start it again and wait until the node is Ready
  down                delete the cluster, the kind network, stop the dockerd up started;
                      caches (binaries, images) stay
  load IMAGE|FILE.tar...
                      load docker images, or image archives (docker or OCI), into every node
  test-images         build the images the kind tests use (test/kind/) and load them
  kubectl ARGS...     the cached kubectl against the kind cluster
  helm ARGS...        the cached helm against the kind cluster

environment: BLIXT_CACHE (default ~/.cache/blixt)
USAGE
}

[[ $(id -u) == 0 || ${1:-} == env || ${1:-} == help || $# == 0 ]] ||
  kdie "run as root: docker, kind's privileged nodes and the image builds need it"

# kind and the docker CLI it runs, then the cluster binaries (kubectl, helm).
export PATH=$KIND_BIN:$BIN_DIR:$PATH

kubectl_kind() { "$BIN_DIR/kubectl" --kubeconfig "$KIND_KUBECONFIG" "$@"; }

# One up/down/install at a time; the binaries phase also holds hack/cluster's lock, as it
# builds into the same cache.
serialize() {
  mkdir -p "$BLIXT_CACHE"
  exec 8>"$BLIXT_CACHE/kind.lock"
  flock -n 8 || { klog "waiting for another hack/kind.sh up/down/install to finish"; flock 8; }
}

build_binaries() {
  exec 9>"$BLIXT_CACHE/cluster.lock"
  flock -n 9 || { klog "waiting for hack/cluster.sh (same cache) to finish"; flock 9; }
  command -v go >/dev/null || kdie "go is not installed (Go 1.26 or newer builds Kubernetes $K8S_VERSION)"
  build_kubernetes
  build_etcd
  build_containerd
  build_runc
  build_helm
  ensure_debs umoci python3
  build_images
  build_node_binaries
  flock -u 9
}

cluster_exists() {
  local clusters
  clusters=$(kind get clusters 2>/dev/null) || true
  grep -qx -- "$KIND_CLUSTER" <<<"$clusters"
}

ensure_network() {
  local subnet
  if subnet=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null); then
    [[ $subnet == *"$KIND_SUBNET"* ]] ||
      kdie "docker network kind exists with subnet $subnet, not $KIND_SUBNET; remove it (docker network rm kind) or run: hack/kind.sh down"
    return 0
  fi
  docker network create kind --driver bridge --subnet "$KIND_SUBNET" --gateway "$KIND_GATEWAY_IP" \
    --label dev.blixt.kind=1 -o com.docker.network.bridge.enable_ip_masquerade=false \
    -o com.docker.network.driver.mtu=1500 >/dev/null || kdie "docker network create kind failed"
  klog "created docker network kind ($KIND_SUBNET)"
}

kind_config() {
  local nodes=$1 i
  cat <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: $KIND_CLUSTER
networking:
  # kind's default CNI, kindnetd, is not a published Go module: install_podnet puts in the
  # pod network instead (hack/kind/podnet.sh).
  disableDefaultCNI: true
  podSubnet: $KIND_POD_SUBNET
  serviceSubnet: $KIND_SERVICE_SUBNET
nodes:
- role: control-plane
YAML
  for ((i = 1; i < nodes; i++)); do echo "- role: worker"; done
  cat <<YAML
kubeadmConfigPatches:
- |
  kind: ClusterConfiguration
  etcd:
    local:
      imageTag: "$ETCD_IMAGE_TAG"
- |
  kind: KubeletConfiguration
  failCgroupV1: false
YAML
}

# An existing cluster is reused as it is, once it answers: its node containers are started if
# they are not running (dockerd was restarted, or a node was stopped with stop-node), and its
# API server gets up to 180 s to answer /readyz again.
reuse_cluster() {
  local nodes=$1 have node i
  have=$(kind get nodes --name "$KIND_CLUSTER" | wc -l)
  [[ $have == "$nodes" ]] ||
    kdie "cluster $KIND_CLUSTER exists with $have nodes, not $nodes; run hack/kind.sh down first (or up --recreate)"
  klog "cluster $KIND_CLUSTER exists ($have nodes); exporting its kubeconfig"
  kind export kubeconfig --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG" >/dev/null 2>&1
  for node in $(kind get nodes --name "$KIND_CLUSTER"); do
    if [[ $(docker inspect -f '{{.State.Running}}' "$node" 2>/dev/null) != true ]]; then
      docker start "$node" >/dev/null || kdie "docker start $node failed"
      klog "started node container $node (it was not running)"
    fi
  done
  for ((i = 0; i < 180; i++)); do
    kubectl_kind get --raw /readyz >/dev/null 2>&1 && break
    sleep 1
  done
  ((i < 180)) ||
    kdie "the API server of the existing cluster $KIND_CLUSTER does not answer /readyz after 180 s; start afresh with: hack/kind.sh up --recreate"
  ((i == 0)) || klog "its API server answers /readyz after $i s"
}

create_cluster() {
  local nodes=$1 recreate=$2 config
  if [[ -n $recreate ]] && cluster_exists; then
    klog "--recreate: deleting the existing cluster $KIND_CLUSTER first"
    kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG" >&2 || kdie "kind delete cluster failed"
  fi
  if cluster_exists; then
    reuse_cluster "$nodes"
  else
    config=$KIND_STATE/kind-config.yaml
    kind_config "$nodes" >"$config"
    kind create cluster --name "$KIND_CLUSTER" --image "$NODE_IMAGE" --config "$config" \
      --kubeconfig "$KIND_KUBECONFIG" --retain --wait 0s ||
      kdie "kind create cluster failed; the nodes are kept for a look (docker exec -it $KIND_CLUSTER-control-plane journalctl -b), hack/kind.sh down removes them"
  fi
  # Nodes are NotReady until the pod network wrote their CNI configuration.
  install_podnet
  klog "waiting until all $nodes nodes are Ready"
  kubectl_kind wait --for=condition=Ready nodes --all --timeout=300s >&2 ||
    kdie "not every node became Ready; see: hack/kind.sh kubectl describe nodes"
}

install_crds() {
  kubectl_kind apply --server-side -f "$REPO_ROOT/$GATEWAY_API_CRDS" >/dev/null ||
    kdie "applying the Gateway API CRDs failed"
  kubectl_kind wait --for=condition=Established crd --all --timeout=60s >/dev/null
}

cmd_up() {
  local nodes=3 recreate=""
  while [[ $# -gt 0 ]]; do
    case $1 in
      --nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
      --recreate) recreate=1; shift ;;
      *) usage >&2; exit 2 ;;
    esac
  done
  [[ $nodes =~ ^[1-9][0-9]?$ ]] || kdie "--nodes $nodes: give a number of nodes from 1 to 99"
  local start=$SECONDS
  phase docker ensure_docker
  phase binaries build_binaries
  phase debian-image build_debian_image
  phase base-image build_base_image
  phase component-images build_component_images
  phase node-image build_node_image
  phase network ensure_network
  phase cluster create_cluster "$nodes" "$recreate"
  phase gateway-api-crds install_crds
  klog "phases: ${PHASES[*]}"
  klog "cluster $KIND_CLUSTER up with $nodes nodes in $((SECONDS - start)) s; use it with: eval \"\$(hack/kind.sh env)\""
  kubectl_kind get nodes -o wide >&2
}

cmd_load() {
  local item
  if ! dockerd_running || ! cluster_exists; then kdie "no kind cluster $KIND_CLUSTER; run hack/kind.sh up first"; fi
  for item in "$@"; do
    if [[ -f $item ]]; then
      klog "loading $(basename "$item") into the nodes"
      kind load image-archive "$item" --name "$KIND_CLUSTER" >/dev/null || kdie "kind load image-archive $item failed"
    else
      klog "loading $item into the nodes"
      kind load docker-image "$item" --name "$KIND_CLUSTER" >/dev/null || kdie "kind load docker-image $item failed"
    fi
  done
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$KIND_KUBECONFIG"
  # shellcheck disable=SC2016 # $PATH expands where the exports are evaluated
  printf 'export PATH=%q:%q:"$PATH"\n' "$KIND_BIN" "$BIN_DIR"
}

cmd_status() {
  dockerd_running || { echo "dockerd: not running"; return 0; }
  echo "dockerd: running"
  if ! cluster_exists; then echo "cluster $KIND_CLUSTER: absent"; return 0; fi
  docker ps -a --filter "label=io.x-k8s.kind.cluster=$KIND_CLUSTER" \
    --format 'table {{.Names}}\t{{.Status}}\t{{.Networks}}'
  kubectl_kind get nodes -o wide || true
}

node_name_ok() {
  # Listed first, then matched: grep -q leaving the pipe early would SIGPIPE kind, and with
  # pipefail a node that is there would read as missing.
  local nodes
  nodes=$(kind get nodes --name "$KIND_CLUSTER" 2>/dev/null) || true
  grep -qx -- "$1" <<<"$nodes" ||
    kdie "$1 is not a node of cluster $KIND_CLUSTER (nodes: $(tr '\n' ' ' <<<"$nodes"))"
}

cmd_stop_node() {
  node_name_ok "$1"
  docker kill "$1" >/dev/null || kdie "docker kill $1 failed"
  klog "stopped node $1 (killed, as a power-off; its container is kept: hack/kind.sh start-node $1 starts it)"
}

cmd_start_node() {
  local node=$1 start=$SECONDS since
  node_name_ok "$node"
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  docker start "$node" >/dev/null || kdie "docker start $node failed"
  klog "started $node's container; waiting for the node to report Ready again"
  # The Ready condition is stale (still True, or Unknown) until the restarted kubelet posts:
  # wait for a Ready=True heartbeat newer than the start.
  local i ready
  for ((i = 0; i < 180; i++)); do
    ready=$(kubectl_kind get node "$node" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null || true)
    [[ ${ready%% *} == True && ${ready#* } > "$since" ]] && break
    sleep 1
  done
  ((i < 180)) || kdie "node $node did not become Ready within 180 s; see: hack/kind.sh kubectl describe node $node"
  klog "node $node Ready in $((SECONDS - start)) s"
}

cmd_down() {
  if dockerd_running; then
    if cluster_exists; then
      kind delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG" || kdie "kind delete cluster failed"
    fi
    if [[ $(docker network inspect kind -f '{{index .Labels "dev.blixt.kind"}}' 2>/dev/null) == 1 ]]; then
      docker network rm kind >/dev/null && klog "removed docker network kind"
    fi
    local id
    for id in $(docker ps -aq --filter name=blixt-kind-build-); do docker rm -f -v "$id" >/dev/null; done
  fi
  stop_docker
  rm -f "$KIND_KUBECONFIG"
  klog "down; caches kept in $KIND_DIR and docker's image store"
}

case ${1:-help} in
  up|down|install|check) serialize ;;
esac

case ${1:-help} in
  up) shift; cmd_up "$@" ;;
  install) shift
    # shellcheck source=hack/kind/install.sh
    source "$HACK_KIND/install.sh"; cmd_install "$@" ;;
  check) shift
    # shellcheck source=hack/kind/check.sh
    source "$HACK_KIND/check.sh"; cmd_check "$@" ;;
  env) cmd_env ;;
  status) cmd_status ;;
  stop-node) [[ $# == 2 ]] || kdie "usage: hack/kind.sh stop-node NAME"; cmd_stop_node "$2" ;;
  start-node) [[ $# == 2 ]] || kdie "usage: hack/kind.sh start-node NAME"; cmd_start_node "$2" ;;
  down) cmd_down ;;
  load) shift; [[ $# -ge 1 ]] || kdie "usage: hack/kind.sh load IMAGE|FILE.tar..."; cmd_load "$@" ;;
  test-images)
    # shellcheck source=hack/kind/check.sh
    source "$HACK_KIND/check.sh"; build_netcheck_image; cmd_load "$NETCHECK_IMAGE" ;;
  kubectl) shift; exec "$BIN_DIR/kubectl" --kubeconfig "$KIND_KUBECONFIG" "$@" ;;
  helm) shift; exec "$BIN_DIR/helm" --kubeconfig "$KIND_KUBECONFIG" "$@" ;;
  help|-h|--help) usage ;;
  *) usage >&2; exit 2 ;;
esac
