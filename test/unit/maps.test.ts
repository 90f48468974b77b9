// SPDX-License-Identifier: Apache-2.0
// The TypeScript encodings are the C structs' bytes: known byte strings first, then every map
// entry written through bpftool with our encoder and read back through bpftool's BTF-formatted
// JSON (which knows the C field names and offsets), compared field by field.
import t from "tap";
import { readFileSync } from "node:fs";
import * as m from "../../capabilities/dataplane/maps.js";
import { mapLookup, batch, mapUpdateLine } from "../../capabilities/dataplane/bpftool.js";
import { loadedDataplane } from "../packet/fixture.js";

const hexOf = (b: Uint8Array) => m.hex(b).join(" ");
/** A __be16 as bpftool's BTF dump prints it: the two bytes read as a little-endian __u16. */
const be16AsPrinted = (port: number) => ((port & 0xff) << 8) | (port >> 8);
/** A __be32 IPv4 address as bpftool's BTF dump prints it: the four bytes read as a little-endian __u32. */
const be32AsPrinted = (ip: string) =>
  ip.split(".").reduce((n, octet, i) => n + Number(octet) * 2 ** (8 * i), 0);
const mapped = (ip: string) => [
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  255,
  255,
  ...ip.split(".").map(Number),
];

t.test("known bytes", async t => {
  t.equal(
    hexOf(m.addrBytes("198.18.1.1")),
    "00 00 00 00 00 00 00 00 00 00 ff ff c6 12 01 01",
    "IPv4-mapped",
  );
  t.equal(
    hexOf(m.encodeServiceKey({ vip: "198.18.1.1", port: 80, proto: "tcp" })),
    "00 00 00 00 00 00 00 00 00 00 ff ff c6 12 01 01 00 50 06 00",
  );
  t.equal(
    hexOf(m.encodeServiceKey({ vip: "198.18.1.1", port: 53, proto: "udp" })).slice(-11),
    "00 35 11 00",
  );
  t.equal(
    hexOf(m.encodeServiceValue({ svcId: 3, tableId: 7, tableSize: 1009, rejectWeight: 258 })),
    "03 00 00 00 07 00 00 00 f1 03 00 00 02 01 00 00",
  );
  t.equal(hexOf(m.encodeTableKey({ tableId: 7, index: 15 })), "07 00 00 00 0f 00 00 00");
  t.equal(hexOf(m.encodeTableBackend({ reject: true })), `${"00 ".repeat(18)}01 00`);
  t.equal(
    hexOf(m.encodeTableBackend({ ip: "10.1.2.3", port: 8080 })),
    `${"00 ".repeat(10)}ff ff 0a 01 02 03 1f 90 00 00`,
  );
  const chunk = m.encodeTableChunk([1, 258, 0xffff]);
  t.equal(chunk.length, 2 * m.CHUNK_SLOTS, "a chunk is always CHUNK_SLOTS u16s");
  t.equal(
    hexOf(chunk.subarray(0, 8)),
    "01 00 02 01 ff ff 00 00",
    "u16 indexes, host order, zero past the given slots",
  );
  t.same(Array.from(m.decodeTableChunk(chunk).subarray(0, 4)), [1, 258, 0xffff, 0]);
  t.equal(m.chunkCount(16381), 16, "a 16381-slot table is 16 chunks, the last partial");
  t.equal(m.chunkCount(65521), 64);
  t.throws(() => m.encodeTableChunk(new Array(m.CHUNK_SLOTS + 1).fill(0)), /holds 1024 slots/);
  t.throws(() => m.encodeTableChunk([0x10000]), /does not fit a u16/);
  t.equal(
    hexOf(
      m.encodeConntrackKey({
        saddr: "1.2.3.4",
        daddr: "5.6.7.8",
        sport: 1,
        dport: 2,
        proto: "udp",
      }),
    ),
    "01 02 03 04 05 06 07 08 00 01 00 02 11 00 00 00",
    "ct4_key: bare IPv4, 16 bytes",
  );
  t.equal(
    hexOf(
      m.encodeConntrackValue({
        addr: "1.2.3.4",
        port: 1,
        direction: "reverse",
        svcId: 1,
        epoch: 0x01020304,
        lastSeenNs: 1n,
      }),
    ),
    "01 02 03 04 00 01 02 00 01 00 00 00 04 03 02 01 01 00 00 00 00 00 00 00",
    "ct4_value: 24 bytes, epoch host order",
  );
  t.equal(hexOf(m.encodeEpoch(0xfffffffe)), "fe ff ff ff");
  t.equal(m.nextEpoch(41), 42);
  t.equal(m.nextEpoch(0xffffffff), 1, "the epoch wraps past 0, which no service is given");
  t.throws(() => m.addrBytes("198.18.1.256"), /not an IPv4 address literal/);
  t.throws(() => m.decodeServiceKey(new Uint8Array(19)), /svc_key must be 20 bytes/);
  const common = readFileSync(new URL("../../bpf/common.h", import.meta.url), "utf8");
  t.equal(
    m.REASONS.length,
    Number(/REASON_MAX = (\d+)/.exec(common)?.[1]),
    "REASONS has REASON_MAX entries (bpf/common.h)",
  );
  const names = [...common.matchAll(/\tREASON_([A-Z0-9_]+) = (\d+),/g)]
    .filter(([, name]) => name !== "MAX")
    .map(([, name, n]) => [Number(n), name.toLowerCase()] as const);
  // Names differ where the C enum abbreviates (DROP_NO_NODE_ADDR): the order and count match.
  t.same(
    names.map(([n]) => n),
    m.REASONS.map((_, i) => i),
    "numbered 0.. in order, as REASONS",
  );
  t.equal(
    hexOf(m.encodeTableBackend({ ip: "10.0.0.1", port: 80, remote: true })),
    "00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01 00 50 02 00",
    "backend: BACKEND_F_REMOTE in bytes 18..19, host order",
  );
  t.same(
    m.decodeTableBackend(m.encodeTableBackend({ ip: "10.0.0.1", port: 80, remote: false })),
    { ip: "10.0.0.1", port: 80 },
    "remote: false is the absence of the flag",
  );
  t.equal(hexOf(m.encodeNodeConfig("192.0.2.77")), "c0 00 02 4d", "node_config: network order");
  t.same(m.decodeNodeConfig(Uint8Array.of(0, 0, 0, 0)), { ipv4: "0.0.0.0" });
});

t.test("round trips through the kernel's maps, checked against BTF", async t => {
  const dp = await loadedDataplane(t, "maps");
  const pin = (n: m.MapName) => dp.mapPin(n);

  const svcKey = { vip: "198.18.0.7", port: 443, proto: "tcp" as const };
  const svcValue = { svcId: 12, tableId: 25, tableSize: 1009, rejectWeight: 3 };
  const mgKey = { tableId: 25, index: 3 };
  const mgBackend = { ip: "198.19.224.9", port: 8443 };
  const chunkIndexes = Array.from({ length: m.CHUNK_SLOTS }, (_, i) => (i * 7) % 5);
  const beKey = { tableId: 12, ip: "198.19.224.9", port: 8443 };
  const ctKey = {
    saddr: "192.0.2.1",
    daddr: "198.18.0.7",
    sport: 51000,
    dport: 443,
    proto: "udp" as const,
  };
  const ctValue = {
    addr: "198.19.224.9",
    port: 8443,
    direction: "forward" as const,
    svcId: 12,
    epoch: 77,
    lastSeenNs: 123456789012345n,
  };
  const counters = { packets: 5, bytes: 1500, newFlows: 2, rejects: 1 };

  await batch(
    [
      mapUpdateLine(
        pin("blixt_services"),
        m.hex(m.encodeServiceKey(svcKey)),
        m.hex(m.encodeServiceValue(svcValue)),
      ),
      mapUpdateLine(
        pin("blixt_mg_backs"),
        m.hex(m.encodeTableKey(mgKey)),
        m.hex(m.encodeTableBackend(mgBackend)),
      ),
      mapUpdateLine(
        pin("blixt_mg_backs"),
        m.hex(m.encodeTableKey({ tableId: 25, index: 1 })),
        m.hex(m.encodeTableBackend({ reject: true })),
      ),
      mapUpdateLine(
        pin("blixt_mg_backs"),
        m.hex(m.encodeTableKey({ tableId: 25, index: 2 })),
        m.hex(m.encodeTableBackend({ ...mgBackend, remote: true })),
      ),
      mapUpdateLine(
        pin("blixt_node"),
        m.hex(m.encodeIndexKey(m.NODE_CONFIG_KEY)),
        m.hex(m.encodeNodeConfig("192.0.2.77")),
      ),
      mapUpdateLine(
        pin("blixt_announce"),
        m.hex(m.encodeIndexKey(m.ANNOUNCE_CONFIG_KEY)),
        m.hex(m.encodeAnnounceConfig(123_456_789_012_345n)),
      ),
      mapUpdateLine(
        pin("blixt_mg_chunks"),
        m.hex(m.encodeTableKey({ tableId: 25, index: 15 })),
        m.hex(m.encodeTableChunk(chunkIndexes)),
      ),
      mapUpdateLine(
        pin("blixt_backends"),
        m.hex(m.encodeBackendKey(beKey)),
        m.hex(m.encodeBackendValue({ weight: 70 })),
      ),
      mapUpdateLine(
        pin("blixt_ct4"),
        m.hex(m.encodeConntrackKey(ctKey)),
        m.hex(m.encodeConntrackValue(ctValue)),
      ),
      mapUpdateLine(pin("blixt_svc_epoch"), m.hex(m.encodeIndexKey(12)), m.hex(m.encodeEpoch(77))),
      mapUpdateLine(
        pin("blixt_addrs"),
        m.hex(m.encodeAddressKey("198.18.0.7")),
        m.hex(m.encodeAddressValue({ flags: m.ADDR_F_ANNOUNCE })),
      ),
      mapUpdateLine(
        pin("blixt_svc_stats"),
        m.hex(m.encodeIndexKey(12)),
        m.hex(m.encodeServiceCounters(counters)),
      ),
    ],
    "writing one entry per map",
  );

  const svc = (await mapLookup(pin("blixt_services"), m.hex(m.encodeServiceKey(svcKey))))!;
  t.same(
    svc.formatted,
    {
      key: { addr: mapped("198.18.0.7"), port: be16AsPrinted(443), proto: 6, pad: 0 },
      value: { svc_id: 12, table_id: 25, table_size: 1009, reject_weight: 3 },
    },
    "services: struct svc_key / svc_value",
  );
  t.same(m.decodeServiceKey(svc.key), svcKey);
  t.same(m.decodeServiceValue(svc.value!), svcValue);

  const mg = (await mapLookup(pin("blixt_mg_backs"), m.hex(m.encodeTableKey(mgKey))))!;
  t.same(
    mg.formatted,
    {
      key: { table_id: 25, index: 3 },
      value: { addr: mapped("198.19.224.9"), port: be16AsPrinted(8443), flags: 0 },
    },
    "mg_backs: struct table_key / backend",
  );
  t.same(m.decodeTableKey(mg.key), mgKey);
  t.same(m.decodeTableBackend(mg.value!), mgBackend);
  const rej = (await mapLookup(
    pin("blixt_mg_backs"),
    m.hex(m.encodeTableKey({ tableId: 25, index: 1 })),
  ))!;
  t.same(
    rej.formatted?.value,
    { addr: new Array(16).fill(0), port: 0, flags: m.BACKEND_F_REJECT },
    "reject entry",
  );
  t.same(m.decodeTableBackend(rej.value!), { reject: true });
  const remote = (await mapLookup(
    pin("blixt_mg_backs"),
    m.hex(m.encodeTableKey({ tableId: 25, index: 2 })),
  ))!;
  t.same(
    remote.formatted?.value,
    { addr: mapped("198.19.224.9"), port: be16AsPrinted(8443), flags: m.BACKEND_F_REMOTE },
    "remote entry",
  );
  t.same(m.decodeTableBackend(remote.value!), { ...mgBackend, remote: true });

  const node = (await mapLookup(pin("blixt_node"), m.hex(m.encodeIndexKey(m.NODE_CONFIG_KEY))))!;
  t.same(
    node.formatted,
    { key: 0, value: { ipv4: be32AsPrinted("192.0.2.77") } },
    "node: struct node_config",
  );
  t.same(m.decodeNodeConfig(node.value!), { ipv4: "192.0.2.77" });

  const announce = (await mapLookup(
    pin("blixt_announce"),
    m.hex(m.encodeIndexKey(m.ANNOUNCE_CONFIG_KEY)),
  ))!;
  t.same(
    announce.formatted,
    { key: 0, value: { until_ns: 123_456_789_012_345 } },
    "announce: struct announce_config, host order",
  );
  t.same(m.decodeAnnounceConfig(announce.value!), { untilNs: 123_456_789_012_345n });

  const chunk = (await mapLookup(
    pin("blixt_mg_chunks"),
    m.hex(m.encodeTableKey({ tableId: 25, index: 15 })),
  ))!;
  t.same(
    chunk.formatted,
    { key: { table_id: 25, index: 15 }, value: { backend: chunkIndexes } },
    "mg_chunks: struct table_key / table_chunk",
  );
  t.same(Array.from(m.decodeTableChunk(chunk.value!)), chunkIndexes);

  const be = (await mapLookup(pin("blixt_backends"), m.hex(m.encodeBackendKey(beKey))))!;
  t.same(
    be.formatted,
    {
      key: { table_id: 12, addr: mapped("198.19.224.9"), port: be16AsPrinted(8443), pad: 0 },
      value: { weight: 70 },
    },
    "backends",
  );
  t.same(m.decodeBackendKey(be.key), beKey);
  t.same(m.decodeBackendValue(be.value!), { weight: 70 });

  const ct = (await mapLookup(pin("blixt_ct4"), m.hex(m.encodeConntrackKey(ctKey))))!;
  t.same(
    ct.formatted,
    {
      key: {
        saddr: be32AsPrinted("192.0.2.1"),
        daddr: be32AsPrinted("198.18.0.7"),
        sport: be16AsPrinted(51000),
        dport: be16AsPrinted(443),
        proto: 17,
        pad: [0, 0, 0],
      },
      value: {
        addr: be32AsPrinted("198.19.224.9"),
        port: be16AsPrinted(8443),
        flags: m.CT_F_FORWARD,
        svc_id: 12,
        epoch: 77,
        last_seen_ns: 123456789012345,
      },
    },
    "conntrack: struct ct4_key / ct4_value",
  );
  t.same(m.decodeConntrackKey(ct.key), ctKey);
  t.same(m.decodeConntrackValue(ct.value!), ctValue);

  const epoch = (await mapLookup(pin("blixt_svc_epoch"), m.hex(m.encodeIndexKey(12))))!;
  t.same(epoch.formatted, { key: 12, value: 77 }, "svc_epoch: __u32 service id → __u32 epoch");
  t.equal(m.decodeEpoch(epoch.value!), 77);

  const addr = (await mapLookup(pin("blixt_addrs"), m.hex(m.encodeAddressKey("198.18.0.7"))))!;
  t.same(
    addr.formatted,
    { key: { addr: mapped("198.18.0.7") }, value: { flags: m.ADDR_F_ANNOUNCE } },
    "addresses",
  );
  t.equal(m.decodeAddressKey(addr.key), "198.18.0.7");
  t.same(m.decodeAddressValue(addr.value!), { flags: 1 });

  const stats = (await mapLookup(pin("blixt_svc_stats"), m.hex(m.encodeIndexKey(12))))!;
  t.ok(stats.values && stats.values.length >= 1, "per-CPU: one value per CPU");
  for (const [cpu, v] of stats.formatted!.values!.entries()) {
    t.same(
      v.value,
      { packets: 5, bytes: 1500, new_flows: 2, rejects: 1 },
      `svc_stats on CPU ${cpu}: bpftool writes the value to every CPU`,
    );
  }
  t.same(m.sumCounters(stats.values!.map(m.decodeServiceCounters)), {
    packets: 5 * stats.values!.length,
    bytes: 1500 * stats.values!.length,
    newFlows: 2 * stats.values!.length,
    rejects: stats.values!.length,
  });

  const reason = (await mapLookup(
    pin("blixt_reasons"),
    m.hex(m.encodeIndexKey(m.REASONS.indexOf("dnat"))),
  ))!;
  t.same(reason.formatted?.key, 3, "reasons: __u32 index");
  t.equal(m.decodeReasonCounter(reason.values![0]), 0);

  t.equal(
    await mapLookup(pin("blixt_services"), m.hex(m.encodeServiceKey({ ...svcKey, port: 444 }))),
    undefined,
    "absent key reads as undefined",
  );
});

t.test("conntrack timeouts: struct ct_config, checked against BTF", async t => {
  t.equal(
    hexOf(
      m.encodeConntrackConfig({
        tcpNewSeconds: 1,
        tcpEstablishedSeconds: 0x01020304,
        udpSeconds: 60,
      }),
    ),
    "01 00 00 00 04 03 02 01 00 00 00 00 3c 00 00 00",
    "16 bytes, host order, an omitted field 0",
  );
  t.same(
    m.decodeConntrackConfig(new Uint8Array(16)),
    m.CONNTRACK_TIMEOUT_DEFAULTS,
    "0 fields read as the programs' defaults",
  );
  t.throws(
    () => m.encodeConntrackConfig({ udpSeconds: 0 }),
    /udpSeconds: 0 is not a whole number of seconds/,
  );
  t.throws(() => m.encodeConntrackConfig({ tcpClosingSeconds: 1.5 }), /tcpClosingSeconds/);
  const mapsH = readFileSync(new URL("../../bpf/maps.h", import.meta.url), "utf8");
  t.same(
    m.CT_COUNTERS.map(c => `CT_${c.toUpperCase()}`),
    [...mapsH.matchAll(/\t(CT_[A-Z_]+) = \d+,/g)]
      .map(([, name]) => name)
      .filter(name => name !== "CT_COUNTER_MAX"),
    "CT_COUNTERS names enum blixt_ct_counter (bpf/maps.h) in order",
  );

  const dp = await loadedDataplane(t, "maps-ct");
  const timeouts = {
    tcpNewSeconds: 30,
    tcpEstablishedSeconds: 7200,
    tcpClosingSeconds: 5,
    udpSeconds: 45,
  };
  await batch(
    [
      mapUpdateLine(
        dp.mapPin("blixt_ct_config"),
        m.hex(m.encodeIndexKey(m.CT_CONFIG_KEY)),
        m.hex(m.encodeConntrackConfig(timeouts)),
      ),
    ],
    "writing timeouts",
  );
  const entry = (await mapLookup(
    dp.mapPin("blixt_ct_config"),
    m.hex(m.encodeIndexKey(m.CT_CONFIG_KEY)),
  ))!;
  t.same(
    entry.formatted,
    { key: 0, value: { tcp_new_s: 30, tcp_established_s: 7200, tcp_closing_s: 5, udp_s: 45 } },
    "ct_config",
  );
  t.same(m.decodeConntrackConfig(entry.value!), timeouts);
  const ct = (await mapLookup(
    dp.mapPin("blixt_ct_stats"),
    m.hex(m.encodeIndexKey(m.CT_COUNTERS.length - 1)),
  ))!;
  t.ok(ct.values, "ct_stats: per-CPU, indexed up to CT_COUNTER_MAX - 1");
});
