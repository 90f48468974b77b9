// SPDX-License-Identifier: Apache-2.0
// How many bpftool commands an apply takes on real pinned maps: a table is two writes per
// backend (its backend-list entry and its member) plus one per chunk of CHUNK_SLOTS slots, not
// one per slot, and once for every service that shares it. The counts are the
// agent's own (the commands in the batch it ran), checked against what the layout implies.
import t from "tap";
import * as bpftool from "../../capabilities/dataplane/bpftool.js";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { Agent } from "../../capabilities/agent/loop.js";
import {
  CHUNK_SLOTS,
  chunkCount,
  decodeTableChunk,
  decodeTableKey,
  encodeTableChunk,
  encodeTableKey,
  hex,
} from "../../capabilities/dataplane/maps.js";
import { MAGLEV_MAX_SIZE, MAGLEV_MIN_SIZE } from "../../capabilities/dataplane/maglev.js";
import { dataplaneConfig } from "./fixtures.js";

const pinDir = `/sys/fs/bpf/blixt-test-agent-lines-${process.pid}`;
const endpoints = (n: number, first = 0): [string, number][] =>
  Array.from({ length: n }, (_, i) => [`10.70.${(first + i) >> 8}.${(first + i) & 255}`, 8080]);
const config = (eps: [string, number][], generation: number) =>
  dataplaneConfig(
    "lines",
    "198.18.210.1",
    [{ name: "tcp", port: 80, protocol: "TCP", backends: [{ weight: 1, endpoints: eps }] }],
    { node: "node-a", generation },
  );

t.test("apply line counts", async t => {
  const dp = new Dataplane({ pinDir });
  t.teardown(() => dp.unpin());
  await dp.load();
  const agent = new Agent({
    nodeName: "node-a",
    dataplane: dp,
    mode: "tc",
    resyncMs: 0,
    acknowledge: async () => {},
  });
  t.teardown(() => agent.stop());
  const tables = async () =>
    new Set(
      (await bpftool.mapDump(dp.mapPin("blixt_mg_chunks"))).map(e => decodeTableKey(e.key).tableId),
    ).size;

  await t.test("a 16381-slot table of 4 backends", async t => {
    const chunks = chunkCount(MAGLEV_MIN_SIZE);
    t.equal(chunks, 16);
    agent.replaceAll([config(endpoints(4), 1)]);
    const create = await agent.converge();
    t.ok(create.ok, create.error ?? "applied");
    // the epoch counter + 4 backend-list entries + 4 members + 16 chunks + counters reset + the
    // switch + the service's epoch + the address
    t.equal(
      create.commands,
      1 + 4 + 4 + chunks + 1 + 1 + 1 + 1,
      `a new service: ${create.commands} commands`,
    );

    agent.replaceAll([config([...endpoints(3), ...endpoints(1, 100)], 2)]);
    const update = await agent.converge();
    t.ok(update.ok, update.error ?? "applied");
    // the epoch counter, the new table (4 entries, 4 members, 16 chunks) and the switch, then the
    // old table's 4 members, 4 entries and 16 chunks, and the service's epoch (a backend left)
    t.equal(
      update.commands,
      1 + 4 + 4 + chunks + 1 + 4 + 4 + chunks + 1,
      `one backend replaced: ${update.commands} commands`,
    );
    t.equal(await tables(), 1, "one table left in the maps");
    t.equal((await agent.converge()).changes, 0, "and the maps read back as converged");
  });

  await t.test("a 65521-slot table of 1000 backends", async t => {
    const chunks = chunkCount(MAGLEV_MAX_SIZE);
    t.equal(chunks, 64);
    agent.replaceAll([config(endpoints(1000), 3)]);
    const result = await agent.converge();
    t.ok(result.ok, result.error ?? "applied");
    // 1000 entries + 1000 members + 64 chunks + the switch, then the old table's 4 members, 4
    // entries and 16 chunks; every old backend is still listed, so the service keeps its epoch
    // (no epoch line, no counter line)
    t.equal(result.commands, 1000 + 1000 + chunks + 1 + 4 + 4 + 16, `${result.commands} commands`);
    t.equal(await tables(), 1, "one table left in the maps");
    t.equal((await agent.converge()).changes, 0, "and the maps read back as converged");
  });
});

t.test(
  "a pass for a watch event does not read back tables it leaves alone; an explicit converge does",
  async t => {
    const dp = new Dataplane({ pinDir: `${pinDir}-check` });
    t.teardown(() => dp.unpin());
    await dp.load();
    const agent = new Agent({
      nodeName: "node-a",
      dataplane: dp,
      mode: "tc",
      resyncMs: 0,
      acknowledge: async () => {},
    });
    t.teardown(() => agent.stop());
    agent.replaceAll([config(endpoints(4), 1)]);
    t.ok((await agent.converge()).ok);
    agent.start();

    // Chunk 0 of the live table, damaged behind the agent's back: every slot names backend 1.
    const live = (await dp.readMaps({ chunks: false })).actual.services[0];
    const chunk0 = hex(encodeTableKey({ tableId: live.tableId, index: 0 }));
    await bpftool.batch(
      [
        bpftool.mapUpdateLine(
          dp.mapPin("blixt_mg_chunks"),
          chunk0,
          hex(encodeTableChunk(new Array(CHUNK_SLOTS).fill(1))),
        ),
      ],
      "damaging a chunk",
    );
    const damaged = async () =>
      decodeTableChunk(
        (await bpftool.mapLookup(dp.mapPin("blixt_mg_chunks"), chunk0))!.value!,
      ).every(s => s === 1);

    // A watch event: another Gateway appears, and the agent's own scheduling runs the pass.
    agent.observe(
      dataplaneConfig(
        "other",
        "198.18.210.2",
        [
          {
            name: "tcp",
            port: 80,
            protocol: "TCP",
            backends: [{ weight: 1, endpoints: [["10.70.9.1", 8080]] }],
          },
        ],
        { node: "node-a" },
      ),
    );
    agent.schedule();
    let services = 1;
    for (let i = 0; i < 100 && services < 2; i++) {
      await new Promise(r => setTimeout(r, 50));
      services = (await dp.readMaps({ chunks: false })).actual.services.length;
    }
    t.equal(services, 2, "the event's pass programmed the new Gateway");
    await new Promise(r => setTimeout(r, 200));
    t.ok(
      await damaged(),
      "and left the other table as it found it: it read back sizes and backend lists, not chunks",
    );

    const result = await agent.converge();
    t.ok(
      result.ok && result.changes === 1,
      `an explicit converge reads chunks back and rewrites the damaged table (${result.changes} change)`,
    );
    t.notOk(
      await bpftool.mapLookup(dp.mapPin("blixt_mg_chunks"), chunk0),
      "the damaged table is gone, replaced whole",
    );
  },
);

t.test(
  "fifty routes to one backend set: a change writes the table and its members once, then a switch per route",
  async t => {
    const dp = new Dataplane({ pinDir: `${pinDir}-shared` });
    t.teardown(() => dp.unpin());
    await dp.load();
    const agent = new Agent({
      nodeName: "node-a",
      dataplane: dp,
      mode: "tc",
      resyncMs: 0,
      acknowledge: async () => {},
    });
    t.teardown(() => agent.stop());
    const routes = 50;
    const shared = (eps: [string, number][], generation: number) =>
      dataplaneConfig(
        "shared",
        "198.18.210.2",
        Array.from({ length: routes }, (_, i) => ({
          name: `l${i}`,
          port: 1000 + i,
          protocol: "TCP" as const,
          backends: [{ weight: 1, endpoints: eps }],
        })),
        { node: "node-a", generation },
      );
    const members = async () => (await bpftool.mapDump(dp.mapPin("blixt_backends"))).length;
    agent.replaceAll([shared(endpoints(2), 1)]);
    t.ok((await agent.converge()).ok);
    t.equal(await members(), 2, "fifty services, one table: its two members once");

    // A pod added: the new table (3 entries, 3 members, 16 chunks), a switch per route, then the
    // old table (2 members, 2 entries, 16 chunks); no backend left, so no epoch moves.
    agent.replaceAll([shared(endpoints(3), 2)]);
    const grown = await agent.converge();
    t.ok(grown.ok, grown.error ?? "applied");
    const chunks = chunkCount(MAGLEV_MIN_SIZE);
    t.equal(grown.commands, 3 + 3 + chunks + routes + 2 + 2 + chunks, `${grown.commands} commands`);
    t.equal(await members(), 3);

    // A pod gone: the same, and a new epoch per route (and the counter first).
    agent.replaceAll([shared(endpoints(2), 3)]);
    const shrunk = await agent.converge();
    t.ok(shrunk.ok, shrunk.error ?? "applied");
    t.equal(
      shrunk.commands,
      1 + 2 + 2 + chunks + routes * 2 + 3 + 3 + chunks,
      `${shrunk.commands} commands`,
    );
    t.equal(await members(), 2);
    t.equal((await agent.converge()).changes, 0, "and the maps read back as converged");
  },
);
