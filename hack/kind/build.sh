# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Binaries the kind node needs beyond what hack/cluster/build.sh builds, each from its Go
# module into $KIND_DIR/bin-node, rebuilt only when its pinned version changes. Sourced by
# hack/kind.sh after hack/cluster/{lib,build}.sh.

NODE_BIN=$KIND_DIR/bin-node

kind_install() { # kind_install STAMP VERSION BIN... -- GO-INSTALL-ARGS...
  local stamp=$1 version=$2 bins=() b
  shift 2
  while [[ $1 != -- ]]; do bins+=("$1"); shift; done
  shift
  if stamp_ok "$stamp" "$version"; then
    for b in "${bins[@]}"; do [[ -x $NODE_BIN/$b ]] || break; done
    [[ -x $NODE_BIN/$b ]] && return 0
  fi
  local out=$SRC_DIR/$stamp-out
  timed "$stamp $version" go_install_to "$out" CGO_ENABLED=0 go install -trimpath "$@"
  mkdir -p "$NODE_BIN"
  for b in "${bins[@]}"; do
    [[ -x $out/$b ]] || kdie "expected $out/$b after building $stamp"
    mv -f "$out/$b" "$NODE_BIN/$b"
  done
  stamp_set "$stamp" "$version"
}

build_kind() {
  stamp_ok kind "$KIND_VERSION" && [[ -x $KIND_BIN/kind ]] && return 0
  timed "kind $KIND_VERSION" go_install_to "$SRC_DIR/kind-out" CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kind@$KIND_VERSION"
  mkdir -p "$KIND_BIN" && mv -f "$SRC_DIR/kind-out/kind" "$KIND_BIN/kind"
  stamp_set kind "$KIND_VERSION"
}

build_crictl() {
  kind_install crictl "$CRICTL_VERSION" crictl -- \
    -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

# The four plugins kind's base image carries; the pod network (hack/kind/podnet) configures
# ptp with host-local IPAM, and portmap.
build_cni_plugins() {
  local m=github.com/containernetworking/plugins/plugins v=$CNI_PLUGINS_VERSION
  kind_install cni-plugins "$v" host-local loopback ptp portmap -- \
    "$m/ipam/host-local@$v" "$m/main/loopback@$v" "$m/main/ptp@$v" "$m/meta/portmap@$v"
}

build_coredns() {
  kind_install coredns "$COREDNS_VERSION" coredns -- "github.com/coredns/coredns@$COREDNS_VERSION"
}

build_node_binaries() {
  build_kind
  build_crictl
  build_cni_plugins
  build_coredns
}
