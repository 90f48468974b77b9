// SPDX-License-Identifier: Apache-2.0
// The node agent's pure decisions: desired state from DataplaneConfigs, the diff against the
// maps, the status entry it writes, the retry schedule.
import t from "tap";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import {
  sampleChunks,
  serviceTable,
  type ServiceSpec,
} from "../../capabilities/dataplane/tables.js";
import type { ActualService } from "../../capabilities/dataplane/lines.js";
import { CHUNK_SLOTS } from "../../capabilities/dataplane/maps.js";
import {
  changeCount,
  changesByConfig,
  desiredState,
  diffState,
  listenerWeights,
  nodeAck,
  retryDelay,
} from "../../capabilities/agent/desired.js";

interface ListenerIn {
  name: string;
  port: number;
  protocol: "TCP" | "UDP";
  rejectWeight?: number;
  backends?: { weight: number; endpoints: [string, number][] }[];
}

function config(
  name: string,
  address: string | undefined,
  listeners: ListenerIn[],
  extra: { node?: string; generation?: number; namespace?: string; status?: unknown } = {},
): DataplaneConfig {
  return {
    apiVersion: "blixt.dev/v1alpha1",
    kind: "DataplaneConfig",
    metadata: { namespace: extra.namespace ?? "default", name, generation: extra.generation ?? 1 },
    spec: {
      gatewayName: name,
      gatewayGeneration: 1,
      address,
      announcingNode: extra.node,
      listeners: listeners.map(l => ({
        name: l.name,
        port: l.port,
        protocol: l.protocol,
        rejectWeight: l.rejectWeight ?? 0,
        backends: (l.backends ?? []).map(b => ({
          weight: b.weight,
          endpoints: b.endpoints.map(([address, port]) => ({ address, port })),
        })),
      })),
    },
    status: extra.status,
  } as DataplaneConfig;
}

t.test(
  "listenerWeights splits a backendRef's weight evenly over its endpoints, exactly",
  async t => {
    // 1 endpoint at weight 1 vs 3 endpoints at weight 1: each of the three gets a third.
    const w = listenerWeights({
      rejectWeight: 0,
      backends: [
        { weight: 1, endpoints: [{ address: "10.0.0.1", port: 80 }] },
        {
          weight: 1,
          endpoints: [
            { address: "10.0.1.1", port: 80 },
            { address: "10.0.1.2", port: 80 },
            { address: "10.0.1.3", port: 80 },
          ],
        },
      ],
    });
    t.same(w.backends, [
      { ip: "10.0.0.1", port: 80, weight: 3 },
      { ip: "10.0.1.1", port: 80, weight: 1 },
      { ip: "10.0.1.2", port: 80, weight: 1 },
      { ip: "10.0.1.3", port: 80, weight: 1 },
    ]);
    t.equal(w.rejectWeight, 0);
  },
);

t.test(
  "listenerWeights keeps the reject share on the same scale and reduces by the common divisor",
  async t => {
    const w = listenerWeights({
      rejectWeight: 20,
      backends: [
        {
          weight: 80,
          endpoints: [
            { address: "10.0.0.1", port: 80 },
            { address: "10.0.0.2", port: 80 },
          ],
        },
      ],
    });
    // 40:40:20 → 2:2:1
    t.same(
      w.backends.map(b => b.weight),
      [2, 2],
    );
    t.equal(w.rejectWeight, 1);
  },
);

t.test("listenerWeights merges an endpoint that two backendRefs share", async t => {
  const w = listenerWeights({
    rejectWeight: 0,
    backends: [
      { weight: 1, endpoints: [{ address: "10.0.0.1", port: 80 }] },
      { weight: 2, endpoints: [{ address: "10.0.0.1", port: 80 }] },
    ],
  });
  t.same(w.backends, [{ ip: "10.0.0.1", port: 80, weight: 1 }]);
});

t.test("listenerWeights rounds onto a fine scale when exact ratios would overflow u32", async t => {
  // Endpoint counts 1..23 have an lcm far beyond 2^31.
  const backends = Array.from({ length: 23 }, (_, i) => ({
    weight: 1_000_000,
    endpoints: Array.from({ length: i + 1 }, (_, j) => ({
      address: `10.${i}.0.${j + 1}`,
      port: 80,
    })),
  }));
  const w = listenerWeights({ rejectWeight: 1, backends });
  t.ok(
    w.backends.every(b => Number.isInteger(b.weight) && b.weight >= 1 && b.weight <= 0xffffffff),
    "every weight an integer in u32",
  );
  const first = w.backends.find(b => b.ip === "10.0.0.1")!.weight;
  const ofSecond = w.backends.find(b => b.ip === "10.1.0.1")!.weight;
  t.ok(Math.abs(first / ofSecond - 2) < 0.01, `halves stay halves (${first} vs ${ofSecond})`);
  t.ok(w.rejectWeight >= 1, "a non-zero reject weight stays non-zero");
});

t.test(
  "desiredState programs every Gateway's listeners and announces only this node's addresses",
  async t => {
    const configs = [
      config(
        "b",
        "198.18.100.2",
        [
          {
            name: "dns",
            port: 53,
            protocol: "UDP",
            backends: [{ weight: 1, endpoints: [["10.0.0.9", 5353]] }],
          },
        ],
        { node: "node-2" },
      ),
      config(
        "a",
        "198.18.100.1",
        [
          {
            name: "tcp",
            port: 80,
            protocol: "TCP",
            backends: [{ weight: 1, endpoints: [["10.0.0.1", 8080]] }],
          },
          { name: "empty", port: 81, protocol: "TCP", rejectWeight: 1 },
        ],
        { node: "node-1" },
      ),
      config("pending", undefined, [{ name: "tcp", port: 80, protocol: "TCP" }]),
    ];
    const d = desiredState(configs, "node-1");
    t.same(d.services, [
      {
        vip: "198.18.100.1",
        port: 80,
        proto: "tcp",
        backends: [{ ip: "10.0.0.1", port: 8080, weight: 1 }],
        rejectWeight: 0,
      },
      { vip: "198.18.100.1", port: 81, proto: "tcp", backends: [], rejectWeight: 1 },
      {
        vip: "198.18.100.2",
        port: 53,
        proto: "udp",
        backends: [{ ip: "10.0.0.9", port: 5353, weight: 1 }],
        rejectWeight: 0,
      },
    ]);
    t.same(d.addresses, ["198.18.100.1", "198.18.100.2"]);
    t.same(d.announced, ["198.18.100.1"]);
    t.same(d.listeners.get("198.18.100.2:53/udp"), {
      config: "default/b",
      namespace: "default",
      gateway: "b",
      listener: "dns",
      port: 53,
      protocol: "UDP",
    });
    t.equal(d.problems.size, 0, "a config with no address yet is not a problem");
  },
);

t.test(
  "desiredState leaves out a config that cannot apply, names it, and keeps the rest",
  async t => {
    const configs = [
      config("v6", "2001:db8::1", [{ name: "tcp", port: 80, protocol: "TCP" }]),
      config("first", "198.18.100.1", [{ name: "tcp", port: 80, protocol: "TCP" }]),
      config("second", "198.18.100.1", [
        { name: "other", port: 80, protocol: "TCP" },
        { name: "udp", port: 80, protocol: "UDP" },
      ]),
    ];
    const d = desiredState(configs, "n");
    t.same(
      d.services.map(s => `${s.vip}:${s.port}/${s.proto}`),
      ["198.18.100.1:80/tcp"],
    );
    t.match(d.problems.get("default/v6"), /spec\.address "2001:db8::1" is not an IPv4 address/);
    t.match(
      d.problems.get("default/second"),
      /listener "other" \(198\.18\.100\.1:80\/tcp\) is already served for DataplaneConfig default\/first/,
    );
    t.notOk(d.problems.has("default/first"));
    t.same(
      d.listeners.get("198.18.100.1:80/tcp")?.config,
      "default/first",
      "the first by namespace/name wins on every node",
    );
  },
);

/** A service as the maps would hold it; `table` adds its backend list and sampled chunks, as the agent reads them back. */
function actualOf(spec: ServiceSpec, svcId: number, opts: { table?: boolean } = {}): ActualService {
  const table = serviceTable(spec.backends, spec.rejectWeight);
  const chunkOf = (c: number) => {
    const out = new Uint16Array(CHUNK_SLOTS);
    out.set(
      table.slots.subarray(c * CHUNK_SLOTS, Math.min(table.tableSize, (c + 1) * CHUNK_SLOTS)),
    );
    return out;
  };
  if (!opts.table) return { ...spec, svcId, tableId: svcId * 2, tableSize: table.tableSize };
  return {
    ...spec,
    svcId,
    tableId: svcId * 2,
    tableSize: table.tableSize,
    tableBackends: new Map(table.backends.map((b, i) => [i, b] as const)),
    chunks: new Map(sampleChunks(table.tableSize).map(c => [c, chunkOf(c)] as const)),
  };
}

const web: ServiceSpec = {
  vip: "198.18.100.1",
  port: 80,
  proto: "tcp",
  backends: [
    { ip: "10.0.0.1", port: 80, weight: 1 },
    { ip: "10.0.0.2", port: 80, weight: 1 },
  ],
  rejectWeight: 0,
};
const dns: ServiceSpec = {
  vip: "198.18.100.1",
  port: 53,
  proto: "udp",
  backends: [{ ip: "10.0.0.9", port: 53, weight: 1 }],
  rejectWeight: 0,
};

t.test("diffState from empty sets everything", async t => {
  const d = diffState(
    { services: [web, dns], addresses: ["198.18.100.1"], announced: ["198.18.100.1"] },
    { services: [], addresses: [] },
  );
  t.same(
    d.set.map(s => s.port),
    [80, 53],
  );
  t.same(d.remove, []);
  t.same(d.addresses, { upsert: [{ ip: "198.18.100.1", announce: true }], remove: [] });
  t.equal(d.reasons.get("198.18.100.1:80/tcp"), "new");
  t.equal(changeCount(d), 3);
});

t.test("diffState of converged maps is empty, whatever the backend order", async t => {
  const reordered = { ...web, backends: [...web.backends].reverse() };
  const d = diffState(
    { services: [reordered, dns], addresses: ["198.18.100.1"], announced: [] },
    {
      services: [actualOf(web, 1, { table: true }), actualOf(dns, 2, { table: true })],
      addresses: [{ ip: "198.18.100.1", announce: false }],
    },
  );
  t.equal(changeCount(d), 0);
});

t.test(
  "diffState finds stale backends, weights, reject share, a broken table and leftovers",
  async t => {
    const stale = [
      actualOf({ ...web, backends: [web.backends[0]] }, 1),
      actualOf({ ...dns, rejectWeight: 1 }, 2),
      actualOf({ vip: "198.18.100.7", port: 22, proto: "tcp", backends: [], rejectWeight: 1 }, 3),
    ];
    const d = diffState(
      { services: [web, dns], addresses: ["198.18.100.1"], announced: ["198.18.100.1"] },
      {
        services: stale,
        addresses: [
          { ip: "198.18.100.1", announce: false },
          { ip: "198.18.100.7", announce: false },
        ],
      },
    );
    t.equal(d.reasons.get("198.18.100.1:80/tcp"), "backends");
    t.equal(d.reasons.get("198.18.100.1:53/udp"), "rejectWeight");
    t.same(d.remove, [{ vip: "198.18.100.7", port: 22, proto: "tcp" }]);
    t.same(
      d.addresses,
      { upsert: [{ ip: "198.18.100.1", announce: true }], remove: ["198.18.100.7"] },
      "taking over an address re-flags it",
    );

    const weights = diffState(
      { services: [web], addresses: [], announced: [] },
      {
        services: [
          actualOf({ ...web, backends: [web.backends[0], { ...web.backends[1], weight: 5 }] }, 1),
        ],
        addresses: [],
      },
    );
    t.equal(
      weights.reasons.get("198.18.100.1:80/tcp"),
      "backends",
      "a changed weight alone reprograms the service",
    );

    const reasonFor = (actual: ActualService) =>
      diffState(
        { services: [web], addresses: [], announced: [] },
        { services: [actual], addresses: [] },
      ).reasons.get("198.18.100.1:80/tcp");
    const missing = actualOf(web, 1, { table: true });
    missing.chunks!.set(sampleChunks(missing.tableSize).at(-1)!, undefined); // the last chunk deleted behind the agent's back
    t.equal(reasonFor(missing), "table", "a missing chunk");
    const corrupted = actualOf(web, 1, { table: true });
    const last = sampleChunks(corrupted.tableSize).at(-1)!;
    const lastSlot = (corrupted.tableSize - 1) % CHUNK_SLOTS;
    corrupted.chunks!.get(last)![lastSlot] ^= 1; // the table's very last slot pointed at the other backend
    t.equal(reasonFor(corrupted), "table", "a corrupted slot in a sampled chunk");
    const padded = actualOf(web, 1, { table: true });
    padded.chunks!.get(last)![lastSlot + 1] = 7; // past the table's end: never read
    t.equal(reasonFor(padded), undefined, "the last chunk's slots past the table do not count");
    const shortList = actualOf(web, 1, { table: true });
    shortList.tableBackends!.delete(1);
    t.equal(reasonFor(shortList), "table", "a backend list entry missing");
    const swapped = actualOf(web, 1, { table: true });
    swapped.tableBackends!.set(0, "reject");
    t.equal(reasonFor(swapped), "table", "a backend list entry changed");
    const extra = actualOf(web, 1, { table: true });
    extra.tableBackends!.set(2, { ip: "10.0.0.3", port: 80 });
    t.equal(reasonFor(extra), "table", "a stray backend list entry");
    const resized = { ...actualOf(web, 1), tableSize: 0 };
    t.equal(
      diffState(
        { services: [web], addresses: [], announced: [] },
        { services: [resized], addresses: [] },
      ).reasons.get("198.18.100.1:80/tcp"),
      "table",
    );
  },
);

t.test("changesByConfig attributes changes to the Gateway they belong to", async t => {
  const now = desiredState(
    [
      config("a", "198.18.100.1", [
        { name: "tcp", port: 80, protocol: "TCP" },
        { name: "udp", port: 53, protocol: "UDP" },
      ]),
    ],
    "n",
  );
  const before = desiredState(
    [config("gone", "198.18.100.9", [{ name: "tcp", port: 80, protocol: "TCP" }])],
    "n",
  );
  const d = diffState(now, {
    services: [
      actualOf({ vip: "198.18.100.9", port: 80, proto: "tcp", backends: [], rejectWeight: 0 }, 4),
    ],
    addresses: [],
  });
  t.same([...changesByConfig(d, now.listeners, before.listeners)].sort(), [
    ["default/a", 2],
    ["default/gone", 1],
  ]);
});

t.test("nodeAck acknowledges the new generation once, and only this node's entry", async t => {
  const other = { name: "node-2", observedGeneration: 1, mode: "xdp" };
  const c = config("a", "198.18.100.1", [], {
    generation: 3,
    status: {
      nodes: [
        other,
        {
          name: "node-1",
          observedGeneration: 2,
          mode: "tc",
          lastTransitionTime: "2026-01-01T00:00:00Z",
        },
      ],
    },
  });
  const ack = nodeAck(c, "node-1", { applied: true }, "tc", "2026-02-02T00:00:00Z");
  t.same(ack, {
    name: "node-1",
    observedGeneration: 3,
    mode: "tc",
    lastTransitionTime: "2026-02-02T00:00:00Z",
  });
  const acked = config("a", "198.18.100.1", [], { generation: 3, status: { nodes: [other, ack] } });
  t.equal(
    nodeAck(acked, "node-1", { applied: true }, "tc", "2026-03-03T00:00:00Z"),
    undefined,
    "nothing to write when the entry is right",
  );
  t.same(
    nodeAck(acked, "node-1", { applied: true }, "xdp", "2026-03-03T00:00:00Z"),
    { ...ack, mode: "xdp" },
    "a mode change is written, the transition time kept",
  );
});

t.test("nodeAck after a failure keeps the applied generation and says why", async t => {
  const c = config("a", "198.18.100.1", [], {
    generation: 5,
    status: {
      nodes: [
        {
          name: "n",
          observedGeneration: 4,
          mode: "xdp",
          lastTransitionTime: "2026-01-01T00:00:00Z",
        },
      ],
    },
  });
  const ack = nodeAck(
    c,
    "n",
    { applied: false, message: "bpftool: map update failed: E2BIG" },
    "xdp",
    "2026-02-02T00:00:00Z",
  );
  t.same(ack, {
    name: "n",
    observedGeneration: 4,
    mode: "xdp",
    message: "bpftool: map update failed: E2BIG",
    lastTransitionTime: "2026-01-01T00:00:00Z",
  });
  const first = nodeAck(
    config("b", "198.18.100.2", [], { generation: 1 }),
    "n",
    { applied: false, message: "x".repeat(5000) },
    "tc",
    "2026-02-02T00:00:00Z",
  );
  t.equal(first?.observedGeneration, 0, "a node that never applied reports generation 0");
  t.equal(first?.message?.length, 1024, "the message fits the CRD's limit");
});

t.test("sampleChunks covers both ends of a table", async t => {
  t.same(sampleChunks(16381), [0, 5, 10, 15], "16 chunks, the last partial");
  t.same(sampleChunks(65521, 3), [0, 31, 63]);
  t.same(sampleChunks(1), [0]);
  t.same(sampleChunks(0), []);
});

t.test("retryDelay doubles and is capped", async t => {
  t.same(
    [1, 2, 3, 4].map(n => retryDelay(n, 500, 3000)),
    [500, 1000, 2000, 3000],
  );
  t.equal(retryDelay(50), 30_000);
});
