// SPDX-License-Identifier: Apache-2.0
// The agent's start-up, in-process, against a real kube-apiserver and the netns lab's gateway
// interface: it attaches (TC, since the lab's link is a veth), lists the DataplaneConfigs,
// converges and acknowledges before /readyz answers, traffic flows, and a change delivered as
// a watch event is applied and acknowledged. Pepr's watch itself is not running here: the
// test hands the agent the event the way the capability's Watch binding does. Holding a Lease
// (POD_NAMESPACE set), it keeps the announce deadline one Lease duration ahead while another
// node's agent Lease exists (none while it is alone) until it stops.
import t from "tap";
import type { AddressInfo } from "node:net";
import { K8s } from "kubernetes-fluent-client";
import { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { agentSettings, startAgent } from "../../capabilities/agent/start.js";
import { applyLease } from "../../capabilities/agent/kube.js";
import { leaseName, leaseObject } from "../../capabilities/agent/leases.js";
import { V1Lease } from "@kubernetes/client-node";
import { findBinaries, startApiServer } from "../lib/apiserver.js";
import { Lab } from "../lib/lab.js";
import { dataplaneConfig } from "./fixtures.js";

const binaries = findBinaries();
if ("missing" in binaries) {
  t.plan(0, binaries.missing);
} else {
  // Per process, so two runs of this file at once get separate namespaces, subnets and pins.
  const lab = new Lab({ name: `agents-${process.pid}`, backends: 2 });
  t.teardown(() => lab.down());

  t.test("start-up converges and acknowledges before ready; watch events apply", async t => {
    await startApiServer(t, binaries);
    await lab.up();
    await lab.startServers({ udp: [5353] });
    const vip = lab.vip(0);
    const config = dataplaneConfig(
      "gw",
      vip,
      [
        {
          name: "dns",
          port: 5353,
          protocol: "UDP",
          backends: [{ weight: 1, endpoints: [[lab.backendIps[0], 5353]] }],
        },
      ],
      { node: "lab-node" },
    );
    delete (config.metadata as { generation?: number }).generation;
    await K8s(DataplaneConfig).Apply(config as never, { force: true });

    const logs: string[] = [];
    const running = await startAgent(
      agentSettings({
        NODE_NAME: "lab-node",
        BLIXT_INTERFACE: lab.gatewayIface,
        BLIXT_NETNS: lab.gatewayNs,
        BLIXT_PIN_DIR: lab.pinDir,
        BLIXT_METRICS_PORT: "0",
        BLIXT_RESYNC_SECONDS: "0",
      }),
      {
        log: {
          info: (_, m) => logs.push(m),
          error: (f, m) => logs.push(`${m} ${JSON.stringify(f)}`),
        },
      },
    );
    t.teardown(() => running.stop());
    t.equal(running.mode, "tc", "auto picks TC on a veth");
    t.equal(
      await running.dataplane.attachment(lab.gatewayIface),
      "tc",
      "and the programs are attached that way",
    );
    t.ok(running.first.ok, running.first.error ?? "the first converge succeeded");

    const port = (running.server.address() as AddressInfo).port;
    t.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200, "ready once started");
    const stored = await K8s(DataplaneConfig).InNamespace("default").Get("gw");
    t.match(
      stored.status?.nodes,
      [{ name: "lab-node", observedGeneration: stored.metadata?.generation, mode: "tc" }],
      "the generation is acknowledged before start-up returns",
    );
    t.same(
      (await running.dataplane.listServices()).map(s => `${s.vip}:${s.port}/${s.proto}`),
      [`${vip}:5353/udp`],
    );
    t.same(await running.dataplane.announced(), [vip], "this node announces the address");

    const [reply] = await lab.udp(vip, 5353, 1);
    t.match(reply, { ok: true, backend: "b0" }, "traffic flows through the address");

    // What the Watch binding does with a MODIFIED event: observe and schedule.
    const moved = dataplaneConfig(
      "gw",
      vip,
      [
        {
          name: "dns",
          port: 5353,
          protocol: "UDP",
          backends: [{ weight: 1, endpoints: [[lab.backendIps[1], 5353]] }],
        },
      ],
      { node: "lab-node" },
    );
    delete (moved.metadata as { generation?: number }).generation;
    const updated = await K8s(DataplaneConfig).Apply(moved as never, { force: true });
    running.agent.observe(updated);
    running.agent.schedule();
    let acked: DataplaneConfig | undefined;
    for (let i = 0; i < 100; i++) {
      acked = await K8s(DataplaneConfig).InNamespace("default").Get("gw");
      if (acked.status?.nodes?.[0]?.observedGeneration === updated.metadata?.generation) break;
      await new Promise(r => setTimeout(r, 100));
    }
    t.equal(
      acked?.status?.nodes?.[0]?.observedGeneration,
      updated.metadata?.generation,
      "the new generation is acknowledged",
    );
    const [after] = await lab.udp(vip, 5353, 1);
    t.match(after, { ok: true, backend: "b1" }, "and traffic goes to the new backend");
    t.ok(
      logs.some(l => l === "applied DataplaneConfig"),
      "one log line per apply",
    );
  });

  t.test(
    "holding a Lease, the agent keeps the announce deadline ahead; alone, none; stopped, it runs out",
    async t => {
      await startApiServer(t, binaries);
      await lab.up();
      // Another node's agent Lease: somebody could take this node's addresses over.
      await applyLease(leaseObject("default", "other-node", 2, new Date()));
      const running = await startAgent(
        agentSettings({
          NODE_NAME: "lab-node",
          BLIXT_INTERFACE: lab.gatewayIface,
          BLIXT_NETNS: lab.gatewayNs,
          BLIXT_PIN_DIR: lab.pinDir,
          BLIXT_METRICS_PORT: "0",
          BLIXT_RESYNC_SECONDS: "0",
          POD_NAMESPACE: "default",
          BLIXT_LEASE_DURATION_SECONDS: "2",
          BLIXT_LEASE_RENEW_MILLISECONDS: "200",
        }),
        { log: { info: () => {}, error: () => {} } },
      );
      let stopped = false;
      t.teardown(() => (stopped ? undefined : running.stop()));
      // Measured from when the read started: reading the map (a bpftool process) can take
      // most of a second on a loaded machine, and that is no part of how far ahead the agent set it.
      const ahead = async () => {
        const asked = process.hrtime.bigint();
        return Number((await running.dataplane.announceDeadline()) - asked) / 1e6;
      };
      const first = await ahead();
      t.ok(
        first > 1000 && first <= 2000,
        `about one Lease duration ahead (${first.toFixed(0)} ms)`,
      );
      await new Promise(resolve => setTimeout(resolve, 1500));
      const later = await ahead();
      t.ok(
        later > 1000,
        `still ahead 1.5 s later: moved every renew interval (${later.toFixed(0)} ms)`,
      );

      // The other node's Lease deleted (its agent uninstalled): alone, no deadline.
      await K8s(V1Lease).InNamespace("default").Delete(leaseName("other-node"));
      let none = false;
      for (let i = 0; i < 50 && !none; i++) {
        none = (await running.dataplane.announceDeadline()) === 0n;
        if (!none) await new Promise(resolve => setTimeout(resolve, 100));
      }
      t.ok(
        none,
        "no other agent's Lease: no deadline (an agent restart keeps a one-node cluster's ARP)",
      );
      await applyLease(leaseObject("default", "other-node", 2, new Date()));
      let back = false;
      for (let i = 0; i < 50 && !back; i++) {
        back = (await ahead()) > 1000;
        if (!back) await new Promise(resolve => setTimeout(resolve, 100));
      }
      t.ok(back, "another node's Lease again: the deadline is back");

      await running.stop();
      stopped = true;
      const atStop = await running.dataplane.announceDeadline();
      await new Promise(resolve => setTimeout(resolve, 600));
      t.equal(
        await running.dataplane.announceDeadline(),
        atStop,
        "not moved after stop: the same deadline three renew intervals later",
      );
      const left = await ahead();
      await new Promise(resolve => setTimeout(resolve, Math.max(0, left) + 100));
      t.ok(
        (await ahead()) < 0,
        "and it runs out: the node stops answering ARP (test/packet/arp.test.ts)",
      );
    },
  );
}
