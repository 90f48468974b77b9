// SPDX-License-Identifier: Apache-2.0
// ReferenceGrant on the local cluster: a TCPRoute's and a UDPRoute's backendRef to a Service
// in another namespace is refused (ResolvedRefs=False RefNotPermitted; the TCP connection is
// refused, UDP datagrams get no reply) until a ReferenceGrant in the Service's namespace allows
// it; then it is served; deleting the grant takes it away again.
import t, { type Test } from "tap";
import {
  apply,
  clusterSkipReason,
  echoBackend,
  freshNamespace,
  gatewayAddress,
  kubectl,
  routeParentConditions,
  tcpEchoOnce,
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
  t.test(
    "a cross-namespace backendRef (TCP and UDP) is served only while a ReferenceGrant allows it",
    run,
  );
}

/** How a refused TCP connection shows to a client: a RST on the SYN, or a reset right after. */
async function refusal(host: string, port: number): Promise<string | undefined> {
  try {
    const context = await tcpEchoOnce(host, port);
    throw new Error(`TCP ${host}:${port} was served by pod ${context.pod}`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === "ECONNREFUSED" || code === "ECONNRESET" ? code : undefined;
  }
}

/** True when three datagrams in a row get no reply (undefined, for waitFor, when one does). */
async function silence(flow: UdpFlow, forWaitFor = false): Promise<true | undefined> {
  for (let i = 0; i < 3; i++) {
    if ((await flow.exchange(`refused-${i}`, 500)) !== undefined) {
      if (forWaitFor) return undefined;
      throw new Error(`UDP ${flow.host}:${flow.port} answered while the backend is not permitted`);
    }
  }
  return true;
}

async function run(t: Test) {
  const namespace = await freshNamespace(t, "blixt-e2e-grant");
  const backendNamespace = await freshNamespace(t, "blixt-e2e-grant-backend");
  const port = 7200;
  const resolvedRefs = async (status: string, reason: string) => {
    await waitForCondition("udproute", "cross", namespace, "ResolvedRefs", {
      status,
      reason,
      conditions: r => routeParentConditions(r, "grant"),
    });
    return waitForCondition("tcproute", "cross", namespace, "ResolvedRefs", {
      status,
      reason,
      conditions: r => routeParentConditions(r, "grant"),
    });
  };
  await apply(`
${echoBackend({ namespace: backendNamespace, name: "tcp-echo", protocol: "TCP", port: 3000 })}
---
${echoBackend({ namespace: backendNamespace, name: "udp-echo", protocol: "UDP", port: 8080 })}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: grant, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners: [{name: tcp, protocol: TCP, port: ${port}}, {name: udp, protocol: UDP, port: ${port}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: cross, namespace: ${namespace}}
spec:
  parentRefs: [{name: grant}]
  rules: [{backendRefs: [{name: tcp-echo, namespace: ${backendNamespace}, port: 3000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: cross, namespace: ${namespace}}
spec:
  parentRefs: [{name: grant}]
  rules: [{backendRefs: [{name: udp-echo, namespace: ${backendNamespace}, port: 8080}]}]
`);
  await waitForDeployment(backendNamespace, "tcp-echo");
  await waitForDeployment(backendNamespace, "udp-echo");

  await waitForCondition("gateway", "grant", namespace, "Programmed", { status: "True" });
  const address = await gatewayAddress(namespace, "grant");
  // A new flow (source port) for each step: an earlier flow's conntrack entry is not the question.
  const newFlow = async () => {
    const flow = await UdpFlow.open(address, port);
    t.teardown(() => flow.close());
    return flow;
  };
  const grant = `
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: from-grant, namespace: ${backendNamespace}}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: ${namespace}}, {group: gateway.networking.k8s.io, kind: UDPRoute, namespace: ${namespace}}]
  to: [{group: "", kind: Service, name: tcp-echo}, {group: "", kind: Service, name: udp-echo}]
`;

  await t.test("without a ReferenceGrant", async t => {
    const condition = await resolvedRefs("False", "RefNotPermitted");
    t.match(
      condition.message ?? "",
      backendNamespace,
      `ResolvedRefs False RefNotPermitted: ${condition.message}`,
    );
    const code = await waitFor(`TCP ${address}:${port} refused`, () => refusal(address, port), {
      timeoutMs: 30_000,
    });
    t.pass(`the connection is refused (${code})`);
    t.equal(await silence(await newFlow()), true, `UDP ${address}:${port} gets no reply`);
  });

  await t.test("with a ReferenceGrant", async t => {
    await apply(grant);
    await resolvedRefs("True", "ResolvedRefs");
    t.pass("ResolvedRefs True");
    const context = await waitFor(
      `TCP ${address}:${port} served`,
      () => tcpEchoOnce(address, port),
      { timeoutMs: 30_000 },
    );
    t.equal(context.namespace, backendNamespace, `served by ${context.namespace}/${context.pod}`);
    const flow = await newFlow();
    const reply = await waitFor(`UDP ${address}:${port} answered`, () => flow.echo("granted"), {
      timeoutMs: 30_000,
    });
    t.equal(reply.namespace, backendNamespace, `UDP answered by ${reply.namespace}/${reply.pod}`);
  });

  await t.test("after the ReferenceGrant is deleted", async t => {
    await kubectl("-n", backendNamespace, "delete", "referencegrant", "from-grant");
    await resolvedRefs("False", "RefNotPermitted");
    t.pass("ResolvedRefs False RefNotPermitted again");
    const code = await waitFor(
      `TCP ${address}:${port} refused again`,
      () => refusal(address, port),
      { timeoutMs: 30_000 },
    );
    t.pass(`new connections are refused again (${code})`);
    // A flow that was answered keeps its conntrack entry until it idles out; a new flow must not be served.
    t.equal(
      await waitFor(
        `UDP ${address}:${port} silent again`,
        async () => silence(await newFlow(), true),
        { timeoutMs: 30_000 },
      ),
      true,
      "a new UDP flow gets no reply again",
    );
  });
}
