// SPDX-License-Identifier: Apache-2.0
// Which DataplaneConfig watch events make the node agent run a pass (loop.ts passInputChanged):
// only those that change what a pass reads of a config. The watch brings every acknowledgement
// back, the agent's own among them; the real watch and apiserver round trip of the same rule is
// test/apiserver/agent-nodes.test.ts.
import t from "tap";
import { passInputChanged } from "../../capabilities/agent/loop.js";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { dataplaneConfig } from "../agent/fixtures.js";

const NODE = "node-a";
const base = dataplaneConfig(
  "web",
  "198.18.210.1",
  [
    {
      name: "tcp",
      port: 80,
      protocol: "TCP",
      backends: [{ weight: 1, endpoints: [["198.19.225.9", 8080, "node-b"]] }],
    },
  ],
  { generation: 3 },
);
const entry = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  observedGeneration: 3,
  mode: "tc",
  lastTransitionTime: "2026-12-07T04:00:00.000Z",
  ...extra,
});
/** The config as a watch would deliver it: a fresh object, with these status entries. */
const delivered = (nodes: object[], change: (c: DataplaneConfig) => void = () => {}) => {
  const copy = JSON.parse(JSON.stringify(base)) as DataplaneConfig;
  copy.status = { nodes: nodes as never };
  change(copy);
  return copy;
};
const held = delivered([entry(NODE), entry("node-b")]);

t.test("the agent's own acknowledgement coming back changes nothing a pass reads", async t => {
  t.notOk(passInputChanged(held, delivered([entry(NODE), entry("node-b")]), NODE));
  t.notOk(
    passInputChanged(
      held,
      delivered([
        entry(NODE, { lastTransitionTime: new Date("2026-12-07T04:00:00.000Z") }),
        entry("node-b"),
      ]),
      NODE,
    ),
    "a transition time decoded as a Date is the same time",
  );
  t.notOk(
    passInputChanged(
      held,
      delivered([
        entry(NODE),
        entry("node-b", { mode: "xdp", message: "map full", observedGeneration: 2 }),
      ]),
      NODE,
    ),
    "another node's message, mode or generation: its endpoints stay where they are",
  );
});

t.test("the echo of a write that came back before the write's answer runs no pass", async t => {
  // The agent still holds the config as it was before its write, with its old entry.
  const before = delivered([entry(NODE, { message: "old" }), entry("node-b")]);
  const written = {
    name: NODE,
    observedGeneration: 3,
    mode: "tc" as const,
    lastTransitionTime: "2026-12-07T04:00:00.000Z",
  };
  t.notOk(
    passInputChanged(before, delivered([entry(NODE), entry("node-b")]), NODE, written),
    "its entry is the one it is writing",
  );
  t.ok(
    passInputChanged(
      before,
      delivered([entry(NODE, { message: "other" }), entry("node-b")]),
      NODE,
      written,
    ),
    "an entry neither held nor written",
  );
  t.ok(passInputChanged(before, delivered([entry("node-b")]), NODE, written), "no entry at all");
});

t.test("what a pass reads changed: a pass runs", async t => {
  t.ok(
    passInputChanged(held, delivered([entry(NODE)]), NODE),
    "another node's entry gone: its endpoints' share is refused now",
  );
  t.ok(
    passInputChanged(held, delivered([entry(NODE), entry("node-b"), entry("node-c")]), NODE),
    "a node's first acknowledgement",
  );
  t.ok(
    passInputChanged(held, delivered([entry("node-b")]), NODE),
    "this node's entry gone: it is written again",
  );
  t.ok(
    passInputChanged(held, delivered([entry(NODE, { message: "edited" }), entry("node-b")]), NODE),
    "this node's entry not as it wrote it",
  );
  t.ok(
    passInputChanged(
      held,
      delivered([entry(NODE), entry("node-b")], c => {
        c.spec!.listeners![0].backends[0].endpoints.push({ address: "198.19.225.10", port: 8080 });
      }),
      NODE,
    ),
    "a new endpoint",
  );
  t.ok(
    passInputChanged(
      held,
      delivered([entry(NODE), entry("node-b")], c => {
        c.metadata!.deletionTimestamp = "2026-12-07T04:01:00Z" as never;
      }),
      NODE,
    ),
    "deletion begun",
  );
});
