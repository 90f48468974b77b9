// SPDX-License-Identifier: Apache-2.0
// Scaling a backend Deployment up and down under load. Long-lived TCP connections to the
// original pods stay open throughout; in each cycle the Deployment goes from 2 to 4 replicas
// and back, and two clocks run: the EndpointSlice (a watch, each change stamped on arrival) and
// the traffic (a round of 8 new connections every 100 ms through the Gateway). The time from the
// EndpointSlice change to the first round that shows it (a new pod reached; no removed pod
// reached) is the convergence figure, reported as p50/p99 (recordFigure), never asserted.
// What is asserted: new pods get traffic, removed pods stop getting it, and no connection
// to a surviving pod breaks.
import t, { type Test } from "tap";
import { setTimeout as sleep } from "node:timers/promises";
import {
  apply,
  clusterSkipReason,
  echoBackend,
  EndpointClock,
  freshNamespace,
  gatewayAddress,
  kubeconfig,
  kubectl,
  listObjects,
  recordFigure,
  tcpEcho,
  tcpEchoOnce,
  waitFor,
  waitForCondition,
  waitForDeployment,
  type LineClient,
} from "../lib/cluster.js";

const skip = clusterSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(10 * 60 * 1000);
  t.test(
    "scaling a Deployment under load moves new connections and breaks none to surviving pods",
    run,
  );
}

const CYCLES = 4;
const ROUND = 8;

/** One round of new connections; the pods that served them and how many failed. */
async function round(address: string, port: number): Promise<{ pods: string[]; failed: number }> {
  const results = await Promise.allSettled(
    Array.from({ length: ROUND }, () => tcpEchoOnce(address, port)),
  );
  return {
    pods: results.flatMap(r => (r.status === "fulfilled" ? [r.value.pod] : [])),
    failed: results.filter(r => r.status === "rejected").length,
  };
}

/**
 * Makes the change, then runs rounds of traffic from the moment the EndpointSlice shows it
 * until a round shows the traffic followed; returns the time between the two in ms.
 */
async function measure(options: {
  clock: EndpointClock;
  address: string;
  port: number;
  change: () => Promise<unknown>;
  changed: (ready: Set<string>) => boolean;
  moved: (r: { pods: string[]; failed: number }) => boolean | Promise<boolean>;
  what: string;
}): Promise<number> {
  const changed = options.clock.next(options.changed, 120_000, options.what);
  await options.change();
  const changedAt = await changed;
  const deadline = changedAt + 120_000;
  let rounds = 0;
  let withFailures = 0;
  let last: { pods: string[]; failed: number } = { pods: [], failed: 0 };
  while (Date.now() < deadline) {
    const started = Date.now();
    last = await round(options.address, options.port);
    rounds++;
    if (last.failed > 0) withFailures++;
    if (await options.moved(last)) return started - changedAt;
    await sleep(Math.max(0, 100 - (Date.now() - started)));
  }
  // What the rounds saw, so that a failure says whether connections failed or went astray.
  throw new Error(
    `${options.what}: traffic did not follow the EndpointSlice within 120 s of its change ` +
      `(${rounds} rounds of ${ROUND} connections, ${withFailures} with failed connections; ` +
      `the last: ${last.failed} failed, served by ${last.pods.join(", ") || "none"})`,
  );
}

/** The pods of the Deployment that are not being deleted (a scale-down's survivors). */
async function stayingPods(namespace: string): Promise<Set<string>> {
  return new Set(
    (await listObjects("pod", namespace, "app=tcp-echo"))
      .filter(p => !p.metadata.deletionTimestamp)
      .map(p => p.metadata.name),
  );
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

async function run(t: Test) {
  process.env.KUBECONFIG = await kubeconfig();
  const namespace = await freshNamespace(t, "blixt-e2e-scaling");
  const port = 7600;
  await apply(`
${echoBackend({ namespace, name: "tcp-echo", protocol: "TCP", port: 3000, replicas: 2 })}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: scaling, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: ${namespace}}
spec:
  parentRefs: [{name: scaling, sectionName: tcp}]
  rules: [{backendRefs: [{name: tcp-echo, port: 3000}]}]
`);
  await waitForDeployment(namespace, "tcp-echo");
  await waitForCondition("gateway", "scaling", namespace, "Programmed", { status: "True" });
  const address = await gatewayAddress(namespace, "scaling");
  await waitFor(
    "both pods behind the Gateway",
    async () => {
      const { pods } = await round(address, port);
      return new Set(pods).size === 2 ? pods : undefined;
    },
    { timeoutMs: 60_000 },
  );

  // Long-lived connections, at least one to each original pod.
  const original = new Set(
    (await listObjects("pod", namespace, "app=tcp-echo")).map(p => p.metadata.name),
  );
  const held: { client: LineClient; pod: string }[] = [];
  t.teardown(() => held.forEach(h => h.client.close()));
  for (let i = 0; i < 40 && new Set(held.map(h => h.pod)).size < original.size; i++) {
    const { client, context } = await tcpEcho(address, port);
    held.push({ client, pod: context.pod });
  }
  t.same(new Set(held.map(h => h.pod)), original, "a long-lived connection to each original pod");

  const clock = new EndpointClock();
  await clock.start(namespace, "tcp-echo");
  t.teardown(() => clock.close());
  const up: number[] = [];
  const down: number[] = [];
  for (let cycle = 1; cycle <= CYCLES; cycle++) {
    const before = clock.ready();
    const podsBefore = new Set(
      (await listObjects("pod", namespace, "app=tcp-echo")).map(p => p.metadata.name),
    );
    up.push(
      await measure({
        clock,
        address,
        port,
        what: `cycle ${cycle}, 2 → 4`,
        change: () => kubectl("-n", namespace, "scale", "deployment/tcp-echo", "--replicas=4"),
        changed: ready => [...ready].some(a => !before.has(a)),
        moved: r => r.pods.some(pod => !podsBefore.has(pod)),
      }),
    );
    await waitForDeployment(namespace, "tcp-echo");
    await waitFor("4 ready endpoints", async () => (clock.ready().size === 4 ? true : undefined), {
      timeoutMs: 60_000,
    });
    const scaledUp = new Set(clock.ready());
    const podsScaledUp = new Set(
      (await listObjects("pod", namespace, "app=tcp-echo")).map(p => p.metadata.name),
    );

    // The ReplicaSet picks which two go (usually the newer ones; an original pod that
    // restarted goes first): the pods being deleted, whose endpoints stop being ready. The
    // figure is taken at the first of them; the traffic has moved once neither is reached.
    const down2 = await measure({
      clock,
      address,
      port,
      what: `cycle ${cycle}, 4 → 2`,
      change: () => kubectl("-n", namespace, "scale", "deployment/tcp-echo", "--replicas=2"),
      changed: ready => ready.size < scaledUp.size,
      moved: async r => {
        if (r.failed > 0) return false;
        const staying = await stayingPods(namespace);
        const leaving = [...podsScaledUp].filter(pod => !staying.has(pod));
        return leaving.length > 0 && r.pods.every(pod => staying.has(pod));
      },
    });
    down.push(down2);
    await waitFor(
      "the Deployment back at 2 pods",
      async () => {
        const pods = await listObjects("pod", namespace, "app=tcp-echo");
        return pods.length === 2 ? pods : undefined;
      },
      { timeoutMs: 60_000 },
    );

    // Every held connection to a pod that is still there answers on the same connection.
    const alive = new Set(
      (await listObjects("pod", namespace, "app=tcp-echo")).map(p => p.metadata.name),
    );
    for (const h of held.filter(h => alive.has(h.pod))) {
      t.equal(
        await h.client.request("PING"),
        "PONG",
        `cycle ${cycle}: the connection to surviving pod ${h.pod} still answers`,
      );
    }
    // Which pods the ReplicaSet removed is Kubernetes' choice, not blixt's: said, not asserted.
    t.comment(
      `cycle ${cycle}: the ReplicaSet removed ${[...podsBefore].every(pod => alive.has(pod)) ? "the newer pods" : "an original pod"}`,
    );
  }

  t.comment(`EndpointSlice change → traffic moved, scale up (ms): ${up.join(", ")}`);
  t.comment(`EndpointSlice change → traffic moved, scale down (ms): ${down.join(", ")}`);
  await recordFigure(
    t,
    `scale 2 → 4: EndpointSlice change → new pods get traffic, p50 (${up.length} samples)`,
    percentile(up, 50),
  );
  await recordFigure(
    t,
    `scale 2 → 4: EndpointSlice change → new pods get traffic, p99 (${up.length} samples)`,
    percentile(up, 99),
  );
  await recordFigure(
    t,
    `scale 4 → 2: EndpointSlice change → removed pods get none, p50 (${down.length} samples)`,
    percentile(down, 50),
  );
  await recordFigure(
    t,
    `scale 4 → 2: EndpointSlice change → removed pods get none, p99 (${down.length} samples)`,
    percentile(down, 99),
  );
  t.equal(up.length + down.length, 2 * CYCLES, "every change was followed by the traffic");
}
