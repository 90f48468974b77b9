// SPDX-License-Identifier: Apache-2.0
/**
 * The controller's pass on the fanout shape of test/e2e/fanout.test.ts: N TCPRoutes on
 * N / 50 Gateways (50 listeners each), every route sending to one Service, and as many more
 * Services with an EndpointSlice each that no route names (the ClusterIP Services the e2e test
 * gives kube-proxy). The Reconciler runs for real (store, compile, write plan, write stages)
 * against the in-memory cluster of the controller's unit tests (test/lib/memory-cluster.ts),
 * which answers each write as the API server would, for the fields the controller reads back; the
 * API server itself is not here (test/e2e times the whole path).
 *
 *   node --expose-gc --import=tsx bench/reconcile.ts [routes...]
 *
 * Prints a markdown table: the pass after the routes' EndpointSlice changed (every
 * DataplaneConfig rewritten, no status changes) and a pass with nothing to write (what an
 * agent's acknowledgement costs), median and max wall time and median CPU time of each; and
 * the heap held after a forced GC when --expose-gc is given: the controller's state and the
 * in-memory cluster's one copy of every object, so an upper bound of the state.
 */
import { performance } from "node:perf_hooks";
import { benchReconciler, fanoutCluster, LISTENERS_PER_GATEWAY } from "./fanout-shape.js";

const gc = (globalThis as { gc?: () => void }).gc;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(run: () => Promise<unknown>): Promise<{ ms: number; cpuMs: number }> {
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  await run();
  const cpu = process.cpuUsage(cpuStart);
  return { ms: performance.now() - start, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function measure(routes: number, changes: number) {
  gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const { cluster, slice } = fanoutCluster(routes);
  const reconciler = benchReconciler(cluster);
  try {
    await reconciler.resync();
    // Settle: finalizers, then statuses reporting on the tables just written.
    for (let i = 0; i < 3; i++) await reconciler.reconcile();
    const idle = await reconciler.reconcile();
    if (idle.writes.length > 0)
      throw new Error(
        `bench: ${idle.writes.length} writes left after settling at ${routes} routes`,
      );
    const change: { ms: number; cpuMs: number }[] = [];
    const nothing: { ms: number; cpuMs: number }[] = [];
    let writes = 0;
    for (let i = 0; i < changes; i++) {
      reconciler.observe("EndpointSlice", slice(i % 2 === 0 ? 3 : 2));
      change.push(
        await timed(async () => {
          writes = (await reconciler.reconcile()).writes.length;
        }),
      );
      nothing.push(await timed(() => reconciler.reconcile()));
    }
    // The in-memory cluster's log of every write is the bench's, not the controller's.
    cluster.executed = [];
    cluster.attempts = [];
    gc?.();
    const heapMB = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
    return {
      routes,
      gateways: Math.ceil(routes / LISTENERS_PER_GATEWAY),
      writes,
      change: {
        ms: median(change.map(c => c.ms)),
        max: Math.max(...change.map(c => c.ms)),
        cpuMs: median(change.map(c => c.cpuMs)),
      },
      nothing: {
        ms: median(nothing.map(c => c.ms)),
        max: Math.max(...nothing.map(c => c.ms)),
        cpuMs: median(nothing.map(c => c.cpuMs)),
      },
      heapMB,
    };
  } finally {
    reconciler.stop();
  }
}

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter(n => n > 0);
const results = [];
for (const n of sizes.length > 0 ? sizes : [100, 1000, 10000])
  results.push(await measure(n, n >= 10000 ? 5 : 15));
console.log(
  `controller pass, fanout shape (${LISTENERS_PER_GATEWAY} listeners per Gateway, every route to one Service, as many Services no route names); Node ${process.version}${gc ? "" : " (run with --expose-gc for the heap column)"}`,
);
console.log("");
console.log(
  "| routes | gateways | writes per change | EndpointSlice change: median ms | max ms | median CPU ms | nothing to write: median ms | max ms | median CPU ms | heap MB (state and cluster) |",
);
console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const r of results) {
  console.log(
    `| ${r.routes} | ${r.gateways} | ${r.writes} | ${r.change.ms.toFixed(1)} | ${r.change.max.toFixed(1)} | ${r.change.cpuMs.toFixed(1)} | ${r.nothing.ms.toFixed(1)} | ${r.nothing.max.toFixed(1)} | ${r.nothing.cpuMs.toFixed(1)} | ${gc ? r.heapMB.toFixed(1) : "n/a"} |`,
  );
}
