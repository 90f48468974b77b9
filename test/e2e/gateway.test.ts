// SPDX-License-Identifier: Apache-2.0
// A Gateway with a TCP and a UDP listener on one port, a TCPRoute and a UDPRoute to real pods:
// the Gateway is Programmed at an address of its own from the pool, traffic from the root
// namespace (outside the cluster) reaches the backends, and the backends see the client's own
// address, since blixt forwards in the kernel without proxying or SNAT.
import t, { type Test } from "tap";
import {
  apply,
  clientAddress,
  clusterSkipReason,
  echoBackend,
  freshNamespace,
  gatewayAddress,
  inGatewayPool,
  kubectl,
  listObjects,
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
  });
}
