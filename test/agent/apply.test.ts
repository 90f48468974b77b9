// SPDX-License-Identifier: Apache-2.0
// The agent's diff-and-apply against real pinned maps (blixt.o loaded by bpftool, no cluster):
// from empty, from a stale state, after changes behind its back, after a restart with live
// conntrack entries, and through a failing apply. Every case is checked by reading the maps
// back. Kubernetes cannot run here, so acknowledgements go to a recording function instead of
// a status patch; everything below that is real.
import { isDeepStrictEqual } from "node:util";
import t from "tap";
import { execa } from "execa";
import { rm, stat } from "node:fs/promises";
import * as bpftool from "../../capabilities/dataplane/bpftool.js";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { serviceName } from "../../capabilities/dataplane/tables.js";
import {
  decodeServiceKey,
  decodeServiceValue,
  encodeBackendKey,
  encodeBackendValue,
  encodeConntrackKey,
  encodeConntrackValue,
  encodeTableChunk,
  encodeTableKey,
  chunkCount,
  decodeTableChunk,
  decodeTableKey,
  hex,
} from "../../capabilities/dataplane/maps.js";
import { Agent } from "../../capabilities/agent/loop.js";
import type { TlsListeners } from "../../capabilities/agent/tls/listeners.js";
import type { NodeAck } from "../../capabilities/agent/desired.js";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { dataplaneConfig } from "./fixtures.js";

// Per process: two people running this file at once must not share (and unpin) each other's maps.
const pinDir = `/sys/fs/bpf/blixt-test-agent-apply-${process.pid}`;
const NODE = "node-a";

const web = dataplaneConfig(
  "web",
  "198.18.200.1",
  [
    {
      name: "http",
      port: 80,
      protocol: "TCP",
      backends: [
        {
          weight: 1,
          endpoints: [
            ["10.1.0.1", 8080],
            ["10.1.0.2", 8080],
          ],
        },
      ],
    },
    {
      name: "dns",
      port: 53,
      protocol: "UDP",
      rejectWeight: 1,
      backends: [{ weight: 3, endpoints: [["10.1.0.9", 5353]] }],
    },
  ],
  { node: NODE, generation: 4 },
);
const db = dataplaneConfig(
  "db",
  "198.18.200.2",
  [
    {
      name: "pg",
      port: 5432,
      protocol: "TCP",
      backends: [{ weight: 1, endpoints: [["10.1.1.1", 5432]] }],
    },
  ],
  { node: "node-b" },
);

/** The maps, read back with the Dataplane's own reader, as plain comparable data. */
async function mapsOf(dp: Dataplane) {
  return { services: await dp.listServices(), addresses: await dp.addresses() };
}

/** What the maps must hold for `web` and `db`. */
const expected = {
  services: [
    {
      vip: "198.18.200.1",
      port: 53,
      proto: "udp",
      backends: [{ ip: "10.1.0.9", port: 5353, weight: 3 }],
      rejectWeight: 1,
    },
    {
      vip: "198.18.200.1",
      port: 80,
      proto: "tcp",
      backends: [
        { ip: "10.1.0.1", port: 8080, weight: 1 },
        { ip: "10.1.0.2", port: 8080, weight: 1 },
      ],
      rejectWeight: 0,
    },
    {
      vip: "198.18.200.2",
      port: 5432,
      proto: "tcp",
      backends: [{ ip: "10.1.1.1", port: 5432, weight: 1 }],
      rejectWeight: 0,
    },
  ],
  addresses: ["198.18.200.1", "198.18.200.2"],
};

/** service name → its svc_value (id, live table), straight from the services map. */
async function serviceValues(dp: Dataplane) {
  const entries = await bpftool.mapDump(dp.mapPin("blixt_services"));
  return Object.fromEntries(
    entries.map(e => [serviceName(decodeServiceKey(e.key)), decodeServiceValue(e.value!)]),
  );
}

function newAgent(
  dp: Dataplane,
  acks: { config: string; ack: NodeAck }[],
  extra: {
    acknowledge?: (c: DataplaneConfig, a: NodeAck) => Promise<void>;
    takeovers?: string[][];
    onApply?: () => void;
  } = {},
) {
  const agent = new Agent({
    onTakeover: async addresses => void extra.takeovers?.push(addresses),
    onApply: extra.onApply,
    nodeName: NODE,
    dataplane: dp,
    mode: "tc",
    resyncMs: 0,
    retry: { base: 50, max: 200 },
    log: process.env.BLIXT_TEST_LOG
      ? {
          info: (f, m) => console.error(m, JSON.stringify(f).slice(0, 300)),
          error: (f, m) => console.error(m, JSON.stringify(f).slice(0, 300)),
        }
      : undefined,
    acknowledge:
      extra.acknowledge ??
      (async (config, ack) => {
        acks.push({ config: `${config.metadata?.namespace}/${config.metadata?.name}`, ack });
      }),
  });
  agent.start(); // retries run; resyncMs 0 leaves resync passes to the test
  return agent;
}

t.before(async () => {
  await new Dataplane({ pinDir }).unpin();
});
t.teardown(async () => {
  await new Dataplane({ pinDir }).unpin();
});

t.test("from empty: every listener, address and acknowledgement", async t => {
  const dp = new Dataplane({ pinDir });
  await dp.load();
  const acks: { config: string; ack: NodeAck }[] = [];
  const takeovers: string[][] = [];
  const agent = newAgent(dp, acks, { takeovers });
  t.ok(agent.mayAnnounce, "before a first pass, it may announce anything");
  agent.replaceAll([web, db]);
  const result = await agent.converge();
  t.ok(result.ok, result.error ?? "applied");
  t.ok(agent.mayAnnounce, "after it, it announces an address");
  t.equal(result.changes, 5, "three services and two addresses");
  t.same(
    takeovers,
    [["198.18.200.1"]],
    "the address this node now announces is handed over for gratuitous ARP",
  );
  t.same(await mapsOf(dp), expected);
  t.ok(agent.ready);
  t.same(
    acks
      .map(a => [a.config, a.ack.name, a.ack.observedGeneration, a.ack.mode, a.ack.message])
      .sort(),
    [
      ["default/db", NODE, 1, "tc", undefined],
      ["default/web", NODE, 4, "tc", undefined],
    ],
  );
  const flags = await bpftool.mapDump(dp.mapPin("blixt_addrs"));
  t.same(
    flags.map(e => e.value![0]).sort(),
    [0, 1],
    "only the address this node announces carries the announce flag",
  );

  const again = await agent.converge();
  t.equal(again.changes, 0, "a second pass finds nothing to do");
  t.equal(takeovers.length, 1, "and announces nothing again");

  const passes = agent.passes;
  const calls = await Promise.all([
    agent.converge(),
    agent.converge(),
    agent.converge(),
    agent.converge(),
  ]);
  t.equal(
    agent.passes - passes,
    2,
    "four calls at once: the running pass and one more that the other three share",
  );
  t.equal(calls[1], calls[3], "the waiting calls get the same pass");
  t.equal(acks.length, 2, "and acknowledges nothing twice");

  agent.replaceAll([db]);
  t.ok((await agent.converge()).ok);
  t.notOk(agent.mayAnnounce, "with only a config whose address another node announces: nothing");
  agent.replaceAll([web, db]); // the maps as the next test finds them
  t.ok((await agent.converge()).ok);
  t.ok(agent.mayAnnounce);
});

t.test("from a stale state: only what differs is rewritten, leftovers go", async t => {
  const dp = new Dataplane({ pinDir });
  // Stale: a Gateway that is gone, and one listener with an old backend set.
  await dp.setService({
    vip: "198.18.200.9",
    port: 22,
    proto: "tcp",
    backends: [{ ip: "10.9.9.9", port: 22, weight: 1 }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: "198.18.200.2",
    port: 5432,
    proto: "tcp",
    backends: [{ ip: "10.1.1.7", port: 5432, weight: 2 }],
    rejectWeight: 0,
  });
  await dp.setAddresses([...expected.addresses, "198.18.200.9"]);
  const before = await serviceValues(dp);

  const agent = newAgent(dp, []);
  agent.replaceAll([web, db]);
  const result = await agent.converge();
  t.ok(result.ok, result.error ?? "applied");
  t.equal(result.changes, 3, "one service removed, one reprogrammed, one address removed");
  t.same(await mapsOf(dp), expected);
  const after = await serviceValues(dp);
  t.same(
    after["198.18.200.1:80/tcp"],
    before["198.18.200.1:80/tcp"],
    "an unchanged service keeps its id and its live table",
  );
  t.not(
    after["198.18.200.2:5432/tcp"].tableId,
    before["198.18.200.2:5432/tcp"].tableId,
    "a changed service switched to its other table",
  );
  const backends = await bpftool.mapDump(dp.mapPin("blixt_backends"));
  t.equal(
    backends.length,
    4,
    "no member of a removed or changed service's old table is left behind",
  );
});

t.test("a change behind the agent's back is put back by the next pass", async t => {
  const dp = new Dataplane({ pinDir });
  const agent = newAgent(dp, []);
  agent.replaceAll([web, db]);
  const values = await serviceValues(dp);
  const dns = values["198.18.200.1:53/udp"];
  const http = values["198.18.200.1:80/tcp"];

  await dp.deleteService("198.18.200.2", 5432, "tcp");
  await dp.setAddresses(["198.18.200.2"]);
  await bpftool.batch(
    [
      // a weight changed by hand
      bpftool.mapUpdateLine(
        dp.mapPin("blixt_backends"),
        hex(encodeBackendKey({ tableId: http.tableId, ip: "10.1.0.1", port: 8080 })),
        hex(encodeBackendValue({ weight: 9 })),
      ),
      // chunk 0 of a live table corrupted: every slot now names backend-list entry 1 (the
      // rejected share); chunk 0 is always among the chunks the agent reads back
      bpftool.mapUpdateLine(
        dp.mapPin("blixt_mg_chunks"),
        hex(encodeTableKey({ tableId: dns.tableId, index: 0 })),
        hex(encodeTableChunk(new Array(1024).fill(1))),
      ),
      // members of a table no service uses
      bpftool.mapUpdateLine(
        dp.mapPin("blixt_backends"),
        hex(encodeBackendKey({ tableId: 999, ip: "10.9.9.9", port: 1 })),
        hex(encodeBackendValue({ weight: 1 })),
      ),
    ],
    "changing the maps behind the agent's back",
  );
  t.notSame(await mapsOf(dp), expected, "the maps really were changed");

  const result = await agent.converge();
  t.ok(result.ok, result.error ?? "applied");
  t.same(await mapsOf(dp), expected);
  const repaired = (await serviceValues(dp))["198.18.200.1:53/udp"];
  t.not(repaired.tableId, dns.tableId, "the damaged table was replaced by a whole one");
  const chunk0 = await bpftool.mapLookup(
    dp.mapPin("blixt_mg_chunks"),
    hex(encodeTableKey({ tableId: repaired.tableId, index: 0 })),
  );
  const slots = decodeTableChunk(chunk0!.value!);
  t.ok(
    slots.includes(0) && slots.includes(1),
    "the new table's chunk 0 names both the backend and the rejected share again",
  );
  const oldChunk = await bpftool.mapLookup(
    dp.mapPin("blixt_mg_chunks"),
    hex(encodeTableKey({ tableId: dns.tableId, index: 0 })),
  );
  t.equal(oldChunk, undefined, "the corrupted table is gone");
  const orphan = await bpftool.mapLookup(
    dp.mapPin("blixt_backends"),
    hex(encodeBackendKey({ tableId: 999, ip: "10.9.9.9", port: 1 })),
  );
  t.equal(orphan, undefined, "members of a table no service uses are removed");
  t.equal((await agent.converge()).changes, 0, "and then the maps are converged");
});

t.test(
  "the periodic resync puts back what was removed behind the agent's back, on its own",
  async t => {
    const dp = new Dataplane({ pinDir });
    const agent = new Agent({
      nodeName: NODE,
      dataplane: dp,
      mode: "tc",
      resyncMs: 200,
      acknowledge: async () => {},
    });
    agent.replaceAll([web, db]);
    t.equal((await agent.converge()).changes, 0, "converged to begin with");
    agent.start();
    t.teardown(() => agent.stop());
    await dp.deleteService("198.18.200.1", 53, "udp");
    // A resync may start while the delete's own batch is still running and see half of it, so
    // wait for the maps to be whole again rather than for the first sign of the listener.
    let restored = false;
    for (let i = 0; i < 100 && !restored; i++) {
      await new Promise(r => setTimeout(r, 100));
      restored = isDeepStrictEqual(await mapsOf(dp), expected);
    }
    await agent.stop();
    t.ok(restored, "the deleted listener is back, whole, without anyone asking");
    t.same(await mapsOf(dp), expected);
  },
);

t.test("a restart reuses the pinned maps and keeps live conntrack entries", async t => {
  const first = new Dataplane({ pinDir });
  const ct = (sport: number) => ({
    key: hex(
      encodeConntrackKey({
        saddr: "198.18.9.2",
        daddr: "198.18.200.1",
        sport,
        dport: 80,
        proto: "tcp",
      }),
    ),
    value: hex(
      encodeConntrackValue({
        addr: "10.1.0.1",
        port: 8080,
        direction: "forward",
        svcId: 1,
        epoch: 0,
        lastSeenNs: 123n,
      }),
    ),
  });
  await bpftool.batch(
    [40000, 40001].map(p =>
      bpftool.mapUpdateLine(first.mapPin("blixt_ct4"), ct(p).key, ct(p).value),
    ),
    "writing live flows",
  );
  const flowsBefore = await first.conntrack();
  const valuesBefore = await serviceValues(first);

  // A new agent process: a new Dataplane on the same pins, loaded again.
  const dp = new Dataplane({ pinDir });
  await dp.load();
  const acks: { config: string; ack: NodeAck }[] = [];
  const agent = newAgent(dp, acks);
  agent.replaceAll([web, db]);
  const result = await agent.converge();
  t.ok(result.ok, result.error ?? "applied");
  t.equal(result.changes, 0, "nothing to rewrite after a restart");
  t.same(await dp.conntrack(), flowsBefore, "conntrack entries survive the restart");
  t.equal(flowsBefore.length, 2);
  t.same(await serviceValues(dp), valuesBefore, "services keep their ids and live tables");
});

t.test(
  "tables missing altogether (as after an upgrade from the per-slot layout) are rewritten",
  async t => {
    const dp = new Dataplane({ pinDir });
    const agent = newAgent(dp, []);
    agent.replaceAll([web, db]);
    t.equal((await agent.converge()).changes, 0, "converged to begin with");
    const before = await serviceValues(dp);
    const lines: string[] = [];
    for (const m of ["blixt_mg_chunks", "blixt_mg_backs"] as const) {
      for (const e of await bpftool.mapDump(dp.mapPin(m)))
        lines.push(bpftool.mapDeleteLine(dp.mapPin(m), hex(e.key)));
    }
    await bpftool.batch(lines, "emptying the table maps");
    const result = await agent.converge();
    t.ok(result.ok, result.error ?? "applied");
    t.equal(result.changes, 3, "every service reprogrammed");
    const after = await serviceValues(dp);
    for (const [name, value] of Object.entries(after)) {
      t.not(value.tableId, before[name].tableId, `${name}: switched to a table written whole`);
      const chunks = await bpftool.mapDump(dp.mapPin("blixt_mg_chunks"));
      t.equal(
        chunks.filter(e => decodeTableKey(e.key).tableId === value.tableId).length,
        chunkCount(value.tableSize),
        `${name}: every chunk there`,
      );
    }
    t.equal((await agent.converge()).changes, 0, "and then the maps are converged");
    await agent.stop();
  },
);

t.test(
  "a failed apply is acknowledged with bpftool's error, keeps the old tables serving, and is retried",
  async t => {
    const dp = new Dataplane({ pinDir });
    const addrs = dp.mapPin("blixt_addrs");
    const saved = `${addrs}_saved`; // bpffs allows no "." in a pin name
    // A map of the wrong shape where the address map should be: bpftool refuses every write to it.
    // (bpffs has no rename: the real map is pinned a second time, then its first pin removed.)
    const swap = async (from: string, to: string) => {
      await execa("bpftool", ["map", "pin", "pinned", from, to]);
      await rm(from);
    };
    await swap(addrs, saved);
    await execa("bpftool", [
      "map",
      "create",
      addrs,
      "type",
      "hash",
      "key",
      "4",
      "value",
      "4",
      "entries",
      "8",
      "name",
      "blixt_bogus",
    ]);
    const restore = async () => {
      if (!(await stat(saved).catch(() => undefined))) return;
      await rm(addrs, { force: true });
      await swap(saved, addrs);
    };
    t.teardown(restore);

    const next = dataplaneConfig(
      "web",
      "198.18.200.1",
      [
        {
          name: "http",
          port: 80,
          protocol: "TCP",
          backends: [{ weight: 1, endpoints: [["10.1.0.3", 8080]] }],
        },
      ],
      { node: NODE, generation: 5 },
    );
    const acks: { config: string; ack: NodeAck }[] = [];
    const agent = newAgent(dp, acks);
    next.status = {
      nodes: [
        {
          name: NODE,
          observedGeneration: 4,
          mode: "tc" as never,
          lastTransitionTime: "2026-01-01T00:00:00Z" as never,
        },
      ],
    };
    agent.replaceAll([next]);

    const failed = await agent.converge();
    t.notOk(failed.ok, "the apply fails");
    t.match(failed.error, /bpftool/, "with the bpftool command in the error");
    const ack = acks.find(a => a.config === "default/web")!.ack;
    t.equal(ack.observedGeneration, 4, "the acknowledged generation stays at the last one applied");
    t.match(
      ack.message,
      /expected key or value|key size|Invalid argument/i,
      `the status says what bpftool said: ${ack.message}`,
    );
    // bpftool stops at the failing command; every service the batch reached before it was
    // switched whole, and every live table is complete, so traffic is served throughout.
    for (const [name, value] of Object.entries(await serviceValues(dp))) {
      const keys = Array.from({ length: chunkCount(value.tableSize) }, (_, index) =>
        hex(encodeTableKey({ tableId: value.tableId, index })),
      );
      const found = await Promise.all(
        keys.map(key => bpftool.mapLookup(dp.mapPin("blixt_mg_chunks"), key)),
      );
      const list = (await bpftool.mapDump(dp.mapPin("blixt_mg_backs"))).filter(
        e => decodeTableKey(e.key).tableId === value.tableId,
      );
      t.ok(
        found.every(Boolean) && list.length > 0,
        `${name}: its live table (id ${value.tableId}, ${value.tableSize} slots, ${list.length} backends) is whole`,
      );
    }

    // Put the right map back; the scheduled retry applies generation 5 on its own.
    await restore();
    for (let i = 0; i < 200 && !acks.some(a => a.ack.observedGeneration === 5); i++)
      await new Promise(r => setTimeout(r, 50));
    // A failure can race the repair (a pass that read the wrong map, wrote the right one);
    // the periodic resync is what heals that, so run one pass as it would.
    t.ok((await agent.converge()).ok, "the next resync pass succeeds");
    await agent.stop();
    const applied = acks.find(a => a.ack.observedGeneration === 5);
    t.ok(applied, "the retry applied the new generation and acknowledged it");
    t.equal(applied?.ack.message, undefined, "with the error message cleared");
    t.same(await mapsOf(dp), {
      services: [
        {
          vip: "198.18.200.1",
          port: 80,
          proto: "tcp",
          backends: [{ ip: "10.1.0.3", port: 8080, weight: 1 }],
          rejectWeight: 0,
        },
      ],
      addresses: ["198.18.200.1"],
    });
  },
);

t.test("a config deleted before its acknowledgement lands (404) is not retried", async t => {
  const dp = new Dataplane({ pinDir });
  await dp.load();
  const calls: string[] = [];
  const agent = newAgent(dp, [], {
    acknowledge: async config => {
      calls.push(config.metadata?.name ?? "");
      if (config.metadata?.name === "db")
        throw {
          status: 404,
          statusText: "Not Found",
          data: { message: 'dataplaneconfigs.blixt.dev "db" not found' },
        };
    },
  });
  t.teardown(() => agent.stop());
  agent.replaceAll([web, db]);
  const result = await agent.converge();
  t.ok(result.ok, result.error ?? "applied");
  await new Promise(r => setTimeout(r, 400)); // four retry periods of this agent
  t.same(calls.sort(), ["db", "web"], "each acknowledged once: the 404 schedules no retry");
});

t.test("a pass acknowledges its configs a few at a time, each once", async t => {
  const dp = new Dataplane({ pinDir });
  t.teardown(() => dp.unpin());
  await dp.load();
  let inFlight = 0;
  let most = 0;
  const acked: string[] = [];
  const agent = newAgent(dp, [], {
    acknowledge: async config => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise(resolve => setTimeout(resolve, 20));
      inFlight--;
      acked.push(config.metadata!.name!);
    },
  });
  t.teardown(() => agent.stop());
  const names = Array.from({ length: 12 }, (_, i) => `acks-${i}`);
  agent.replaceAll(
    names.map((name, i) =>
      dataplaneConfig(name, `198.18.201.${i + 1}`, [
        {
          name: "tcp",
          port: 80,
          protocol: "TCP",
          backends: [{ weight: 1, endpoints: [["198.18.1.1", 8080]] }],
        },
      ]),
    ),
  );
  t.ok((await agent.converge()).ok);
  t.same([...acked].sort(), [...names].sort(), "every config acknowledged, once");
  t.ok(most > 1 && most <= 8, `${most} acknowledgements in flight at most (8 allowed)`);
});

t.test(
  "a slow acknowledgement does not hold the next pass; a config's entries go in order",
  async t => {
    const dp = new Dataplane({ pinDir });
    t.teardown(() => dp.unpin());
    await dp.load();
    // The API server's answers wait until the test lets them go.
    const sent: string[] = [];
    const gates: (() => void)[] = [];
    // A pass queues its acknowledgements right after it reports its apply (onApply).
    let applied = 0;
    const agent = newAgent(dp, [], {
      onApply: () => applied++,
      acknowledge: (config, ack) =>
        new Promise<void>(resolve => {
          sent.push(`${config.metadata?.name}@${ack.observedGeneration}`);
          gates.push(resolve);
        }),
    });
    t.teardown(() => agent.stop());
    const version = (generation: number, backend: string) =>
      dataplaneConfig(
        "slow",
        "198.18.202.1",
        [
          {
            name: "tcp",
            port: 80,
            protocol: "TCP",
            backends: [{ weight: 1, endpoints: [[backend, 8080]] }],
          },
        ],
        { generation },
      );
    const backends = async () =>
      (await dp.readMaps({ chunks: false })).actual.services.flatMap(s =>
        s.backends.map(b => b.ip),
      );

    agent.replaceAll([version(1, "198.18.3.1")]);
    let firstDone = false;
    const first = agent.converge().then(r => ((firstDone = true), r));
    await waitUntil(() => sent.length === 1);
    t.same(await backends(), ["198.18.3.1"], "generation 1 is in the maps");
    t.notOk(firstDone, "the pass's converge() waits for its acknowledgement");

    // Two more generations while the first acknowledgement is unanswered: both reach the maps.
    agent.observe(version(2, "198.18.3.2"));
    const second = agent.converge();
    agent.observe(version(3, "198.18.3.3"));
    const third = agent.converge();
    await waitUntil(() => applied === 3, "three passes applied");
    t.same(await backends(), ["198.18.3.3"], "generation 3 is in the maps");
    t.same(sent, ["slow@1"], "one write for the config at a time: the later entries wait");

    gates.shift()!();
    t.ok((await first).ok);
    await waitUntil(() => sent.length === 2);
    t.same(sent, ["slow@1", "slow@3"], "then only the newest entry is sent, generation 2's never");
    gates.shift()!();
    t.ok((await second).ok && (await third).ok);
    t.equal(gates.length, 0, "nothing else was sent");
  },
);

/** Polls `ok` every 10 ms for up to 5 s. */
async function waitUntil(
  ok: () => boolean | Promise<boolean>,
  what = "the condition",
): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await ok()) return;
    await new Promise(r => setTimeout(r, 10));
  }
  throw new Error(`${what} did not hold within 5 s`);
}

t.test("an entry sent while a later pass ran is not sent again by that pass", async t => {
  const dp = new Dataplane({ pinDir });
  t.teardown(() => dp.unpin());
  await dp.load();
  const sent: string[] = [];
  const gates: (() => void)[] = [];
  // The TLS sync at the start of a pass (after it has read its configs) waits while `hold` is set.
  let hold: Promise<void> | undefined;
  const tls = {
    sync: async () => {
      await hold;
      return new Map();
    },
    close: async () => {},
  } as unknown as TlsListeners;
  const agent = new Agent({
    nodeName: NODE,
    dataplane: dp,
    mode: "tc",
    resyncMs: 0,
    tls,
    acknowledge: (config, ack) =>
      new Promise<void>(resolve => {
        sent.push(`${config.metadata?.name}@${ack.observedGeneration}`);
        gates.push(resolve);
      }),
  });
  agent.start();
  t.teardown(() => agent.stop());
  const one = (name: string, address: string) =>
    dataplaneConfig(name, address, [
      {
        name: "tcp",
        port: 80,
        protocol: "TCP",
        backends: [{ weight: 1, endpoints: [["198.18.4.1", 8080]] }],
      },
    ]);

  agent.replaceAll([one("x", "198.18.203.1")]);
  const first = agent.converge();
  await waitUntil(() => sent.length === 1, "x's entry on its way");
  // A second pass reads its configs (x without the entry on its way) and waits.
  let release!: () => void;
  hold = new Promise<void>(r => (release = r));
  agent.observe(one("y", "198.18.203.2"));
  const second = agent.converge();
  // x's entry is answered meanwhile; then the second pass goes on.
  gates.shift()!();
  t.ok((await first).ok);
  hold = undefined;
  release();
  await waitUntil(() => sent.length >= 2, "y's entry on its way");
  await new Promise(r => setTimeout(r, 50));
  for (const gate of gates.splice(0)) gate();
  t.ok((await second).ok);
  t.same(sent, ["x@1", "y@1"], "x's entry was sent once");
});
