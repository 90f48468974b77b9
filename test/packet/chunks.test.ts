// SPDX-License-Identifier: Apache-2.0
// The chunked Maglev table on the real program: flows whose 5-tuple hashes into every chunk of
// a table (the first and last slot of each, and the last, partial chunk) reach the backend the
// table built in TypeScript names for that slot; a missing chunk or backend-list entry rejects.
import t from "tap";
import { loadedDataplane, run, XDP_DROP, XDP_PASS } from "./fixture.js";
import { serviceTable, slotEntry, type ServiceSpec } from "../../capabilities/dataplane/tables.js";
import { batch, mapDeleteLine } from "../../capabilities/dataplane/bpftool.js";
import { CHUNK_SLOTS, chunkCount, encodeTableKey, hex } from "../../capabilities/dataplane/maps.js";
import { parseFrame, udpFrame } from "../lib/packet.js";

const VIP = "198.18.60.1";
const spec: ServiceSpec = {
  vip: VIP,
  port: 53,
  proto: "udp",
  backends: ["10.6.0.1", "10.6.0.2", "10.6.0.3", "10.6.0.4"].map((ip, i) => ({
    ip,
    port: 5300 + i,
    weight: i + 1,
  })),
  rejectWeight: 0,
};

// bpf/lb.h flow_hash, word for word: the programs read addresses and ports as host-order
// (little-endian) words straight from the packet, so the hash is of those words.
const rol32 = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;
function hashWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = rol32(k >>> 0, 15);
  k = Math.imul(k, 0x1b873593);
  h = (h ^ k) >>> 0;
  h = rol32(h, 13);
  return (Math.imul(h, 5) + 0xe6546b64) >>> 0;
}
const wordOf = (ip: string) =>
  ip.split(".").reduce((w, octet, i) => (w | (Number(octet) << (8 * i))) >>> 0, 0);
const portWord = (port: number) => ((port & 0xff) << 8) | (port >> 8);
function flowHash(
  saddr: string,
  daddr: string,
  sport: number,
  dport: number,
  proto: number,
): number {
  let h = 0x626c6978;
  h = hashWord(h, wordOf(saddr));
  h = hashWord(h, wordOf(daddr));
  h = hashWord(h, ((portWord(sport) << 16) | portWord(dport)) >>> 0);
  h = hashWord(h, proto);
  h = (h ^ 13) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

interface Flow {
  src: string;
  sport: number;
  slot: number;
}

/** Client flows that land on each of `slots`, found by walking source ports and addresses. */
function flowsFor(slots: number[], tableSize: number, proto: number, dport: number): Flow[] {
  const wanted = new Set(slots);
  const found: Flow[] = [];
  for (let host = 1; host < 255 && wanted.size > 0; host++) {
    const src = `192.0.2.${host}`;
    for (let sport = 1024; sport < 65536 && wanted.size > 0; sport++) {
      const slot = flowHash(src, VIP, sport, dport, proto) % tableSize;
      if (wanted.delete(slot)) found.push({ src, sport, slot });
    }
  }
  if (wanted.size > 0) throw new Error(`no flow found for slots ${[...wanted].join(", ")}`);
  return found;
}

t.test("chunked table", async t => {
  const dp = await loadedDataplane(t, "chunks");
  await dp.setService(spec);
  const table = serviceTable(spec.backends, spec.rejectWeight);
  const chunks = chunkCount(table.tableSize);
  t.equal(table.tableSize, 16381, "4 backends get the smallest table");
  t.ok(chunks > 2 && table.tableSize % CHUNK_SLOTS !== 0, `${chunks} chunks, the last one partial`);

  // The first and last slot of every chunk, the table's last slot, and one slot inside each chunk.
  const slots = [
    ...Array.from({ length: chunks }, (_, c) => [
      c * CHUNK_SLOTS,
      Math.min(table.tableSize, (c + 1) * CHUNK_SLOTS) - 1,
      c * CHUNK_SLOTS + 517,
    ]),
  ]
    .flat()
    .filter(s => s < table.tableSize);
  const flows = flowsFor(slots, table.tableSize, 17, spec.port);
  t.ok(
    flows.some(f => f.slot === table.tableSize - 1),
    "one flow lands on the table's last slot",
  );

  await t.test("every flow reaches the backend its slot names", async t => {
    const results = await run(
      dp,
      "blixt_xdp_ingress",
      flows.map(f => udpFrame({ src: f.src, dst: VIP, sport: f.sport, dport: spec.port })),
    );
    const wrong: string[] = [];
    results.forEach((r, i) => {
      const want = slotEntry(table, flows[i].slot);
      const out = parseFrame(r.dataOut);
      const got = `${out.ip.dst}:${out.udp?.dport}`;
      if (
        r.retval !== XDP_PASS ||
        want === undefined ||
        want === "reject" ||
        got !== `${want.ip}:${want.port}`
      ) {
        wrong.push(
          `slot ${flows[i].slot}: got ${got} (retval ${r.retval}), want ${JSON.stringify(want)}`,
        );
      }
    });
    t.same(wrong, [], `${flows.length} flows over ${chunks} chunks, each to its slot's backend`);
    t.ok(
      new Set(flows.map(f => slotEntry(table, f.slot))).size > 1,
      "the flows reach more than one backend",
    );
  });

  await t.test("a missing chunk or backend-list entry rejects new flows", async t => {
    const [{ tableId }] = (await dp.readMaps({ chunks: false })).actual.services;
    const last = chunks - 1;
    const [inLast, inFirst] = flowsFor(
      [last * CHUNK_SLOTS + 3, 5],
      table.tableSize,
      17,
      spec.port,
    ).sort((a, b) => b.slot - a.slot);
    await batch(
      [
        mapDeleteLine(dp.mapPin("blixt_mg_chunks"), hex(encodeTableKey({ tableId, index: last }))),
        mapDeleteLine(
          dp.mapPin("blixt_mg_backs"),
          hex(encodeTableKey({ tableId, index: table.slots[5] })),
        ),
      ],
      "deleting the last chunk and the backend-list entry slot 5 names",
    );
    const udp = (f: Flow) => udpFrame({ src: f.src, dst: VIP, sport: f.sport, dport: spec.port });
    const [lastOut, firstOut] = await run(dp, "blixt_xdp_ingress", [udp(inLast), udp(inFirst)]);
    t.equal(
      lastOut.retval,
      XDP_DROP,
      "a slot in the missing chunk: rejected (a datagram is dropped)",
    );
    t.equal(firstOut.retval, XDP_DROP, "a slot naming the missing backend-list entry: rejected");
    const stats = await dp.stats();
    t.equal(stats.services[0].rejects, 2, "both counted as rejects");
  });
});
