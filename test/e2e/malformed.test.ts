// SPDX-License-Identifier: Apache-2.0
// Malformed objects through the real apiserver (what the CRD schemas let through): a
// backendRef of an unknown kind, a parentRef to a Gateway that does not exist, a listener
// with a protocol blixt does not serve. Each gets its condition, the valid parts keep
// working, and neither the controller nor the agent restarts over them.
import t, { type Test } from "tap";
import {
  apply,
  clusterSkipReason,
  findCondition,
  freshNamespace,
  getObject,
  restartCounts,
  routeParentConditions,
  waitFor,
  waitForCondition,
} from "../lib/cluster.js";

const skip = clusterSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(5 * 60 * 1000);
  t.test("malformed objects get conditions, not crashes", run);
}

const system = "blixt-system";
const controllerPods = "app.kubernetes.io/instance=blixt,app.kubernetes.io/component=controller";
const agentPods = "app.kubernetes.io/instance=blixt,app.kubernetes.io/component=agent";

async function run(t: Test) {
  const namespace = await freshNamespace(t, "blixt-e2e-malformed");
  const restartsBefore = {
    ...(await restartCounts(system, controllerPods)),
    ...(await restartCounts(system, agentPods)),
  };
  const port = 7400;
  const warnings = await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: malformed, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port}}
  - {name: sctp, protocol: SCTP, port: ${port + 1}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: unknown-kind, namespace: ${namespace}}
spec:
  parentRefs: [{name: malformed, sectionName: tcp}]
  rules: [{backendRefs: [{group: example.com, kind: Widget, name: gadget, port: 3000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: no-gateway, namespace: ${namespace}}
spec:
  parentRefs: [{name: nowhere}]
  rules: [{backendRefs: [{name: missing, port: 3000}]}]
`);
  t.comment(`kubectl apply printed: ${warnings.trim() || "(nothing)"}`);

  await t.test("a listener with an unsupported protocol", async t => {
    t.match(
      warnings,
      /Gateway blixt-e2e-malformed\/malformed: listener "sctp": Accepted will be False \(UnsupportedProtocol\)/,
      "admission warned about it",
    );
    const listenerConditions = (gateway: Awaited<ReturnType<typeof getObject>>) =>
      gateway?.status?.listeners?.find(l => l.name === "sctp")?.conditions;
    const accepted = await waitForCondition("gateway", "malformed", namespace, "Accepted", {
      status: "False",
      reason: "UnsupportedProtocol",
      conditions: listenerConditions,
    });
    t.pass(`listener sctp Accepted False UnsupportedProtocol: ${accepted.message}`);
    const gateway = await waitFor("Gateway Programmed with its valid listener", async () => {
      const object = await getObject("gateway", "malformed", namespace);
      return findCondition(object?.status?.conditions, "Programmed")?.status === "True"
        ? object
        : undefined;
    });
    const gatewayAccepted = findCondition(gateway.status?.conditions, "Accepted");
    t.equal(
      gatewayAccepted?.reason,
      "ListenersNotValid",
      `the Gateway says which listeners are not valid: ${gatewayAccepted?.message}`,
    );
    const tcp = gateway.status?.listeners?.find(l => l.name === "tcp");
    t.equal(
      findCondition(tcp?.conditions, "Accepted")?.status,
      "True",
      "listener tcp is still Accepted",
    );
  });

  await t.test("a backendRef of an unknown kind", async t => {
    t.match(
      warnings,
      /TCPRoute blixt-e2e-malformed\/unknown-kind: ResolvedRefs will be False \(InvalidKind\): backendRefs\[0\] "gadget": kind example\.com\/Widget/,
      "admission warned about it",
    );
    const resolved = await waitForCondition("tcproute", "unknown-kind", namespace, "ResolvedRefs", {
      status: "False",
      reason: "InvalidKind",
      conditions: r => routeParentConditions(r, "malformed"),
    });
    t.match(
      resolved.message ?? "",
      /example\.com\/Widget/,
      `ResolvedRefs False InvalidKind: ${resolved.message}`,
    );
  });

  await t.test("a parentRef to a Gateway that does not exist", async t => {
    // No Gateway means no controller owns the parentRef: the spec leaves status.parents to the
    // controller of the parent, so blixt must not claim it (and must not crash).
    await waitForCondition("tcproute", "unknown-kind", namespace, "Accepted", {
      status: "True",
      conditions: r => routeParentConditions(r, "malformed"),
    });
    const route = await getObject("tcproute", "no-gateway", namespace);
    t.same(
      routeParentConditions(route, "nowhere"),
      undefined,
      "blixt writes no status for a parent it does not own",
      { status: route?.status },
    );
  });

  await t.test("the controller and the agent did not restart", async t => {
    const restartsAfter = {
      ...(await restartCounts(system, controllerPods)),
      ...(await restartCounts(system, agentPods)),
    };
    t.ok(
      Object.keys(restartsBefore).length >= 2,
      `found the controller and agent pods: ${Object.keys(restartsBefore).join(", ")}`,
    );
    t.same(
      restartsAfter,
      restartsBefore,
      "restartCount of every controller and agent pod is unchanged",
    );
  });
}
