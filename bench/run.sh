#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The dataplane benchmark in one command (run as root): builds the BPF objects, measures direct
# routing, blixt (XDP and TC), nftables DNAT, haproxy and nginx side by side in the netns lab,
# times the node agent's apply (one listener of many backends, bench/dataplane.ts; many listeners
# of one backend set or of a set each, bench/agent-fanout.ts), and writes bench/REPORT.md and its
# charts (bench/*.svg); then the several-nodes scenario: a local backend against a remote one
# (IP-in-IP, direct server return) on a two-node netns lab, written to bench/NODES.md
# (bench/nodes.ts). `--only dataplane` or
# `--only several-nodes` runs one of the two and leaves the other's report as it is.
# `--smoke` is a short run for CI that only checks the benchmark still works; it writes to a
# temporary directory unless --out says otherwise (--out names REPORT.md; NODES.md goes next to
# it; with --only several-nodes, --out names NODES.md). The tools it measures with and against
# come from Debian and are installed first (hack/deps.sh: iperf3, wrk, haproxy, nginx, nftables).
#
#   bench/run.sh [--only dataplane|several-nodes] [--smoke] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
only="" smoke=() out=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --only) only=${2:-}; shift 2 ;;
    --only=*) only=${1#--only=}; shift ;;
    --smoke) smoke=(--smoke); shift ;;
    --out) out=${2:-}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    *) echo "usage: bench/run.sh [--only dataplane|several-nodes] [--smoke] [--out FILE]" >&2; exit 2 ;;
  esac
done
case $only in
  "" | dataplane | several-nodes) ;;
  *) echo "bench/run.sh: --only takes dataplane or several-nodes, not '$only'" >&2; exit 2 ;;
esac
hack/deps.sh
make -s -C bpf
if [[ $only != several-nodes ]]; then
  npx tsx bench/dataplane.ts "${smoke[@]}" ${out:+--out "$out"}
  npx tsx bench/agent-fanout.ts "${smoke[@]}" ${out:+--report "$out"}
fi
if [[ $only != dataplane ]]; then
  nodes_out=$out
  [[ -n $out && -z $only ]] && nodes_out="$(dirname "$out")/NODES.md"
  npx tsx bench/nodes.ts "${smoke[@]}" ${nodes_out:+--out "$nodes_out"}
fi
