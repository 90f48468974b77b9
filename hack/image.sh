#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds blixt's image without Docker, the same image the Dockerfile describes:
#   1. a Debian bookworm root filesystem (debootstrap, packages from hack/image/packages.txt),
#      cached and rebuilt only when that list changes;
#   2. the app (hack/image/stage-app.sh: Node.js, Pepr module, node_modules, BPF objects);
#   3. hack/image/finalize.sh run inside it (chroot), then a smoke test of every role;
#   4. an OCI image archive written by umoci, its index naming the image for containerd.
# Prints the archive path; load it with `hack/cluster.sh import ARCHIVE` or
# `ctr -n k8s.io images import ARCHIVE`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

usage() {
  cat <<USAGE
usage: hack/image.sh [--tag NAME:TAG] [--out ARCHIVE] [--from-git REF] [--no-smoke]

  --tag NAME:TAG   image name in the archive (default blixt.dev/blixt:dev)
  --out ARCHIVE    where to write the OCI archive (default \$BLIXT_CACHE/image/blixt-TAG.oci.tar)
  --from-git REF   build from a commit (git archive) instead of the working tree
  --no-smoke       skip starting each role in the built root filesystem
Needs root (debootstrap, chroot), debootstrap and umoci (apt-get install debootstrap umoci).
USAGE
}

tag=blixt.dev/blixt:dev
out=""
from_git=""
smoke=1
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=${2:?--tag needs NAME:TAG}; shift 2 ;;
    --out) out=${2:?--out needs a path}; shift 2 ;;
    --from-git) from_git=${2:?--from-git needs a ref}; shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

die() { echo "image: $*" >&2; exit 1; }
step() { echo "image: [$(date -u +%T)] $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root: debootstrap and chroot need it"
for tool in debootstrap umoci; do
  command -v "$tool" >/dev/null || die "$tool not found; install it: apt-get install $tool"
done
case $tag in
  *:*) image_tag=${tag##*:} ;;
  *) die "--tag $tag: give NAME:TAG, e.g. blixt.dev/blixt:dev" ;;
esac
[[ $image_tag =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || die "--tag $tag: \"$image_tag\" is not a valid image tag"

cache=${BLIXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt}
export BLIXT_CACHE=$cache
mkdir -p "$cache/image"
out=${out:-$cache/image/blixt-$image_tag.oci.tar}

# The Debian mirror is the one this machine's apt already uses (deb822 .sources first, then
# the one-line format), so the build works wherever apt does.
debian_mirror() {
  local uri
  uri=$(awk 'tolower($1)=="uris:" {u=$2} tolower($1)=="suites:" && / bookworm( |$)/ {print u; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 ~ / bookworm / {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "no Debian bookworm mirror in /etc/apt/sources.list{,.d}; add one or set DEBIAN_MIRROR"
  echo "$uri"
}

packages_file=hack/image/packages.txt
packages=$(grep -v '^\s*#' "$packages_file" | tr -s ' \n' '\n' | sed '/^$/d' | paste -sd, -)
[ -n "$packages" ] || die "$packages_file lists no package"
rootfs_key=$(sha256sum "$packages_file" | cut -c1-16)
base="$cache/image/rootfs-bookworm-$rootfs_key"
if [ ! -f "$base/.complete" ]; then
  mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
  step "debootstrap bookworm (minbase + $packages) from $mirror; once per package list"
  rm -rf "$base.tmp"
  debootstrap --variant=minbase --include="$packages" bookworm "$base.tmp" "$mirror" \
    | sed -u 's/^/image: debootstrap: /' >&2
  touch "$base.tmp/.complete"
  rm -rf "$base"
  mv "$base.tmp" "$base"
  # Root filesystems of older package lists are dead weight.
  find "$cache/image" -maxdepth 1 -name 'rootfs-bookworm-*' ! -path "$base" -exec rm -rf {} +
else
  step "reusing Debian root filesystem $base"
fi

work=$(mktemp -d "$cache/image/build.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

src=$repo
if [ -n "$from_git" ]; then
  step "exporting $from_git"
  mkdir "$work/src"
  git archive "$from_git" | tar -x -C "$work/src"
  ln -s "$repo/node_modules" "$work/src/node_modules"
  src=$work/src
fi

step "staging the app from $src"
hack/image/stage-app.sh "$src" "$work/app"

step "assembling the root filesystem"
rootfs=$work/rootfs
cp -a "$base" "$rootfs"
rm -f "$rootfs/.complete"
cp -a "$work/app/." "$rootfs/"
cp hack/image/finalize.sh "$rootfs/finalize.sh"
chroot "$rootfs" /bin/sh /finalize.sh >&2
rm -f "$rootfs/finalize.sh"

# Each role must get as far as talking to Kubernetes; with no cluster in reach that is where
# it stops. Anything earlier (a missing file, a module that does not load) fails the build.
# It runs in a network namespace of its own (nothing listens on the host, nothing is
# reachable), with a throwaway certificate where the chart mounts the real one and a
# kubeconfig naming an API server that is not there. Admission and controller run as the
# image's user; the agent runs as root, as in the chart, with a private bpffs and mount
# namespace, and really loads the BPF objects and attaches them to its namespace's lo.
smoke_role() { # smoke_role ROLE PEPR_WATCH_MODE USERSPEC [VAR=VALUE...]
  local role=$1 watch=$2 user=$3 log=$work/smoke-$1.log
  shift 3
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  timeout 30 unshare --net --mount --propagation private sh -c '
    rootfs=$1; user=$2; shift 2
    mkdir -p "$rootfs/sys/fs/bpf" && mount -t bpf bpf "$rootfs/sys/fs/bpf" && ip link set lo up &&
      exec chroot --userspec="$user" "$rootfs" /usr/bin/env -i "$@"' smoke "$rootfs" "$user" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/app \
    BLIXT_ROLE="$role" PEPR_WATCH_MODE="$watch" NODE_NAME=smoke PEPR_API_PATH=smoke LOG_LEVEL=debug \
    SSL_KEY_PATH=/tmp/smoke/tls.key SSL_CERT_PATH=/tmp/smoke/tls.crt KUBECONFIG=/tmp/smoke/kubeconfig \
    BLIXT_BPF_DIR=/app/bpf "$@" /usr/local/bin/node /app/dist/module.cjs >"$log" 2>&1 || true
  local reached
  # kubernetes-fluent-client reports a refused connection as "fetch failed".
  reached=$(grep -oE '(ECONNREFUSED|ENETUNREACH|EHOSTUNREACH|fetch failed)' "$log" | head -n1 || true)
  # The agent attaches first, then lists DataplaneConfigs; that failing stops it.
  if [ -z "$reached" ] && grep -q '"dataplane attached"' "$log" && grep -q 'node agent failed to start' "$log"; then
    reached="listing DataplaneConfigs failed after the dataplane attached"
  fi
  if [ -n "$reached" ] && ! grep -qE 'Cannot find module|ERR_MODULE_NOT_FOUND|SyntaxError|ENOENT|is not a role|needs PEPR_WATCH_MODE' "$log"; then
    step "smoke: role $role loads and stops at the Kubernetes API ($reached)"
  else
    cat "$log" >&2
    die "smoke: role $role failed before reaching Kubernetes (log above)"
  fi
}
if [ "$smoke" = 1 ]; then
  mkdir -p "$rootfs/tmp/smoke"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=smoke \
    -keyout "$rootfs/tmp/smoke/tls.key" -out "$rootfs/tmp/smoke/tls.crt" 2>/dev/null
  chmod 0644 "$rootfs/tmp/smoke/tls.key"
  cat >"$rootfs/tmp/smoke/kubeconfig" <<'KUBECONFIG'
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: none, user: {token: smoke}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
KUBECONFIG
  smoke_role admission false 65532:65532
  smoke_role controller true 65532:65532
  smoke_role agent true 0:0 BLIXT_INTERFACE=lo BLIXT_ATTACH_MODE=tc
  grep -q '"dataplane attached"' "$work/smoke-agent.log" ||
    die "smoke: the agent did not attach its programs to lo: $(grep -m1 -i error "$work/smoke-agent.log")"
  step "smoke: the agent loaded the BPF objects and attached them (private bpffs, lo)"
  # The chart's uninstall hook runs the blixt command; its bundle must load in the image.
  for sub in detach-all detach-node; do
    chroot --userspec=65532:65532 "$rootfs" /usr/bin/env -i HOME=/app /usr/local/bin/blixt uninstall "$sub" --help >/dev/null ||
      die "smoke: blixt uninstall $sub --help failed in the image"
  done
  step "smoke: blixt uninstall (the chart's pre-delete hook) loads"
  rm -rf "$rootfs/tmp/smoke"
  echo "image: smoke: bpftool in the image: $(chroot "$rootfs" bpftool version | head -n1)" >&2
fi

# The commit the image was built from; a working tree with changes says so.
revision=$(git rev-parse "${from_git:-HEAD}" 2>/dev/null || echo unknown)
if [ -z "$from_git" ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then revision=$revision-dirty; fi

step "writing the OCI image with umoci"
layout=$work/oci
umoci init --layout "$layout"
umoci new --image "$layout:$image_tag"
umoci insert --image "$layout:$image_tag" --history.created_by "hack/image.sh" "$rootfs" /
# The same config as the Dockerfile's: non-root by default (the agent's pod overrides it),
# the module as the command, so `node /app/dist/module.cjs` runs whatever BLIXT_ROLE says.
umoci config --image "$layout:$image_tag" \
  --config.user 65532:65532 \
  --config.workingdir /app \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env NODE_ENV=production \
  --config.env BLIXT_BPF_DIR=/app/bpf \
  --config.entrypoint /usr/local/bin/node \
  --config.cmd /app/dist/module.cjs \
  --config.label org.opencontainers.image.title=blixt \
  --config.label org.opencontainers.image.licenses="Apache-2.0 AND GPL-2.0-only" \
  --config.label org.opencontainers.image.revision="$revision" \
  --architecture amd64 --os linux \
  --history.created_by "hack/image.sh (config)"
umoci gc --layout "$layout"
# containerd names an imported image after this annotation on the index entry.
# shellcheck disable=SC2016 # JavaScript template literals, not shell
node -e '
  const fs = require("fs");
  const [file, tag, name] = process.argv.slice(1);
  const index = JSON.parse(fs.readFileSync(file, "utf8"));
  const entry = index.manifests.find(m => m.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!entry) throw new Error(`${file}: no manifest tagged ${tag}`);
  entry.annotations["io.containerd.image.name"] = name;
  fs.writeFileSync(file, JSON.stringify(index));
' "$layout/index.json" "$image_tag" "$tag"

mkdir -p "$(dirname "$out")"
tar -C "$layout" -cf "$out.tmp" .
mv "$out.tmp" "$out"
step "image $tag: $(du -h "$out" | cut -f1), manifest $(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1])).manifests[0].digest' "$layout/index.json")"
step "load it: hack/cluster.sh import $out   (or: ctr -n k8s.io images import $out)"
echo "$out"
