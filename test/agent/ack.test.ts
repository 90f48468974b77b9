// SPDX-License-Identifier: Apache-2.0
// Acknowledgements against a real kube-apiserver with blixt's DataplaneConfig CRD: two node
// agents write their status entries at the same time and neither overwrites the other; a
// later acknowledgement changes only its own node's entry. Skipped (with the reason) where
// the kube-apiserver binary has not been built yet.
import t from "tap";
import { K8s } from "kubernetes-fluent-client";
import { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { acknowledge, listDataplaneConfigs } from "../../capabilities/agent/kube.js";
import { nodeAck } from "../../capabilities/agent/desired.js";
import { findBinaries, startApiServer } from "../lib/apiserver.js";
import { dataplaneConfig } from "./fixtures.js";

const binaries = findBinaries();
if ("missing" in binaries) {
  t.plan(0, binaries.missing);
} else {
  t.test("each node agent writes only its own status entry", async t => {
    await startApiServer(t, binaries);
    const spec = dataplaneConfig("gw", "198.18.100.1", [
      {
        name: "tcp",
        port: 80,
        protocol: "TCP",
        backends: [{ weight: 1, endpoints: [["198.18.1.1", 8080]] }],
      },
    ]);
    delete (spec.metadata as { generation?: number }).generation;
    await K8s(DataplaneConfig).Apply(spec as never, { force: true });
    const [created] = await listDataplaneConfigs();
    t.equal(created.metadata?.name, "gw", "the agent lists the config");

    const now = "2026-01-01T00:00:00Z";
    await Promise.all(
      ["node-a", "node-b", "node-c"].map(node =>
        acknowledge(created, nodeAck(created, node, { applied: true }, "tc", now)!),
      ),
    );
    const acked = await K8s(DataplaneConfig).InNamespace("default").Get("gw");
    t.same(
      (acked.status?.nodes ?? []).map(n => [n.name, n.observedGeneration]).sort(),
      [
        ["node-a", 1],
        ["node-b", 1],
        ["node-c", 1],
      ],
      "three concurrent writers, three entries",
    );

    await acknowledge(
      acked,
      nodeAck(
        acked,
        "node-b",
        { applied: false, message: "bpftool: map full" },
        "xdp",
        "2026-02-02T00:00:00Z",
      )!,
    );
    const after = await K8s(DataplaneConfig).InNamespace("default").Get("gw");
    const byName = Object.fromEntries((after.status?.nodes ?? []).map(n => [n.name, n]));
    t.match(
      byName["node-b"],
      { observedGeneration: 1, mode: "xdp", message: "bpftool: map full" },
      "node-b's entry changed",
    );
    t.same(
      byName["node-a"],
      (acked.status?.nodes ?? []).find(n => n.name === "node-a"),
      "node-a's entry is untouched",
    );
    t.equal(after.status?.nodes?.length, 3);
  });
}
