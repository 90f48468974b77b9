// SPDX-License-Identifier: Apache-2.0
// Node Leases against a real kube-apiserver: two agents' renewals (the server-side apply the
// agent makes) and the watch every agent keeps, fed into the liveness view. One agent stops
// renewing; the other sees its Lease lapse about one duration later and takes its address.
// The dataplane side of a takeover (gratuitous ARP, maps) is the agent loop's, tested in
// test/agent and on kind (test/kind/failover.test.ts).
import t from "tap";
import { K8s } from "kubernetes-fluent-client";
import { V1Lease } from "@kubernetes/client-node";
import { applyLease, followLeases } from "../../capabilities/agent/kube.js";
import {
  announcerOf,
  LeaseHolder,
  LiveNodes,
  LivenessNotifier,
  type Liveness,
} from "../../capabilities/agent/leases.js";
import { rendezvousPick } from "../../capabilities/rendezvous.js";
import { findBinaries, startApiServer } from "../lib/apiserver.js";

const binaries = findBinaries();
if ("missing" in binaries) {
  t.plan(0, binaries.missing);
} else {
  t.test("a stopped agent's Lease lapses and its address moves", async t => {
    await startApiServer(t, binaries);
    const quiet = { info: () => {}, error: () => {} };
    const settings = { durationSeconds: 2, renewMs: 500 };
    const holders = ["node-a", "node-b"].map(
      nodeName =>
        new LeaseHolder({
          namespace: "default",
          nodeName,
          owner: undefined,
          settings,
          log: quiet,
          write: applyLease,
        }),
    );
    for (const holder of holders) holder.start();
    t.teardown(async () => {
      for (const holder of holders) await holder.stop();
    });

    const view = new LiveNodes();
    const changes: { at: number; liveness: string }[] = [];
    const watch = followLeases(
      "default",
      view,
      liveness => changes.push({ at: Date.now(), liveness: LivenessNotifier.describe(liveness) }),
      () => {},
    );
    await watch.start();
    t.teardown(() => watch.close());

    const until = async (what: string, probe: () => boolean, timeoutMs = 15_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!probe()) {
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${what}; changes: ${JSON.stringify(changes)}`);
        await new Promise(resolve => setTimeout(resolve, 20));
      }
    };
    await until("both Leases live", () => view.liveness()?.live.size === 2);
    const lease = await K8s(V1Lease).InNamespace("default").Get("blixt-agent-node-b");
    t.equal(lease.spec?.holderIdentity, "node-b", "the API server took the Lease");
    t.equal(lease.spec?.leaseDurationSeconds, 2);
    t.ok(lease.spec?.renewTime, "with its renewTime (MicroTime)");
    t.equal(
      lease.metadata?.labels?.["app.kubernetes.io/component"],
      "agent-lease",
      "labelled for the watch",
    );

    // An address node-b announces, by the controller's choice.
    let address = "";
    for (let i = 1; !address; i++)
      if (rendezvousPick(`198.18.7.${i}`, ["node-a", "node-b"]) === "node-b")
        address = `198.18.7.${i}`;
    const liveness = () => view.liveness() as Liveness;
    t.equal(announcerOf(address, "node-b", liveness(), "node-a"), "node-b");

    // Renewals that change nothing do not wake anyone.
    const before = changes.length;
    await new Promise(resolve => setTimeout(resolve, 1500));
    t.equal(changes.length, before, "1.5 s of renewals changed nothing");

    const stopped = Date.now();
    await holders[1].stop();
    await until("node-b's Lease lapsed", () => view.liveness()?.lapsed.has("node-b") === true);
    const lapsedAfter = Date.now() - stopped;
    t.comment(`node-b lapsed ${lapsedAfter} ms after its last renewal stopped`);
    t.ok(
      lapsedAfter >= 1000 && lapsedAfter < 8000,
      `lapsed about one duration (2 s) after its agent stopped: ${lapsedAfter} ms`,
    );
    t.equal(
      announcerOf(address, "node-b", liveness(), "node-a"),
      "node-a",
      "node-a takes node-b's address over",
    );
    t.same([...liveness().live], ["node-a"], "node-a is still live: it kept renewing");

    // node-b comes back: it is live again, and the controller's choice stands once more.
    holders[1].start();
    await until("node-b live again", () => view.liveness()?.live.has("node-b") === true);
    t.equal(announcerOf(address, "node-b", liveness(), "node-a"), "node-b");
  });
}
