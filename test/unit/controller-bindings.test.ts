// SPDX-License-Identifier: Apache-2.0
// The controller capability's Watch bindings feed the reconciler's store. Pepr keeps Watch
// bindings only in watch mode, decided when it loads, so the env is set before the import.
import t from "tap";

process.env.PEPR_WATCH_MODE = "true";
process.env.LOG_LEVEL ??= "warn";
const { gatewayController } = await import("../../capabilities/gateway/controller");

const role = gatewayController({
  env: { BLIXT_ADDRESS_POOLS: "[]", BLIXT_AGENT_POD_SELECTOR: "app.kubernetes.io/component=agent" },
});
t.teardown(() => role.reconciler.stop());

const binding = (kind: string, event: string) => {
  const found = role.capability.bindings.filter(
    b => b.isWatch && b.kind.kind === kind && b.event === event,
  );
  if (found.length !== 1)
    throw new Error(`expected one ${event} watch for ${kind}, found ${found.length}`);
  return found[0];
};

t.test("create/update and delete watches keep the store current", async t => {
  const gateway = {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "Gateway",
    metadata: { namespace: "default", name: "gw", generation: 1 },
    spec: { gatewayClassName: "blixt", listeners: [] },
  };
  await binding("Gateway", "CREATEORUPDATE").watchCallback!(gateway as never, "ADDED" as never);
  t.same(role.reconciler.store.get("Gateway", "default", "gw"), gateway);

  const updated = { ...gateway, metadata: { ...gateway.metadata, generation: 2 } };
  await binding("Gateway", "CREATEORUPDATE").watchCallback!(updated as never, "MODIFIED" as never);
  t.same(role.reconciler.store.get("Gateway", "default", "gw"), updated);

  await binding("Gateway", "DELETE").watchCallback!(updated as never, "DELETED" as never);
  t.equal(role.reconciler.store.get("Gateway", "default", "gw"), undefined);
});

t.test("the agent Pod watch is limited to the agent's labels, server-side", async t => {
  t.same(binding("Pod", "CREATEORUPDATE").filters.labels, {
    "app.kubernetes.io/component": "agent",
  });
  t.same(binding("Pod", "DELETE").filters.labels, { "app.kubernetes.io/component": "agent" });
  t.same(binding("Service", "CREATEORUPDATE").filters.labels, {}, "other kinds are watched whole");
});

t.test("DataplaneConfigs are watched under their own group and version", async t => {
  t.same(binding("DataplaneConfig", "CREATEORUPDATE").kind, {
    group: "blixt.dev",
    version: "v1alpha1",
    kind: "DataplaneConfig",
    plural: "dataplaneconfigs",
  });
});

t.test(
  "with the agent's namespace set, no Pepr binding watches Pods (it would watch every namespace); the controller's own watch does",
  async t => {
    const namespaced = gatewayController({
      env: {
        BLIXT_ADDRESS_POOLS: "[]",
        BLIXT_AGENT_POD_SELECTOR: "app.kubernetes.io/component=agent",
        BLIXT_AGENT_NAMESPACE: "blixt-system",
      },
    });
    t.teardown(() => namespaced.reconciler.stop());
    t.same(
      namespaced.capability.bindings.filter(b => b.isWatch && b.kind.kind === "Pod"),
      [],
    );
    t.ok(
      namespaced.capability.bindings.some(b => b.isWatch && b.kind.kind === "Service"),
      "the other kinds are still bound",
    );
  },
);
