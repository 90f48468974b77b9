#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite: installs what it needs, builds the BPF objects, typechecks, and runs
# every tier that this machine can run (unit, packet, netns lab). Each test cleans up the
# namespaces, links and pins it made, also when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/deps.sh
echo "test: building BPF objects"
make -s -C bpf
echo "test: typecheck"
npx tsc --noEmit
echo "test: tap"
npx tap "$@"
