// SPDX-License-Identifier: Apache-2.0
// The agent role's Pepr capability: exactly two Watch bindings on DataplaneConfig (created or
// updated, deleted), and creating it starts nothing. Pepr decides when its library loads
// whether Watch bindings register (PEPR_WATCH_MODE), so the module is imported after setting it.
import t from "tap";

process.env.PEPR_WATCH_MODE = "true";
const { dataplaneAgent } = await import("../../capabilities/agent/index.js");

t.test("two Watch bindings on DataplaneConfig, nothing else", async t => {
  const role = dataplaneAgent({ env: {} });
  t.equal(role.capability.name, "dataplane-agent");
  const bindings = role.capability.bindings.map(b => ({
    event: b.event,
    watch: b.isWatch === true,
    kind: `${b.kind.group}/${b.kind.version}/${b.kind.kind}`,
  }));
  t.same(
    bindings.sort((a, b) => (a.event < b.event ? -1 : 1)),
    [
      { event: "CREATEORUPDATE", watch: true, kind: "blixt.dev/v1alpha1/DataplaneConfig" },
      { event: "DELETE", watch: true, kind: "blixt.dev/v1alpha1/DataplaneConfig" },
    ],
  );
});

t.test("a watch event before start() is kept, not dropped and not applied", async t => {
  const role = dataplaneAgent({ env: {} });
  const watch = role.capability.bindings.find(b => b.event === "CREATEORUPDATE")!.watchCallback!;
  // No agent exists yet (start() was not called): the event must not throw or touch the node.
  await t.resolves(
    Promise.resolve(
      watch({ metadata: { namespace: "default", name: "gw" } } as never, "ADDED" as never),
    ),
  );
});
