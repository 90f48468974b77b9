# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# shellcheck disable=SC2034 # settings read by hack/kind.sh and the files it sources
# Settings and helpers for hack/kind.sh; sourced after hack/cluster/lib.sh, never run.

KIND_VERSION=v0.33.0
KIND_CLUSTER=${BLIXT_KIND_CLUSTER:-blixt}
CRICTL_VERSION=v1.37.0
CNI_PLUGINS_VERSION=v1.9.1
# The CoreDNS kubeadm v1.36 deploys; etcd is the one hack/cluster builds, and the kind
# config tells kubeadm its tag.
COREDNS_VERSION=v1.14.2
ETCD_IMAGE_TAG=${ETCD_VERSION#v}-0
NODE_IMAGE=blixt.local/kind-node:$K8S_VERSION
BASE_IMAGE=blixt.local/kind-base:bookworm
DEBIAN_IMAGE=blixt.local/debian:bookworm

# Addresses. Every one lies in 198.18.0.0/15 (RFC 2544, benchmarking): traffic to them can
# only reach what this machine made. Already taken elsewhere in the project:
#   198.18.0.0/24          the local one-node cluster (hack/cluster), root namespace
#   198.18.0.0-255.255     netns labs (test/lib/lab.ts: 198.18.{2k}.x, 198.18.{2k+1}.x), in
#                          their own namespaces only
#   198.19.{2k}.0/24       netns lab VIPs (k < 128), routed inside the lab's client only
# So the networks the root namespace sees use odd third octets of 198.19 near the top:
KIND_SUBNET=198.19.253.0/24      # the `kind` docker network: node containers, Gateway pool
KIND_GATEWAY_IP=198.19.253.1     # the bridge's address in the root namespace
KIND_POOL_FIRST=198.19.253.100   # blixt's Gateway address pool (hack/kind.sh install)
KIND_POOL_LAST=198.19.253.199
DOCKER_BIP=198.19.251.1/24       # docker0, the default bridge
DOCKER_POOL=198.19.249.0/24      # default-address-pools: one network for `docker network create`
# Pod and Service ranges live only inside the node containers' network namespaces.
KIND_POD_SUBNET=198.19.192.0/20     # a /24 per node
KIND_SERVICE_SUBNET=198.19.208.0/20

KIND_DIR=$BLIXT_CACHE/kind               # everything kind.sh builds, next to hack/cluster's cache
KIND_BIN=$KIND_DIR/bin                   # kind, the docker shim, the runtime wrapper
KIND_STATE=$KIND_DIR/state               # kubeconfig, dockerd pid and log, what up created
KIND_KUBECONFIG=$KIND_STATE/kubeconfig
DOCKERD_PID=$KIND_STATE/dockerd.pid
DOCKERD_LOG=$KIND_STATE/dockerd.log
DAEMON_JSON=/etc/docker/daemon.json
RUNTIME_NAME=blixt-runc

klog() { printf '[kind %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
kdie() { klog "error: $*"; exit 1; }

# phase NAME CMD...: runs one phase of `up` and records how long it took.
PHASES=()
phase() {
  local name=$1 start=$SECONDS
  shift
  klog "phase $name ..."
  "$@" || kdie "phase $name failed (see above)"
  PHASES+=("$name $((SECONDS - start))s")
  klog "phase $name done in $((SECONDS - start)) s"
}

# Docker's own CLI: Debian's, matching its dockerd (a newer CLI elsewhere on PATH may want
# buildx). kind runs `docker` from PATH, so KIND_BIN, which holds a link to it, goes first.
docker() { /usr/bin/docker "$@"; }

# image_key IMAGE: the build key stored in an image's label, empty when the image is absent.
image_key() { docker image inspect -f '{{index .Config.Labels "dev.blixt.key"}}' "$1" 2>/dev/null || true; }

# hash_of ARGS...: a short hash of strings and of files' contents (args naming files).
hash_of() {
  local a
  for a in "$@"; do
    if [[ -f $a ]]; then sha256sum <"$a"; else printf '%s\n' "$a"; fi
  done | sha256sum | cut -c1-16
}
