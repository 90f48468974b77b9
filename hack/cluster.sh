#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A real one-node Kubernetes cluster on this machine, built from Go modules and run inside
# network namespaces. See docs/local-cluster.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/cluster

HACK_CLUSTER=$(cd "$(dirname "${BASH_SOURCE[0]}")/cluster" && pwd)
REPO_ROOT=$(cd "$HACK_CLUSTER/../.." && pwd)
source "$HACK_CLUSTER/lib.sh"
source "$HACK_CLUSTER/build.sh"
source "$HACK_CLUSTER/images.sh"
source "$HACK_CLUSTER/run.sh"

usage() {
  cat <<USAGE
usage: hack/cluster.sh COMMAND

  build            build (or reuse) every binary and image in $BIN_DIR
  up               build if needed, then start the cluster; prints the kubeconfig path
  down             stop everything and remove what up created (safe to repeat)
  status           which components run, and whether the node is Ready
  env              print shell exports: eval "\$(hack/cluster.sh env)"
  restart kubelet  stop and start the node's kubelet (pods keep running), wait for Ready
  import IMAGE.tar import an OCI image archive into the node's containerd
  kubectl ARGS...  run the cached kubectl against the cluster
  helm ARGS...     run the cached helm against the cluster
  node CMD...      run CMD in the node's network namespace (pod and Service IPs reach)
USAGE
}

[[ $(id -u) == 0 || ${1:-} == env || ${1:-} == help || $# == 0 ]] || die "run as root: the cluster needs network namespaces, mounts and cgroups"

# One build, up or down at a time: two `up`s racing (two test files, two people) would
# each start a cluster into the same netns and state dir. The second waits, then finds
# the cluster running.
serialize() {
  mkdir -p "$BLIXT_CACHE"
  exec 9>"$BLIXT_CACHE/cluster.lock"
  flock -n 9 || { log "waiting for another hack/cluster.sh build/up/down to finish"; flock 9; }
}

case ${1:-help} in
  build|up|down|restart) serialize ;;
esac

case ${1:-help} in
  build) build_all ;;
  up) build_all && cluster_up ;;
  down) cluster_down ;;
  status) cluster_status ;;
  env) cluster_env ;;
  restart)
    [[ ${2:-} == kubelet && $# == 2 ]] || die "usage: hack/cluster.sh restart kubelet"
    restart_kubelet ;;
  import) shift; [[ $# == 1 ]] || die "usage: hack/cluster.sh import IMAGE.tar"; image_import "$1" ;;
  kubectl) shift; exec "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@" ;;
  helm) shift; exec "$BIN_DIR/helm" --kubeconfig "$KUBECONFIG_PATH" "$@" ;;
  node) shift; [[ $# -ge 1 ]] || die "usage: hack/cluster.sh node CMD..."; exec nsenter --net="/var/run/netns/$NODE_NETNS" -- "$@" ;;
  help|-h|--help) usage ;;
  *) usage; exit 2 ;;
esac
