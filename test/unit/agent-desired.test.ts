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
  endpointPlaces,
  listenerWeights,
  nodeAck,
  retryDelay,
} from "../../capabilities/agent/desired.js";

interface ListenerIn {
  name: string;
  port: number;
  protocol: "TCP" | "UDP";
  rejectWeight?: number;
  /** per backendRef: weight and endpoints as [address, port, nodeName?] */
  backends?: { weight: number; endpoints: [string, number, string?][] }[];
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
          endpoints: b.endpoints.map(([address, port, nodeName]) =>
            nodeName === undefined ? { address, port } : { address, port, nodeName },
          ),
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
        { weight: 1, endpoints: [{ address: "198.18.1.1", port: 80 }] },
        {
          weight: 1,
          endpoints: [
            { address: "198.18.2.1", port: 80 },
            { address: "198.18.2.2", port: 80 },
            { address: "198.18.2.3", port: 80 },
          ],
        },
      ],
    });
    t.same(w.backends, [
      { ip: "198.18.1.1", port: 80, weight: 3 },
      { ip: "198.18.2.1", port: 80, weight: 1 },
      { ip: "198.18.2.2", port: 80, weight: 1 },
      { ip: "198.18.2.3", port: 80, weight: 1 },
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
            { address: "198.18.1.1", port: 80 },
            { address: "198.18.1.2", port: 80 },
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
      { weight: 1, endpoints: [{ address: "198.18.1.1", port: 80 }] },
      { weight: 2, endpoints: [{ address: "198.18.1.1", port: 80 }] },
    ],
  });
  t.same(w.backends, [{ ip: "198.18.1.1", port: 80, weight: 1 }]);
});

t.test("listenerWeights rounds onto a fine scale when exact ratios would overflow u32", async t => {
  // Endpoint counts 1..23 have an lcm far beyond 2^31.
  const backends = Array.from({ length: 23 }, (_, i) => ({
    weight: 1_000_000,
    endpoints: Array.from({ length: i + 1 }, (_, j) => ({
      address: `198.18.${i + 1}.${j + 1}`,
      port: 80,
    })),
  }));
  const w = listenerWeights({ rejectWeight: 1, backends });
  t.ok(
    w.backends.every(b => Number.isInteger(b.weight) && b.weight >= 1 && b.weight <= 0xffffffff),
    "every weight an integer in u32",
  );
  const first = w.backends.find(b => b.ip === "198.18.1.1")!.weight;
  const ofSecond = w.backends.find(b => b.ip === "198.18.2.1")!.weight;
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
            backends: [{ weight: 1, endpoints: [["198.18.1.9", 5353]] }],
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
            backends: [{ weight: 1, endpoints: [["198.18.1.1", 8080]] }],
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
        backends: [{ ip: "198.18.1.1", port: 8080, weight: 1 }],
        rejectWeight: 0,
      },
      { vip: "198.18.100.1", port: 81, proto: "tcp", backends: [], rejectWeight: 1 },
      {
        vip: "198.18.100.2",
        port: 53,
        proto: "udp",
        backends: [{ ip: "198.18.1.9", port: 5353, weight: 1 }],
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

t.test(
  "a table whose listeners break the full schema is refused alone, named, and the others apply",
  async t => {
    const good = config("good", "198.18.100.2", [
      {
        name: "tcp",
        port: 80,
        protocol: "TCP",
        backends: [{ weight: 1, endpoints: [["198.19.0.5", 8080]] }],
      },
    ]);
    // What the API server keeps now that the CRD leaves listener items without a schema: a
    // table blixt's controller never writes (a backend's endpoints a string, a field unknown).
    const bad = config("bad", "198.18.100.3", [{ name: "tcp", port: 81, protocol: "TCP" }]);
    Object.assign(bad.spec!.listeners![0], {
      backends: [{ weight: 1, endpoints: "198.19.0.6:8080" }],
      colour: "blue",
    });
    const d = desiredState([bad, good], "n");
    t.same(
      d.services.map(s => `${s.vip}:${s.port}/${s.proto}`),
      ["198.18.100.2:80/tcp"],
      "only the good table is programmed",
    );
    t.same(d.addresses, ["198.18.100.2"], "the bad table's address is not taken either");
    t.match(
      d.problems.get("default/bad"),
      /^DataplaneConfig default\/bad: not programmed on node n, its spec is not one blixt's controller writes: spec\.listeners\[0\]\.backends\[0\]\.endpoints: a backend needs at least one endpoint; .*only the controller writes spec/,
    );
    t.notOk(d.problems.has("default/good"));
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
    { ip: "198.18.1.1", port: 80, weight: 1 },
    { ip: "198.18.1.2", port: 80, weight: 1 },
  ],
  rejectWeight: 0,
};
const dns: ServiceSpec = {
  vip: "198.18.100.1",
  port: 53,
  proto: "udp",
  backends: [{ ip: "198.18.1.9", port: 53, weight: 1 }],
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

t.test("diffState: a backend that became remote (or local) is set again", async t => {
  const remoteWeb = {
    ...web,
    backends: [web.backends[0], { ...web.backends[1], remote: true }],
  };
  const localRead = {
    ...actualOf(web, 1, { table: true }),
    backends: web.backends.map(b => ({ ...b, remote: false })),
  };
  const d = diffState(
    { services: [remoteWeb], addresses: [], announced: [] },
    {
      services: [localRead],
      addresses: [],
    },
  );
  t.same([...d.reasons], [["198.18.100.1:80/tcp", "backends"]]);
  t.same(
    d.set[0].backends.map(b => b.remote ?? false),
    [false, true],
  );
  // The table's backend list read back (blixt_mg_backs) carries the flag, as lines.ts decodes it.
  const again = diffState(
    { services: [remoteWeb], addresses: [], announced: [] },
    { services: [actualOf(remoteWeb, 1, { table: true })], addresses: [] },
  );
  t.equal(changeCount(again), 0, "converged once the table says remote");
  const flagLost = diffState(
    { services: [remoteWeb], addresses: [], announced: [] },
    { services: [actualOf(web, 1, { table: true })], addresses: [] },
  );
  t.same(
    [...flagLost.reasons],
    [["198.18.100.1:80/tcp", "table"]],
    "a live table whose backend list lacks the remote flag is written again",
  );
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
    extra.tableBackends!.set(2, { ip: "198.18.1.3", port: 80 });
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

// ---- endpoints on several nodes ------------------------------------------------------------

const acked = (...nodes: string[]) => ({
  nodes: nodes.map(name => ({ name, observedGeneration: 1, mode: "tc" })),
});

t.test(
  "endpointPlaces: local on this node or on none, remote on a node with an agent entry, else unavailable",
  async t => {
    const place = endpointPlaces(
      { status: acked("node-a", "node-b") } as DataplaneConfig,
      "node-a",
    );
    t.equal(place({}), "local", "no nodeName: forwarded directly");
    t.equal(place({ nodeName: "node-a" }), "local", "this node");
    t.equal(place({ nodeName: "node-b" }), "remote", "another node whose agent acknowledged");
    t.equal(place({ nodeName: "node-c" }), "unavailable", "a node with no agent entry");
    const fresh = endpointPlaces({} as DataplaneConfig, "node-a");
    t.equal(
      fresh({ nodeName: "node-a" }),
      "local",
      "own endpoints need no entry, not even its own",
    );
    t.equal(fresh({ nodeName: "node-b" }), "unavailable", "no status yet: no other node counts");
  },
);

t.test(
  "listenerWeights: an unavailable endpoint's share joins the rejected share, a remote one is marked",
  async t => {
    const listener = {
      rejectWeight: 1,
      backends: [
        {
          weight: 3,
          endpoints: [
            { address: "10.0.0.1", port: 80, nodeName: "node-a" },
            { address: "10.0.0.2", port: 80, nodeName: "node-b" },
            { address: "10.0.0.3", port: 80, nodeName: "node-c" },
          ],
        },
      ],
    };
    const w = listenerWeights(
      listener,
      endpointPlaces({ status: acked("node-b") } as DataplaneConfig, "node-a"),
    );
    t.same(
      w,
      {
        backends: [
          { ip: "10.0.0.1", port: 80, weight: 1 },
          { ip: "10.0.0.2", port: 80, weight: 1, remote: true },
        ],
        rejectWeight: 2,
        unavailable: [{ address: "10.0.0.3", port: 80, nodeName: "node-c" }],
      },
      "one third each, the rejected share is the invalid refs' plus node-c's third",
    );
    t.notOk("remote" in w.backends[0], "a local backend carries no remote flag");
    t.same(
      listenerWeights(listener),
      {
        backends: [
          { ip: "10.0.0.1", port: 80, weight: 1 },
          { ip: "10.0.0.2", port: 80, weight: 1 },
          { ip: "10.0.0.3", port: 80, weight: 1 },
        ],
        rejectWeight: 1,
        unavailable: [],
      },
      "without a rule every endpoint is local (an HTTPS listener's terminator reaches them all)",
    );
    // Endpoint counts 1..23 (lcm far beyond 2^31): weights are rounded. The refs with an odd
    // index are on a node with no agent entry, so their share is refused.
    const backends = Array.from({ length: 23 }, (_, i) => ({
      weight: 1_000_000,
      endpoints: Array.from({ length: i + 1 }, (_, j) => ({
        address: `10.${i}.0.${j + 1}`,
        port: 80,
        nodeName: i % 2 === 1 ? "gone" : "n1",
      })),
    }));
    const huge = listenerWeights(
      { rejectWeight: 0, backends },
      endpointPlaces({} as DataplaneConfig, "n1"),
    );
    const refusedCount = backends
      .filter((_, i) => i % 2 === 1)
      .reduce((n, b) => n + b.endpoints.length, 0);
    t.equal(huge.unavailable.length, refusedCount, "the rounded path refuses the same endpoints");
    t.equal(huge.backends.length, 276 - refusedCount);
    t.ok(huge.backends.every(b => b.weight <= 0xffffffff && Number.isInteger(b.weight)));
    const served = huge.backends.reduce((s, b) => s + b.weight, 0);
    t.ok(
      Math.abs(huge.rejectWeight / (served + huge.rejectWeight) - 11 / 23) < 1e-3,
      `and gives their share to the rejected share (${huge.rejectWeight} of ${served + huge.rejectWeight})`,
    );
  },
);

t.test(
  "desiredState on node-a: local and remote endpoints are served, one on an unknown node is refused and named",
  async t => {
    const web = config(
      "web",
      "198.18.100.1",
      [
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
      ],
      { status: acked("node-b") },
    );
    const d = desiredState([web], "node-a");
    t.same(d.services, [
      {
        vip: "198.18.100.1",
        port: 80,
        proto: "tcp",
        backends: [
          { ip: "198.19.225.9", port: 8080, weight: 1 },
          { ip: "198.19.226.7", port: 8080, weight: 1, remote: true },
          { ip: "198.19.233.1", port: 8080, weight: 1 },
        ],
        rejectWeight: 1,
      },
    ]);
    t.same(d.problems, new Map(), "the config applies");
    t.same(d.unavailable.get("198.18.100.1:80/tcp"), [
      { address: "198.19.227.4", port: 8080, nodeName: "node-c" },
    ]);
    t.equal(
      d.warnings.get("default/web"),
      'DataplaneConfig default/web: node node-a refuses the share of new flows of 1 endpoint whose node has no blixt agent entry in this DataplaneConfig\'s status: 198.19.227.4:8080 (node "node-c"); run the blixt node agent on that node (or wait for it to acknowledge)',
    );

    // node-c's agent acknowledges: its endpoint becomes remote, the warning goes away.
    const later = desiredState(
      [{ ...web, status: acked("node-b", "node-c") } as DataplaneConfig],
      "node-a",
    );
    t.same(
      later.services[0].backends.map(b => [b.ip, b.remote ?? false]),
      [
        ["198.19.225.9", false],
        ["198.19.226.7", true],
        ["198.19.227.4", true],
        ["198.19.233.1", false],
      ],
    );
    t.equal(later.services[0].rejectWeight, 0);
    t.equal(later.warnings.size, 0);
    t.equal(later.unavailable.size, 0);

    // Another node's entry changing (generation, message) changes nothing here.
    const moved = desiredState(
      [
        {
          ...web,
          status: {
            nodes: [{ name: "node-b", observedGeneration: 7, message: "bpftool: map full" }],
          },
        } as DataplaneConfig,
      ],
      "node-a",
    );
    t.same(moved.services, d.services, "same maps");
    t.same(moved.warnings, d.warnings, "same message");
  },
);

t.test(
  "the message names the first few unavailable endpoints and counts the rest, and fits the CRD",
  async t => {
    const endpoints: [string, number, string][] = Array.from({ length: 40 }, (_, i) => [
      `10.0.${i}.1`,
      80,
      `node-${"x".repeat(200)}-${i}`,
    ]);
    const c = config("big", "198.18.100.2", [
      { name: "a", port: 80, protocol: "TCP", backends: [{ weight: 1, endpoints }] },
      // The same endpoints behind a second listener are counted once in the message.
      { name: "b", port: 81, protocol: "TCP", backends: [{ weight: 1, endpoints }] },
    ]);
    const d = desiredState([c], "node-a");
    const message = d.warnings.get("default/big") ?? "";
    t.match(message, /of 40 endpoints whose node/);
    t.match(
      message,
      /10\.0\.0\.1:80 \(node "node-x+-0"\), 10\.0\.1\.1:80 .*, 10\.0\.2\.1:80 .*, and 37 more;/,
    );
    t.equal(d.services[0].backends.length, 0, "every endpoint refused");
    t.equal(d.services[0].rejectWeight, 1);
    t.equal(d.unavailable.get("198.18.100.2:80/tcp")?.length, 40);
    const ack = nodeAck(c, "node-a", { applied: true, message }, "tc", "2026-01-01T00:00:00Z");
    t.ok(ack && ack.message && ack.message.length <= 1024, "the status entry fits maxLength 1024");
    t.equal(ack?.observedGeneration, 1, "the generation is acknowledged: it is applied");
  },
);

t.test(
  "an HTTPS listener's endpoints are all reachable (its terminator forwards through the node's stack)",
  async t => {
    const c = config("tls", "198.18.100.3", [
      {
        name: "https",
        port: 443,
        protocol: "TCP",
        backends: [{ weight: 1, endpoints: [["10.0.0.1", 8443, "node-z"]] }],
      },
    ]);
    (c.spec!.listeners![0] as { tls?: unknown }).tls = {
      certificateRefs: [{ namespace: "blixt", name: "cert" }],
    };
    const d = desiredState(
      [c],
      "node-a",
      new Map([["default/tls#https", { ok: true, address: "192.0.2.1", port: 40443 }]]),
    );
    t.same(d.services[0].backends, [{ ip: "192.0.2.1", port: 40443, weight: 1 }]);
    t.equal(d.services[0].rejectWeight, 0);
    t.equal(d.warnings.size, 0);
  },
);

t.test(
  "nodeAck: an applied config's message is written once, and removed once it no longer applies",
  async t => {
    const base = config("a", "198.18.100.1", [], { generation: 2 });
    const first = nodeAck(base, "n", { applied: true, message: "refused: x" }, "tc", "T1");
    t.same(first, {
      name: "n",
      observedGeneration: 2,
      mode: "tc",
      message: "refused: x",
      lastTransitionTime: "T1",
    });
    const withEntry = { ...base, status: { nodes: [first] } } as unknown as DataplaneConfig;
    t.equal(
      nodeAck(withEntry, "n", { applied: true, message: "refused: x" }, "tc", "T2"),
      undefined,
      "the same message again: nothing to write",
    );
    t.same(
      nodeAck(withEntry, "n", { applied: true }, "tc", "T2"),
      { name: "n", observedGeneration: 2, mode: "tc", lastTransitionTime: "T1" },
      "no longer refused: the message goes, the transition time stays",
    );
  },
);

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
