// SPDX-License-Identifier: Apache-2.0
// The agent role's Pepr capability: no bindings at all (the agent runs its own DataplaneConfig
// watch from start(), kube.ts watchDataplaneConfigs), and creating it starts nothing. Pepr
// decides when its library loads whether Watch bindings register (PEPR_WATCH_MODE), so the
// module is imported after setting it: even in watch mode the agent registers none.
import t from "tap";

process.env.PEPR_WATCH_MODE = "true";
const { dataplaneAgent } = await import("../../capabilities/agent/index.js");

t.test("no Pepr bindings: the agent's watch is its own", async t => {
  const role = dataplaneAgent({ env: {} });
  t.equal(role.capability.name, "dataplane-agent");
  t.same(role.capability.bindings, []);
});

t.test(
  "watch events and failures before start() are kept, not dropped and not applied",
  async t => {
    const role = dataplaneAgent({ env: {} });
    // No agent and no relister exist yet (start() was not called): nothing may throw or touch the node.
    const config = { metadata: { namespace: "default", name: "gw" } } as never;
    t.doesNotThrow(() => role.watchHandlers.changed(config));
    t.doesNotThrow(() => role.watchHandlers.deleted(config));
    t.doesNotThrow(() => role.watchHandlers.failed("network_error" as never, "connection reset"));
  },
);
