# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# The images kind needs, built here without a registry: a Debian image (debootstrap +
# docker import), kind's base image (hack/kind/base), the control-plane and add-on images
# kubeadm and kind deploy, and the node image holding them all. Each is rebuilt only when its
# inputs change (a hash in the image's label dev.blixt.key). Sourced by hack/kind.sh.

kind_module_dir() {
  go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir
}

# The Debian mirror this machine's apt uses (deb822 sources first, then sources.list).
debian_mirror() {
  local uri
  uri=$(awk 'tolower($1)=="uris:" {u=$2} tolower($1)=="suites:" && / bookworm( |$)/ {print u; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1=="deb" && $0 ~ / bookworm / {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [[ -n $uri ]] || kdie "no Debian bookworm mirror in /etc/apt/sources.list{,.d}; set DEBIAN_MIRROR"
  echo "$uri"
}

# A plain Debian bookworm (minbase) image. The Dockerfile's docker.io/library/debian:bookworm-slim
# cannot be pulled here, so this image also stands in under that name.
build_debian_image() {
  local key rootfs=$KIND_DIR/rootfs-minbase
  key=$(hash_of debootstrap-minbase-bookworm)
  if [[ $(image_key "$DEBIAN_IMAGE") != "$key" ]]; then
    if [[ ! -f $rootfs/.complete ]]; then
      ensure_debs debootstrap
      local mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
      klog "debootstrap bookworm (minbase) from $mirror"
      rm -rf "$rootfs.tmp"
      debootstrap --variant=minbase bookworm "$rootfs.tmp" "$mirror" >"$KIND_DIR/debootstrap.log" 2>&1 ||
        kdie "debootstrap failed (log: $KIND_DIR/debootstrap.log)"
      rm -rf "$rootfs" && mv "$rootfs.tmp" "$rootfs" && touch "$rootfs/.complete"
    fi
    tar -C "$rootfs" --exclude=./.complete -c . |
      docker import -c 'CMD ["/bin/bash"]' -c "LABEL dev.blixt.key=$key" - "$DEBIAN_IMAGE" >/dev/null ||
      kdie "docker import of the Debian root filesystem failed"
  fi
  [[ $(docker image inspect -f '{{.Id}}' docker.io/library/debian:bookworm-slim 2>/dev/null) == \
    "$(docker image inspect -f '{{.Id}}' "$DEBIAN_IMAGE")" ]] ||
    docker tag "$DEBIAN_IMAGE" docker.io/library/debian:bookworm-slim
}

# kind's base image: hack/kind/base/Dockerfile on kind's own base files.
build_base_image() {
  local kdir ctx key b
  kdir=$(kind_module_dir)
  [[ -d $kdir/images/base/files ]] || kdie "kind module $KIND_VERSION has no images/base/files"
  key=$(hash_of "$HACK_KIND/base/Dockerfile" "$HACK_KIND/base/bpffs.service" "$(image_key "$DEBIAN_IMAGE")" "$PAUSE_IMAGE" \
    "$CONTAINERD_VERSION $RUNC_VERSION $CRICTL_VERSION $CNI_PLUGINS_VERSION $KIND_VERSION")
  [[ $(image_key "$BASE_IMAGE") == "$key" ]] && return 0
  ctx=$(mktemp -d "$KIND_DIR/ctx.XXXXXX")
  mkdir -p "$ctx/bin" "$ctx/cni"
  cp -a "$kdir/images/base/files" "$ctx/files"
  chmod -R u+w "$ctx/files"
  rm -rf "$ctx/files/LICENSES"
  for b in containerd containerd-shim-runc-v2 ctr runc; do cp "$BIN_DIR/$b" "$ctx/bin/"; done
  cp "$NODE_BIN/crictl" "$ctx/bin/"
  for b in host-local loopback ptp portmap; do cp "$NODE_BIN/$b" "$ctx/cni/"; done
  cp "$HACK_KIND/base/bpffs.service" "$ctx/"
  # --network host: the engine routes nothing for containers (daemon.json), apt needs the mirror.
  docker build --network host --label "dev.blixt.key=$key" --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" \
    --build-arg "PAUSE_IMAGE=$PAUSE_IMAGE" -t "$BASE_IMAGE" -f "$HACK_KIND/base/Dockerfile" "$ctx" >&2 ||
    { rm -rf "$ctx"; kdie "building $BASE_IMAGE failed"; }
  rm -rf "$ctx"
}

# Debian with the netfilter tools, under kube-proxy (its upstream image sits on
# distroless-iptables).
NET_IMAGE=blixt.local/debian-iptables:bookworm
build_net_image() {
  local key
  key=$(hash_of "$(image_key "$DEBIAN_IMAGE")" iptables-nftables-conntrack-ipset)
  [[ $(image_key "$NET_IMAGE") == "$key" ]] && return 0
  docker build --network host --label "dev.blixt.key=$key" -t "$NET_IMAGE" - >&2 <<DOCKERFILE || kdie "building $NET_IMAGE failed"
FROM $DEBIAN_IMAGE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables nftables conntrack ipset \
 && rm -rf /var/lib/apt/lists/*
DOCKERFILE
}

# component_image NAME FROM BINARY DEST [ENTRYPOINT-JSON]: BINARY at DEST in an image on FROM.
component_image() {
  local name=$1 from=$2 binary=$3 dest=$4 entry=${5:-} key ctx
  key=$(hash_of "$binary" "$from $(image_key "$from") $dest $entry")
  [[ $(image_key "$name") == "$key" ]] && return 0
  ctx=$(mktemp -d "$KIND_DIR/ctx.XXXXXX")
  cp "$binary" "$ctx/bin"
  {
    echo "FROM $from"
    echo "COPY bin $dest"
    echo "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    [[ -n $entry ]] && echo "ENTRYPOINT $entry"
  } >"$ctx/Dockerfile"
  docker build --label "dev.blixt.key=$key" -t "$name" "$ctx" >/dev/null || { rm -rf "$ctx"; kdie "building $name failed"; }
  rm -rf "$ctx"
  klog "built image $name"
}

# The images the node image holds: those kubeadm deploys, each made from a binary built here,
# and the pod network's (hack/kind/podnet.sh). etcd and the pause image are the versions
# hack/cluster builds; the kind config tells kubeadm etcd's tag, and containerd's sandbox_image
# names the pause image.
CONTROL_PLANE_IMAGES=()
build_component_images() {
  local k=registry.k8s.io b
  build_net_image
  build_podnet_image
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    component_image "$k/$b:$K8S_VERSION" scratch "$BIN_DIR/$b" "/usr/local/bin/$b"
  done
  component_image "$k/kube-proxy:$K8S_VERSION" "$NET_IMAGE" "$BIN_DIR/kube-proxy" /usr/local/bin/kube-proxy
  component_image "$k/etcd:$ETCD_IMAGE_TAG" scratch "$BIN_DIR/etcd" /usr/local/bin/etcd
  component_image "$k/coredns/coredns:$COREDNS_VERSION" scratch "$NODE_BIN/coredns" /coredns '["/coredns"]'
  component_image "$PAUSE_IMAGE" scratch "$SRC_DIR/images-out/pause" /pause '["/pause"]'
  CONTROL_PLANE_IMAGES=("$k/kube-apiserver:$K8S_VERSION" "$k/kube-controller-manager:$K8S_VERSION"
    "$k/kube-scheduler:$K8S_VERSION" "$k/kube-proxy:$K8S_VERSION" "$k/etcd:$ETCD_IMAGE_TAG"
    "$k/coredns/coredns:$COREDNS_VERSION" "$PAUSE_IMAGE" "$PODNET_IMAGE")
}

# /kind/manifests/default-cni.yaml: kind applies it at cluster creation unless the kind config
# says networking.disableDefaultCNI, which hack/kind.sh's does (the pod network is
# hack/kind/podnet.sh's DaemonSet, applied after kind create). kind's own manifest names the
# kindnetd image, which is not built here; this one holds no object.
default_cni_manifest() {
  cat <<YAML
# No default CNI in this node image: create clusters with networking.disableDefaultCNI: true
# and install a pod network (hack/kind.sh applies kube-system/blixt-podnet).
YAML
}

# The node image, assembled as `kind build node-image` does (its builder cannot be used here:
# it fetches every image it did not build itself from a registry): a container of the base
# image, kubeadm/kubelet/kubectl in /usr/bin, /kind/version, a CNI manifest without objects, every image
# imported into the node's containerd, then docker commit. No storage manifest: kind falls back
# to its built-in host-path StorageClass, which needs no image.
build_node_image() {
  local key img ids=()
  for img in "${CONTROL_PLANE_IMAGES[@]}"; do ids+=("$(docker image inspect -f '{{.Id}}' "$img")"); done
  key=$(hash_of "$(image_key "$BASE_IMAGE")" "$BIN_DIR/kubeadm" "$BIN_DIR/kubelet" "$BIN_DIR/kubectl" \
    "$(default_cni_manifest)" "${CONTROL_PLANE_IMAGES[*]}" "${ids[*]}")
  [[ $(image_key "$NODE_IMAGE") == "$key" ]] && return 0
  # In a subshell, so that the build container goes away on every exit, kdie's included.
  (
    local id=blixt-kind-build-$$
    trap 'docker rm -f -v "$id" >/dev/null 2>&1 || true' EXIT
    assemble_node_image "$key" "$id"
  ) || exit 1
}

assemble_node_image() {
  local key=$1 id=$2 img
  docker rm -f "$id" >/dev/null 2>&1 || true
  docker run -d --name "$id" --entrypoint=sleep --security-opt seccomp=unconfined "$BASE_IMAGE" infinity >/dev/null ||
    kdie "could not start a build container from $BASE_IMAGE"
  local b
  for b in kubeadm kubelet kubectl; do
    docker cp "$BIN_DIR/$b" "$id:/usr/bin/$b" || kdie "copying $b into the node image failed"
    docker exec "$id" chown root:root "/usr/bin/$b"
  done
  printf '%s' "$K8S_VERSION" | docker exec -i "$id" cp /dev/stdin /kind/version
  docker exec "$id" mkdir -p /kind/manifests
  default_cni_manifest | docker exec -i "$id" cp /dev/stdin /kind/manifests/default-cni.yaml
  # The images kubeadm will ask for must be exactly those imported below.
  local want have
  want=$(docker exec -i "$id" kubeadm config images list --config /dev/stdin <<<"$(kubeadm_images_config)" | grep -v pause | sort)
  have=$(printf '%s\n' "${CONTROL_PLANE_IMAGES[@]}" | grep -v -e pause -e podnet | sort)
  [[ $want == "$have" ]] || kdie "kubeadm $K8S_VERSION wants images $(echo "$want" | tr '\n' ' ') but this script builds $(echo "$have" | tr '\n' ' ')"
  docker exec "$id" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &'
  docker exec "$id" bash -c 'for i in $(seq 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /tmp/containerd.log; exit 1' ||
    kdie "containerd did not start in the build container"
  for img in "${CONTROL_PLANE_IMAGES[@]}"; do
    docker save "$img" | docker exec -i "$id" ctr --namespace=k8s.io images import \
      --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null ||
      kdie "importing $img into the node image failed"
  done
  # --digests also names each image import-DATE@DIGEST; the real names are enough.
  docker exec "$id" bash -c 'ctr --namespace=k8s.io images list -q | grep "^import-" | xargs -r ctr --namespace=k8s.io images rm >/dev/null'
  docker exec "$id" ctr --namespace=k8s.io images list -q | grep -v '^sha256:' >&2
  docker exec "$id" pkill -x containerd
  # The build container's PID 1 is sleep, which reaps nobody: a stopped containerd stays a
  # zombie, so wait for no live one.
  docker exec "$id" bash -c 'for i in $(seq 100); do ps -C containerd -o stat= | grep -qv Z || exit 0; sleep 0.2; done; exit 1' ||
    kdie "containerd did not stop in the build container"
  docker exec "$id" rm -f /tmp/containerd.log
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change "LABEL dev.blixt.key=$key" "$id" "$NODE_IMAGE" >/dev/null || kdie "docker commit of $NODE_IMAGE failed"
  klog "built node image $NODE_IMAGE"
}

# The part of kind's kubeadm configuration that changes which images kubeadm wants.
kubeadm_images_config() {
  cat <<YAML
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $K8S_VERSION
etcd:
  local:
    imageTag: $ETCD_IMAGE_TAG
YAML
}
