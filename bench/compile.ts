// SPDX-License-Identifier: Apache-2.0
/**
 * Compile step cost on synthetic clusters: N routes (half TCPRoute, half UDPRoute), each on its
 * own listener (50 listeners per Gateway) with one backendRef to its own Service of 10 ready
 * endpoints, in steady state (every DataplaneConfig written and acknowledged by 3 nodes, so the
 * spec comparison runs too). Goal: 1,000 routes in <= 100 ms, growing no worse than linearly.
 *
 *   node --expose-gc --import=tsx bench/compile.ts [routes...]
 *
 * Prints a markdown table: median and max wall time of the timed runs, median CPU time (user +
 * system of the process: on a busy machine wall time also counts other processes' turns), time
 * per route, and the heap the output holds (after a forced GC when --expose-gc is given).
 */
import { performance } from "node:perf_hooks";
import {
  compile,
  CONTROLLER_NAME,
  type DataplaneConfig,
  type Snapshot,
} from "../capabilities/gateway/compile/index.js";

const ENDPOINTS = 10;
const LISTENERS_PER_GATEWAY = 50;
const NODES = ["node-1", "node-2", "node-3"];

export function syntheticSnapshot(routes: number): Snapshot {
  const gateways = Math.ceil(routes / LISTENERS_PER_GATEWAY);
  const snapshot: Snapshot = {
    controllerName: CONTROLLER_NAME,
    now: "2026-01-01T00:00:00Z",
    gatewayClasses: [
      { metadata: { name: "blixt", generation: 1 }, spec: { controllerName: CONTROLLER_NAME } },
    ] as Snapshot["gatewayClasses"],
    gateways: [],
    tcpRoutes: [],
    udpRoutes: [],
    httpRoutes: [],
    referenceGrants: [],
    services: [],
    endpointSlices: [],
    namespaces: [{ metadata: { name: "bench" } }],
    secrets: [],
    nodes: NODES.map(name => ({ name, ready: true, agentReady: true })),
    dataplaneConfigs: [],
    addressPools: [{ name: "bench", cidrs: ["198.18.0.0/16"] }],
    allocations: {},
  };
  const created = (i: number) =>
    new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString().replace(".000Z", "Z");
  for (let g = 0; g < gateways; g++) {
    const listeners = [];
    for (let l = 0; l < LISTENERS_PER_GATEWAY && g * LISTENERS_PER_GATEWAY + l < routes; l++) {
      listeners.push({ name: `l${l}`, protocol: l % 2 === 0 ? "TCP" : "UDP", port: 10000 + l });
    }
    snapshot.gateways.push({
      metadata: {
        name: `gw-${g}`,
        namespace: "bench",
        generation: 1,
        uid: `uid-${g}`,
        creationTimestamp: created(g),
      },
      spec: { gatewayClassName: "blixt", listeners },
    } as Snapshot["gateways"][number]);
  }
  for (let r = 0; r < routes; r++) {
    const g = Math.floor(r / LISTENERS_PER_GATEWAY);
    const l = r % LISTENERS_PER_GATEWAY;
    const udp = l % 2 === 1;
    const protocol = udp ? "UDP" : "TCP";
    const route = {
      metadata: {
        name: `route-${r}`,
        namespace: "bench",
        generation: 1,
        creationTimestamp: created(r),
      },
      spec: {
        parentRefs: [{ name: `gw-${g}`, sectionName: `l${l}` }],
        rules: [{ backendRefs: [{ name: `svc-${r}`, port: 80 }] }],
      },
    };
    (udp ? snapshot.udpRoutes : snapshot.tcpRoutes).push(route as never);
    snapshot.services.push({
      metadata: { name: `svc-${r}`, namespace: "bench" },
      spec: { ports: [{ name: "p", port: 80, protocol }] },
    });
    snapshot.endpointSlices.push({
      metadata: {
        name: `svc-${r}-x`,
        namespace: "bench",
        labels: { "kubernetes.io/service-name": `svc-${r}` },
      },
      addressType: "IPv4",
      ports: [{ name: "p", port: 8080, protocol }],
      endpoints: Array.from({ length: ENDPOINTS }, (_, e) => ({
        addresses: [`10.${(r >> 8) & 255}.${r & 255}.${e + 1}`],
        conditions: { ready: true },
      })),
    });
  }
  // Steady state: the tables are written, at generation 1, and every agent applied them.
  const first = compile(snapshot);
  snapshot.allocations = first.allocations;
  snapshot.dataplaneConfigs = first.dataplaneConfigs.map(
    (dc): DataplaneConfig => ({
      ...dc,
      metadata: { ...dc.metadata, generation: 1 },
      status: { nodes: NODES.map(name => ({ name, observedGeneration: 1 })) },
    }),
  );
  return snapshot;
}

const gc = (globalThis as { gc?: () => void }).gc;

function measure(routes: number, runs: number) {
  const snapshot = syntheticSnapshot(routes);
  for (let i = 0; i < 3; i++) compile(snapshot); // warm the JIT
  const times: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const cpuStart = process.cpuUsage();
    const start = performance.now();
    compile(snapshot);
    times.push(performance.now() - start);
    const used = process.cpuUsage(cpuStart);
    cpu.push((used.user + used.system) / 1000);
  }
  gc?.();
  const before = process.memoryUsage().heapUsed;
  const kept = compile(snapshot);
  gc?.();
  const heapMB = (process.memoryUsage().heapUsed - before) / 2 ** 20;
  const programmed = kept.gateways.filter(g =>
    g.status.conditions.some(c => c.type === "Programmed" && c.status === "True"),
  ).length;
  if (programmed !== kept.gateways.length)
    throw new Error(
      `bench snapshot is not in steady state: ${programmed}/${kept.gateways.length} Gateways programmed`,
    );
  times.sort((a, b) => a - b);
  cpu.sort((a, b) => a - b);
  const median = (xs: number[]) => xs[Math.floor(xs.length / 2)];
  return {
    routes,
    gateways: snapshot.gateways.length,
    median: median(times),
    max: times[times.length - 1],
    cpu: median(cpu),
    heapMB,
  };
}

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter(n => n > 0);
const results = (sizes.length > 0 ? sizes : [100, 1000, 5000]).map(n =>
  measure(n, n >= 5000 ? 7 : 15),
);
console.log(
  `compile step, ${ENDPOINTS} endpoints per route, ${LISTENERS_PER_GATEWAY} listeners per Gateway, ${NODES.length} acknowledging nodes; Node ${process.version}${gc ? "" : " (run with --expose-gc for the heap column)"}`,
);
console.log("");
console.log(
  "| routes | gateways | endpoints | median ms | max ms | median CPU ms | CPU µs per route | output heap MB |",
);
console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const r of results) {
  console.log(
    `| ${r.routes} | ${r.gateways} | ${r.routes * ENDPOINTS} | ${r.median.toFixed(1)} | ${r.max.toFixed(1)} | ${r.cpu.toFixed(1)} | ${((r.cpu * 1000) / r.routes).toFixed(1)} | ${gc ? r.heapMB.toFixed(1) : "n/a"} |`,
  );
}
