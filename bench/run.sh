#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The dataplane benchmark in one command (run as root): builds the BPF objects, measures direct
# routing, blixt (XDP and TC), nftables DNAT, haproxy and nginx side by side in the netns lab,
# times the node agent's apply, and writes bench/REPORT.md and its charts (bench/*.svg).
# `--smoke` is a short run for CI that only checks the benchmark still works; it writes to a
# temporary directory unless --out says otherwise. The tools it measures with and against come
# from Debian and are installed first (hack/deps.sh: iperf3, wrk, haproxy, nginx, nftables).
#
#   bench/run.sh [--smoke] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
hack/deps.sh
make -s -C bpf
exec npx tsx bench/dataplane.ts "$@"
