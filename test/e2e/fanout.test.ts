// SPDX-License-Identifier: Apache-2.0
// Convergence at scale: 100 and then 1,000 TCPRoutes (50 listeners per Gateway) all send to one
// backend Deployment, so one EndpointSlice change has to reach every route's table. Beside
// them, in the same run, as many ClusterIP Services select the same Deployment: kube-proxy's
// time for the same change is measured the same way, in the same rounds of connections. The
// Deployment goes 2 → 3 → 2 a few times; the time from the change of the EndpointSlice a probe
// follows (watch-stamped: tcp-echo's for the routes, its own for a Service) until both the
// first and the last route (and Service) show it in a round of new connections is a figure
// (recordFigure), never asserted; so are the time to
// apply the objects, the controller's and the agent's memory and CPU time, and blixt's API
// writes per change. Asserted: every Gateway is Programmed and the traffic of every probed
// route and Service follows every change.
//
// Heavy (minutes, a thousand objects): only with BLIXT_E2E_FANOUT=1, which hack/e2e-figures.sh
// sets; CI does not run it.
import t, { type Test } from "tap";
import { execa } from "execa";
import { setTimeout as sleep } from "node:timers/promises";
import {
  apiWrites,
  apply,
  clusterSkipReason,
  echoBackend,
  EndpointClock,
  freshNamespace,
  kubeconfig,
  kubectl,
  listObjects,
  processUsage,
  recordFigure,
  recordValue,
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

const SYSTEM = "blixt-system";
/** The writes blixt makes for a change: its DataplaneConfigs (and their status) and the status it reports. */
const BLIXT_WRITES = [
  "dataplaneconfigs",
  "dataplaneconfigs/status",
  "gateways",
  "gateways/status",
  "tcproutes/status",
];
const blixtWrites = async () => {
  const all = await apiWrites();
  return BLIXT_WRITES.reduce((sum, resource) => sum + (all.get(resource) ?? 0), 0);
};
const usage = async () => ({
  controller: await processUsage(SYSTEM, "deploy/blixt-controller"),
  agent: await processUsage(SYSTEM, "ds/blixt-agent"),
});

/** Applies YAML documents in slices of 100; returns how long it took, in ms. */
async function applyAll(docs: string[]): Promise<number> {
  const started = Date.now();
  for (let i = 0; i < docs.length; i += 100) await apply(docs.slice(i, i + 100).join("\n---\n"));
  return Date.now() - started;
}

/** A probed address, and the Service whose EndpointSlice change it has to follow. */
type Probe = {
  system: "blixt" | "kube-proxy";
  what: string;
  service: string;
  address: string;
  port: number;
};

async function run(t: Test, routes: number) {
  process.env.KUBECONFIG = await kubeconfig();
  const namespace = await freshNamespace(t, `blixt-e2e-fanout-${routes}`);
  const started = Date.now();
  const applying = await applyAll(manifest(namespace, routes));
  // kubectl applies one object at a time, each through the admission webhook: much of the
  // time to Programmed is that, so the apply alone and the time after it are reported too.
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
  await recordFigure(t, `${routes} routes: kubectl apply of the objects`, applying);
  await recordFigure(
    t,
    `${routes} routes: the last object applied → every Gateway Programmed`,
    programmedAt - applied,
  );
  const programmedUsage = await usage();
  await recordValue(
    t,
    `${routes} routes: controller RSS`,
    programmedUsage.controller.rssMiB,
    "MiB",
  );
  await recordValue(t, `${routes} routes: agent RSS`, programmedUsage.agent.rssMiB, "MiB");

  // kube-proxy, side by side: as many ClusterIP Services, selecting the same pods. Services
  // are not Gateway API objects: blixt's webhook does not see them, so their apply is also
  // this cluster's floor for applying that many objects with kubectl.
  const serviceDocs = Array.from(
    { length: routes },
    (_, i) => `apiVersion: v1
kind: Service
metadata: {name: kp${i}, namespace: ${namespace}}
spec:
  selector: {app: tcp-echo}
  ports: [{port: 3000, targetPort: 3000}]`,
  );
  await recordFigure(
    t,
    `${routes} ClusterIP Services: kubectl apply of the objects (no webhook)`,
    await applyAll(serviceDocs),
  );
  // The cluster's node runs in a network namespace of its own, with kube-proxy's rules: this
  // machine reaches a ClusterIP the way a router in front of the node would, through the node's
  // address (the rules' PREROUTING hook, as for a pod's own traffic). A host route per probed
  // Service, removed at the end.
  const nodeIP = (
    await kubectl(
      "get",
      "nodes",
      "-o",
      'jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}',
    )
  ).trim();
  const viaNode = async (address: string) => {
    await execa("ip", ["route", "replace", `${address}/32`, "via", nodeIP]);
    t.teardown(() => execa("ip", ["route", "del", `${address}/32`], { reject: false }));
    return address;
  };
  const clusterIP = async (name: string) =>
    (
      await kubectl("-n", namespace, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
    ).trim();

  const addressOf = (name: string) =>
    gateways.find(g => g.metadata.name === name)?.status?.addresses?.[0]?.value as string;
  const last = routes - 1;
  const probes: Probe[] = [
    {
      system: "blixt",
      what: "first route",
      service: "tcp-echo",
      address: addressOf("g0"),
      port: BASE_PORT,
    },
    {
      system: "blixt",
      what: "last route",
      service: "tcp-echo",
      address: addressOf(`g${Math.floor(last / PER_GATEWAY)}`),
      port: BASE_PORT + (last % PER_GATEWAY),
    },
    {
      system: "kube-proxy",
      what: "first Service",
      service: "kp0",
      address: await viaNode(await clusterIP("kp0")),
      port: 3000,
    },
    {
      system: "kube-proxy",
      what: "last Service",
      service: `kp${last}`,
      address: await viaNode(await clusterIP(`kp${last}`)),
      port: 3000,
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
  await clock.start(namespace, "tcp-echo", name => name === "kp0" || name === `kp${last}`);
  await waitFor(
    "both pods in every Service's EndpointSlice",
    async () => (clock.ready().size === 2 && clock.settled() ? true : undefined),
    { timeoutMs: 120_000 },
  );
  t.teardown(() => clock.close());

  /**
   * Per system, the slower of its two probes: ms from the change of the EndpointSlice the probe
   * follows (tcp-echo's for the routes, its own Service's for a ClusterIP) to the first round of
   * connections that shows the traffic moved. The EndpointSlice controller updates the slices
   * of the Services one at a time (its API client is rate-limited), so each probe is timed from
   * its own Service's change: what neither blixt nor kube-proxy can start before. Both systems
   * are probed in the same rounds.
   */
  const follow = async (
    change: () => Promise<unknown>,
    changed: (ready: Set<string>) => boolean,
    moved: (r: { pods: string[]; failed: number }) => boolean,
    what: string,
  ) => {
    const services = [...new Set(probes.map(p => p.service))];
    const changes = new Map(
      services.map(service => {
        const at = clock.next(changed, 180_000, what, service);
        at.catch(() => {}); // awaited below, when its probe has moved
        return [service, at];
      }),
    );
    await change();
    const started = Date.now();
    const pending = new Set(probes);
    const took = new Map<Probe, number>();
    while (pending.size > 0) {
      if (Date.now() - started > 240_000)
        throw new Error(
          `${what}: ${[...pending].map(p => `${p.what} (${p.system})`).join(", ")} did not follow within 240 s`,
        );
      const begun = Date.now();
      for (const probe of [...pending])
        if (moved(await round(probe.address, probe.port))) {
          pending.delete(probe);
          // A probe can show the change before this watch delivers it: 0 then.
          took.set(probe, Math.max(0, begun - (await changes.get(probe.service)!)));
        }
      await sleep(Math.max(0, 100 - (Date.now() - begun)));
    }
    const slowest = (system: Probe["system"]) =>
      Math.max(...probes.filter(p => p.system === system).map(p => took.get(p)!));
    return { blixt: slowest("blixt"), kubeProxy: slowest("kube-proxy") };
  };

  /** The agent's count of bpftool map commands so far, from its /metrics on the node's address. */
  const mapCommands = async () => {
    const text = await (await fetch(`http://${nodeIP}:9090/metrics`)).text();
    const value = Number(text.match(/^blixt_agent_map_commands_total (\S+)$/m)?.[1]);
    if (!Number.isFinite(value))
      throw new Error(
        `the agent's /metrics on ${nodeIP}:9090 has no blixt_agent_map_commands_total`,
      );
    return value;
  };
  const usageBefore = await usage();
  const writesBefore = await blixtWrites();
  const commandsBefore = await mapCommands();
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
      up.blixt,
    );
    await recordFigure(
      t,
      `${routes} ClusterIP Services (kube-proxy): scale 2 → 3, EndpointSlice change → the first and last Service reach the new pod`,
      up.kubeProxy,
    );
    await waitForDeployment(namespace, "tcp-echo");
    await waitFor(
      "3 ready endpoints in every Service's EndpointSlice",
      async () => (clock.ready().size === 3 && clock.settled() ? true : undefined),
      { timeoutMs: 180_000 },
    );
    const down = await follow(
      () => kubectl("-n", namespace, "scale", "deployment/tcp-echo", "--replicas=2"),
      ready => ready.size < 3,
      r => r.failed === 0 && r.pods.every(pod => podsBefore.has(pod)),
      `${routes} routes, cycle ${cycle}, 3 → 2`,
    );
    await recordFigure(
      t,
      `${routes} routes: scale 3 → 2, EndpointSlice change → the first and last route stop reaching the removed pod`,
      down.blixt,
    );
    await recordFigure(
      t,
      `${routes} ClusterIP Services (kube-proxy): scale 3 → 2, EndpointSlice change → the first and last Service stop reaching the removed pod`,
      down.kubeProxy,
    );
    await waitFor(
      "the Deployment back at 2 pods, in every Service's EndpointSlice",
      async () =>
        (await listObjects("pod", namespace, "app=tcp-echo")).length === 2 && clock.settled()
          ? true
          : undefined,
      { timeoutMs: 180_000 },
    );
  }
  t.pass(`the first and last of ${routes} routes and Services followed all ${2 * CYCLES} changes`);

  // Per change: the pod changes of the cycles, and every EndpointSlice of the kube-proxy
  // Services changing with them (the controller watches every EndpointSlice).
  const changes = 2 * CYCLES;
  const usageAfter = await usage();
  await recordValue(
    t,
    `${routes} routes: blixt's API writes per EndpointSlice change`,
    ((await blixtWrites()) - writesBefore) / changes,
    "writes",
  );
  await recordValue(
    t,
    `${routes} routes: the agent's map writes (bpftool commands) per EndpointSlice change`,
    ((await mapCommands()) - commandsBefore) / changes,
    "writes",
  );
  await recordFigure(
    t,
    `${routes} routes: controller CPU time per EndpointSlice change`,
    Math.round((usageAfter.controller.cpuMs - usageBefore.controller.cpuMs) / changes),
  );
  await recordFigure(
    t,
    `${routes} routes: agent CPU time per EndpointSlice change`,
    Math.round((usageAfter.agent.cpuMs - usageBefore.agent.cpuMs) / changes),
  );
}
