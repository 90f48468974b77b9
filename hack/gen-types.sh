#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Regenerates capabilities/generated/ from the Gateway API CRD bundle and blixt's own
# DataplaneConfig CRD (api/dataplaneconfig.yaml, the full schema), with kubernetes-fluent-client's
# `crd` generator; and from the full schema the chart's CRD and the listener schema module
# (hack/gen-crd.ts).
#   hack/gen-types.sh [GATEWAY_API_BUNDLE]
# The bundle defaults to the committed upstream v1.6.3 standard bundle. Only the kinds and
# versions blixt reads are kept: importing two versions of one kind would register the same
# class twice with the fluent client.
set -euo pipefail
cd "$(dirname "$0")/.."

bundle="${1:-hack/gateway-api/v1.6.3/standard-install.yaml}"
out=capabilities/generated
keep=(gatewayclass-v1 gateway-v1 listenerset-v1 tcproute-v1 udproute-v1 httproute-v1 referencegrant-v1beta1)

[[ -f "$bundle" ]] || { echo "gen-types: bundle $bundle not found; pass the path of a Gateway API standard-install.yaml" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/gw" "$tmp/blixt"
npx --no-install kubernetes-fluent-client crd "$bundle" "$tmp/gw" >/dev/null
npx --no-install kubernetes-fluent-client crd api/dataplaneconfig.yaml "$tmp/blixt" >/dev/null

mkdir -p "$out"
rm -f "$out"/*.ts
emit() { # src dst: prepend the licence line the repository requires of every source file
  { echo "// SPDX-License-Identifier: Apache-2.0"; cat "$1"; } >"$2"
}
for f in "${keep[@]}"; do
  [[ -f "$tmp/gw/$f.ts" ]] || { echo "gen-types: $bundle produced no $f.ts" >&2; exit 1; }
  emit "$tmp/gw/$f.ts" "$out/$f.ts"
done
emit "$tmp/blixt/dataplaneconfig-v1alpha1.ts" "$out/dataplaneconfig-v1alpha1.ts"
node --import=tsx hack/gen-crd.ts
written=("$out"/*.ts)
echo "gen-types: wrote ${#written[@]} files to $out from $bundle"
