// SPDX-License-Identifier: Apache-2.0
// Capacity against real pinned maps (blixt.o loaded by bpftool, its table-chunk map made small
// on purpose through the agent's map-size setting): a DataplaneConfig that does not fit is
// refused alone, its node status names the full map and the chart value that raises it, every
// other config applies, what a refused config already had keeps serving, and it applies once
// there is room. Acknowledgements go to a recording function instead of a status patch (no
// Kubernetes here); the maps are read back.
import t from "tap";
import * as bpftool from "../../capabilities/dataplane/bpftool.js";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { Agent } from "../../capabilities/agent/loop.js";
import type { NodeAck } from "../../capabilities/agent/desired.js";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { dataplaneConfig, type ListenerIn } from "./fixtures.js";

const pinDir = `/sys/fs/bpf/blixt-test-agent-capacity-${process.pid}`;
const NODE = "node-a";
// A service of one backend takes 16 chunks (maglev.ts MAGLEV_MIN_SIZE, 1,024 slots a chunk),
// and 16 more are kept for rewriting the largest table: 56 chunks hold two such services.
const CHUNKS = 56;

const listener = (name: string, port: number, backend: string): ListenerIn => ({
  name,
  port,
  protocol: "TCP",
  backends: [{ weight: 1, endpoints: [[backend, 8080]] }],
});

function config(
  name: string,
  address: string,
  created: string,
  listeners: ListenerIn[],
  generation = 1,
): DataplaneConfig {
  const c = dataplaneConfig(name, address, listeners, { node: NODE, generation });
  c.metadata!.creationTimestamp = created as unknown as Date;
  return c;
}

const first = config("first", "198.18.210.1", "2026-01-01T00:00:01Z", [
  listener("a", 80, "10.2.0.1"),
]);
const second = config("second", "198.18.210.2", "2026-01-01T00:00:02Z", [
  listener("a", 80, "10.2.0.2"),
]);
const third = config("third", "198.18.210.3", "2026-01-01T00:00:03Z", [
  listener("a", 80, "10.2.0.3"),
]);

t.before(async () => {
  await new Dataplane({ pinDir }).unpin();
});
t.teardown(async () => {
  await new Dataplane({ pinDir }).unpin();
});

t.test("a config that does not fit is refused alone, and applies once there is room", async t => {
  const dp = new Dataplane({ pinDir, mapSizes: { tableChunks: CHUNKS } });
  await dp.load();
  t.equal((await dp.capacity()).tableChunks, CHUNKS, "the setting sized the map");
  t.equal(
    (await bpftool.pinnedMapShape(dp.mapPin("blixt_mg_chunks"))).maxEntries,
    CHUNKS,
    "as the kernel says",
  );

  const acks = new Map<string, NodeAck>();
  const agent = new Agent({
    nodeName: NODE,
    dataplane: dp,
    mode: "tc",
    resyncMs: 0,
    retry: { base: 50, max: 200 },
    acknowledge: async (c, ack) => void acks.set(c.metadata!.name!, ack),
  });
  agent.start();
  t.teardown(() => agent.stop());
  const vips = async () => [...new Set((await dp.listServices()).map(s => s.vip))].sort();

  // The newest of three, though its name sorts first among none: creation order decides.
  agent.replaceAll([third, second, first]);
  const result = await agent.converge();
  t.ok(result.ok, `the pass succeeds for the configs that fit (${result.error ?? "ok"})`);
  t.same(await vips(), ["198.18.210.1", "198.18.210.2"], "the two oldest are programmed");
  t.same(
    await dp.addresses(),
    ["198.18.210.1", "198.18.210.2"],
    "the refused one's address is not",
  );
  t.equal(acks.get("first")?.observedGeneration, 1);
  t.notOk(acks.get("first")?.message, "first applied, no message");
  t.equal(acks.get("second")?.observedGeneration, 1, "second applied");
  const refused = acks.get("third");
  t.equal(refused?.observedGeneration, 0, "third is not applied");
  t.match(
    refused?.message,
    /DataplaneConfig default\/third does not fit in the dataplane of node node-a: it needs 16 Maglev table chunks and 8 of 56 are free \(map blixt_mg_chunks, 16 kept for rewriting the largest table\); raise the chart value agent\.maps\.tableChunks/,
    "its status names the full map, what is free, and the value that raises it",
  );

  // Room again: the oldest goes, and the refused one applies.
  agent.replaceAll([second, third]);
  const after = await agent.converge();
  t.ok(after.ok);
  t.same(await vips(), ["198.18.210.2", "198.18.210.3"], "third is programmed once first is gone");
  t.equal(acks.get("third")?.observedGeneration, 1, "and acknowledged");
  t.notOk(acks.get("third")?.message, "without a message");

  // A config that runs grows past what is left: its new generation is refused, and what it
  // had keeps serving, unchanged.
  const grown = config(
    "third",
    "198.18.210.3",
    "2026-01-01T00:00:03Z",
    [listener("a", 80, "10.2.0.30"), listener("b", 81, "10.2.0.31")],
    2,
  );
  // As the watch brings it: with the status this node wrote for the generation it serves.
  grown.status = { nodes: [acks.get("third") as never] };
  agent.replaceAll([second, grown]);
  const refusedAgain = await agent.converge();
  t.ok(refusedAgain.ok);
  const services = await dp.listServices();
  t.same(
    services.filter(s => s.vip === "198.18.210.3").map(s => [s.port, s.backends.map(b => b.ip)]),
    [[80, ["10.2.0.3"]]],
    "third's first generation still serves, as it was",
  );
  t.equal(acks.get("third")?.observedGeneration, 1, "its status keeps the generation it serves");
  t.match(
    acks.get("third")?.message,
    /needs 32 Maglev table chunks/,
    "and says why not the new one",
  );
  t.equal(services.filter(s => s.vip === "198.18.210.2").length, 1, "second is untouched");
});
