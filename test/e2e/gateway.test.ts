// SPDX-License-Identifier: Apache-2.0
// A Gateway with a TCP and a UDP listener on one port, a TCPRoute and a UDPRoute to real pods:
// the Gateway is Programmed at an address of its own from the pool, traffic from the root
// namespace (outside the cluster) reaches the backends, and the backends see the client's own
// address, since blixt forwards in the kernel without proxying or SNAT. The Gateway's headless
// Service resolves to its address through a real CoreDNS; a ListenerSet's listener carries
// traffic on the Gateway's address.
import t, { type Test } from "tap";
import { execa } from "execa";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { Resolver } from "node:dns/promises";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import {
  apply,
  clientAddress,
  clusterSkipReason,
  echoBackend,
  freshNamespace,
  gatewayAddress,
  getObject,
  kubeconfig,
  inGatewayPool,
  kubectl,
  listObjects,
  podPid,
  podTcpConnections,
  routeParentConditions,
  tcpEcho,
  UdpFlow,
  waitFor,
  waitForCondition,
  waitForDeployment,
} from "../lib/cluster.js";

const skip = clusterSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(5 * 60 * 1000);
  t.test("a Gateway with TCP and UDP listeners serves real pods", run);
}

async function run(t: Test) {
  const namespace = await freshNamespace(t, "blixt-e2e-gateway");
  const port = 7000;
  await apply(`
${echoBackend({ namespace, name: "tcp-echo", protocol: "TCP", port: 3000 })}
---
${echoBackend({ namespace, name: "udp-echo", protocol: "UDP", port: 8080 })}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: l4, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port}, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
  - {name: udp, protocol: UDP, port: ${port}, allowedRoutes: {kinds: [{kind: UDPRoute}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: ${namespace}}
spec:
  parentRefs: [{name: l4, sectionName: tcp}]
  rules: [{backendRefs: [{name: tcp-echo, port: 3000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: udp, namespace: ${namespace}}
spec:
  parentRefs: [{name: l4, sectionName: udp}]
  rules: [{backendRefs: [{name: udp-echo, port: 8080}]}]
`);
  await waitForDeployment(namespace, "tcp-echo");
  await waitForDeployment(namespace, "udp-echo");

  const programmed = await waitForCondition("gateway", "l4", namespace, "Programmed", {
    status: "True",
  });
  t.equal(programmed.reason, "Programmed", "Gateway l4 is Programmed");
  const address = await gatewayAddress(namespace, "l4");
  t.ok(inGatewayPool(address), `its address ${address} is in the pool 198.18.0.100-199`);

  await t.test("listeners and routes report what attached", async t => {
    // Read each listener once it is Programmed: the pods' EndpointSlices may still change after
    // the Gateway first reports Programmed, and while the node agents apply that generation the
    // Gateway and its listeners say Pending (as they should), which one read could land in.
    for (const name of ["tcp", "udp"]) {
      await waitForCondition("gateway", "l4", namespace, "Programmed", {
        status: "True",
        conditions: g => g?.status?.listeners?.find(l => l.name === name)?.conditions,
      });
      t.pass(`listener ${name} Programmed`);
    }
    const gateway = JSON.parse(
      await kubectl("-n", namespace, "get", "gateway", "l4", "-o", "json"),
    );
    for (const listener of gateway.status.listeners as { name: string; attachedRoutes: number }[]) {
      t.equal(listener.attachedRoutes, 1, `listener ${listener.name} has attachedRoutes 1`);
    }
    for (const kind of ["tcproute", "udproute"]) {
      const name = kind === "tcproute" ? "tcp" : "udp";
      await waitForCondition(kind, name, namespace, "Accepted", {
        status: "True",
        conditions: r => routeParentConditions(r, "l4"),
      });
      await waitForCondition(kind, name, namespace, "ResolvedRefs", {
        status: "True",
        conditions: r => routeParentConditions(r, "l4"),
      });
      t.pass(`${kind} ${name} Accepted and ResolvedRefs`);
    }
  });

  await t.test("kubectl get gateway shows the address and PROGRAMMED True", async t => {
    const table = await kubectl("-n", namespace, "get", "gateway", "l4");
    const [header, row] = table.trim().split("\n");
    t.match(header, /NAME\s+CLASS\s+ADDRESS\s+PROGRAMMED/, "the printer columns");
    t.match(
      row,
      new RegExp(`^l4\\s+blixt\\s+${address.replaceAll(".", "\\.")}\\s+True\\s`),
      `the row: ${row}`,
    );
  });

  await t.test(
    "TCP from the root namespace reaches the pod, which sees the client's address",
    async t => {
      const [pod] = await listObjects("pod", namespace, "app=tcp-echo");
      // The first SYN may beat the agent's ARP answer for a brand new address: retry the connect.
      const { client, context } = await waitFor(
        `TCP ${address}:${port}`,
        () => tcpEcho(address, port),
        { timeoutMs: 30_000 },
      );
      t.teardown(() => client.close());
      t.equal(context.pod, pod.metadata.name, `served by pod ${pod.metadata.name}`);
      t.equal(await client.request("PING"), "PONG", "the connection keeps working");
      const connections = await podTcpConnections(namespace, pod.metadata.name);
      const ours = connections.find(c => c.peer === `${clientAddress}:${client.socket.localPort}`);
      t.ok(ours, `the pod's socket peer is ${clientAddress}:${client.socket.localPort}`, {
        connections,
      });
    },
  );

  await t.test(
    "UDP from the root namespace reaches the pod, which sees the client's address",
    async t => {
      const [pod] = await listObjects("pod", namespace, "app=udp-echo");
      const flow = await UdpFlow.open(address, port);
      t.teardown(() => flow.close());
      const payload = `hello-${process.pid}`;
      const reply = await flow.echo(payload, 20);
      t.ok(reply, `a reply from ${address}:${port}/udp`);
      t.equal(reply?.request, payload, "the datagram echoes");
      t.equal(reply?.pod, pod.metadata.name, `served by pod ${pod.metadata.name}`);
      // echo-basic's UDP mode logs each datagram's source: the client's address, not the node's.
      const logs = await waitFor(
        "the pod's log line for the datagram",
        async () => {
          const text = await kubectl("-n", namespace, "logs", pod.metadata.name);
          return text.includes(payload) ? text : undefined;
        },
        { timeoutMs: 10_000 },
      );
      t.match(
        logs,
        `Received UDP ${payload} from ${clientAddress}:${flow.localPort}`,
        "the backend saw the client's address and port",
      );
    },
  );

  // Clients inside the cluster ("hairpin"): the agent runs blixt's programs on the node's end of
  // every pod's interface (capabilities/agent/pod-interfaces.ts). Each probe runs in one echo
  // pod's network namespace and goes to the listener the other pod serves (a pod that is its
  // listener's own backend is a limit the README names, under "Several nodes").
  await t.test(
    "a pod on the node reaches the Gateway address, and the backend sees the pod's address",
    async t => {
      const [tcpPod] = await listObjects("pod", namespace, "app=tcp-echo");
      const [udpPod] = await listObjects("pod", namespace, "app=udp-echo");
      const tcpPid = await podPid(namespace, tcpPod.metadata.name);
      const udpPid = await podPid(namespace, udpPod.metadata.name);
      const inPod = (pid: number, proto: "tcp" | "udp") =>
        execa(
          "nsenter",
          [
            "-t",
            String(pid),
            "-n",
            process.execPath,
            "-e",
            POD_CLIENT_JS,
            proto,
            address,
            String(port),
          ],
          { stdin: "pipe", reject: false },
        );

      const tcp = await waitFor(
        `TCP ${address}:${port} from pod ${udpPod.metadata.name}`,
        async () => {
          const proc = inPod(udpPid, "tcp");
          const line = await new Promise<string>(resolve => {
            void proc.then(r => resolve(String(r.stdout).split("\n")[0] ?? ""));
            proc.stdout?.once("data", (d: Buffer) => resolve(d.toString().split("\n")[0]));
          });
          const answer = JSON.parse(line || "{}") as PodClientAnswer;
          if (answer.error) {
            proc.kill();
            return undefined;
          }
          return { answer, proc };
        },
        { timeoutMs: 30_000 },
      );
      t.teardown(() => tcp.proc.kill());
      t.equal(tcp.answer.pod, tcpPod.metadata.name, `served by pod ${tcpPod.metadata.name}`);
      t.equal(tcp.answer.remote, `${address}:${port}`, "the pod's socket is connected to VIP:port");
      t.equal(tcp.answer.local.split(":")[0], udpPod.status?.podIP, "from the pod's own address");
      const connections = await podTcpConnections(namespace, tcpPod.metadata.name);
      t.ok(
        connections.find(c => c.peer === tcp.answer.local),
        `the backend's socket peer is the pod, ${tcp.answer.local}`,
        { connections },
      );
      tcp.proc.stdin?.end();
      await tcp.proc;

      const udp = await waitFor(
        `UDP ${address}:${port} from pod ${tcpPod.metadata.name}`,
        async () => {
          const r = await inPod(tcpPid, "udp");
          const answer = JSON.parse(String(r.stdout).split("\n")[0] || "{}") as PodClientAnswer;
          return answer.error ? undefined : answer;
        },
        { timeoutMs: 30_000 },
      );
      t.equal(udp.pod, udpPod.metadata.name, `served by pod ${udpPod.metadata.name}`);
      t.equal(
        udp.remote,
        `${address}:${port}`,
        "the reply reached a socket connected to VIP:port (the kernel drops any other source)",
      );
      const logs = await kubectl("-n", namespace, "logs", udpPod.metadata.name);
      t.match(
        logs,
        `Received UDP ${udp.request} from ${udp.local}`,
        "the backend saw the pod's address and port",
      );
      t.equal(udp.local.split(":")[0], tcpPod.status?.podIP, "which is the pod's own");
    },
  );

  // The longest name Kubernetes allows (the upcoming Gateway API core test
  // GatewayNameMaximumLength): nothing derived from it may break a limit of its own (a
  // label value has 63 characters), or the API server refuses its DataplaneConfig.
  await t.test("a Gateway with a 253-character name is programmed and serves", async t => {
    const name = "x".repeat(253 - "long-".length - 1).replace(/^/, "long-") + "z";
    t.equal(name.length, 253);
    await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ${name}, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port + 1}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: to-long, namespace: ${namespace}}
spec:
  parentRefs: [{name: ${name}}]
  rules: [{backendRefs: [{name: tcp-echo, port: 3000}]}]
`);
    const programmed = await waitForCondition("gateway", name, namespace, "Programmed", {
      status: "True",
    });
    t.equal(programmed.reason, "Programmed", "the Gateway is Programmed");
    const longAddress = await gatewayAddress(namespace, name);
    const { client } = await waitFor(
      `TCP ${longAddress}:${port + 1}`,
      () => tcpEcho(longAddress, port + 1),
      {
        timeoutMs: 30_000,
      },
    );
    t.teardown(() => client.close());
    t.equal(await client.request("PING"), "PONG", "and its route serves");
    // Its Service: a name of at most 63 characters, the full name in an annotation.
    const services = JSON.parse(await kubectl("get", "services", "-n", namespace, "-o", "json"))
      .items as { metadata: { name: string; annotations?: Record<string, string> } }[];
    const own = services.find(s => s.metadata.annotations?.["blixt.dev/gateway-name"] === name);
    t.ok(own && own.metadata.name.length <= 63, `its Service ${own?.metadata.name} exists`);
  });

  // GEP-1867 and DNS: the Gateway's headless Service carries the gateway-name label, and a
  // cluster DNS server answers its name with the Gateway's address. The local cluster runs no
  // DNS add-on, so the test runs CoreDNS itself (the binary hack/conformance.sh builds for the
  // suite's DNS backend) with its kubernetes plugin on this cluster's API server.
  await t.test("the Gateway's Service resolves to its address through CoreDNS", async t => {
    const service = await waitFor("Service l4-blixt", () =>
      getObject("service", "l4-blixt", namespace),
    );
    t.match(service, {
      metadata: { labels: { "gateway.networking.k8s.io/gateway-name": "l4" } },
      spec: { clusterIP: "None" },
    });
    const coredns = corednsBinary();
    t.ok(coredns, "CoreDNS is built (hack/conformance.sh build-images builds it)");
    if (!coredns) return;
    const dir = await mkdtemp(join(tmpdir(), "blixt-e2e-coredns-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const dnsPort = 15353;
    await writeFile(
      join(dir, "Corefile"),
      `cluster.local:${dnsPort} {\n  bind 127.0.0.1\n  kubernetes cluster.local {\n    kubeconfig ${await kubeconfig()}\n  }\n}\n`,
    );
    const server = execa(coredns, ["-conf", join(dir, "Corefile")], { reject: false });
    t.teardown(() => {
      server.kill();
    });
    const resolver = new Resolver({ timeout: 1000, tries: 1 });
    resolver.setServers([`127.0.0.1:${dnsPort}`]);
    const answer = await waitFor(
      `l4-blixt.${namespace}.svc.cluster.local from CoreDNS`,
      async () => {
        try {
          const found = await resolver.resolve4(`l4-blixt.${namespace}.svc.cluster.local`);
          return found.length > 0 ? found : undefined;
        } catch {
          return undefined;
        }
      },
      { timeoutMs: 30_000 },
    );
    t.same(answer, [address], "the name resolves to the Gateway's address, nothing else");
    const { client } = await tcpEcho(answer[0], port);
    t.teardown(() => client.close());
    t.equal(await client.request("PING"), "PONG", "and that address serves the route");
  });

  // GEP-1713: a ListenerSet the Gateway allows adds a listener on the Gateway's address; a
  // route attaches to it by naming the ListenerSet.
  await t.test("a ListenerSet's listener serves on the Gateway's address", async t => {
    await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: with-sets, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  allowedListeners: {namespaces: {from: Same}}
  listeners:
  - {name: tcp, protocol: TCP, port: ${port + 2}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: extra, namespace: ${namespace}}
spec:
  parentRef: {name: with-sets}
  listeners:
  - {name: tcp, protocol: TCP, port: ${port + 3}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: to-set, namespace: ${namespace}}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: ListenerSet, name: extra, sectionName: tcp}]
  rules: [{backendRefs: [{name: tcp-echo, port: 3000}]}]
`);
    const programmed = await waitForCondition("listenerset", "extra", namespace, "Programmed", {
      status: "True",
    });
    t.equal(programmed.reason, "Programmed", "the ListenerSet is Programmed");
    const gateway = await getObject("gateway", "with-sets", namespace);
    t.equal(gateway?.status?.attachedListenerSets, 1, "the Gateway counts it");
    const listenerSet = await getObject("listenerset", "extra", namespace);
    t.match(
      listenerSet?.status?.listeners,
      [{ name: "tcp", attachedRoutes: 1 }],
      "its listener has the route",
    );
    const setAddress = await gatewayAddress(namespace, "with-sets");
    const { client } = await waitFor(
      `TCP ${setAddress}:${port + 3}`,
      () => tcpEcho(setAddress, port + 3),
      { timeoutMs: 30_000 },
    );
    t.teardown(() => client.close());
    t.equal(await client.request("PING"), "PONG", "traffic to the ListenerSet's port arrives");
    const route = await getObject("tcproute", "to-set", namespace);
    t.match(
      routeParentConditions(route, "extra"),
      [{ type: "Accepted", status: "True" }],
      "the route is accepted by the ListenerSet",
    );
  });
}

/** The CoreDNS binary hack/conformance.sh builds, if it is there. */
function corednsBinary(): string | undefined {
  const cache =
    process.env.BLIXT_CACHE ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "blixt");
  const bin = join(cache, "conformance", "bin");
  if (!existsSync(bin)) return undefined;
  const dir = readdirSync(bin).find(d => d.startsWith("coredns-"));
  return dir && existsSync(join(bin, dir, "coredns")) ? join(bin, dir, "coredns") : undefined;
}

type PodClientAnswer = {
  error?: string;
  pod: string;
  local: string;
  remote: string;
  request?: string;
};

/**
 * Run in a pod's network namespace (argv: tcp|udp host port). TCP: reads echo-basic's greeting,
 * asks TEST, prints {pod, local, remote} and keeps the connection open until stdin ends. UDP: a
 * connected socket sends a datagram every 500 ms until the first reply, then prints {pod,
 * request, local, remote}. A failure prints {error} and exits 1.
 */
const POD_CLIENT_JS = String.raw`
const net = require("node:net"), dgram = require("node:dgram");
const [proto, host, port] = process.argv.slice(1);
const fail = (error) => { console.log(JSON.stringify({ error })); process.exit(1); };
const timer = setTimeout(() => fail("timeout"), 3000);
if (proto === "tcp") {
  const s = net.connect({ host, port: Number(port) });
  let buf = "", asked = false;
  s.setEncoding("utf8");
  s.on("error", (e) => fail(e.code || String(e)));
  s.on("data", (d) => {
    buf += d;
    for (let i; (i = buf.indexOf("\n")) >= 0; buf = buf.slice(i + 1)) {
      if (!asked) { asked = true; s.write("TEST\n"); continue; }
      const c = JSON.parse(buf.slice(0, i));
      console.log(JSON.stringify({ pod: c.pod, local: s.localAddress + ":" + s.localPort, remote: s.remoteAddress + ":" + s.remotePort }));
      clearTimeout(timer);
      process.stdin.on("end", () => process.exit(0)).resume();
      setTimeout(() => process.exit(0), 60000);
    }
  });
} else {
  const s = dgram.createSocket("udp4");
  const request = "hairpin-" + process.pid;
  s.on("error", (e) => fail(e.code || String(e)));
  s.connect(Number(port), host, () => {
    s.send(request);
    setInterval(() => s.send(request), 500);
    s.on("message", (m) => {
      const c = JSON.parse(String(m));
      const local = s.address(), remote = s.remoteAddress();
      console.log(JSON.stringify({ pod: c.pod, request, local: local.address + ":" + local.port, remote: remote.address + ":" + remote.port }));
      process.exit(0);
    });
  });
}
`;
