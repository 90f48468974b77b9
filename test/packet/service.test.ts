// SPDX-License-Identifier: Apache-2.0
// Programming services through the Dataplane API: validation, the table switch, shared tables,
// read-back, deletion, and a reload that keeps every pinned map (so conntrack survives).
import t from "tap";
import { loadedDataplane, runOne, XDP_PASS } from "./fixture.js";
import {
  serviceName,
  validateServiceSpec,
  type ServiceSpec,
} from "../../capabilities/dataplane/tables.js";
import {
  batch,
  mapDump,
  mapUpdateLine,
  bpftoolJson,
} from "../../capabilities/dataplane/bpftool.js";
import { execa } from "execa";
import { stat } from "node:fs/promises";
import {
  chunkCount,
  decodeTableKey,
  decodeBackendKey,
  encodeBackendKey,
  encodeBackendValue,
  encodeTableBackend,
  encodeTableKey,
  hex,
} from "../../capabilities/dataplane/maps.js";
import { parseFrame, udpFrame } from "../lib/packet.js";

const base: ServiceSpec = {
  vip: "198.18.50.1",
  port: 7000,
  proto: "udp",
  backends: [{ ip: "10.5.0.1", port: 7000, weight: 1 }],
  rejectWeight: 0,
};

t.test("validation names the field", async t => {
  const bad: [Partial<ServiceSpec> & Record<string, unknown>, RegExp][] = [
    [
      { vip: "198.18.50.300" },
      /service 198\.18\.50\.300:7000\/udp: vip "198\.18\.50\.300" must be an IPv4 address literal/,
    ],
    [{ vip: "fd00::1" }, /vip "fd00::1" must be an IPv4/],
    [{ port: 0 }, /port must be an integer in 1\.\.65535, got 0/],
    [{ port: 65536 }, /port must be an integer in 1\.\.65535/],
    [{ proto: "sctp" as never }, /proto must be "tcp" or "udp"/],
    [{ rejectWeight: -1 }, /rejectWeight must be a non-negative integer, got -1/],
    [{ rejectWeight: 0.5 }, /rejectWeight must be a non-negative integer/],
    [
      { backends: [{ ip: "10.5.0.x", port: 1, weight: 1 }] },
      /backends\[0\]\.ip "10\.5\.0\.x" must be an IPv4/,
    ],
    [
      {
        backends: [
          { ip: "10.5.0.1", port: 1, weight: 1 },
          { ip: "10.5.0.2", port: 70000, weight: 1 },
        ],
      },
      /backends\[1\]\.port must be an integer in 1\.\.65535, got 70000/,
    ],
    [
      { backends: [{ ip: "10.5.0.1", port: 1, weight: -2 }] },
      /backends\[0\]\.weight must be a non-negative integer, got -2/,
    ],
  ];
  for (const [patch, message] of bad)
    t.throws(
      () => validateServiceSpec({ ...base, ...patch } as ServiceSpec),
      message,
      JSON.stringify(patch),
    );
  t.doesNotThrow(
    () => validateServiceSpec({ ...base, backends: [], rejectWeight: 0 }),
    "no backends at all is valid: the service rejects",
  );
});

t.test("dataplane", async t => {
  const dp = await loadedDataplane(t, "service");
  /** table id → [chunks, backend-list entries] it has in the maps */
  const maglevTables = async () => {
    const counts = new Map<number, [number, number]>();
    for (const [i, m] of (["blixt_mg_chunks", "blixt_mg_backs"] as const).entries()) {
      for (const e of await mapDump(dp.mapPin(m))) {
        const { tableId } = decodeTableKey(e.key);
        const c = counts.get(tableId) ?? [0, 0];
        c[i]++;
        counts.set(tableId, c);
      }
    }
    return counts;
  };

  /** The id of the table a service of `base` on `port` uses now. */
  const liveTable = async (port = base.port) =>
    (await dp.readMaps({ chunks: false })).states.get(serviceName({ ...base, port }))!.value
      .tableId;

  t.test("a new table is written under a free id and the old one removed", async t => {
    await dp.setService(base);
    const first = await maglevTables();
    const id0 = await liveTable();
    t.same([...first.keys()], [id0], "one table: the live one");
    t.same(first.get(id0), [chunkCount(16381), 1], "the smallest table: 16 chunks, one backend");

    await dp.setService({
      ...base,
      backends: [...base.backends, { ip: "10.5.0.2", port: 7000, weight: 2 }],
      rejectWeight: 1,
    });
    const id1 = await liveTable();
    t.not(id1, id0, "the new table has an id of its own");
    t.same(
      [...(await maglevTables()).entries()],
      [[id1, [16, 3]]],
      "it is live (two backends and the reject entry), and the old one is gone",
    );
    await dp.setService(base);
    t.same([...(await maglevTables()).entries()], [[await liveTable(), [16, 1]]], "and back");
    const backends = (await mapDump(dp.mapPin("blixt_backends"))).map(
      e => decodeBackendKey(e.key).ip,
    );
    t.same(backends, ["10.5.0.1"], "the removed backend is gone from blixt_backends");
  });

  t.test("services with the same weighted backends share one table", async t => {
    const other = { ...base, port: base.port + 100 };
    await dp.setService(other);
    const shared = await liveTable();
    t.equal(await liveTable(other.port), shared, "the second service uses the first one's table");
    t.same([...(await maglevTables()).keys()], [shared], "and no other table is written");

    await dp.setService({ ...other, backends: [{ ip: "10.5.0.2", port: 7000, weight: 1 }] });
    const own = await liveTable(other.port);
    t.not(own, shared, "a change to one writes a table of its own");
    t.same(
      [...(await maglevTables()).keys()].sort((a, b) => a - b),
      [shared, own].sort((a, b) => a - b),
      "and the other keeps the shared one",
    );
    await dp.setService(other);
    t.equal(await liveTable(other.port), shared, "changed back, it shares again");
    t.same([...(await maglevTables()).keys()], [shared], "and its own table is gone");

    await dp.deleteService(other.vip, other.port, other.proto);
    t.same(
      [...(await maglevTables()).keys()],
      [shared],
      "removing one service keeps the table the other uses",
    );
    t.equal(await liveTable(), shared);
  });

  t.test("listServices reads back what was set", async t => {
    await dp.setService({
      vip: "198.18.50.2",
      port: 443,
      proto: "tcp",
      backends: [
        { ip: "10.5.0.9", port: 8443, weight: 3 },
        { ip: "10.5.0.8", port: 8443, weight: 0 },
        { ip: "10.5.0.9", port: 8443, weight: 2 },
      ],
      rejectWeight: 4,
    });
    t.same(await dp.listServices(), [
      { ...base, backends: [{ ip: "10.5.0.1", port: 7000, weight: 1 }] },
      {
        vip: "198.18.50.2",
        port: 443,
        proto: "tcp",
        // Duplicates (two backendRefs to one endpoint) merge by summing; a backend of weight 0
        // takes no traffic and is no member of the table, so the maps do not list it.
        backends: [{ ip: "10.5.0.9", port: 8443, weight: 5 }],
        rejectWeight: 4,
      },
    ]);
  });

  t.test("a reload reuses every pinned map: services and conntrack survive", async t => {
    const flow = udpFrame({ src: "192.0.2.50", dst: base.vip, sport: 5000, dport: base.port });
    t.equal((await runOne(dp, "blixt_xdp_ingress", flow)).retval, XDP_PASS);
    const ids = async () => {
      const out: Record<string, number> = {};
      for (const name of [
        "blixt_ct4",
        "blixt_svc_epoch",
        "blixt_services",
        "blixt_mg_chunks",
        "blixt_mg_backs",
      ]) {
        out[name] = (
          (await bpftoolJson(["map", "show", "pinned", `${dp.pinDir}/maps/${name}`], "map id")) as {
            id: number;
          }
        ).id;
      }
      return out;
    };
    const before = await ids();
    const ctBefore = await dp.conntrack();
    await dp.load();
    t.same(await ids(), before, "same kernel maps after reload");
    t.same(await dp.conntrack(), ctBefore, "conntrack intact");
    const out = parseFrame((await runOne(dp, "blixt_xdp_ingress", flow)).dataOut);
    t.equal(out.ip.dst, "10.5.0.1", "the reloaded program forwards with the surviving state");
  });

  t.test("a reload removes the pin of a map an older layout used", async t => {
    const retired = `${dp.pinDir}/maps/blixt_maglev`;
    await execa("bpftool", [
      "map",
      "create",
      retired,
      "type",
      "hash",
      "key",
      "8",
      "value",
      "20",
      "entries",
      "8",
      "name",
      "blixt_maglev",
    ]);
    await dp.load();
    t.equal(
      await stat(retired).catch(() => undefined),
      undefined,
      "the per-slot map's pin is gone",
    );
    const out = parseFrame(
      (
        await runOne(
          dp,
          "blixt_xdp_ingress",
          udpFrame({ src: "192.0.2.51", dst: base.vip, sport: 5001, dport: base.port }),
        )
      ).dataOut,
    );
    t.equal(out.ip.dst, "10.5.0.1", "and the service still forwards");
  });

  t.test(
    "deleteService removes entry, table and backends; a reused id starts from zero counters",
    async t => {
      const svcId = (await dp.stats()).services.find(s => s.port === 7000)!.svcId;
      const tableId = (await dp.readMaps({ chunks: false })).actual.services.find(
        s => s.port === 7000,
      )!.tableId;
      await dp.deleteService(base.vip, base.port, base.proto);
      t.same(
        (await dp.listServices()).map(s => s.port),
        [443],
      );
      const live = new Set(
        (await dp.readMaps({ chunks: false })).actual.services.map(s => s.tableId),
      );
      t.same(
        [...(await maglevTables()).keys()].filter(id => !live.has(id)),
        [],
        "its table is gone: every table left is one a service uses",
      );
      t.notOk(
        (await mapDump(dp.mapPin("blixt_backends"))).some(
          e => decodeBackendKey(e.key).tableId === tableId,
        ),
        "its table's members are gone",
      );
      await dp.deleteService(base.vip, base.port, base.proto); // idempotent
      await dp.setService({ ...base, port: 7001 });
      const reused = (await dp.stats()).services.find(s => s.port === 7001)!;
      t.equal(reused.svcId, svcId, "the free id is reused");
      t.same([reused.packets, reused.newFlows], [0, 0], "without the old service's counters");
    },
  );

  t.test(
    "a single write takes the node agent's path: it clears what a batch that stopped half-way left",
    async t => {
      // What a node agent that died mid-batch leaves: members and the backend list of a new table
      // never switched in. The agent's apply removes both first.
      const orphan = { tableId: 8001, ip: "10.5.9.9", port: 9 };
      const orphanTableId = 8001;
      await batch(
        [
          mapUpdateLine(
            dp.mapPin("blixt_backends"),
            hex(encodeBackendKey(orphan)),
            hex(encodeBackendValue({ weight: 1 })),
          ),
          mapUpdateLine(
            dp.mapPin("blixt_mg_backs"),
            hex(encodeTableKey({ tableId: orphanTableId, index: 0 })),
            hex(encodeTableBackend(orphan)),
          ),
        ],
        "leaving a half-written write behind",
      );
      await dp.setService({
        ...base,
        port: 7001,
        backends: [{ ip: "10.5.0.3", port: 7000, weight: 1 }],
      });
      t.notOk(
        (await mapDump(dp.mapPin("blixt_backends"))).some(
          e => decodeBackendKey(e.key).tableId === orphan.tableId,
        ),
        "the orphaned member is gone",
      );
      t.notOk(
        (await maglevTables()).has(orphanTableId),
        "the orphaned table's backend list is gone",
      );
      t.same(
        (await dp.listServices()).find(s => s.port === 7001)?.backends,
        [{ ip: "10.5.0.3", port: 7000, weight: 1 }],
        "and the service is written",
      );
    },
  );
});
