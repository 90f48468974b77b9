#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the upstream Gateway API conformance suite (profiles GATEWAY-TCP and GATEWAY-UDP)
# against blixt on the local cluster (hack/cluster.sh), from the root network namespace, as
# a CI runner would: the suite reaches each Gateway at the address in its status.
#
# It builds the suite's test binary and the images its manifests name (cached; rebuilt only
# when a version changes), imports the images into the cluster, runs the suite, writes the
# report and conformance/RESULTS.md, and fails when a claimed test (every core test, and every
# test of a feature in conformance/extended-features.txt) or one on conformance/passing-tests.txt
# does not pass. On the local cluster (the default) the one command does it all: it brings the
# cluster up when it is not (hack/install.sh, which also builds blixt's image when its sources
# changed and installs the chart when the release differs), and prints the time of each phase
# at the end. Run as root.
set -euo pipefail
# Builds run inside $(...); without this a failed step there would not stop the script.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: hack/conformance.sh [COMMAND] [OPTIONS]

commands:
  run        (default) build, import the images, run the suite, write the report and
             RESULTS.md, and check the claimed and recorded tests
  build      build the harness and the images (no cluster needed)
  build-images
             build only the images; prints their archive paths (no cluster needed)
  images     build the images and import them into the local cluster
  results    rewrite RESULTS.md from the last run, or from the catalogue alone (no cluster)
  catalogue  build the harness and print the path of the catalogue of the suite's
             GATEWAY-TCP/GATEWAY-UDP tests (JSON; no cluster)

options (run):
  --record             add this run's passing claimed tests to conformance/passing-tests.txt
  --retry              when a claimed test fails, run the suite once more and judge both runs:
                       failed then passed is flaky (reported), failed twice fails (CI does)
  --features LIST      extended features to try in this run besides those of
                       conformance/extended-features.txt (comma-separated); their tests
                       are shown, and required only once the feature is claimed there
  --run-test NAME      run one test of the suite (no report is kept)
  --kubeconfig FILE    a cluster other than hack/cluster.sh's (images are then not imported)
  --channel CHANNEL    the Gateway API release channel to run against: standard (default) or
                       experimental. experimental installs that channel's CRDs (the bundle
                       in hack/gateway-api/, or DIR/config/crd/experimental with
                       --gateway-api-dir), runs, and puts the standard ones back; each
                       channel has its report and RESULTS file (RESULTS-experimental.md),
                       and the README's table a column per channel
  --kind               the multi-node kind cluster of hack/kind.sh (images are loaded into
                       its nodes; the static addresses come from its pool)
  --no-install         on the local cluster, run against the blixt installed there as it
                       is (the cluster must be up). Without it hack/install.sh runs first:
                       the cluster up if it is not, blixt's image built when its sources
                       changed, the chart upgraded when the release differs (a few seconds
                       when nothing changed). --install, the old spelling, is the default

options (every command but results):
  --gateway-api-dir DIR
                       the suite from a local checkout of the gateway-api repository (a
                       change under review) instead of the module test/conformance/go.mod
                       pins: the harness is built in a copy whose go.mod replaces both
                       modules with DIR and DIR/conformance; blixt's files are not changed.
                       The report and RESULTS.md go into the run's directory, name the tree
                       (git commit, uncommitted changes) and are judged against blixt's
                       claims as usual. DIR's CRDs (config/crd/<channel>) are installed
                       for the run (the suite refuses CRDs of another version), and the
                       cluster's own are put back after.

environment: BLIXT_CACHE (cache dir), BLIXT_CONFORMANCE_USABLE_ADDRESS and
BLIXT_CONFORMANCE_UNUSABLE_ADDRESS (GatewayStaticAddresses: an address inside and one
outside blixt's address pool), BLIXT_GATEWAY_CLASS (default blixt).
USAGE
}

BLIXT_CACHE=${BLIXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt}
CACHE=$BLIXT_CACHE/conformance
HARNESS_DIR=test/conformance
CATALOGUE=$CACHE/catalogue.json
PASSING=conformance/passing-tests.txt
EXTENDED=conformance/extended-features.txt
RESULTS=conformance/RESULTS.md
GATEWAY_CLASS=${BLIXT_GATEWAY_CLASS:-blixt}
# GatewayStaticAddresses needs one address blixt can use and one it cannot: the local
# cluster's last pool address (hack/cluster/lib.sh; the allocator hands out the first free
# one, so the last stays free) and 198.18.1.1, outside the pool.
pool_last=$(bash -c 'source hack/cluster/lib.sh 2>/dev/null && echo "${GATEWAY_POOL_LAST:-}"' || true)
USABLE_ADDRESS=${BLIXT_CONFORMANCE_USABLE_ADDRESS:-${pool_last:-198.18.0.199}}
UNUSABLE_ADDRESS=${BLIXT_CONFORMANCE_UNUSABLE_ADDRESS:-198.18.1.1}

# --gateway-api-dir: set by use_local_tree.
GATEWAY_API_DIR="" LOCAL_VERSION="" SUITE_SOURCE=""
# --channel; each channel's results file, for the README's columns.
CHANNEL=standard
CHANNEL_RESULTS=(standard=conformance/RESULTS.md experimental=conformance/RESULTS-experimental.md)

log() { printf '[conformance %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The time of each phase of a run, printed when it ends (also when it fails).
PHASES=() PHASE_NAME="" PHASE_START=$SECONDS RUN_START=$SECONDS TIME_PHASES=""
phase() {
  [[ -z $PHASE_NAME ]] || PHASES+=("$PHASE_NAME $((SECONDS - PHASE_START)) s")
  PHASE_NAME=$1 PHASE_START=$SECONDS
}
print_phases() {
  [[ -n $TIME_PHASES ]] || return 0
  phase ""
  local line
  log "time per phase (total $((SECONDS - RUN_START)) s):"
  for line in "${PHASES[@]}"; do printf '    %s\n' "$line" >&2; done
}

# The cluster's own CRDs (hack/cluster/lib.sh; hack/kind.sh installs the same), and whether a
# run installed others (another channel, a local tree's): the exit puts the cluster's back.
CLUSTER_CRDS=$(bash -c 'source hack/cluster/lib.sh 2>/dev/null && echo "${GATEWAY_API_CRDS:-}"' || true)
RESTORE_CRDS=""
on_exit() {
  if [[ -n $RESTORE_CRDS ]]; then
    phase "the cluster's own CRDs back"
    use_crds standard "$CLUSTER_CRDS" || log "warning: putting $CLUSTER_CRDS back failed"
  fi
  print_phases
}
trap on_exit EXIT

need() {
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null || die "$cmd not found: install it (Debian: apt-get install umoci jq; Go from go.dev)"
  done
}

# The suite's version and source directory, as the harness's go.mod pins them (or the local
# tree of --gateway-api-dir).
suite_version() {
  if [[ -n $GATEWAY_API_DIR ]]; then printf '%s\n' "$LOCAL_VERSION"; return; fi
  (cd "$HARNESS_DIR" && go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api/conformance)
}
suite_dir() {
  if [[ -n $GATEWAY_API_DIR ]]; then printf '%s\n' "$GATEWAY_API_DIR/conformance"; return; fi
  (cd "$HARNESS_DIR" && go mod download sigs.k8s.io/gateway-api/conformance &&
    go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api/conformance)
}

# use_local_tree DIR points the harness at a local gateway-api checkout: a copy of the
# harness (cached per tree content) whose go.mod replaces sigs.k8s.io/gateway-api and its
# conformance module with DIR. Sets HARNESS_DIR, CATALOGUE, LOCAL_VERSION and SUITE_SOURCE.
use_local_tree() {
  local dir hash commit copy
  [[ -d $1 ]] || die "--gateway-api-dir $1: no such directory (give a checkout of the gateway-api repository)"
  dir=$(cd "$1" && pwd)
  grep -qx 'module sigs.k8s.io/gateway-api' "$dir/go.mod" 2>/dev/null ||
    die "--gateway-api-dir $dir: its go.mod is not module sigs.k8s.io/gateway-api (give the root of a gateway-api checkout)"
  grep -qx 'module sigs.k8s.io/gateway-api/conformance' "$dir/conformance/go.mod" 2>/dev/null ||
    die "--gateway-api-dir $dir: conformance/go.mod is not module sigs.k8s.io/gateway-api/conformance (a tree older than v1.5 keeps the suite in the root module: not supported)"
  # What the build reads: Go sources, go.mod/go.sum, the suite's manifests and data.
  hash=$(cd "$dir" && find . -path ./.git -prune -o -type f \( -name '*.go' -o -name '*.yaml' \
    -o -name 'go.mod' -o -name 'go.sum' -o -name '.go.mod' -o -name '.go.sum' \) -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
  if commit=$(git -C "$dir" rev-parse --short=12 HEAD 2>/dev/null); then
    SUITE_SOURCE="the local gateway-api tree $dir at commit $commit"
    [[ -z $(git -C "$dir" status --porcelain 2>/dev/null) ]] || SUITE_SOURCE+=" with uncommitted changes"
  else
    SUITE_SOURCE="the local gateway-api tree $dir (not a git checkout)"
  fi
  SUITE_SOURCE+=", content $hash, instead of the pinned module $(suite_version)"
  GATEWAY_API_DIR=$dir LOCAL_VERSION=local-$hash
  copy=$CACHE/harness-$LOCAL_VERSION
  if [[ ! -f $copy/go.sum ]]; then
    log "preparing the harness for $dir (a copy of $HARNESS_DIR with both modules replaced)"
    rm -rf "$copy.tmp" && mkdir -p "$copy.tmp"
    cp "$HARNESS_DIR"/*.go "$HARNESS_DIR/go.mod" "$HARNESS_DIR/go.sum" "$copy.tmp/"
    (cd "$copy.tmp" &&
      go mod edit -replace "sigs.k8s.io/gateway-api=$dir" -replace "sigs.k8s.io/gateway-api/conformance=$dir/conformance" &&
      go mod tidy) >&2 || die "the harness does not resolve its modules against $dir (go mod tidy failed above)"
    rm -rf "$copy" && mv "$copy.tmp" "$copy"
  fi
  HARNESS_DIR=$copy CATALOGUE=$CACHE/catalogue-$LOCAL_VERSION.json
  log "suite: $SUITE_SOURCE"
}

# Every image the suite's manifests name; what the suite deploys is read, never assumed.
suite_images() {
  local dir=$1
  grep -hoE 'image: *[^ ]+' "$dir"/base/manifests.yaml "$dir"/tests/*.yaml | sed 's/image: *//' | sort -u
}

build_harness() {
  local version=$1 bin=$CACHE/bin/gateway-conformance-$1.test
  mkdir -p "$CACHE/bin"
  # go test -c is itself incremental: a rebuild with nothing changed only relinks if needed.
  log "building the harness (sigs.k8s.io/gateway-api/conformance $version)"
  (cd "$HARNESS_DIR" && go vet ./... && go test -c -o "$bin" .)
  log "writing the GATEWAY-TCP/GATEWAY-UDP test catalogue"
  "$bin" -test.run '^TestWriteCatalogue$' -catalogue-output "$CATALOGUE" >/dev/null
  printf '%s\n' "$bin"
}

# echo-basic serves every echo-basic tag the manifests name (its TCP and UDP echo modes are
# switched by TCP_ECHO_SERVER / UDP_ECHO_SERVER). The module ships its go.mod hidden as .go.mod.
build_echo_basic() {
  local version=$1 dir=$2 bin=$CACHE/bin/echo-basic-$1
  if [[ -x $bin ]]; then printf '%s\n' "$bin"; return; fi
  log "building echo-basic from the suite module $version"
  local src=$CACHE/src/echo-basic-$version
  rm -rf "$src" && mkdir -p "$CACHE/src" && cp -r "$dir/echo-basic" "$src" && chmod -R u+w "$src"
  [[ -f $src/go.mod ]] || { mv "$src/.go.mod" "$src/go.mod" && mv "$src/.go.sum" "$src/go.sum"; }
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" .) && mv "$bin.tmp" "$bin"
  printf '%s\n' "$bin"
}

build_coredns() {
  local version=$1 gobin=$CACHE/bin/coredns-$1
  if [[ -x $gobin/coredns ]]; then printf '%s\n' "$gobin/coredns"; return; fi
  log "building coredns $version (about 2-3 minutes cold)"
  mkdir -p "$gobin"
  (cd / && CGO_ENABLED=0 GOBIN=$gobin go install -trimpath "github.com/coredns/coredns@$version")
  printf '%s\n' "$gobin/coredns"
}

# umoci_layout LAYOUT:TAG NAME BINARY ENTRYPOINT... writes a one-layer image into an OCI
# layout. The layer is a tar written by GNU tar (umoci 0.4's `insert` leaves its tar without
# the final padding and end-of-archive blocks, which strict unpackers reject).
umoci_layout() {
  local image=$1 name=$2 binary=$3; shift 3
  local layout=${image%:*} staging
  staging=$(mktemp -d)
  install -D -m 0755 "$binary" "$staging/rootfs/${1#/}"
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name \
    -C "$staging/rootfs" -cf "$staging/layer.tar" .
  umoci init --layout "$layout"
  umoci new --image "$image"
  umoci raw add-layer --image "$image" "$staging/layer.tar"
  umoci config --image "$image" --os linux --architecture amd64 \
    "${@/#/--config.entrypoint=}" --config.workingdir / \
    --author blixt --history.comment "hack/conformance.sh: $name"
  # Each umoci step leaves the blobs it replaced behind; keep only what the image references.
  umoci gc --layout "$layout"
  rm -rf "$staging"
}

# oci_image NAME BINARY ENTRYPOINT... writes an OCI image archive holding BINARY at
# /ENTRYPOINT[0] and prints its path. The archive is rebuilt only when the binary changes.
# containerd names an imported image after the index annotation io.containerd.image.name.
oci_image() {
  local name=$1 binary=$2; shift 2
  local file tar stamp sum layout
  file=$(printf '%s' "$name" | tr '/:' '__')
  tar=$CACHE/images/$file.tar stamp=$CACHE/images/$file.stamp
  # The stamp names the layer format too, so a change to how images are written rebuilds them.
  sum="layer-v3 $(sha256sum "$binary" | cut -d' ' -f1) $*"
  if [[ -f $tar && -f $stamp && $(cat "$stamp") == "$sum" ]]; then printf '%s\n' "$tar"; return; fi
  log "writing image $name"
  layout=$(mktemp -d) && mkdir -p "$CACHE/images"
  umoci_layout "$layout/oci:latest" "$name" "$binary" "$@" >&2
  # The platform on the descriptor lets an importer match it without opening the config.
  jq --arg name "$name" --arg tag "${name##*:}" \
    '.manifests[0].annotations = {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": $tag}
     | .manifests[0].platform = {"architecture": "amd64", "os": "linux"}' \
    "$layout/oci/index.json" >"$layout/index.json" && mv "$layout/index.json" "$layout/oci/index.json"
  tar -C "$layout/oci" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf "$layout"
  printf '%s\n' "$sum" >"$stamp"
  printf '%s\n' "$tar"
}

# Builds every image the suite names and prints the archive paths; an image the harness
# does not know how to build stops here rather than failing later as ErrImagePull.
build_images() {
  local version=$1 dir=$2 image echo_basic="" coredns names
  names=$(suite_images "$dir")
  [[ -n $names ]] || die "found no image in the suite's manifests under $dir"
  for image in $names; do
    case $image in
      registry.k8s.io/gateway-api/echo-basic:*)
        echo_basic=${echo_basic:-$(build_echo_basic "$version" "$dir")}
        oci_image "$image" "$echo_basic" /echo-basic ;;
      registry.k8s.io/coredns/coredns:*)
        coredns=$(build_coredns "${image##*:}")
        oci_image "$image" "$coredns" /coredns ;;
      *) die "the suite's manifests name $image, which hack/conformance.sh cannot build; add a case for it" ;;
    esac
  done
}

# Installs blixt on the local cluster: its image (tagged by its sources, rebuilt only when they
# change) and its chart with the cluster's Gateway address pool. hack/install.sh does it all.
install_blixt() {
  log "installing blixt (hack/install.sh)"
  hack/install.sh
}

import_images() {
  local tar
  for tar in "$@"; do
    log "importing $(basename "$tar") into the local cluster"
    hack/cluster.sh import "$tar"
  done
}

claimed_features() {
  # Core features of both profiles, then the extended ones the last runs passed.
  local extended
  extended=$(sed 's/#.*//' "$EXTENDED" 2>/dev/null | tr -s ' \n' '\n' | sed '/^$/d' | paste -sd, -)
  printf 'Gateway,ReferenceGrant,TCPRoute,UDPRoute%s\n' "${extended:+,$extended}"
}

# write_results REPORT RECORD [EVENTS...]: RESULTS.md from the runs' events (in run order)
# and the check; exit status 1 when a claimed or recorded test passed in no run.
write_results() {
  local report=$1 record=$2 events
  shift 2
  local args=(--catalogue "$CATALOGUE" --passing "$PASSING" --extended-features "$EXTENDED" --results "$RESULTS" --channel "$CHANNEL")
  local other
  for other in "${CHANNEL_RESULTS[@]}"; do args+=(--channel-results "$other"); done
  for events in "$@"; do args+=(--events "$events"); done
  if [[ -n $GATEWAY_API_DIR ]]; then
    # A local tree's run: its files stay in the run's directory; the committed ones are untouched.
    args+=(--suite-source "$SUITE_SOURCE")
    [[ -n $report ]] && args+=(--report "$report" --report-link "$report")
  elif [[ -n $report ]]; then
    args+=(--report "$report" --report-link "${report#conformance/}" --readme README.md)
  fi
  [[ -n $record ]] && args+=(--record)
  npx --no-install tsx hack/conformance/report.ts "${args[@]}"
}

main() {
  local command=run record="" features="" run_test="" kubeconfig="" install="" no_install="" retry="" on_kind="" tree=""
  case ${1:-} in run|build|build-images|images|results|catalogue) command=$1; shift ;; -h|--help|help) usage; return ;; esac
  [[ $command == run ]] && TIME_PHASES=1
  while [[ $# -gt 0 ]]; do
    case $1 in
      --record) record=1 ;;
      --retry) retry=1 ;;
      --install) install=1 ;;
      --no-install) no_install=1 ;;
      --features) features=${2:?--features needs a comma-separated list}; shift ;;
      --run-test) run_test=${2:?--run-test needs a test name}; shift ;;
      --kubeconfig) kubeconfig=${2:?--kubeconfig needs a file}; shift ;;
      --kind) on_kind=1 ;;
      --gateway-api-dir) tree=${2:?--gateway-api-dir needs a directory}; shift ;;
      --channel) CHANNEL=${2:?--channel needs standard or experimental}; shift ;;
      -h|--help) usage; return ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
  done
  if [[ $command == run || $command == images || $command == build || $command == build-images ]]; then
    # A fresh clone: Debian packages (umoci, jq) and node_modules, only what is missing.
    phase "dependencies (hack/deps.sh)"
    hack/deps.sh >&2
  fi
  need go jq node
  case $CHANNEL in
    standard) ;;
    experimental) RESULTS=conformance/RESULTS-experimental.md ;;
    *) die "--channel $CHANNEL: give standard or experimental" ;;
  esac
  if [[ -n $tree ]]; then
    [[ $command != results ]] || die "results rewrites the committed RESULTS.md: it takes no --gateway-api-dir (a local tree's run writes its own)"
    [[ -z $record ]] || die "--record adds to conformance/passing-tests.txt, which records the pinned suite: drop it with --gateway-api-dir"
    use_local_tree "$tree"
  fi

  local version dir harness
  version=$(suite_version)
  dir=$(suite_dir)
  if [[ $command == build-images ]]; then
    need umoci
    build_images "$version" "$dir"
    return
  fi
  phase "harness (built once per suite version)"
  harness=$(build_harness "$version")
  if [[ $command == catalogue ]]; then
    printf '%s\n' "$CATALOGUE"
    return
  fi

  if [[ $command == results ]]; then
    local last=$CACHE/runs/last
    local report="" runs=()
    [[ -f $last/report-path ]] && report=$(cat "$last/report-path")
    # A rerun is judged together with the run before it, as it was when it ran.
    [[ -f $last/previous-run ]] && runs+=("$(cat "$last/previous-run")/events.json")
    [[ -f $last/events.json ]] && runs+=("$last/events.json")
    write_results "$report" "" "${runs[@]}"
    return
  fi

  # A cluster of one's own (minikube) pulls the suite's images from registry.k8s.io; the
  # local cluster has no registry, so they are built here and imported.
  local images=()
  if [[ -n $on_kind ]]; then
    [[ -z $kubeconfig && -z $install ]] || die "--kind names the cluster already: drop --kubeconfig/--install (hack/kind.sh install installs blixt)"
    # The kind pool (hack/kind/lib.sh): its last address stays free, 198.19.252.1 is outside it.
    USABLE_ADDRESS=${BLIXT_CONFORMANCE_USABLE_ADDRESS:-198.19.253.199}
    UNUSABLE_ADDRESS=${BLIXT_CONFORMANCE_UNUSABLE_ADDRESS:-198.19.252.1}
  fi
  if [[ -z $kubeconfig || $command != run ]]; then
    need umoci
    local built
    phase "suite images (built once per suite version)"
    built=$(build_images "$version" "$dir")
    mapfile -t images <<<"$built"
  fi
  [[ $command == build ]] && { log "built: $harness ${images[*]}"; return; }

  if [[ -n $on_kind ]]; then
    hack/kind.sh load "${images[@]}"
    [[ $command == images ]] && return
    eval "$(hack/kind.sh env)"
  elif [[ -z $kubeconfig ]]; then
    if [[ $command == run && -z $no_install ]]; then
      phase "cluster and blixt (hack/install.sh)"
      install_blixt
    else
      hack/cluster.sh status >/dev/null || die "the local cluster is not up: run hack/cluster.sh up, or drop --no-install (or pass --kubeconfig)"
    fi
    phase "images into the node"
    import_images "${images[@]}"
    [[ $command == images ]] && return
    eval "$(hack/cluster.sh env)"
  else
    [[ $command == images ]] && die "--kubeconfig: load the images into that cluster yourself (they are in $CACHE/images)"
    export KUBECONFIG=$kubeconfig
    [[ -z $install ]] || die "--install works on the local cluster; hack/minikube.sh installs blixt on minikube"
  fi
  [[ -n ${KUBECONFIG:-} ]] || die "hack/cluster.sh env gave no KUBECONFIG"

  if [[ -n $GATEWAY_API_DIR ]]; then
    # The suite refuses CRDs of another version than its own: the tree's, for this run.
    phase "CRDs of the local tree ($CHANNEL)"
    RESTORE_CRDS=1
    use_crds "$CHANNEL" "$GATEWAY_API_DIR/config/crd/$CHANNEL"
  elif [[ $CHANNEL != standard ]]; then
    phase "CRDs of the $CHANNEL channel"
    # Whatever happens to the run, the cluster goes back to the standard channel it had.
    RESTORE_CRDS=1
    use_crds "$CHANNEL" "$(dirname "$CLUSTER_CRDS")/$CHANNEL-install.yaml"
  fi

  local blixt_version
  blixt_version=$(node -p 'require("./package.json").version')
  # A feature tried out comes on top of the claimed ones, whose tests stay required.
  features=$(claimed_features)${features:+,$features}

  if [[ -n $run_test ]]; then
    run_suite "$harness" "$version" "$blixt_version" "$features" "$run_test"
    log "single test $run_test: exit status $SUITE_STATUS; no report or RESULTS.md written"
    return "$SUITE_STATUS"
  fi

  # The suite's own exit status is non-zero whenever any test fails, expected or not; the
  # check that matters is write_results': every claimed and recorded test passes. With
  # --retry, a failed check runs the whole suite once more and judges both runs together: a
  # test that failed and then passed is flaky (logged, and marked in RESULTS.md), one that
  # failed in both fails the run.
  local events=() report="" previous=""
  while :; do
    phase "suite run $((${#events[@]} + 1))"
    run_suite "$harness" "$version" "$blixt_version" "$features" ""
    events+=("$SUITE_RUN_DIR/events.json")
    report=${SUITE_REPORT:-$report}
    [[ -z $GATEWAY_API_DIR ]] || RESULTS=$SUITE_RUN_DIR/RESULTS.md
    [[ -z $previous ]] || printf '%s\n' "$previous" >"$SUITE_RUN_DIR/previous-run"
    phase "results and checks"
    if write_results "$report" "$record" "${events[@]}"; then
      [[ -z $GATEWAY_API_DIR ]] || log "this run's report and RESULTS.md: $SUITE_RUN_DIR (nothing in conformance/ changed)"
      return 0
    fi
    show_failures "$SUITE_RUN_DIR"
    if [[ -z $retry || ${#events[@]} -ge 2 ]]; then return 1; fi
    previous=$SUITE_RUN_DIR
    log "a claimed test failed: running the whole suite once more (a test that passes then is reported as flaky; one that fails again fails the run)"
    phase "waiting for the first run's namespaces to go"
    wait_suite_namespaces_gone
  done
}

# use_crds CHANNEL SOURCE installs Gateway API CRDs of that release channel from SOURCE (a
# bundle file, or a directory of CRDs such as a gateway-api tree's config/crd/experimental) on
# the cluster KUBECONFIG names. The bundles' own ValidatingAdmissionPolicy (safe-upgrades)
# refuses experimental CRDs over standard ones, so it is deleted first for those (the
# standard bundle brings it back). Going back to the cluster's own standard bundle deletes the
# CRDs only the experimental bundle beside it has.
use_crds() {
  local channel=$1 source=$2 attempt
  [[ -e $source ]] || die "no $source: no $channel CRDs there"
  log "installing the Gateway API CRDs of the $channel channel ($source)"
  for attempt in $(seq 30); do
    if [[ $channel == experimental ]]; then
      kubectl delete validatingadmissionpolicybinding,validatingadmissionpolicy \
        safe-upgrades.gateway.networking.k8s.io --ignore-not-found >/dev/null
    fi
    # The API server enforces a deleted policy a while longer, and an experimental bundle
    # brings its own copy back when applied: so a dry run first, and the apply only once the
    # API server admits the whole bundle (its CRDs come before the policy in it).
    if kubectl apply --server-side --force-conflicts --dry-run=server -f "$source" >/dev/null 2>"$CACHE/channel.err" &&
      kubectl apply --server-side --force-conflicts -f "$source" >/dev/null 2>"$CACHE/channel.err"; then
      break
    fi
    ((attempt < 30)) || die "applying $source failed: $(cat "$CACHE/channel.err")"
    sleep 2
  done
  local dir
  dir=$(dirname "$source")
  if [[ $channel == standard && -f $source && -f $dir/experimental-install.yaml ]]; then
    local extra
    extra=$(comm -13 <(crd_names "$source") <(crd_names "$dir/experimental-install.yaml"))
    # shellcheck disable=SC2086 # one CRD name a word
    [[ -z $extra ]] || kubectl delete crd $extra --ignore-not-found >/dev/null
  fi
  kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
}

# crd_names SOURCE: the names of the CustomResourceDefinitions in a bundle (or a directory of
# them), sorted.
crd_names() {
  local files=("$1")
  [[ -d $1 ]] && files=("$1"/*.yaml)
  awk '/^kind: CustomResourceDefinition/ { crd = 1 } crd && /^  name: / { print $2; crd = 0 }' "${files[@]}" | sort
}

# wait_suite_namespaces_gone waits (up to 5 minutes) until the namespaces the suite deleted at
# its end are gone: a rerun that starts while one is still terminating fails in its setup
# ("unable to create new content in namespace ... because it is being terminated").
wait_suite_namespaces_gone() {
  local deadline=$((SECONDS + 300)) left
  while :; do
    left=$(kubectl get namespaces -o name 2>/dev/null | grep '^namespace/gateway-conformance-' || true)
    [[ -z $left ]] && return 0
    if ((SECONDS >= deadline)); then
      log "warning: still terminating after 5 minutes: $(echo "$left" | tr '\n' ' ')(the rerun may fail in its setup)"
      return 0
    fi
    log "waiting for the suite's namespaces to be deleted: $(echo "$left" | sed 's|namespace/||' | tr '\n' ' ')"
    sleep 5
  done
}

# run_suite HARNESS SUITE_VERSION BLIXT_VERSION FEATURES RUN_TEST runs the suite once into a
# new directory under $CACHE/runs (runs/last links it) and keeps its report; sets
# SUITE_RUN_DIR, SUITE_REPORT (empty when the run left no report) and SUITE_STATUS (the
# suite's exit status; the function itself returns 0, so errexit stays in force inside it).
run_suite() {
  local harness=$1 version=$2 blixt_version=$3 features=$4 run_test=$5
  local run_dir report_tmp channel status=0
  run_dir=$CACHE/runs/$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$run_dir"
  report_tmp=$run_dir/report.yaml
  SUITE_RUN_DIR=$run_dir SUITE_REPORT="" SUITE_STATUS=0

  local suite_args=(
    -gateway-class="$GATEWAY_CLASS"
    "-conformance-profiles=GATEWAY-TCP,GATEWAY-UDP"
    -supported-features="$features"
    -organization=blixt -project=blixt -url=https://blixt.dev -version="v$blixt_version"
    -contact=https://blixt.dev
    -usable-address="$USABLE_ADDRESS" -unusable-address="$UNUSABLE_ADDRESS"
    -report-output="$report_tmp"
  )
  [[ -n $run_test ]] && suite_args+=(-run-test="$run_test")

  log "running the suite against $KUBECONFIG: class $GATEWAY_CLASS, features $features"
  log "progress: the suite's setup, then one line per test; the full test2json stream is $run_dir/events.json"
  # test2json turns the verbose test output into events; progress.jq prints what matters as it lands.
  go tool test2json -p conformance "$harness" -test.v=test2json -test.timeout=2h \
    -test.run '^TestConformance$' "${suite_args[@]}" \
    | tee "$run_dir/events.json" \
    | jq -nr --unbuffered -f hack/conformance/progress.jq >&2 \
    || status=$?
  ln -sfn "$run_dir" "$CACHE/runs/last"
  grep -q '"Test":"TestConformance"' "$run_dir/events.json" ||
    die "the harness did not run (exit status $status); see $run_dir/events.json"

  if [[ -s $report_tmp ]] && grep -q '^profiles: null' "$report_tmp"; then
    # The suite writes its report even when it stopped in setup; such a report holds no result.
    log "the suite ran no test; its report is not kept (RESULTS.md shows why)"
  elif [[ -s $report_tmp && -z $run_test && -n $GATEWAY_API_DIR ]]; then
    # A local tree's report stays in the run's directory, and says which tree ran.
    SUITE_REPORT=$run_dir/report.yaml
    { printf '# suite: %s\n' "$SUITE_SOURCE"; cat "$report_tmp"; } >"$SUITE_REPORT.tmp" && mv "$SUITE_REPORT.tmp" "$SUITE_REPORT"
    printf '%s\n' "$SUITE_REPORT" >"$run_dir/report-path"
    log "report: $SUITE_REPORT"
  elif [[ -s $report_tmp && -z $run_test ]]; then
    # Named as upstream names reports: <API channel>-<implementation version>-<mode>-report.yaml
    channel=$(sed -n 's/^gatewayAPIChannel: *//p' "$report_tmp")
    SUITE_REPORT=conformance/reports/$version/blixt/${channel:-standard}-v$blixt_version-default-report.yaml
    mkdir -p "$(dirname "$SUITE_REPORT")"
    cp "$report_tmp" "$SUITE_REPORT"
    printf '%s\n' "$SUITE_REPORT" >"$run_dir/report-path"
    log "report: $SUITE_REPORT"
  elif [[ -z $run_test ]]; then
    log "the suite wrote no report (it stopped before its cleanup); RESULTS.md shows why"
  fi
  SUITE_STATUS=$status
}

# What a CI log needs to explain a regression without the machine: the last lines each failed
# test printed, and blixt's own logs from the run (also kept in the run's directory).
show_failures() {
  local run_dir=$1 test
  for test in $(jq -r 'select(.Action == "fail" and (.Test // "" | test("^TestConformance/[^/]+$"))) | .Test' "$run_dir/events.json" | sort -u); do
    log "last output of ${test#TestConformance/}:"
    jq -r --arg t "$test" 'select(.Action == "output" and ((.Test // "") | startswith($t))) | .Output' "$run_dir/events.json" |
      grep -v '^\s*$' | tail -n 30 | sed 's/^/    /' >&2
  done
  local component
  for component in controller agent; do
    kubectl -n "${BLIXT_NAMESPACE:-blixt-system}" logs -l app.kubernetes.io/component="$component" --tail=-1 --all-containers --prefix \
      >"$run_dir/blixt-$component.log" 2>&1 || true
  done
  log "blixt controller, its last 40 warnings and errors (the whole log: $run_dir/blixt-controller.log):"
  grep -E '"level":(40|50|60)' "$run_dir/blixt-controller.log" | sed -E 's/.*"msg":"(.*)"\}$/\1/' |
    tail -n 40 | cut -c1-400 | sed 's/^/    /' >&2 || true
}

main "$@"
