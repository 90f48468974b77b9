// SPDX-License-Identifier: Apache-2.0
// Backends scaled across nodes under traffic, on the kind cluster: a Deployment of one replica
// grows to one per node while new TCP connections keep arriving (one every 50 ms) and one long
// TCP connection stays open. No connection attempt may fail while backends are added, the long
// connection keeps answering, and new connections reach the new pods on the other nodes. Then
// the Deployment shrinks back to one: once its EndpointSlice says so, every new connection
// reaches the remaining pod.
import t, { type Test } from "tap";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { netcheckContainers, nodeNames, tcpAnswer, whoAmITcp } from "../lib/kind.js";
import {
  apply,
  clientAddress,
  freshNamespace,
  gatewayAddress,
  kindSkipReason,
  kubectl,
  waitFor,
  waitForCondition,
} from "../lib/cluster.js";

const skip = kindSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(10 * 60 * 1000);
  t.test("a Deployment scaled across nodes under traffic", run);
}

const port = 7320;

/** One connection to the "who" listener: the backend's line. */
const once = (host: string) => tcpAnswer(host, port);

/** A long connection to the line-echo container: each line sent comes back. */
class Stream {
  private buffered = "";
  private constructor(private readonly socket: net.Socket) {
    socket.on("data", chunk => (this.buffered += chunk.toString("utf8")));
  }
  static async open(host: string): Promise<Stream> {
    const socket = net.connect({ host, port: port + 1 });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    return new Stream(socket);
  }
  async echo(line: string): Promise<boolean> {
    if (this.socket.destroyed) return false;
    this.socket.write(`${line}\n`);
    for (let i = 0; i < 50; i++) {
      if (this.buffered.includes(`${line}\n`)) return true;
      await sleep(20);
    }
    return false;
  }
  close() {
    this.socket.destroy();
  }
}

async function run(t: Test) {
  const nodes = await nodeNames();
  const namespace = await freshNamespace(t, "blixt-e2e-scaling");
  await apply(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread, namespace: ${namespace}}
spec:
  replicas: 1
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      tolerations: [{operator: Exists}]
      terminationGracePeriodSeconds: 0
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: spread}}}
      # who answers with its line; echo echoes every line
      containers: ${netcheckContainers([
        { name: "who", command: whoAmITcp(8080), readyPort: 8080 },
        {
          name: "echo",
          command: ["socat", "TCP-LISTEN:8081,fork,reuseaddr,backlog=128", "EXEC:cat"],
        },
      ])}
---
apiVersion: v1
kind: Service
metadata: {name: spread, namespace: ${namespace}}
spec:
  selector: {app: spread}
  ports:
  - {name: who, protocol: TCP, port: 8080, targetPort: 8080}
  - {name: echo, protocol: TCP, port: 8081, targetPort: 8081}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: scaling, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: who, protocol: TCP, port: ${port}}
  - {name: echo, protocol: TCP, port: ${port + 1}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: who, namespace: ${namespace}}
spec:
  parentRefs: [{name: scaling, sectionName: who}]
  rules: [{backendRefs: [{name: spread, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: echo, namespace: ${namespace}}
spec:
  parentRefs: [{name: scaling, sectionName: echo}]
  rules: [{backendRefs: [{name: spread, port: 8081}]}]
`);
  await kubectl("-n", namespace, "rollout", "status", "deployment/spread", "--timeout=180s");
  await waitForCondition(
    "gateway",
    "scaling",
    namespace,
    "Programmed",
    { status: "True" },
    180_000,
  );
  const address = await gatewayAddress(namespace, "scaling");
  const first = await waitFor("the first pod answers", () => once(address).catch(() => undefined), {
    timeoutMs: 60_000,
  });
  const stream = await Stream.open(address);
  t.teardown(() => stream.close());
  t.ok(await stream.echo("before"), "the long connection echoes a line");

  // New connections every 50 ms, and a line on the long connection every 200 ms, until stopped.
  let stop = false;
  const failures: string[] = [];
  const pods = new Map<string, number>();
  const peers = new Set<string>();
  let lines = 0;
  let lost = 0;
  const traffic = (async () => {
    while (!stop) {
      await once(address)
        .then(a => {
          pods.set(a.pod, (pods.get(a.pod) ?? 0) + 1);
          peers.add(a.peer.replace(/:\d+$/, ""));
        })
        .catch((e: Error) => failures.push(e.message));
      await sleep(50);
    }
  })();
  const streaming = (async () => {
    while (!stop) {
      lines++;
      if (!(await stream.echo(`line ${lines}`))) lost++;
      await sleep(200);
    }
  })();

  await kubectl("-n", namespace, "scale", "deployment/spread", `--replicas=${nodes.length}`);
  await kubectl("-n", namespace, "rollout", "status", "deployment/spread", "--timeout=180s");
  const podNodes = JSON.parse(
    await kubectl("-n", namespace, "get", "pods", "-l", "app=spread", "-o", "json"),
  ) as { items: { metadata: { name: string }; spec: { nodeName: string } }[] };
  const everyPod = podNodes.items.map(p => p.metadata.name);
  t.same(
    new Set(podNodes.items.map(p => p.spec.nodeName)),
    new Set(nodes),
    `one pod on every node: ${podNodes.items.map(p => `${p.metadata.name}@${p.spec.nodeName}`).join(", ")}`,
  );
  await waitFor(
    "new connections to reach every pod",
    async () => (everyPod.every(p => (pods.get(p) ?? 0) > 0) ? true : undefined),
    { timeoutMs: 90_000, describe: async () => JSON.stringify([...pods]) },
  );
  stop = true;
  await Promise.all([traffic, streaming]);
  t.same(failures, [], "no connection attempt failed while backends were added", {
    counts: Object.fromEntries(pods),
  });
  t.same([...peers], [clientAddress], "every backend saw the client's own address");
  t.equal(lost, 0, `the long connection echoed all ${lines} lines while the Deployment grew`);
  t.ok(pods.has(first.pod), "the first pod kept answering");

  await kubectl("-n", namespace, "scale", "deployment/spread", "--replicas=1");
  const remaining = await waitFor(
    "the Deployment to have one ready pod and its Service one endpoint",
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
      ) as { items: { endpoints?: { targetRef?: { name: string } }[] }[] };
      const names = slices.items.flatMap(s => (s.endpoints ?? []).map(e => e.targetRef?.name));
      return names.length === 1 ? names[0] : undefined;
    },
    { timeoutMs: 120_000 },
  );
  // The agents apply the change asynchronously: wait until new connections settle on it.
  await waitFor(
    `new connections to reach only ${remaining}`,
    async () => {
      const seen = await Promise.all(
        Array.from({ length: 10 }, () => once(address).catch(() => undefined)),
      );
      return seen.every(a => a?.pod === remaining) ? true : undefined;
    },
    { timeoutMs: 60_000 },
  );
  const after: { pod: string }[] = [];
  for (let i = 0; i < 30; i++) after.push(await once(address));
  t.same(
    new Set(after.map(a => a.pod)),
    new Set([remaining]),
    `30 new connections after the scale-down all reached ${remaining}`,
  );
}
