// SPDX-License-Identifier: Apache-2.0
// Convergence at scale: 100 and then 1,000 TCPRoutes (50 listeners per Gateway) all send to one
// backend Deployment, so one EndpointSlice change has to reach every route's table. The
// Deployment goes 2 → 3 → 2 a few times; the time from the EndpointSlice change (watch-stamped)
// until both the first and the last route show it in a round of new connections is a figure
// (recordFigure), never asserted. Asserted: every Gateway is Programmed and the traffic of both
// probed routes follows every change.
//
// Heavy (minutes, a thousand objects): only with BLIXT_E2E_FANOUT=1, which hack/e2e-figures.sh
// sets; CI does not run it.
import t, { type Test } from "tap";
import { setTimeout as sleep } from "node:timers/promises";
import {
  apply,
  clusterSkipReason,
  echoBackend,
  EndpointClock,
  freshNamespace,
  kubeconfig,
  kubectl,
  listObjects,
  recordFigure,
  tcpEchoOnce,
  waitFor,
  waitForDeployment,
  type KubeObject,
} from "../lib/cluster.js";

const skip =
  clusterSkipReason() ??
  (process.env.BLIXT_E2E_FANOUT === "1"
    ? undefined
    : "1,000 routes: set BLIXT_E2E_FANOUT=1 (hack/e2e-figures.sh does)");
const PER_GATEWAY = 50;
const BASE_PORT = 20000;
const CYCLES = 3;
const ROUND = 8;

if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(40 * 60 * 1000);
  for (const routes of [100, 1000])
    t.test(`${routes} routes to one Deployment follow its EndpointSlice`, t => run(t, routes));
}

/** The objects as YAML documents, applied in slices: one apply of a thousand objects outlasts kubectl's timeout. */
function manifest(namespace: string, routes: number): string[] {
  const docs = [
    echoBackend({ namespace, name: "tcp-echo", protocol: "TCP", port: 3000, replicas: 2 }),
  ];
  for (let g = 0; g * PER_GATEWAY < routes; g++) {
    const listeners = Array.from(
      { length: Math.min(PER_GATEWAY, routes - g * PER_GATEWAY) },
      (_, i) => `  - {name: l${i}, protocol: TCP, port: ${BASE_PORT + i}}`,
    );
    docs.push(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g${g}, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
${listeners.join("\n")}`);
  }
  for (let r = 0; r < routes; r++) {
    docs.push(`apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: r${r}, namespace: ${namespace}}
spec:
  parentRefs: [{name: g${Math.floor(r / PER_GATEWAY)}, sectionName: l${r % PER_GATEWAY}}]
  rules: [{backendRefs: [{name: tcp-echo, port: 3000}]}]`);
  }
  return docs;
}

const programmed = (g: KubeObject) =>
  (g.status?.conditions ?? []).some(
    c =>
      c.type === "Programmed" &&
      c.status === "True" &&
      c.observedGeneration === g.metadata.generation,
  );

async function round(address: string, port: number): Promise<{ pods: string[]; failed: number }> {
  const results = await Promise.allSettled(
    Array.from({ length: ROUND }, () => tcpEchoOnce(address, port)),
  );
  return {
    pods: results.flatMap(r => (r.status === "fulfilled" ? [r.value.pod] : [])),
    failed: results.filter(r => r.status === "rejected").length,
  };
}

async function run(t: Test, routes: number) {
  process.env.KUBECONFIG = await kubeconfig();
  const namespace = await freshNamespace(t, `blixt-e2e-fanout-${routes}`);
  const started = Date.now();
  const docs = manifest(namespace, routes);
  for (let i = 0; i < docs.length; i += 100) await apply(docs.slice(i, i + 100).join("\n---\n"));
  // kubectl applies one object at a time, each through the admission webhook: most of the time
  // to Programmed is that, so the time after the last object was applied is reported too.
  const applied = Date.now();
  await waitForDeployment(namespace, "tcp-echo");
  const gateways = await waitFor(
    `every Gateway of ${routes} routes Programmed`,
    async () => {
      const all = JSON.parse(await kubectl("-n", namespace, "get", "gateways", "-o", "json"))
        .items as KubeObject[];
      return all.length === Math.ceil(routes / PER_GATEWAY) && all.every(programmed)
        ? all
        : undefined;
    },
    { timeoutMs: 20 * 60_000, intervalMs: 2000 },
  );
  t.pass(`${gateways.length} Gateways, ${routes} routes Programmed`);
  const programmedAt = Date.now();
  await recordFigure(
    t,
    `${routes} routes: applied → every Gateway Programmed`,
    programmedAt - started,
  );
  await recordFigure(
    t,
    `${routes} routes: the last object applied → every Gateway Programmed`,
    programmedAt - applied,
  );

  const addressOf = (name: string) =>
    gateways.find(g => g.metadata.name === name)?.status?.addresses?.[0]?.value as string;
  const last = routes - 1;
  const probes = [
    { what: "first route", address: addressOf("g0"), port: BASE_PORT },
    {
      what: "last route",
      address: addressOf(`g${Math.floor(last / PER_GATEWAY)}`),
      port: BASE_PORT + (last % PER_GATEWAY),
    },
  ];
  for (const probe of probes) {
    await waitFor(
      `${probe.what} ${probe.address}:${probe.port} served by both pods`,
      async () => {
        const { pods } = await round(probe.address, probe.port);
        return new Set(pods).size === 2 ? pods : undefined;
      },
      { timeoutMs: 120_000 },
    );
  }

  const clock = new EndpointClock();
  await clock.start(namespace, "tcp-echo");
  t.teardown(() => clock.close());

  /** ms from the EndpointSlice change to the first moment both probes show the traffic moved. */
  const follow = async (
    change: () => Promise<unknown>,
    changed: (ready: Set<string>) => boolean,
    moved: (r: { pods: string[]; failed: number }) => boolean,
    what: string,
  ) => {
    const at = clock.next(changed, 120_000, what);
    await change();
    const changedAt = await at;
    const pending = new Set(probes);
    while (pending.size > 0) {
      if (Date.now() - changedAt > 180_000)
        throw new Error(
          `${what}: ${[...pending].map(p => p.what).join(", ")} did not follow within 180 s`,
        );
      const begun = Date.now();
      for (const probe of [...pending])
        if (moved(await round(probe.address, probe.port))) pending.delete(probe);
      if (pending.size === 0) return begun - changedAt;
      await sleep(Math.max(0, 100 - (Date.now() - begun)));
    }
    return 0;
  };

  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    const before = clock.ready();
    const podsBefore = new Set(
      (await listObjects("pod", namespace, "app=tcp-echo")).map(p => p.metadata.name),
    );
    const up = await follow(
      () => kubectl("-n", namespace, "scale", "deployment/tcp-echo", "--replicas=3"),
      ready => [...ready].some(a => !before.has(a)),
      r => r.pods.some(pod => !podsBefore.has(pod)),
      `${routes} routes, cycle ${cycle}, 2 → 3`,
    );
    await recordFigure(
      t,
      `${routes} routes: scale 2 → 3, EndpointSlice change → the first and last route reach the new pod`,
      up,
    );
    await waitForDeployment(namespace, "tcp-echo");
    await waitFor("3 ready endpoints", async () => (clock.ready().size === 3 ? true : undefined), {
      timeoutMs: 60_000,
    });
    const down = await follow(
      () => kubectl("-n", namespace, "scale", "deployment/tcp-echo", "--replicas=2"),
      ready => ready.size < 3,
      r => r.failed === 0 && r.pods.every(pod => podsBefore.has(pod)),
      `${routes} routes, cycle ${cycle}, 3 → 2`,
    );
    await recordFigure(
      t,
      `${routes} routes: scale 3 → 2, EndpointSlice change → the first and last route stop reaching the removed pod`,
      down,
    );
    await waitFor(
      "the Deployment back at 2 pods",
      async () =>
        (await listObjects("pod", namespace, "app=tcp-echo")).length === 2 ? true : undefined,
      { timeoutMs: 60_000 },
    );
  }
  t.pass(`the first and last of ${routes} routes followed all ${2 * CYCLES} changes`);
}
