// SPDX-License-Identifier: Apache-2.0
// Several nodes, on the kind cluster hack/kind.sh runs: a backend pod on every node (the
// control plane too) behind one Gateway. From the machine's root namespace (the kind network's
// bridge, 198.19.253.1), TCP connections and UDP flows to the Gateway address must reach the
// backend on every node, each backend must see the client's own address (no SNAT), and every
// reply must come from the Gateway address (direct server return from the backend's node).
// Weighted backendRefs whose pods sit on two different nodes keep their shares (±5 points).
// Clients inside the cluster: a client pod on every node, the announcing one included, reaches
// the Gateway address over TCP and UDP, the backends (on every node) see the pod's own address,
// and UDP replies reach a socket connected to the Gateway address (the kernel drops any other
// source).
//
// Backends answer with "<pod name> <peer address>" (test/lib/kind.ts).
import t, { type Test } from "tap";
import { once } from "node:events";
import { createSocket, type RemoteInfo } from "node:dgram";
import {
  netcheckPod,
  nodeNames,
  tcpAnswer,
  whoAmITcp,
  whoAmIUdp,
  parseAnswer,
  type Answer,
} from "../lib/kind.js";
import {
  apply,
  clientAddress,
  freshNamespace,
  gatewayAddress,
  inGatewayPool,
  kindSkipReason,
  kubectl,
  getObject,
  waitFor,
  waitForCondition,
} from "../lib/cluster.js";

const skip = kindSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(10 * 60 * 1000);
  t.test("backends on every node", run);
}

const tcpPort = 7300;
const udpPort = 7300;
const weightedPort = 7310;
// 1,000 samples keep a fair 1:3 split inside ±5 points in all but about 1 run in 1,000.
const samples = 1000;
const tolerance = 0.05;
const concurrency = 10;

/** One UDP flow from a fresh source port; the reply's source must be the Gateway address and port. */
async function udpOnce(host: string, port: number): Promise<Answer & { from: string }> {
  const socket = createSocket("udp4");
  socket.bind(0);
  await once(socket, "listening");
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      const reply = await new Promise<[Buffer, RemoteInfo] | undefined>(resolve => {
        const timer = setTimeout(() => {
          socket.off("message", onMessage);
          resolve(undefined);
        }, 1000);
        const onMessage = (message: Buffer, rinfo: RemoteInfo) => {
          clearTimeout(timer);
          socket.off("message", onMessage);
          resolve([message, rinfo]);
        };
        socket.on("message", onMessage);
        socket.send("which", port, host);
      });
      if (reply) {
        const [message, rinfo] = reply;
        return {
          ...parseAnswer(message.toString("utf8"), `UDP ${host}:${port}`),
          from: `${rinfo.address}:${rinfo.port}`,
        };
      }
    }
    throw new Error(
      `UDP ${host}:${port}: no reply to 5 datagrams from port ${socket.address().port}`,
    );
  } finally {
    socket.close();
  }
}

/** Runs `probe` `count` times, `concurrency` at a time. */
async function repeat<T>(count: number, probe: () => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  let started = 0;
  const worker = async () => {
    while (started < count) {
      started++;
      results.push(await probe());
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

const tally = (pods: string[]) =>
  pods.reduce<Record<string, number>>(
    (counts, pod) => ({ ...counts, [pod]: (counts[pod] ?? 0) + 1 }),
    {},
  );

async function run(t: Test) {
  const nodes = await nodeNames();
  t.ok(nodes.length >= 2, `the kind cluster has several nodes: ${nodes.join(", ")}`);
  const namespace = await freshNamespace(t, "blixt-e2e-nodes");
  const podOf = (node: string) => `on-${node}`;
  const pods = nodes.map(node =>
    netcheckPod({
      name: podOf(node),
      namespace,
      node,
      labels: { app: "spread", node },
      tolerateAll: true,
      containers: [
        { name: "tcp", command: whoAmITcp(8080), readyPort: 8080 },
        { name: "udp", command: whoAmIUdp(8081) },
      ],
    }),
  );
  const clientOf = (node: string) => `client-${node}`;
  const clients = nodes.map(node =>
    netcheckPod({
      name: clientOf(node),
      namespace,
      node,
      labels: { app: "client" },
      tolerateAll: true,
      containers: [{ name: "client", command: ["sleep", "infinity"] }],
    }),
  );
  const service = (name: string, selector: string) => `
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: ${namespace}}
spec:
  selector: {${selector}}
  ports:
  - {name: tcp, protocol: TCP, port: 8080, targetPort: 8080}
  - {name: udp, protocol: UDP, port: 8081, targetPort: 8081}
`;
  // The weighted pair: the light backend on one node, the heavy one on another.
  const [lightNode, heavyNode] = nodes.slice(-2);
  await apply(
    [
      ...pods,
      ...clients,
      service("spread", "app: spread"),
      service("light", `node: ${lightNode}`),
      service("heavy", `node: ${heavyNode}`),
      `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: nodes, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${tcpPort}}
  - {name: udp, protocol: UDP, port: ${udpPort}}
  - {name: weighted, protocol: TCP, port: ${weightedPort}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: ${namespace}}
spec:
  parentRefs: [{name: nodes, sectionName: tcp}]
  rules: [{backendRefs: [{name: spread, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: udp, namespace: ${namespace}}
spec:
  parentRefs: [{name: nodes, sectionName: udp}]
  rules: [{backendRefs: [{name: spread, port: 8081}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: weighted, namespace: ${namespace}}
spec:
  parentRefs: [{name: nodes, sectionName: weighted}]
  rules: [{backendRefs: [{name: light, port: 8080, weight: 1}, {name: heavy, port: 8080, weight: 3}]}]
`,
    ].join("\n---\n"),
  );
  await kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=180s");
  await waitForCondition("gateway", "nodes", namespace, "Programmed", { status: "True" }, 180_000);
  const address = await gatewayAddress(namespace, "nodes");
  t.ok(inGatewayPool(address), `the Gateway's address ${address} is in the kind pool`);
  const config = await getObject("dataplaneconfig", "nodes", namespace);
  const announcer = config?.spec?.announcingNode as string | undefined;
  t.ok(announcer && nodes.includes(announcer), `one node announces ${address}: ${announcer}`);
  const remote = nodes.filter(n => n !== announcer).map(podOf);
  t.comment(`backends on other nodes than the announcing one: ${remote.join(", ")}`);

  // Until each expected backend has answered at least once (the agents program asynchronously).
  const everyPod = new Set(nodes.map(podOf));
  const untilAll = async <A extends Answer>(
    what: string,
    expected: Set<string>,
    probe: () => Promise<A>,
  ): Promise<A[]> => {
    const answers: A[] = [];
    await waitFor(
      `${what}: an answer from each of ${[...expected].join(", ")}`,
      async () => {
        answers.push(...(await repeat(4 * expected.size, probe)));
        const seen = new Set(answers.map(a => a.pod));
        return [...expected].every(pod => seen.has(pod)) ? true : undefined;
      },
      {
        timeoutMs: 120_000,
        intervalMs: 200,
        describe: async () => JSON.stringify(tally(answers.map(a => a.pod))),
      },
    );
    return answers;
  };

  await t.test("TCP: every node's backend answers and sees the client's address", async t => {
    const answers = await untilAll(`TCP ${address}:${tcpPort}`, everyPod, () =>
      tcpAnswer(address, tcpPort),
    );
    t.same(new Set(answers.map(a => a.pod)), everyPod, "the backend on every node answered", {
      counts: tally(answers.map(a => a.pod)),
    });
    const peers = new Set(answers.map(a => a.peer.replace(/:\d+$/, "")));
    t.same(
      [...peers],
      [clientAddress],
      `every backend saw the client's own address ${clientAddress}`,
    );
  });

  await t.test(
    "UDP: every node's backend answers, replies come from the Gateway address",
    async t => {
      const answers = await untilAll(`UDP ${address}:${udpPort}`, everyPod, () =>
        udpOnce(address, udpPort),
      );
      t.same(new Set(answers.map(a => a.pod)), everyPod, "the backend on every node answered", {
        counts: tally(answers.map(a => a.pod)),
      });
      const peers = new Set(answers.map(a => a.peer.replace(/:\d+$/, "")));
      t.same(
        [...peers],
        [clientAddress],
        `every backend saw the client's own address ${clientAddress}`,
      );
      const sources = new Set(answers.map(a => a.from));
      t.same(
        [...sources],
        [`${address}:${udpPort}`],
        "every reply came from the Gateway's address and port",
      );
    },
  );

  await t.test(`weights across nodes: ${samples} TCP connections, 1:3`, async t => {
    const light = podOf(lightNode);
    const heavy = podOf(heavyNode);
    await untilAll(`TCP ${address}:${weightedPort}`, new Set([light, heavy]), () =>
      tcpAnswer(address, weightedPort),
    );
    const answered = await repeat(samples, () => tcpAnswer(address, weightedPort));
    const counts = tally(answered.map(a => a.pod));
    t.same(
      Object.keys(counts).sort(),
      [heavy, light].sort(),
      "only the route's backends answered",
      { counts },
    );
    for (const [pod, share] of [
      [light, 0.25],
      [heavy, 0.75],
    ] as const) {
      const seen = (counts[pod] ?? 0) / answered.length;
      t.ok(
        Math.abs(seen - share) <= tolerance + 1e-9,
        `${pod}: ${(seen * 100).toFixed(1)} % of new connections, expected ${share * 100} % ± ${tolerance * 100}`,
        { counts },
      );
    }
  });
  await t.test(
    "clients inside the cluster: a pod on every node, the announcing one included",
    async t => {
      const nodeOfPod = new Map(nodes.map(node => [podOf(node), node]));
      for (const node of nodes) {
        const client = clientOf(node);
        const clientIp = await kubectl(
          "-n",
          namespace,
          "get",
          "pod",
          client,
          "-o",
          "jsonpath={.status.podIP}",
        );
        const role = node === announcer ? "the announcing node" : "a node that does not announce";
        for (const proto of ["tcp", "udp"] as const) {
          const port = proto === "tcp" ? tcpPort : udpPort;
          // One line per try: the backend's, or "failed". A datagram with no reply within 1 s is
          // sent again, twice at most (UDP may drop one); a TCP connection is tried once.
          const target =
            proto === "tcp"
              ? `socat -T3 -t3 - TCP:${address}:${port} </dev/null || echo failed`
              : `out=; for j in 1 2 3; do out=$(echo which | socat -T2 -t1 - UDP:${address}:${port}); [ -n "$out" ] && break; done; echo "\${out:-failed}"`;
          const inClient = (count: number) =>
            kubectl(
              "-n",
              namespace,
              "exec",
              client,
              "--",
              "sh",
              "-c",
              `for i in $(seq ${count}); do ${target}; done`,
            );
          // The agent attaches to a new pod's interface on its link event; the first answer is
          // waited for all the same, as the tables of a new Gateway may still be converging.
          await waitFor(
            `${proto.toUpperCase()} ${address}:${port} from ${client}`,
            async () => ((await inClient(1)).includes(" ") ? true : undefined),
            { timeoutMs: 60_000, intervalMs: 500 },
          );
          const lines = (await inClient(12)).split("\n").filter(Boolean);
          const answered = lines.filter(l => /^on-\S+ \S+$/.test(l));
          const answers = answered.map(line => line.trim().split(/\s+/));
          t.equal(answered.length, 12, `${client} (${role}), ${proto}: 12 of 12 answered`, {
            lines,
          });
          t.same(
            [...new Set(answers.map(([, peer]) => peer))],
            [clientIp],
            `${client}, ${proto}: every backend saw the pod's own address ${clientIp}`,
          );
          const served = [...new Set(answers.map(([pod]) => pod))];
          t.ok(
            served.some(pod => nodeOfPod.get(pod) !== node),
            `${client}, ${proto}: backends on other nodes answered too (${served.join(", ")})`,
          );
          t.ok(
            served.every(pod => nodeOfPod.has(pod)),
            `${client}, ${proto}: only the route's backends answered`,
          );
        }
      }
    },
  );
}
