// SPDX-License-Identifier: Apache-2.0
// Failover on the kind cluster: the node announcing a Gateway address is powered off (its
// container killed, hack/kind.sh stop-node) while a long TCP stream and a steady UDP flow (a
// datagram every 100 ms) run from the machine's root namespace through the address to a
// backend on the control plane, which stays up. The agents' Leases (capabilities/agent/
// leases.ts) let the standby take the address over by itself: the address answers again, the
// machine's ARP entry points at the new announcer, the TCP stream and 20 idle connections go on
// without a reconnect, and every UDP reply comes from the same backend. Flows to a backend on
// the stopped node fail until the EndpointSlice marks it not ready; then every new flow goes to
// the backend left. The node then returns, and nothing moves back. Then the new announcer's
// agent alone is killed (its node stays up): the next node takes over the same way, its node
// (running on without an agent) stops answering ARP once the announce deadline passes, so one
// node alone answers (arping), and the restarted agent takes nothing back. Then the API server
// is stopped for longer than a Lease: nobody takes over, the announcer keeps serving, and nothing
// moves when it returns. Then the announcer alone is cut off from the API server (iptables in
// its node): another node takes over, and the cut-off node, hearing its gratuitous ARP, stops
// answering, so one node answers throughout. Then the node the controller runs on is powered
// off: Kubernetes starts a new controller elsewhere, which names the node announcing now. The
// times, the share of connections kept and the agents' Lease writes per second (a watch of
// their Leases over 10 s, before any failure) are figures (recordFigure, recordValue), never
// assertions: speed belongs to bench/.
//
// It stops a node: hack/test.sh runs it alone, after every other kind test and the suite.
import t, { type Test } from "tap";
import { once } from "node:events";
import net from "node:net";
import { createSocket } from "node:dgram";
import { execa } from "execa";
import { K8s, RegisterKind } from "kubernetes-fluent-client";
import { V1Lease } from "@kubernetes/client-node";
import {
  netcheckPod,
  nodeNames,
  parseAnswer,
  tcpAnswer,
  whoAmITcp,
  whoAmIUdp,
} from "../lib/kind.js";
import {
  LineClient,
  apply,
  freshNamespace,
  getObject,
  kindSkipReason,
  kubeconfig,
  kubectl,
  recordFigure,
  recordValue,
  waitFor,
  waitForCondition,
} from "../lib/cluster.js";
import { rendezvousPick } from "../../capabilities/rendezvous.js";
import { LEASE_DEFAULTS, returnGraceMs } from "../../capabilities/agent/leases.js";

RegisterKind(V1Lease, {
  group: "coordination.k8s.io",
  version: "v1",
  kind: "Lease",
  plural: "leases",
});

/**
 * The agents' Lease writes per node and second: the MODIFIED events a watch of their Leases
 * (label app.kubernetes.io/component=agent-lease) sees over `ms`, per Lease.
 */
async function leaseWritesPerNode(ms: number): Promise<Map<string, number>> {
  process.env.KUBECONFIG = await kubeconfig();
  const writes = new Map<string, number>();
  const watcher = K8s(V1Lease)
    .InNamespace(process.env.BLIXT_NAMESPACE ?? "blixt-system")
    .WithLabel("app.kubernetes.io/component", "agent-lease")
    .Watch((lease, phase) => {
      if (String(phase) !== "MODIFIED") return;
      const name = lease.metadata?.name ?? "";
      writes.set(name, (writes.get(name) ?? 0) + 1);
    });
  await watcher.start();
  await new Promise(resolve => setTimeout(resolve, ms));
  watcher.close();
  return new Map([...writes].map(([name, n]) => [name, n / (ms / 1000)]));
}

const skip = kindSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(12 * 60 * 1000);
  t.test("the announcing node fails", run);
}

const tcpPort = 7400;
const udpPort = 7401;
const spreadPort = 7402;
/** Connections held open, idle, across the failover besides the stream. */
const IDLE_CONNECTIONS = 20;

/** The MAC of a kind node on the `kind` network. */
async function nodeMac(node: string): Promise<string> {
  const { stdout } = await execa("docker", [
    "inspect",
    "-f",
    "{{.NetworkSettings.Networks.kind.MacAddress}}",
    node,
  ]);
  return stdout.trim().toLowerCase();
}

/** The root namespace's neighbour entry for `address`: its MAC, or undefined. */
async function neighbourMac(address: string): Promise<string | undefined> {
  const { stdout } = await execa("ip", ["-4", "neigh", "show", address]);
  return /lladdr ([0-9a-f:]+)/.exec(stdout)?.[1];
}

/**
 * Every MAC that answers ARP requests for `address` on the kind network, asked from the root
 * namespace by arping (two requests, replies collected for 3 s): one node, or a split brain.
 */
async function arpAnswerers(address: string): Promise<string[]> {
  const route = (await execa("ip", ["-o", "-4", "route", "get", address])).stdout;
  const dev = /\bdev (\S+)/.exec(route)?.[1];
  if (!dev) throw new Error(`no route to ${address} in the root namespace: ${route}`);
  // Exits 1 when nobody answered; the empty list says that.
  const { stdout } = await execa("arping", ["-c", "2", "-w", "3", "-I", dev, address], {
    reject: false,
  });
  const macs = [...stdout.matchAll(/\[([0-9A-Fa-f:]{17})\]/g)].map(m => m[1].toLowerCase());
  return [...new Set(macs)].sort();
}

async function kindSh(...args: string[]): Promise<void> {
  await execa("hack/kind.sh", args, { stdio: "inherit" });
}

/** Waits until the agent on `node` runs in a container started after `since` and is ready. */
async function agentRunningSince(node: string, since: number): Promise<void> {
  const agentNamespace = process.env.BLIXT_NAMESPACE ?? "blixt-system";
  await waitFor(
    `the agent on ${node} running again and ready`,
    async () => {
      const pods = JSON.parse(
        await kubectl(
          "-n",
          agentNamespace,
          "get",
          "pods",
          "-l",
          "app.kubernetes.io/component=agent",
          "--field-selector",
          `spec.nodeName=${node}`,
          "-o",
          "json",
        ),
      ) as {
        items: {
          status?: {
            conditions?: { type: string; status: string }[];
            containerStatuses?: { state?: { running?: { startedAt?: string } } }[];
          };
        }[];
      };
      const pod = pods.items[0];
      const started = Date.parse(
        pod?.status?.containerStatuses?.[0]?.state?.running?.startedAt ?? "",
      );
      const ready = pod?.status?.conditions?.some(c => c.type === "Ready" && c.status === "True");
      // startedAt has whole seconds: a container started within the second of `since` counts.
      return started >= since - 1000 && ready ? true : undefined;
    },
    { timeoutMs: 180_000, intervalMs: 1000 },
  );
}

/** Starts a stopped node again (a teardown: a running node is left alone). */
async function startIfStopped(node: string): Promise<void> {
  const { stdout } = await execa("docker", ["inspect", "-f", "{{.State.Running}}", node]);
  if (stdout.trim() !== "true") await kindSh("start-node", node);
}

/** blixt's Pods of one component (controller, agent): name, node, Ready, being deleted. */
async function blixtPods(
  component: "controller" | "agent",
): Promise<{ name: string; node: string; ready: boolean; deleting: boolean }[]> {
  const pods = JSON.parse(
    await kubectl(
      "-n",
      process.env.BLIXT_NAMESPACE ?? "blixt-system",
      "get",
      "pods",
      "-l",
      `app.kubernetes.io/component=${component}`,
      "-o",
      "json",
    ),
  ) as {
    items: {
      metadata: { name: string; deletionTimestamp?: string };
      spec?: { nodeName?: string };
      status?: { conditions?: { type: string; status: string }[] };
    }[];
  };
  return pods.items.map(pod => ({
    name: pod.metadata.name,
    node: pod.spec?.nodeName ?? "",
    ready: !!pod.status?.conditions?.some(c => c.type === "Ready" && c.status === "True"),
    deleting: !!pod.metadata.deletionTimestamp,
  }));
}

const controllerPods = () => blixtPods("controller");

/**
 * When an address moved that should not have: the controller's and the agents' log lines about
 * the agent Leases since `since` (ms), as comments, to tell whose renewal came late.
 */
async function commentLeaseLog(t: Test, since: number): Promise<void> {
  const seconds = `${Math.ceil((Date.now() - since) / 1000) + 5}s`;
  for (const pod of [...(await controllerPods()), ...(await blixtPods("agent"))]) {
    const out = await kubectl(
      "-n",
      process.env.BLIXT_NAMESPACE ?? "blixt-system",
      "logs",
      pod.name,
      `--since=${seconds}`,
    ).catch((error: Error) => error.message);
    const lines = out.split("\n").filter(l => /Lease|renew/.test(l));
    t.comment(`${pod.name} on ${pod.node}: ${lines.length} lines about Leases`);
    for (const line of lines.slice(-40)) t.comment(`  ${line.slice(0, 400)}`);
  }
}

/** The nodes where a ready agent Pod runs (not being deleted). */
async function readyAgentNodes(): Promise<Set<string>> {
  return new Set((await blixtPods("agent")).filter(p => p.ready && !p.deleting).map(p => p.node));
}

/** Kills the agent's container on `node` (SIGKILL, as a crash): the node itself stays up. */
async function killAgent(node: string): Promise<void> {
  const { stdout } = await execa("docker", [
    "exec",
    node,
    "crictl",
    "ps",
    "--name",
    "^agent$",
    "-q",
  ]);
  const id = stdout.trim().split(/\s+/)[0];
  if (!id) throw new Error(`no running agent container on ${node}`);
  await execa("docker", ["exec", node, "crictl", "stop", "--timeout", "0", id]);
}

/** Whether the API server answers /readyz. */
async function apiReady(): Promise<boolean> {
  return kubectl("get", "--raw", "/readyz").then(
    out => out.trim() === "ok",
    () => false,
  );
}

const APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml";
const APISERVER_PARKED = "/etc/kubernetes/kube-apiserver.yaml.stopped";

async function run(t: Test) {
  const nodes = await nodeNames();
  const controlPlane = nodes.find(n => n.endsWith("control-plane"));
  const workers = nodes.filter(n => n !== controlPlane);
  if (!controlPlane || workers.length < 2) {
    t.fail(`needs a control plane and two workers: ${nodes.join(", ")}`);
    return;
  }
  // The controller picks the rendezvous choice only among nodes whose agent is ready, and keeps
  // its pick afterwards: a run right after another (whose last step restarted a node) waits for
  // every agent, and for the one controller, before its Gateway exists.
  await waitFor(
    "a ready agent on every node",
    async () => {
      const ready = await readyAgentNodes();
      return nodes.every(n => ready.has(n)) ? true : undefined;
    },
    {
      timeoutMs: 180_000,
      intervalMs: 1000,
      describe: async () => [...(await readyAgentNodes())].join(", "),
    },
  );
  // The node the controller runs on fails last, on its own (Kubernetes replaces the controller
  // there, not blixt): the address is one announced by the other worker.
  const running = await waitFor(
    "one ready controller",
    async () => {
      const pods = (await controllerPods()).filter(p => p.ready && !p.deleting);
      return pods.length === 1 ? pods : undefined;
    },
    {
      timeoutMs: 180_000,
      intervalMs: 1000,
      describe: async () => JSON.stringify(await controllerPods()),
    },
  );
  const controllerNode = running[0].node;
  // A static address of the kind pool that a worker announces: the controller picks by the
  // same rendezvous hash when every node is ready.
  let address = "";
  for (let last = 190; last > 100 && !address; last--) {
    const candidate = `198.19.253.${last}`;
    const pick = rendezvousPick(candidate, nodes)!;
    if (workers.includes(pick) && pick !== controllerNode) address = candidate;
  }
  if (!address) {
    t.fail(`no address of the pool is announced by a worker other than ${controllerNode}`);
    return;
  }
  const announcer = rendezvousPick(address, nodes)!;
  const standby = rendezvousPick(
    address,
    nodes.filter(n => n !== announcer),
  )!;
  t.comment(
    `address ${address}: announced by ${announcer}, ${standby} takes it over; the controller runs on ${controllerNode}`,
  );

  const namespace = await freshNamespace(t, "blixt-e2e-failover");
  // The backend stays up: on the control plane.
  await apply(
    `
${netcheckPod({
  name: "backend",
  namespace,
  node: controlPlane,
  labels: { app: "backend" },
  tolerateAll: true,
  containers: [
    {
      name: "tcp",
      command: ["socat", "TCP-LISTEN:8080,fork,reuseaddr,backlog=128", "EXEC:cat"],
      readyPort: 8080,
    },
    { name: "udp", command: whoAmIUdp(8081) },
  ],
})}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: ${namespace}}
spec:
  selector: {app: backend}
  ports:
  - {name: tcp, protocol: TCP, port: 8080, targetPort: 8080}
  - {name: udp, protocol: UDP, port: 8081, targetPort: 8081}
---
# Two more backends behind one Service: one on the node that will fail, one on the control
# plane. Flows the failed node's backend would take fail until the EndpointSlice drops it.
${netcheckPod({
  name: "spread-doomed",
  namespace,
  node: announcer,
  labels: { app: "spread" },
  containers: [{ name: "tcp", command: whoAmITcp(8080), readyPort: 8080 }],
})}
---
${netcheckPod({
  name: "spread-stays",
  namespace,
  node: controlPlane,
  labels: { app: "spread" },
  tolerateAll: true,
  containers: [{ name: "tcp", command: whoAmITcp(8080), readyPort: 8080 }],
})}
---
apiVersion: v1
kind: Service
metadata: {name: spread, namespace: ${namespace}}
spec:
  selector: {app: spread}
  ports: [{name: tcp, protocol: TCP, port: 8080, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: spread, namespace: ${namespace}}
spec:
  parentRefs: [{name: failover, sectionName: spread}]
  rules: [{backendRefs: [{name: spread, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: failover, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  addresses: [{type: IPAddress, value: ${address}}]
  listeners:
  - {name: tcp, protocol: TCP, port: ${tcpPort}}
  - {name: udp, protocol: UDP, port: ${udpPort}}
  - {name: spread, protocol: TCP, port: ${spreadPort}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: ${namespace}}
spec:
  parentRefs: [{name: failover, sectionName: tcp}]
  rules: [{backendRefs: [{name: backend, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: udp, namespace: ${namespace}}
spec:
  parentRefs: [{name: failover, sectionName: udp}]
  rules: [{backendRefs: [{name: backend, port: 8081}]}]
`,
  );
  await kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=180s");
  await waitForCondition(
    "gateway",
    "failover",
    namespace,
    "Programmed",
    { status: "True" },
    180_000,
  );
  const announcingNode = async () =>
    (await getObject("dataplaneconfig", "failover", namespace))?.spec?.announcingNode as
      | string
      | undefined;
  // Once every node's agent is seen live (a Lease that lapsed on a busy machine moves the
  // choice meanwhile), the controller's choice is the rendezvous pick of all nodes.
  await waitFor(
    `the controller choosing ${announcer}`,
    async () => ((await announcingNode()) === announcer ? true : undefined),
    { timeoutMs: 60_000, intervalMs: 500, describe: async () => `${await announcingNode()}` },
  );
  t.pass(`the controller chose ${announcer}`);

  // What the Leases cost the API server at the chart's defaults, measured by a watch.
  const leaseWrites = await leaseWritesPerNode(10_000);
  t.equal(
    leaseWrites.size,
    nodes.length,
    `every node's agent renews its Lease: ${JSON.stringify(Object.fromEntries(leaseWrites))}`,
  );
  for (const perSecond of leaseWrites.values())
    await recordValue(t, "Lease writes per second per node (defaults)", perSecond, "/s");

  // The long TCP stream: one connection, a line every 100 ms, each echoed back.
  const stream = await waitFor(
    `a TCP connection to ${address}:${tcpPort}`,
    async () => {
      const client = await LineClient.connect(address, tcpPort).catch(() => undefined);
      if (!client) return undefined;
      const ok = await client.request("hello").then(
        line => line === "hello",
        () => false,
      );
      if (ok) return client;
      client.close();
      return undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  t.teardown(() => stream.close());
  // Established connections besides the stream, idle across the failover: each says one line
  // before and one after.
  const idle: LineClient[] = [];
  for (let i = 0; i < IDLE_CONNECTIONS; i++) {
    const client = await LineClient.connect(address, tcpPort);
    t.teardown(() => client.close());
    if ((await client.request(`idle-${i}`).catch(() => "")) === `idle-${i}`) idle.push(client);
  }
  t.equal(idle.length, IDLE_CONNECTIONS, `${IDLE_CONNECTIONS} more connections established`);
  let sent = 0;
  let streamError: Error | undefined;
  let longestTcpStall = 0;
  let streaming = true;
  const tcpLoop = (async () => {
    while (streaming) {
      const line = `line-${++sent}`;
      const started = Date.now();
      const answer = await stream.request(line, 30_000).catch((e: Error) => e);
      if (answer instanceof Error || answer !== line) {
        streamError =
          answer instanceof Error ? answer : new Error(`sent ${line}, got back ${answer}`);
        return;
      }
      longestTcpStall = Math.max(longestTcpStall, Date.now() - started);
      await new Promise(resolve => setTimeout(resolve, 100));
    }
  })();

  // The steady UDP flow: one socket (one flow), a datagram every 100 ms.
  const udp = createSocket("udp4");
  udp.bind(0);
  await once(udp, "listening");
  t.teardown(() => udp.close());
  const replies: { at: number; pod: string; from: string }[] = [];
  udp.on("message", (message, rinfo) =>
    replies.push({
      at: Date.now(),
      pod: parseAnswer(message.toString("utf8"), `UDP ${address}:${udpPort}`).pod,
      from: `${rinfo.address}:${rinfo.port}`,
    }),
  );
  const udpTimer = setInterval(() => udp.send("which", udpPort, address), 100);
  t.teardown(() => clearInterval(udpTimer));
  await waitFor("UDP replies", async () => (replies.length >= 10 ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 200,
  });
  // Nothing failed yet: the address is where the controller put it. (A Lease judged lapsed while
  // the busy API server held renewals back would have moved it: leases.ts, #bridgeSilence.)
  t.equal(
    await announcingNode(),
    announcer,
    `the DataplaneConfig still names ${announcer}: no node's Lease was judged lapsed`,
  );
  const nodeByMac = new Map(
    await Promise.all(nodes.map(async n => [await nodeMac(n), n] as const)),
  );
  const neighbour = await neighbourMac(address);
  t.equal(
    (neighbour && nodeByMac.get(neighbour)) ?? `${neighbour ?? "no"} entry`,
    announcer,
    `ARP: ${address} is at ${announcer}`,
  );

  // Both backends of the spread Service take new flows.
  const spreadPods = new Set<string>();
  for (let i = 0; i < 60 && spreadPods.size < 2; i++)
    spreadPods.add((await tcpAnswer(address, spreadPort)).pod);
  t.same([...spreadPods].sort(), ["spread-doomed", "spread-stays"], "both spread backends answer");

  // Power the announcer off.
  const stoppedAt = Date.now();
  await kindSh("stop-node", announcer);
  const standbyMac = await nodeMac(standby);
  // Replies stop when the node goes, and resume once the standby took the address over.
  await waitFor(
    `UDP replies again after ${announcer} stopped`,
    async () => {
      const now = Date.now();
      return replies.some(r => r.at > stoppedAt + 1000 && r.at > now - 300) ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 50 },
  );
  await waitFor(
    `the machine's ARP entry for ${address} at ${standby} (${standbyMac})`,
    async () => ((await neighbourMac(address)) === standbyMac ? true : undefined),
    { timeoutMs: 30_000, intervalMs: 200, describe: async () => `${await neighbourMac(address)}` },
  );
  t.pass(`ARP: ${address} is at ${standby} now`);
  // Some seconds of traffic through the new announcer.
  await new Promise(resolve => setTimeout(resolve, 3000));
  t.notOk(streamError, `the TCP stream went on without a reconnect (${sent} lines)`, {
    error: streamError?.message,
  });
  let kept = 0;
  for (const [i, client] of idle.entries())
    if ((await client.request(`after-${i}`, 10_000).catch(() => "")) === `after-${i}`) kept++;
  await recordValue(
    t,
    "failover: established TCP connections kept (stream and idle ones)",
    (100 * (kept + (streamError ? 0 : 1))) / (IDLE_CONNECTIONS + 1),
    "%",
  );
  t.equal(
    kept,
    IDLE_CONNECTIONS,
    `every idle connection still echoes: ${kept} of ${IDLE_CONNECTIONS}`,
  );
  // The silence the failure made: the longest gap between two replies around the stop.
  let longestUdpSilence = 0;
  let answeredAt = stoppedAt;
  for (let i = 1; i < replies.length; i++) {
    const gap = replies[i].at - replies[i - 1].at;
    if (replies[i].at > stoppedAt && gap > longestUdpSilence) {
      longestUdpSilence = gap;
      answeredAt = replies[i].at;
    }
  }
  await recordFigure(t, "failover: node stopped → address answers again", answeredAt - stoppedAt);
  await recordFigure(t, "failover: longest UDP silence", longestUdpSilence);
  await recordFigure(t, "failover: longest TCP round trip", longestTcpStall);
  t.same(
    [...new Set(replies.map(r => r.pod))],
    ["backend"],
    "every UDP reply came from the same backend",
  );
  t.same(
    [...new Set(replies.map(r => r.from))],
    [`${address}:${udpPort}`],
    "and from the Gateway address",
  );

  // The controller catches up once Kubernetes sees the node gone.
  const caughtUp = await waitFor(
    `the DataplaneConfig naming ${standby} as its announcer`,
    async () => ((await announcingNode()) === standby ? Date.now() : undefined),
    { timeoutMs: 180_000, intervalMs: 1000, describe: async () => `${await announcingNode()}` },
  );
  await recordFigure(
    t,
    "failover: node stopped → controller names the new announcer",
    caughtUp - stoppedAt,
  );
  // Flows to the backend on the stopped node fail, as they must, until Kubernetes marks the
  // node's pods not ready and the EndpointSlice says so; then every new flow goes to the rest.
  const quickAnswer = (): Promise<string | undefined> =>
    new Promise(resolve => {
      const socket = net.connect({ host: address, port: spreadPort });
      let data = "";
      socket.setTimeout(2000, () => (socket.destroy(), resolve(undefined)));
      socket.on("data", chunk => (data += chunk.toString("utf8")));
      socket.once("error", () => resolve(undefined));
      socket.once("end", () => (socket.destroy(), resolve(data.trim().split(/\s+/)[0])));
    });
  const early: (string | undefined)[] = [];
  for (let i = 0; i < 10; i++) early.push(await quickAnswer());
  t.notOk(early.includes("spread-doomed"), "nothing answers from the stopped node's backend");
  t.comment(
    `before the EndpointSlice changed: ${early.filter(a => a === undefined).length} of 10 new flows failed, ${early.filter(a => a === "spread-stays").length} reached spread-stays`,
  );
  const notReadyAt = await waitFor(
    "the EndpointSlice of spread with the stopped node's backend not ready",
    async () => {
      const slices = JSON.parse(
        await kubectl(
          "-n",
          namespace,
          "get",
          "endpointslices",
          "-l",
          "kubernetes.io/service-name=spread",
          "-o",
          "json",
        ),
      ) as {
        items: {
          endpoints?: { targetRef?: { name?: string }; conditions?: { ready?: boolean } }[];
        }[];
      };
      const doomed = slices.items
        .flatMap(slice => slice.endpoints ?? [])
        .find(e => e.targetRef?.name === "spread-doomed");
      return !doomed || doomed.conditions?.ready === false ? Date.now() : undefined;
    },
    { timeoutMs: 240_000, intervalMs: 1000 },
  );
  await recordFigure(
    t,
    "failover: node stopped → the EndpointSlice marks its backend not ready",
    notReadyAt - stoppedAt,
  );
  const allToTheRest = await waitFor(
    "20 new flows in a row, every one answered by spread-stays",
    async () => {
      for (let i = 0; i < 20; i++) if ((await quickAnswer()) !== "spread-stays") return undefined;
      return Date.now();
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  await recordFigure(
    t,
    "failover: EndpointSlice change → every new flow goes to the backends left",
    allToTheRest - notReadyAt,
  );
  t.pass("after the EndpointSlice change every new flow reaches the backend left");

  // The node comes back: nothing moves back.
  await kindSh("start-node", announcer);
  // Its agent started again (a container started after the stop) and is ready.
  await agentRunningSince(announcer, stoppedAt);
  const repliesBefore = replies.length;
  await new Promise(resolve => setTimeout(resolve, 5000));
  t.equal(await announcingNode(), standby, `${announcer} is back and ${standby} keeps the address`);
  t.equal(await neighbourMac(address), standbyMac, "the ARP entry did not move back");
  t.ok(replies.length > repliesBefore + 30, "UDP replies kept coming");

  // The silence that began after `since`: its length and when the first reply after it came.
  const silenceAfter = (since: number) => {
    let longest = 0;
    let endedAt = since;
    for (let i = 1; i < replies.length; i++) {
      const gap = replies[i].at - replies[i - 1].at;
      if (replies[i].at > since && gap > longest) {
        longest = gap;
        endedAt = replies[i].at;
      }
    }
    return { longest, endedAt };
  };

  // The announcer's agent alone is killed; its node keeps running. Its Lease lapses, the next
  // node takes over, and the restarted agent takes nothing back.
  const next = rendezvousPick(
    address,
    nodes.filter(n => n !== standby),
  )!;
  const nextMac = await nodeMac(next);
  const killedAt = Date.now();
  await killAgent(standby);
  // Its node keeps forwarding what reaches it, so traffic barely pauses; what moves is ARP.
  const movedAt = await waitFor(
    `the machine's ARP entry for ${address} at ${next} (${nextMac}) after the agent on ${standby} was killed`,
    async () => ((await neighbourMac(address)) === nextMac ? Date.now() : undefined),
    { timeoutMs: 30_000, intervalMs: 50, describe: async () => `${await neighbourMac(address)}` },
  );
  await new Promise(resolve => setTimeout(resolve, 2000));
  await recordFigure(t, "failover: agent killed → ARP at the new announcer", movedAt - killedAt);
  await recordFigure(
    t,
    "failover: agent killed, longest UDP silence",
    silenceAfter(killedAt).longest,
  );
  t.pass(`the agent on ${standby} killed: ${next} took the address over`);
  // Its node runs on without an agent: it stopped answering ARP when the announce deadline
  // passed (bpf/arp.h), so the new announcer answers alone.
  t.same(
    await arpAnswerers(address),
    [nextMac],
    `only ${next} answers ARP for ${address}: ${standby}, its agent dead, fell silent`,
  );
  await agentRunningSince(standby, killedAt);
  await waitFor(
    `the DataplaneConfig naming ${next}`,
    async () => ((await announcingNode()) === next ? true : undefined),
    { timeoutMs: 120_000, intervalMs: 1000, describe: async () => `${await announcingNode()}` },
  );
  await new Promise(resolve => setTimeout(resolve, 3000));
  t.equal(
    await neighbourMac(address),
    nextMac,
    `the restarted agent on ${standby} took nothing back`,
  );
  t.same(await arpAnswerers(address), [nextMac], `and ${next} alone answers ARP`);
  t.notOk(streamError, `the TCP stream went on (${sent} lines)`, { error: streamError?.message });

  // The API server is stopped for longer than a Lease: nobody can see anybody renew, so nobody
  // takes over, and the announcer keeps serving; nothing moves when it returns.
  const apiStoppedAt = Date.now();
  await execa("docker", ["exec", controlPlane, "mv", APISERVER_MANIFEST, APISERVER_PARKED]);
  t.teardown(async () => {
    // Whatever happened, the API server is put back.
    await execa("docker", [
      "exec",
      controlPlane,
      "sh",
      "-c",
      `[ -e ${APISERVER_MANIFEST} ] || mv ${APISERVER_PARKED} ${APISERVER_MANIFEST}`,
    ]).catch(() => undefined);
  });
  await waitFor("the API server stopped", async () => ((await apiReady()) ? undefined : true), {
    timeoutMs: 120_000,
    intervalMs: 500,
  });
  const downAt = Date.now();
  await new Promise(resolve => setTimeout(resolve, 8000));
  const repliesWhileDown = replies.filter(r => r.at > downAt).length;
  t.equal(await neighbourMac(address), nextMac, `API server away 8 s: ${next} still announces`);
  t.same(
    await arpAnswerers(address),
    [nextMac],
    `and answers ARP alone: its agent keeps the announce deadline moving without the API server`,
  );
  await execa("docker", ["exec", controlPlane, "mv", APISERVER_PARKED, APISERVER_MANIFEST]);
  const upAt = await waitFor(
    "the API server back",
    async () => ((await apiReady()) ? Date.now() : undefined),
    {
      timeoutMs: 240_000,
      intervalMs: 500,
    },
  );
  t.comment(
    `API server down for about ${Math.round((upAt - downAt) / 1000)} s (stopped ${Math.round((downAt - apiStoppedAt) / 1000)} s after its manifest moved)`,
  );
  t.ok(
    repliesWhileDown >= 60,
    `the announcer kept serving while the API server was away: ${repliesWhileDown} UDP replies in 8 s`,
  );
  await recordFigure(
    t,
    "failover: API server away, longest UDP silence",
    silenceAfter(apiStoppedAt).longest,
  );
  // Every agent and the controller reconnect, and give every Lease a grace to be seen renewing
  // again as long as they saw no renewal (up to a minute; agent/leases.ts returnGraceMs): the
  // nodes reach the API server again one after another, each once its kube-proxy has seen the
  // API server's address back in the `kubernetes` Service. Nothing may have moved once that
  // grace is over.
  const graceMs =
    returnGraceMs(LEASE_DEFAULTS.durationSeconds * 1000, upAt - apiStoppedAt) + 10_000;
  t.comment(`waiting ${Math.round(graceMs / 1000)} s: the return grace, and 10 s more`);
  await new Promise(resolve => setTimeout(resolve, graceMs));
  const announcerAfter = await announcingNode();
  if (announcerAfter !== next) await commentLeaseLog(t, apiStoppedAt);
  t.equal(announcerAfter, next, "nothing moved when the API server returned");
  t.equal(await neighbourMac(address), nextMac, "and the ARP entry stayed");

  // The announcer alone cut off from the API server (its node and agent run on, every other
  // node reaches the API): its Lease lapses for the others, and the node that takes the address
  // over announces it. The cut-off agent cannot see any of that through the API; it hears the
  // gratuitous ARP, and its programs stop answering (bpf/arp.h yields), so one node answers.
  // `next` is the announcer that came back after the power cut, a worker, so the API server and
  // the standby stay reachable.
  const apiAddress = (
    await execa("docker", [
      "inspect",
      "-f",
      "{{.NetworkSettings.Networks.kind.IPAddress}}",
      controlPlane,
    ])
  ).stdout.trim();
  // Both ways, in the node's own network namespace (where the agent and the kubelet run; the
  // pods' traffic, the controller's among it, is forwarded and stays untouched).
  const cut = [
    ["OUTPUT", "-p", "tcp", "-d", apiAddress, "--dport", "6443", "-j", "DROP"],
    ["INPUT", "-p", "tcp", "-s", apiAddress, "--sport", "6443", "-j", "DROP"],
  ];
  const heal = async () => {
    for (const rule of cut)
      await execa("docker", ["exec", next, "iptables", "-D", ...rule]).catch(() => undefined);
  };
  const cutAt = Date.now();
  t.teardown(heal);
  for (const rule of cut) await execa("docker", ["exec", next, "iptables", "-I", ...rule]);
  const takenOver = rendezvousPick(
    address,
    nodes.filter(n => n !== next),
  )!;
  const takenOverMac = await nodeMac(takenOver);
  const cutMovedAt = await waitFor(
    `the machine's ARP entry for ${address} at ${takenOver} after ${next} was cut off from the API server`,
    async () => ((await neighbourMac(address)) === takenOverMac ? Date.now() : undefined),
    { timeoutMs: 30_000, intervalMs: 50, describe: async () => `${await neighbourMac(address)}` },
  );
  await recordFigure(
    t,
    "failover: announcer cut off from the API server → ARP at the new announcer",
    cutMovedAt - cutAt,
  );
  t.same(
    await arpAnswerers(address),
    [takenOverMac],
    `only ${takenOver} answers ARP: ${next}, cut off from the API server, heard it and stepped down`,
  );
  await waitFor(
    `the DataplaneConfig naming ${takenOver}`,
    async () => ((await announcingNode()) === takenOver ? true : undefined),
    { timeoutMs: 120_000, intervalMs: 1000, describe: async () => `${await announcingNode()}` },
  );
  t.same(await arpAnswerers(address), [takenOverMac], `${next} still silent while cut off`);
  await heal();
  // Back: its agent relists the DataplaneConfigs (the controller moved the address meanwhile),
  // gives the address up and forgets the yield; nothing moves back.
  await new Promise(resolve => setTimeout(resolve, 10_000));
  t.same(
    await arpAnswerers(address),
    [takenOverMac],
    `${next} reaches the API again: ${takenOver} still answers alone`,
  );

  // Last, the node the controller runs on is powered off. The agents need no controller; the
  // chart lets Kubernetes evict it 10 s after the node is marked unreachable (its
  // node-monitor-grace-period), a new one starts elsewhere and names the node announcing now.
  // Its DataplaneConfig writes skip the webhook, so the webhook pod lost with the node (its
  // endpoint lingers until then) does not hold them up.
  const before = (await controllerPods()).filter(p => p.ready && !p.deleting);
  const controllerHost = before[0]?.node;
  if (before.length !== 1 || !workers.includes(controllerHost)) {
    t.fail(`one controller on a worker expected: ${JSON.stringify(before)}`);
  } else {
    const announcerNow = await announcingNode();
    const successor =
      announcerNow === controllerHost
        ? rendezvousPick(
            address,
            nodes.filter(n => n !== controllerHost),
          )!
        : announcerNow!;
    const successorMac = await nodeMac(successor);
    const controllerStoppedAt = Date.now();
    await kindSh("stop-node", controllerHost);
    t.teardown(() => startIfStopped(controllerHost));
    t.comment(
      `stopped ${controllerHost}, the controller's node${announcerNow === controllerHost ? `, announcing ${address}: ${successor} takes it over` : ""}`,
    );
    const replacedAt = await waitFor(
      `a new controller Ready on a node other than ${controllerHost}`,
      async () =>
        (await controllerPods()).some(p => p.ready && !p.deleting && p.node !== controllerHost)
          ? Date.now()
          : undefined,
      {
        timeoutMs: 300_000,
        intervalMs: 1000,
        describe: async () => JSON.stringify(await controllerPods()),
      },
    );
    await recordFigure(
      t,
      "failover: the controller's node stopped → a new controller Ready",
      replacedAt - controllerStoppedAt,
    );
    t.pass(`the controller was replaced away from ${controllerHost}`);
    const namedAt = await waitFor(
      `the DataplaneConfig naming ${successor}`,
      async () => ((await announcingNode()) === successor ? Date.now() : undefined),
      { timeoutMs: 120_000, intervalMs: 1000, describe: async () => `${await announcingNode()}` },
    );
    await recordFigure(
      t,
      "failover: the controller's node stopped → the DataplaneConfig names the announcer",
      namedAt - controllerStoppedAt,
    );
    await waitForCondition(
      "gateway",
      "failover",
      namespace,
      "Programmed",
      { status: "True" },
      60_000,
    );
    t.same(await arpAnswerers(address), [successorMac], `${successor} alone answers ARP`);
    await startIfStopped(controllerHost);
  }

  streaming = false;
  await tcpLoop;
  t.notOk(streamError, `the TCP stream is still the same connection (${sent} lines)`, {
    error: streamError?.message,
  });
}
