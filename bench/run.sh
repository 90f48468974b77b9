#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The dataplane benchmark in one command (run as root): builds the BPF objects, then measures
# direct routing, blixt (XDP and TC) and haproxy side by side in the netns lab and writes
# bench/REPORT.md. `--smoke` is a short run for CI that only checks the benchmark still works.
#
#   bench/run.sh [--smoke] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -C bpf
exec npx tsx bench/dataplane.ts "$@"
