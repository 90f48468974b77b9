#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Measures blixt's end-to-end convergence and recovery on the local cluster and writes the
# figures into bench/REPORT.md (its e2e-figures block): runs test/e2e/faults.test.ts and
# test/e2e/scaling.test.ts RUNS times (default 3, about 2.5 min each), then
# test/e2e/fanout.test.ts (100 and 1,000 routes) once, with blixt installed. With --kind, runs
# test/kind/failover.test.ts RUNS times on the kind cluster (hack/kind.sh up && hack/kind.sh
# install; about 4 minutes each) and writes its failover figures into their own block.
#
#   hack/e2e-figures.sh [RUNS]
#   hack/e2e-figures.sh --kind [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
on_kind=""
if [[ ${1:-} == --kind ]]; then on_kind=1; shift; fi
runs=${1:-3}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "usage: hack/e2e-figures.sh [--kind] [RUNS]" >&2; exit 2; }
machine() { echo "$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"; }
if [[ -n $on_kind ]]; then
  hack/kind.sh kubectl get nodes >/dev/null 2>&1 || { echo "e2e-figures: the kind cluster is not up: hack/kind.sh up && hack/kind.sh install" >&2; exit 1; }
  hack/kind.sh test-images >/dev/null
  figures=$(mktemp)
  for ((run = 1; run <= runs; run++)); do
    echo "e2e-figures: kind failover, run $run of $runs" >&2
    BLIXT_CLUSTER=kind BLIXT_E2E_FIGURES=$figures npx tap test/kind/failover.test.ts
  done
  npx tsx hack/e2e-figures.ts "$figures" --kind-failover --runs "$runs" --machine "$(machine)"
  rm -f "$figures"
  exit 0
fi
hack/cluster.sh status >/dev/null || { echo "e2e-figures: the local cluster is not up: hack/cluster.sh up && hack/install.sh" >&2; exit 1; }
# The tests' backends run the conformance suite's echo-basic image, which hack/cluster.sh up
# does not import (hack/test.sh does it the same way); cached, so a few seconds when present.
hack/conformance.sh images >/dev/null
figures=$(mktemp)
# A failure keeps the figures recorded so far: a late fanout failure need not cost the runs before it.
keep_on_failure() {
  local status=$?
  if [[ $status == 0 ]]; then rm -f "$figures"; else echo "e2e-figures: figures so far kept in $figures" >&2; fi
}
trap keep_on_failure EXIT
for ((run = 1; run <= runs; run++)); do
  echo "e2e-figures: run $run of $runs" >&2
  # One file at a time: the faults file's restarts would skew the scaling figures.
  BLIXT_CLUSTER=1 BLIXT_E2E_FIGURES=$figures npx tap --jobs=1 test/e2e/scaling.test.ts test/e2e/faults.test.ts
done
# 100 and 1,000 routes following one EndpointSlice: heavy, so once.
echo "e2e-figures: 100 and 1,000 routes (once)" >&2
BLIXT_CLUSTER=1 BLIXT_E2E_FANOUT=1 BLIXT_E2E_FIGURES=$figures npx tap --jobs=1 test/e2e/fanout.test.ts
npx tsx hack/e2e-figures.ts "$figures" --runs "$runs" --machine "$(machine)"
