# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Images the cluster needs without a registry: the pause image containerd's CRI defaults
# to, and a tiny TCP/UDP echo server for smoke tests. Built from hack/cluster/images (Go,
# static), packed as OCI archives with umoci. Sourced by hack/cluster.sh.

ECHO_IMAGE=blixt.local/echo:v1

# oci_pack NAME BINARY ENTRYPOINT OUT.tar: a one-layer image holding BINARY at /ENTRYPOINT,
# written as an OCI layout archive that `ctr images import` names NAME.
oci_pack() {
  local name=$1 binary=$2 entry=$3 out=$4 work tag=${1##*:}
  work=$(mktemp -d)
  umoci init --layout "$work/layout" &&
    umoci new --image "$work/layout:$tag" &&
    umoci unpack --image "$work/layout:$tag" "$work/bundle" >/dev/null &&
    install -m 0755 "$binary" "$work/bundle/rootfs/$entry" &&
    umoci repack --image "$work/layout:$tag" "$work/bundle" &&
    umoci config --image "$work/layout:$tag" --os linux --architecture amd64 \
      --config.entrypoint "/$entry" --config.workingdir / &&
    umoci gc --layout "$work/layout" || { rm -rf "$work"; die "packing image $name failed"; }
  # containerd names an imported image after this annotation; umoci only writes the tag.
  python3 - "$work/layout/index.json" "$name" <<'PY' || { rm -rf "$work"; die "annotating image $name failed"; }
import json, sys
path, name = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for manifest in index["manifests"]:
    manifest.setdefault("annotations", {})["io.containerd.image.name"] = name
json.dump(index, open(path, "w"))
PY
  tar -C "$work/layout" -cf "$out.tmp" . && mv -f "$out.tmp" "$out"
  rm -rf "$work"
}

build_images() {
  local src=$HACK_CLUSTER/images version
  # Rebuild when the sources, the pinned names or the Go toolchain change.
  version="$PAUSE_IMAGE $ECHO_IMAGE $(go env GOVERSION) $(cat "$src"/go.mod "$src"/*/main.go | sha256sum | cut -c1-16)"
  stamp_ok images "$version" && [[ -f $IMAGE_DIR/pause.tar && -f $IMAGE_DIR/echo.tar ]] && return 0
  local start=$SECONDS out=$SRC_DIR/images-out
  log "building images $PAUSE_IMAGE and $ECHO_IMAGE ..."
  mkdir -p "$out" "$IMAGE_DIR"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/" ./pause ./echo) ||
    die "building the image binaries in hack/cluster/images failed"
  oci_pack "$PAUSE_IMAGE" "$out/pause" pause "$IMAGE_DIR/pause.tar"
  oci_pack "$ECHO_IMAGE" "$out/echo" echo "$IMAGE_DIR/echo.tar"
  stamp_set images "$version"
  log "built images in $((SECONDS - start)) s: $IMAGE_DIR/{pause,echo}.tar"
}

# image_import ARCHIVE [ctr import flags...]: load an OCI (or docker-save) archive into the
# node's containerd, in the namespace the kubelet uses.
image_import() {
  local archive=$1
  shift
  [[ -f $archive ]] || die "image archive $archive not found"
  [[ -S $CONTAINERD_SOCK ]] || die "containerd is not running (start the cluster with: hack/cluster.sh up)"
  "$BIN_DIR/ctr" --address "$CONTAINERD_SOCK" -n k8s.io images import "$@" "$archive" >&2 ||
    die "importing $archive failed; an OCI archive needs the io.containerd.image.name annotation in index.json (or pass --base-name / --index-name)"
}
