// SPDX-License-Identifier: Apache-2.0
// The node agent's relist, against a real kube-apiserver: with no watch event reaching the
// agent (its watch broken: nothing delivers events here at all), a DataplaneConfig changed,
// created or deleted in the API server still reaches the agent's view by the next relist, and
// each relist is counted by reason in blixt_agent_relists_total. The Agent is the real loop;
// it is never started, so no pass touches a dataplane (none is loaded in this test).
import t from "tap";
import { K8s } from "kubernetes-fluent-client";
import { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { Agent } from "../../capabilities/agent/loop.js";
import { listDataplaneConfigsAt } from "../../capabilities/agent/kube.js";
import { AgentMetrics } from "../../capabilities/agent/metrics.js";
import { Relister, mergeRelist } from "../../capabilities/agent/relist.js";
import type { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { findBinaries, startApiServer } from "../lib/apiserver.js";
import { dataplaneConfig } from "../agent/fixtures.js";

const cfg = (name: string, rv: string) =>
  ({
    ...dataplaneConfig(name, "192.0.2.1", []),
    metadata: { namespace: "default", name, resourceVersion: rv },
  }) as DataplaneConfig;

t.test("mergeRelist: the list wins unless a watch event in flight is newer", async t => {
  t.same(
    mergeRelist([cfg("a", "5"), cfg("gone", "3")], {
      items: [cfg("a", "7")],
      resourceVersion: "9",
    }).map(c => `${c.metadata?.name}@${c.metadata?.resourceVersion}`),
    ["a@7"],
    "a newer listed version replaces; an unlisted older one is removed",
  );
  t.same(
    mergeRelist([cfg("a", "8")], { items: [cfg("a", "7")], resourceVersion: "9" }).map(
      c => c.metadata?.resourceVersion,
    ),
    ["8"],
    "a watch event newer than the listed item is kept",
  );
  t.same(
    mergeRelist([cfg("new", "12")], { items: [], resourceVersion: "9" }).map(c => c.metadata?.name),
    ["new"],
    "a config created after the list was taken is kept",
  );
});

t.test(
  "watchEvent drops what a replayed watch delivers again, and what a relist already holds",
  async t => {
    const agent = new Agent({
      nodeName: "n1",
      dataplane: {} as Dataplane,
      mode: "tc",
      acknowledge: async () => {},
    });
    const relister = new Relister({
      list: async () => ({ items: [cfg("a", "20")], resourceVersion: "25" }),
      agent,
      intervalMs: 0,
    });
    const news = (name: string, rv: string) => relister.watchEvent(cfg(name, rv));
    t.ok(news("a", "10"), "a first event");
    t.ok(news("a", "12"), "a newer one");
    t.notOk(news("a", "11"), "an older version of a live config");
    t.notOk(news("a", "12"), "the same version again");
    t.ok(news("b", "15"), "b deleted at 15");
    t.notOk(news("b", "13"), "b's creation, replayed after its deletion");
    t.ok(
      relister.watchEvent({ metadata: { namespace: "default", name: "x" } } as DataplaneConfig),
      "an event without a resourceVersion is taken",
    );
    t.ok(await relister.relist("watch"), "the relist ran");
    t.notOk(news("a", "22"), "older than the relist's list");
    t.notOk(news("c", "24"), "created before the list was taken: the list had it");
    t.ok(news("a", "26"), "newer than the list");
    t.notOk(news("a", "26"), "and only once");
    await relister.stop();
  },
);

const binaries = findBinaries();
if ("missing" in binaries) {
  t.fail(`the real kube-apiserver is needed: ${binaries.missing}`);
} else {
  t.test(
    "a change made while no watch event arrives is in the agent's view after the relist",
    async t => {
      await startApiServer(t, binaries);
      const apply = async (c: DataplaneConfig) => {
        const { generation: _drop, ...metadata } = c.metadata ?? {};
        await K8s(DataplaneConfig).Apply({ ...c, metadata } as never, { force: true });
      };
      await apply(dataplaneConfig("kept", "192.0.2.10", []));
      await apply(dataplaneConfig("removed", "192.0.2.11", []));

      const agent = new Agent({
        nodeName: "n1",
        dataplane: {} as Dataplane,
        mode: "tc",
        acknowledge: async () => {},
      });
      agent.replaceAll((await listDataplaneConfigsAt()).items);
      const metrics = new AgentMetrics({
        stats: async () => ({ services: [], reasons: {} }) as never,
        conntrackEntries: async () => 0,
        listener: () => undefined,
        ready: () => true,
        iface: "lo",
        mode: "tc",
      });
      const relister = new Relister({
        list: listDataplaneConfigsAt,
        agent,
        intervalMs: 200,
        onRelist: (reason, ok) => metrics.observeRelist(reason, ok),
      });
      t.teardown(() => relister.stop());
      relister.start();

      // Behind the agent's back: one changed, one deleted, one created.
      await apply(dataplaneConfig("kept", "192.0.2.20", []));
      await K8s(DataplaneConfig).InNamespace("default").Delete("removed");
      await apply(dataplaneConfig("created", "192.0.2.30", []));

      const view = () =>
        agent
          .held()
          .map(c => `${c.metadata?.name}=${c.spec?.address}`)
          .sort()
          .join(",");
      const want = "created=192.0.2.30,kept=192.0.2.20";
      const deadline = Date.now() + 5_000;
      while (view() !== want && Date.now() < deadline) await new Promise(r => setTimeout(r, 50));
      t.equal(view(), want, "the relist brought the change, the deletion and the creation");
      t.match(
        await metrics.registry.metrics(),
        /blixt_agent_relists_total\{reason="periodic"\} [1-9]/,
        "the relist is counted",
      );
    },
  );
}
