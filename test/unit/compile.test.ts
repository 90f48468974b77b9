// SPDX-License-Identifier: Apache-2.0
// The compile step's rules that golden files show poorly: properties over many inputs
// (address stability, rendezvous hashing, condition timestamps) and robustness on garbage.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import {
  allocateAddresses,
  announcingNode,
  parsePools,
} from "../../capabilities/gateway/compile/addresses.js";
import { mergeConditions } from "../../capabilities/gateway/compile/conditions.js";
import { loadSnapshot, renderOutput } from "../../capabilities/gateway/compile/documents.js";
import {
  compile,
  SUPPORTED_FEATURES,
  type DataplaneConfig,
  type NodeInfo,
  type Snapshot,
} from "../../capabilities/gateway/compile/index.js";
import {
  canonicalJSON,
  isDns1123Label,
  isDns1123Subdomain,
  jsonEqual,
  selectorMatches,
} from "../../capabilities/gateway/compile/util.js";

const golden = join(dirname(fileURLToPath(import.meta.url)), "..", "golden");
const NOW = "2026-01-01T00:00:00Z";
const load = (name: string): Snapshot => {
  const { snapshot, errors } = loadSnapshot(
    [{ name, text: readFileSync(join(golden, `${name}.in.yaml`), "utf8") }],
    NOW,
  );
  if (errors.length > 0) throw new Error(errors.join("\n"));
  return snapshot;
};
const clone = <T>(v: T): T => structuredClone(v);

t.test("address pools parse prefixes without network/broadcast, ranges as written", async t => {
  const { pools, warnings } = parsePools([
    {
      name: "p",
      cidrs: [
        "198.18.0.0/30",
        "198.18.1.7/32",
        "198.18.2.0/31",
        "198.18.3.5 - 198.18.3.6",
        "198.19.0.0/16",
      ],
    },
  ]);
  t.same(warnings, []);
  const req = (key: string) => ({ key, namespace: "ns" });
  const got = allocateAddresses(["a", "b", "c", "d", "e", "f", "g", "h"].map(req), pools, {});
  t.same(
    [...got.values()].map(r => (r.kind === "assigned" ? r.address : r.kind)),
    [
      "198.18.0.1",
      "198.18.0.2",
      "198.18.1.7",
      "198.18.2.0",
      "198.18.2.1",
      "198.18.3.5",
      "198.18.3.6",
      "198.19.0.1",
    ],
  );
  t.match(
    parsePools([{ name: "bad", cidrs: ["300.1.1.1/24", "1.2.3.4/40", "01.2.3.4"] }]).warnings,
    [/300\.1\.1\.1/, /1\.2\.3\.4\/40/, /01\.2\.3\.4/],
  );
});

t.test(
  "a restart with the recorded allocations moves no address; deleting a Gateway moves none either",
  async t => {
    const { pools } = parsePools([{ name: "p", cidrs: ["198.18.100.0/24"] }]);
    const requests = Array.from({ length: 50 }, (_, i) => ({
      key: `ns/gw-${String(i).padStart(2, "0")}`,
      namespace: "ns",
    }));
    const first = allocateAddresses(requests, pools, {});
    const recorded = Object.fromEntries(
      [...first].map(([k, r]) => [k, r.kind === "assigned" ? r.address : ""]),
    );
    const again = allocateAddresses([...requests].reverse(), pools, recorded);
    for (const [k, r] of first) t.same(again.get(k), r, `${k} keeps its address after a restart`);
    const fewer = allocateAddresses(
      requests.filter((_, i) => i % 7 !== 3),
      pools,
      recorded,
    );
    for (const [k, r] of fewer)
      t.same(r, first.get(k), `${k} keeps its address when others are deleted`);
    // A new Gateway takes a freed address rather than moving anyone.
    const added = allocateAddresses(
      [...requests.filter((_, i) => i !== 3), { key: "ns/new", namespace: "ns" }],
      pools,
      recorded,
    );
    t.same(added.get("ns/new"), first.get("ns/gw-03"));
  },
);

t.test(
  "announcing node: rendezvous spreads addresses, and only a departed node's addresses move",
  async t => {
    const nodes = (names: string[]): NodeInfo[] =>
      names.map(name => ({ name, ready: true, agentReady: true }));
    const addresses = Array.from({ length: 300 }, (_, i) => `198.18.${100 + (i >> 8)}.${i & 255}`);
    const three = nodes(["node-a", "node-b", "node-c"]);
    const placed = new Map(addresses.map(a => [a, announcingNode(a, three, undefined)]));
    for (const n of three) {
      const share = [...placed.values()].filter(v => v === n.name).length;
      t.ok(
        share > 60 && share < 140,
        `${n.name} announces ${share} of 300 addresses (a fair share is 100)`,
      );
    }
    const withoutB = nodes(["node-a", "node-c"]);
    for (const a of addresses) {
      const before = placed.get(a);
      const after = announcingNode(a, withoutB, before);
      if (before !== "node-b") t.equal(after, before, `${a} stays on ${before}`);
      else t.not(after, "node-b");
    }
    // A node joining takes nothing from a node that is still there.
    const four = nodes(["node-a", "node-b", "node-c", "node-d"]);
    t.ok(
      addresses.every(a => announcingNode(a, four, placed.get(a)) === placed.get(a)),
      "a new node moves no address",
    );
    t.equal(
      announcingNode(
        "198.18.0.1",
        [
          { name: "x", ready: true, agentReady: false },
          { name: "y", ready: false, agentReady: true },
        ],
        undefined,
      ),
      undefined,
    );
  },
);

t.test(
  "announcing node: with no other ready agent the address stays on its node (an agent restarting)",
  async t => {
    const restarting = [{ name: "node-a", ready: true, agentReady: false }];
    t.equal(
      announcingNode("198.18.0.100", restarting, "node-a"),
      "node-a",
      "kept while its only agent restarts",
    );
    t.equal(
      announcingNode("198.18.0.100", [], "node-a"),
      undefined,
      "a node that is gone announces nothing",
    );
    t.equal(
      announcingNode(
        "198.18.0.100",
        [...restarting, { name: "node-b", ready: true, agentReady: true }],
        "node-a",
      ),
      "node-b",
      "a ready agent elsewhere takes the address over",
    );
  },
);

t.test(
  "conditions keep lastTransitionTime while the status holds, and leave other types alone",
  async t => {
    const previous = [
      {
        type: "Accepted",
        status: "True",
        reason: "Accepted",
        message: "old",
        observedGeneration: 1,
        lastTransitionTime: "2025-01-01T00:00:00Z",
      },
      {
        type: "Programmed",
        status: "False",
        reason: "Pending",
        message: "old",
        observedGeneration: 1,
        lastTransitionTime: "2025-01-01T00:00:00Z",
      },
      {
        type: "example.com/Other",
        status: "True",
        reason: "X",
        message: "theirs",
        observedGeneration: 1,
        lastTransitionTime: "2024-01-01T00:00:00Z",
      },
    ];
    const next = mergeConditions(
      previous,
      [
        { type: "Accepted", status: "True", reason: "ListenersNotValid", message: "new" },
        { type: "Programmed", status: "True", reason: "Programmed", message: "new" },
      ],
      2,
      "2026-01-01T00:00:00Z",
    );
    t.same(
      next.map(c => [c.type, c.reason, c.observedGeneration, c.lastTransitionTime]),
      [
        ["Accepted", "ListenersNotValid", 2, "2025-01-01T00:00:00Z"],
        ["Programmed", "Programmed", 2, "2026-01-01T00:00:00Z"],
        ["example.com/Other", "X", 1, "2024-01-01T00:00:00Z"],
      ],
    );
  },
);

t.test(
  "the GatewayClass claims every feature the conformance runs claim, and no other",
  async t => {
    const claimed = readFileSync(
      join(golden, "..", "..", "conformance", "extended-features.txt"),
      "utf8",
    )
      .split("\n")
      .map(line => line.replace(/#.*/, "").trim())
      .filter(Boolean);
    t.ok(claimed.length > 0, `conformance/extended-features.txt claims ${claimed.join(", ")}`);
    // The core features of GATEWAY-TCP and GATEWAY-UDP, then the claimed extended ones.
    t.same(
      [...SUPPORTED_FEATURES].sort(),
      ["Gateway", "ReferenceGrant", "TCPRoute", "UDPRoute", ...claimed].sort(),
      "status.supportedFeatures is the core features and conformance/extended-features.txt",
    );
  },
);

t.test("label selectors", async t => {
  const labels = { team: "a", tier: "web" };
  t.ok(selectorMatches({}, labels), "an empty selector matches everything");
  t.ok(selectorMatches({ matchLabels: { team: "a" } }, labels));
  t.notOk(selectorMatches({ matchLabels: { team: "b" } }, labels));
  t.ok(
    selectorMatches(
      { matchExpressions: [{ key: "tier", operator: "In", values: ["web", "db"] }] },
      labels,
    ),
  );
  t.notOk(
    selectorMatches(
      { matchExpressions: [{ key: "tier", operator: "NotIn", values: ["web"] }] },
      labels,
    ),
  );
  t.ok(selectorMatches({ matchExpressions: [{ key: "zone", operator: "DoesNotExist" }] }, labels));
  t.notOk(selectorMatches({ matchExpressions: [{ key: "zone", operator: "Exists" }] }, labels));
  t.notOk(
    selectorMatches({ matchExpressions: [{ key: "tier", operator: "Matches" }] }, labels),
    "an unknown operator matches nothing",
  );
});

t.test("canonical JSON ignores key order", async t => {
  t.equal(
    canonicalJSON({ b: 1, a: [{ y: 2, x: 1 }] }),
    canonicalJSON({ a: [{ x: 1, y: 2 }], b: 1 }),
  );
  t.not(canonicalJSON({ a: [1, 2] }), canonicalJSON({ a: [2, 1] }));
});

t.test(
  "jsonEqual: key order and undefined members ignored, a Date equal only to itself",
  async t => {
    t.ok(jsonEqual({ b: 1, a: [{ y: 2, x: 1 }], c: undefined }, { a: [{ x: 1, y: 2 }], b: 1 }));
    t.notOk(jsonEqual({ a: [1, 2] }, { a: [2, 1] }));
    t.notOk(jsonEqual({}, []), "an object is no array");
    const day = new Date("2026-01-01T00:00:00Z");
    t.ok(jsonEqual({ at: day }, { at: day }), "the same Date");
    t.notOk(
      jsonEqual({ at: day }, { at: new Date(0) }),
      "two Dates have no keys, and are not equal for that",
    );
  },
);

t.test(
  "Programmed follows the agents: Pending until the DataplaneConfig is written and acknowledged",
  async t => {
    const snapshot = load("conformance-tcproute-weighted-routing");
    snapshot.dataplaneConfigs = [];
    snapshot.nodes = [
      { name: "node-1", ready: true, agentReady: true },
      { name: "node-2", ready: true, agentReady: true },
    ];
    const programmed = (s: Snapshot) =>
      compile(s).gateways[0].status.conditions.find(c => c.type === "Programmed");
    t.match(programmed(snapshot), {
      status: "False",
      reason: "Pending",
      message: /not written yet/,
    });

    // The controller writes the table; the API server gives it generation 1; node-1 applies it.
    const written = compile(snapshot).dataplaneConfigs.map(
      (dc): DataplaneConfig => ({ ...clone(dc), metadata: { ...dc.metadata, generation: 1 } }),
    );
    written[0].status = { nodes: [{ name: "node-1", observedGeneration: 1 }] };
    snapshot.dataplaneConfigs = written;
    t.match(programmed(snapshot), {
      status: "False",
      reason: "Pending",
      message: /generation 1: node-2$/,
    });

    written[0].status = {
      nodes: [
        { name: "node-1", observedGeneration: 1 },
        { name: "node-2", observedGeneration: 1 },
      ],
    };
    t.match(programmed(snapshot), { status: "True", reason: "Programmed" });
    const listener = compile(snapshot).gateways[0].status.listeners[0];
    t.match(
      listener.conditions.find(c => c.type === "Programmed"),
      { status: "True" },
    );

    // A CRD that prunes listenersSince (an upgrade that skipped the chart's CRDs): the table
    // read back has none, and compile asks for none, so the controller does not rewrite it.
    const pruned = clone(written);
    delete pruned[0].spec!.listenersSince;
    snapshot.dataplaneConfigs = pruned;
    t.same(compile(snapshot).dataplaneConfigs[0].spec, pruned[0].spec, "nothing to rewrite");
    t.match(programmed(snapshot), { status: "True" }, "its generation stands in for it");
    snapshot.dataplaneConfigs = written;

    // A backend scales up: only backends change, so the Gateway stays Programmed while the
    // agents apply the new table, which keeps listenersSince 1.
    snapshot.endpointSlices = clone(snapshot.endpointSlices);
    snapshot.endpointSlices[0].endpoints.push({
      addresses: ["198.19.233.9"],
      conditions: { ready: true },
    });
    t.match(programmed(snapshot), { status: "True", reason: "Programmed" });
    const rewritten = compile(snapshot).dataplaneConfigs[0];
    t.not(
      canonicalJSON(rewritten.spec),
      canonicalJSON(written[0].spec),
      "the table is rewritten with the new backend",
    );
    t.equal(rewritten.spec?.listenersSince, 1);

    // The Gateway gains a listener: that waits for the agents again, from generation 2 on.
    snapshot.gateways = clone(snapshot.gateways);
    snapshot.gateways[0].metadata!.generation = 2;
    snapshot.gateways[0].spec!.listeners.push({ name: "extra", protocol: "TCP", port: 9999 });
    t.match(programmed(snapshot), { status: "False", reason: "Pending", message: /being updated/ });
    t.equal(compile(snapshot).dataplaneConfigs[0].spec?.listenersSince, 2);
  },
);

t.test("allocations are an output the next compile takes back unchanged", async t => {
  const snapshot = load("addresses-stable");
  const first = compile(snapshot);
  const restarted = { ...snapshot, allocations: first.allocations };
  t.same(compile(restarted).allocations, first.allocations);

  // A Gateway being deleted releases its address and table at once; the others keep theirs.
  const deleting = clone(restarted);
  deleting.gateways.find(g => g.metadata?.name === "new")!.metadata!.deletionTimestamp =
    "2026-01-01T00:09:00Z";
  const out = compile(deleting);
  t.same(
    out.allocations,
    Object.fromEntries(Object.entries(first.allocations).filter(([k]) => k !== "infra/new")),
  );
  t.notOk(out.dataplaneConfigs.some(dc => dc.metadata?.name === "new"));
  t.notOk(out.gateways.some(g => g.name === "new"));
});

t.test("garbage in any field gives conditions, never an exception", async t => {
  // Deterministic pseudo-random mutations of a real snapshot, so a failure reproduces.
  let seed = 12345;
  const random = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  const junk = [null, undefined, 0, -1, 1e12, 3.5, "", "x", true, [], {}, [null], { a: 1 }];
  const mutate = (value: unknown): unknown => {
    if (random() < 0.08) return junk[Math.floor(random() * junk.length)];
    if (Array.isArray(value)) return value.map(mutate);
    if (value !== null && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mutate(v)]));
    }
    return value;
  };
  const bases = [
    "http-and-https-listeners",
    "malformed-input",
    "conformance-udproute-weighted-routing",
    "addresses-exhausted-and-static",
    "status-of-other-controllers",
  ].map(load);
  let compiled = 0;
  for (let i = 0; i < 400; i++) {
    const input = mutate(clone(bases[i % bases.length])) as Snapshot;
    let out: string | undefined;
    try {
      out = renderOutput(compile(input), "json");
      compiled++;
    } catch (e) {
      t.fail(`mutation ${i} threw: ${(e as Error).stack}`);
      break;
    }
    if (i % 50 === 0)
      t.equal(
        renderOutput(compile(input), "json"),
        out,
        `mutation ${i} compiles to the same bytes twice`,
      );
  }
  t.equal(compiled, 400, "every mutated snapshot compiled");
  t.doesNotThrow(() => compile(null as unknown as Snapshot), "even a null snapshot");
  t.doesNotThrow(() => compile({} as Snapshot), "or an empty one");
});

t.test(
  "names that go into a URL: DNS-1123 subdomains (object names) and labels (namespaces)",
  async t => {
    for (const name of ["a", "cert", "web-tls", "tls.example.com", "0", "a".repeat(253)])
      t.ok(isDns1123Subdomain(name), `${name.slice(0, 20)} is a subdomain`);
    for (const name of [
      "",
      "..",
      "../secrets",
      "a/b",
      "Cert",
      "-a",
      "a-",
      "a..b",
      ".a",
      "a.",
      "a_b",
      "a b",
      "é",
      "a".repeat(254),
      "%2e%2e",
    ]) {
      t.notOk(isDns1123Subdomain(name), `${JSON.stringify(name.slice(0, 20))} is not a subdomain`);
    }
    for (const name of ["default", "kube-system", "a".repeat(63)])
      t.ok(isDns1123Label(name), `${name.slice(0, 20)} is a label`);
    for (const name of ["", "kube.system", "a".repeat(64), "ns/x", "NS"])
      t.notOk(isDns1123Label(name), `${JSON.stringify(name.slice(0, 20))} is not a label`);
  },
);
