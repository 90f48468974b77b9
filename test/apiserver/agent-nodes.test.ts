// SPDX-License-Identifier: Apache-2.0
// Endpoints on several nodes, against a real kube-apiserver and real pinned maps: node-a's
// agent (the real loop, fed by a real watch of DataplaneConfigs as the agent role feeds it,
// acknowledging with its real server-side apply) forwards to its own endpoints and to those
// on nodes whose agent has an entry in the config's status, refuses the share of one on a
// node with none and says so in its entry. Another node's acknowledgement, a status-only
// change, reaches the maps and node-a's message; a change of another node's entry that
// changes nothing node-a programs makes node-a write nothing and run no pass, and its own
// writes coming back through the watch never make it write again, nor run a pass.
import t from "tap";
import { K8s } from "kubernetes-fluent-client";
import { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { Agent } from "../../capabilities/agent/loop.js";
import { acknowledge } from "../../capabilities/agent/kube.js";
import { nodeAck, type NodeAck } from "../../capabilities/agent/desired.js";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { findBinaries, startApiServer } from "../lib/apiserver.js";
import { dataplaneConfig } from "../agent/fixtures.js";

// Per process: two runs of this file at once must not share (and unpin) each other's maps.
const pinDir = `/sys/fs/bpf/blixt-test-agent-nodes-${process.pid}`;

const binaries = findBinaries();
if ("missing" in binaries) {
  t.fail(`the real kube-apiserver is needed: ${binaries.missing}`);
} else {
  t.test(
    "an endpoint is local, remote or refused by the nodes' entries in status; no write flaps",
    async t => {
      await startApiServer(t, binaries);
      t.teardown(() => new Dataplane({ pinDir }).unpin());
      const spec = dataplaneConfig("web", "198.18.210.1", [
        {
          name: "tcp",
          port: 80,
          protocol: "TCP",
          backends: [
            {
              weight: 1,
              endpoints: [
                ["198.19.225.9", 8080, "node-a"],
                ["198.19.226.7", 8080, "node-b"],
                ["198.19.227.4", 8080, "node-c"],
                ["198.19.233.1", 8080],
              ],
            },
          ],
        },
      ]);
      delete (spec.metadata as { generation?: number }).generation;
      await K8s(DataplaneConfig).Apply(spec as never, { force: true });
      const get = () => K8s(DataplaneConfig).InNamespace("default").Get("web");
      const entry = async (node: string) => (await get()).status?.nodes?.find(n => n.name === node);

      const dp = new Dataplane({ pinDir });
      await dp.unpin();
      await dp.load();
      await dp.setNodeAddress("192.0.2.10");
      const writes: NodeAck[] = [];
      let applies = 0;
      const agent = new Agent({
        nodeName: "node-a",
        dataplane: dp,
        mode: "tc",
        resyncMs: 0,
        retry: { base: 50, max: 200 },
        acknowledge: async (config, ack) => {
          writes.push(ack);
          await acknowledge(config, ack);
        },
        onApply: () => applies++,
        log: process.env.BLIXT_TEST_LOG
          ? {
              info: (f, m) => console.error(m, JSON.stringify(f).slice(0, 300)),
              error: (f, m) => console.error(m, JSON.stringify(f).slice(0, 300)),
            }
          : undefined,
      });
      t.teardown(() => agent.stop());
      agent.start();
      // As the agent role does (index.ts): every event is observed; one that can change what a
      // pass does (not this node's own acknowledgement coming back) schedules a pass.
      const watcher = K8s(DataplaneConfig).Watch((config, phase) => {
        if (String(phase) === "DELETED") {
          agent.forget(config);
          agent.schedule();
        } else if (agent.observe(config)) agent.schedule();
      });
      await watcher.start();
      t.teardown(() => watcher.close());

      const until = async (what: string, check: () => Promise<boolean>) => {
        const deadline = Date.now() + 10_000;
        while (!(await check())) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
          await new Promise(r => setTimeout(r, 50));
        }
      };
      const backendIps = async () =>
        (await dp.listServices()).flatMap(s => s.backends.map(b => b.ip)).sort();
      const rejectWeight = async () => (await dp.listServices())[0]?.rejectWeight;
      /** Waits until nothing has been written or applied for `quietMs`. */
      const settle = async (quietMs = 1_500) => {
        let seen = -1;
        while (seen !== writes.length + applies) {
          seen = writes.length + applies;
          await new Promise(r => setTimeout(r, quietMs));
        }
      };

      // No other node has an entry: node-b's and node-c's endpoints are refused.
      await until("node-a's entry", async () => (await entry("node-a")) !== undefined);
      await settle();
      t.same(await backendIps(), ["198.19.225.9", "198.19.233.1"], "local endpoints only");
      t.equal(await rejectWeight(), 2, "the two others' share is refused");
      const first = (await entry("node-a"))!;
      t.equal(first.observedGeneration, 1, "the generation is acknowledged: it is applied");
      t.equal(
        first.message,
        'DataplaneConfig default/web: node node-a refuses the share of new flows of 2 endpoints whose node has no blixt agent entry in this DataplaneConfig\'s status: 198.19.226.7:8080 (node "node-b"), 198.19.227.4:8080 (node "node-c"); run the blixt node agent on that node (or wait for it to acknowledge)',
      );
      t.equal(writes.length, 1, "one write, not re-sent when it comes back through the watch");

      // node-b's agent acknowledges: a status-only change node-a must act on.
      const passesBeforeB = agent.passes;
      await acknowledge(
        await get(),
        nodeAck(await get(), "node-b", { applied: true }, "xdp", new Date().toISOString())!,
      );
      await until("node-b's endpoint in node-a's maps", async () =>
        (await backendIps()).includes("198.19.226.7"),
      );
      await settle();
      t.same(await backendIps(), ["198.19.225.9", "198.19.226.7", "198.19.233.1"]);
      t.equal(await rejectWeight(), 1, "only node-c's share is refused now");
      const second = (await entry("node-a"))!;
      t.match(
        second.message,
        /of 1 endpoint whose node .*: 198\.19\.227\.4:8080 \(node "node-c"\);/,
      );
      t.notMatch(second.message, /node-b/, "node-b is no longer named");
      t.equal(second.observedGeneration, 1);
      t.same(
        second.lastTransitionTime,
        first.lastTransitionTime,
        "the generation did not move, so neither did the transition time",
      );
      t.equal(writes.length, 2, "one more write: the message changed");
      t.equal(
        agent.passes - passesBeforeB,
        1,
        "one pass for node-b's entry; node-a's new entry coming back ran none",
      );

      // node-b's entry changes (a new mode, a message); nothing node-a programs changes.
      const appliesBefore = applies;
      const passesBeforeMode = agent.passes;
      const mine = JSON.stringify(await entry("node-a"));
      await acknowledge(
        await get(),
        nodeAck(
          await get(),
          "node-b",
          { applied: false, message: "bpftool: map full" },
          "tc",
          new Date().toISOString(),
        )!,
      );
      await until(
        "node-b's new entry in the agent's view",
        async () =>
          agent.held()[0]?.status?.nodes?.find(n => n.name === "node-b")?.message ===
          "bpftool: map full",
      );
      await settle();
      t.equal(writes.length, 2, "node-a wrote nothing");
      t.equal(applies, appliesBefore, "and changed nothing in its maps");
      t.equal(
        agent.passes,
        passesBeforeMode,
        "nor ran a pass: node-b is still a node with an agent",
      );
      t.equal(JSON.stringify(await entry("node-a")), mine, "its entry is as it was");
    },
  );
}
