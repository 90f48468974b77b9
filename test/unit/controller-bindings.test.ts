// SPDX-License-Identifier: Apache-2.0
// The controller's watches feed the reconciler's store: one per kind, every phase. Pepr keeps
// Watch bindings only in watch mode, decided when it loads, so the env is set before the import
// (the capability must have none in that mode either). test/apiserver/controller-watches.test.ts
// runs the same watches against a real API server.
import t from "tap";
import { WatchPhase } from "kubernetes-fluent-client/dist/fluent/shared-types.js";

process.env.PEPR_WATCH_MODE = "true";
process.env.LOG_LEVEL ??= "warn";
const { controllerWatches, gatewayController, observeWatchEvent } = await import(
  "../../capabilities/gateway/controller"
);
const { WATCHED_KINDS } = await import("../../capabilities/gateway/store");

const role = gatewayController({
  env: { BLIXT_ADDRESS_POOLS: "[]", BLIXT_AGENT_POD_SELECTOR: "app.kubernetes.io/component=agent" },
});
t.teardown(() => role.reconciler.stop());

t.test("every phase of a kind's one watch keeps the store current", async t => {
  const gateway = {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "Gateway",
    metadata: { namespace: "default", name: "gw", generation: 1, resourceVersion: "1" },
    spec: { gatewayClassName: "blixt", listeners: [] },
  };
  observeWatchEvent(role.reconciler, "Gateway", gateway, WatchPhase.Added);
  t.same(role.reconciler.store.get("Gateway", "default", "gw"), gateway);

  const updated = {
    ...gateway,
    metadata: { ...gateway.metadata, generation: 2, resourceVersion: "2" },
  };
  observeWatchEvent(role.reconciler, "Gateway", updated, WatchPhase.Modified);
  t.same(role.reconciler.store.get("Gateway", "default", "gw"), updated);

  observeWatchEvent(role.reconciler, "Gateway", updated, WatchPhase.Bookmark);
  t.same(role.reconciler.store.get("Gateway", "default", "gw"), updated, "a bookmark is no change");

  observeWatchEvent(role.reconciler, "Gateway", updated, WatchPhase.Deleted);
  t.equal(role.reconciler.store.get("Gateway", "default", "gw"), undefined);
});

t.test("one watch per kind; the agent Pods are selected by their labels, server-side", async t => {
  const watches = controllerWatches({
    agentPodSelector: { "app.kubernetes.io/component": "agent" },
  });
  t.same(
    watches.map(w => w.kind),
    [...WATCHED_KINDS],
    "every kind the store holds, once",
  );
  t.same(
    watches.find(w => w.kind === "AgentPod"),
    {
      kind: "AgentPod",
      labels: { "app.kubernetes.io/component": "agent" },
    },
  );
  t.same(
    watches.filter(w => w.kind !== "AgentPod" && (Object.keys(w.labels).length || w.namespace)),
    [],
    "other kinds are watched whole, in every namespace",
  );
});

t.test("with the agents' namespace set, the agent Pods are watched there only", async t => {
  const watches = controllerWatches({
    agentPodSelector: { "app.kubernetes.io/component": "agent" },
    agentNamespace: "blixt-system",
  });
  t.same(
    watches.find(w => w.kind === "AgentPod"),
    {
      kind: "AgentPod",
      labels: { "app.kubernetes.io/component": "agent" },
      namespace: "blixt-system",
    },
  );
  t.equal(watches.filter(w => w.namespace).length, 1, "no other kind is limited to it");
});

t.test("the capability registers no Watch binding with Pepr (each would open a watch)", async t => {
  t.same(
    role.capability.bindings.filter(b => b.isWatch),
    [],
  );
});
