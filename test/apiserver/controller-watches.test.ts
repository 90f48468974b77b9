// SPDX-License-Identifier: Apache-2.0
// The controller's watches (capabilities/gateway/controller.ts) against a real kube-apiserver
// with an audit log: one watch per kind, however many phases it feeds; every phase reaches the
// reconciler; the agent Pods are selected server-side, by label and in the agents' namespace.
import t from "tap";
import { setTimeout as sleep } from "node:timers/promises";
import { K8s, kind, type KubernetesObject } from "kubernetes-fluent-client";
import { controllerWatches, startKindWatch } from "../../capabilities/gateway/controller";
import { KINDS } from "../../capabilities/gateway/kinds";
import type { WatchedKind } from "../../capabilities/gateway/store";
import { findBinaries, readAuditLog, startApiServer } from "../lib/apiserver";

const binaries = findBinaries();
if ("missing" in binaries) {
  t.fail(`the real kube-apiserver is needed: ${binaries.missing}`);
} else {
  t.test("one watch per kind, every phase, agent Pods selected server-side", async t => {
    const server = await startApiServer(t, binaries, { audit: true });
    const seen: string[] = [];
    const recorder = {
      observe: (kind: WatchedKind, o: KubernetesObject) =>
        seen.push(
          `observe ${kind} ${o.metadata?.namespace}/${o.metadata?.name} g${o.metadata?.generation ?? "-"}`,
        ),
      forget: (kind: WatchedKind, o: KubernetesObject) =>
        seen.push(`forget ${kind} ${o.metadata?.namespace}/${o.metadata?.name}`),
    };
    const logs: string[] = [];
    const log = { info: (m: string) => logs.push(m), warn: (m: string) => logs.push(m) };
    const until = async (what: string, done: () => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!done() && Date.now() < deadline) await sleep(20);
      t.ok(done(), what);
    };

    for (const namespace of ["agents", "elsewhere"]) {
      await K8s(kind.Namespace).Apply({ metadata: { name: namespace } });
      // No controller-manager here: the ServiceAccount admission needs the default account.
      await K8s(kind.ServiceAccount).Apply({ metadata: { namespace, name: "default" } });
    }
    const watches = controllerWatches({
      agentPodSelector: { "app.kubernetes.io/component": "agent" },
      agentNamespace: "agents",
    });
    const watchers = watches.map(w => startKindWatch(w, recorder, log));
    t.teardown(() => watchers.forEach(w => w.close()));

    const gateway = (port: number) => ({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { namespace: "default", name: "g" },
      spec: {
        gatewayClassName: "blixt",
        listeners: [{ name: "l", protocol: "TCP" as const, port }],
      },
    });
    const Gateway = KINDS.Gateway.model;
    await K8s(Gateway).Apply(gateway(9000));
    await until("a created Gateway is observed", () =>
      seen.includes("observe Gateway default/g g1"),
    );
    await K8s(Gateway).Apply(gateway(9001));
    await until("a changed one too, at its new generation", () =>
      seen.includes("observe Gateway default/g g2"),
    );
    await K8s(Gateway).InNamespace("default").Delete("g");
    await until("a deleted one is forgotten", () => seen.includes("forget Gateway default/g"));

    const pod = (namespace: string, name: string, labels: Record<string, string>) =>
      K8s(kind.Pod).Apply({
        metadata: { namespace, name, labels },
        spec: { containers: [{ name: "c", image: "agent" }] },
      });
    const agent = { "app.kubernetes.io/component": "agent" };
    await pod("agents", "unlabelled", {});
    await pod("elsewhere", "agent-elsewhere", agent);
    await pod("agents", "agent", agent);
    await until("the agent Pod is observed", () =>
      seen.some(s => s.startsWith("observe AgentPod agents/agent ")),
    );
    t.same(
      seen.filter(s => s.includes("AgentPod")).map(s => s.replace(/ g.*$/, "")),
      ["observe AgentPod agents/agent"],
      "only the labelled Pod in the agents' namespace: the others were never sent",
    );

    const audit = await readAuditLog(server);
    const watchesOf = (resource: string) => {
      const requests = new Map<string, string>();
      for (const e of audit)
        if (
          e.verb === "watch" &&
          e.objectRef?.resource === resource &&
          // the API server's own informers watch Services, EndpointSlices and Pods too
          !e.user?.username?.startsWith("system:")
        )
          requests.set(e.auditID, decodeURIComponent(e.requestURI));
      return [...requests.values()];
    };
    for (const resource of [
      "gateways",
      "tcproutes",
      "endpointslices",
      "services",
      "dataplaneconfigs",
    ])
      t.same(watchesOf(resource).length, 1, `one watch of ${resource}, not one per phase`);
    const podWatches = watchesOf("pods");
    t.equal(podWatches.length, 1, "one watch of Pods");
    t.match(
      podWatches[0] ?? "",
      /^\/api\/v1\/namespaces\/agents\/pods\?.*labelSelector=app\.kubernetes\.io\/component=agent/,
      "in the agents' namespace, with the label selector",
    );
    t.same(
      logs.filter(l => /failed|did not start/.test(l)),
      [],
      "no watch failed",
    );
  });
}
