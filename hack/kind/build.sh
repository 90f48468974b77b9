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

# The four plugins kind's base image carries (kindnetd writes a ptp + host-local config).
build_cni_plugins() {
  local m=github.com/containernetworking/plugins/plugins v=$CNI_PLUGINS_VERSION
  kind_install cni-plugins "$v" host-local loopback ptp portmap -- \
    "$m/ipam/host-local@$v" "$m/main/loopback@$v" "$m/main/ptp@$v" "$m/meta/portmap@$v"
}

build_coredns() {
  kind_install coredns "$COREDNS_VERSION" coredns -- "github.com/coredns/coredns@$COREDNS_VERSION"
}

# kindnetd is not published as a Go module of its own (it is a nested module of kind's
# repository, images/kindnetd). With a Go module proxy that reaches GitHub, `go install` at
# the commit works; a proxy that serves tagged releases only cannot resolve it (nor its
# pseudo-versioned dependency sigs.k8s.io/kube-network-policies), and then the sources come
# from git clones named by BLIXT_KIND_GIT and BLIXT_KNP_GIT (any clone holding the commits).
build_kindnetd() {
  local version="$KINDNETD_COMMIT $KNP_COMMIT"
  stamp_ok kindnetd "$version" && [[ -x $NODE_BIN/kindnetd ]] && return 0
  local m=sigs.k8s.io/kind/images/kindnetd out=$SRC_DIR/kindnetd-out
  mkdir -p "$NODE_BIN"
  if go_install_to "$out" CGO_ENABLED=0 go install -trimpath "$m/cmd/kindnetd@$KINDNETD_COMMIT" 2>/dev/null; then
    mv -f "$out/kindnetd" "$NODE_BIN/kindnetd"
  else
    [[ -n ${BLIXT_KIND_GIT:-} && -n ${BLIXT_KNP_GIT:-} ]] ||
      kdie "kindnetd: the Go module proxy cannot resolve $m@$KINDNETD_COMMIT; set BLIXT_KIND_GIT to a git clone of github.com/kubernetes-sigs/kind and BLIXT_KNP_GIT to one of github.com/kubernetes-sigs/kube-network-policies"
    klog "kindnetd: building from $BLIXT_KIND_GIT at $KINDNETD_COMMIT (kube-network-policies from $BLIXT_KNP_GIT at $KNP_COMMIT)"
    local src=$SRC_DIR/kindnetd
    rm -rf "$src" && mkdir -p "$src/kindnetd" "$src/knp"
    git -C "$BLIXT_KIND_GIT" archive "$KINDNETD_COMMIT" images/kindnetd | tar -x -C "$src/kindnetd" --strip-components=2 ||
      kdie "kindnetd: $BLIXT_KIND_GIT has no commit $KINDNETD_COMMIT"
    git -C "$BLIXT_KNP_GIT" archive "$KNP_COMMIT" | tar -x -C "$src/knp" ||
      kdie "kindnetd: $BLIXT_KNP_GIT has no commit $KNP_COMMIT"
    (cd "$src/kindnetd" && go mod edit -replace sigs.k8s.io/kube-network-policies=../knp) || kdie "kindnetd: go mod edit failed"
    timed "kindnetd $KINDNETD_COMMIT" bash -c "cd '$src/kindnetd' && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -o '$NODE_BIN/kindnetd' ./cmd/kindnetd"
  fi
  stamp_set kindnetd "$version"
}

build_node_binaries() {
  build_kind
  build_crictl
  build_cni_plugins
  build_coredns
  build_kindnetd
}
