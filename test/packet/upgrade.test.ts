// SPDX-License-Identifier: Apache-2.0
// An upgrade that grows an array map: the pinned map of the older, smaller shape is replaced, not
// adopted (bpftool would hand the new programs the old map as it is, and reads past its end
// would fail); maps that can serve are reused, their entries kept (a hash map of another size
// too: test/packet/conntrack.test.ts pins an 8-entry blixt_ct4_new).
import t from "tap";
import { execa } from "execa";
import { mkdir, rm } from "node:fs/promises";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { pinnedMapShape } from "../../capabilities/dataplane/bpftool.js";
import { REASONS } from "../../capabilities/dataplane/maps.js";

const pinDir = `/sys/fs/bpf/blixt-test-upgrade-${process.pid}`;

t.test("a pinned map of another shape is replaced at load, the others are reused", async t => {
  const dp = new Dataplane({ pinDir });
  t.teardown(() => dp.unpin());
  t.same(await dp.load(), [], "a first load replaces nothing");
  await dp.setService({
    vip: "198.19.250.1",
    port: 80,
    proto: "tcp",
    backends: [{ ip: "198.18.250.2", port: 8080, weight: 1 }],
    rejectWeight: 0,
  });

  // The verdict counters as an older blixt pinned them: fewer entries than REASONS has now.
  const old = dp.mapPin("blixt_reasons");
  await rm(old);
  await mkdir(pinDir, { recursive: true });
  await execa("bpftool", [
    "map",
    "create",
    old,
    "type",
    "percpu_array",
    "key",
    "4",
    "value",
    "8",
    "entries",
    String(REASONS.length - 8),
    "name",
    "blixt_reasons",
  ]);
  t.equal((await pinnedMapShape(old)).maxEntries, REASONS.length - 8, "the older shape is pinned");

  t.same(await dp.load(), ["blixt_reasons"], "the load names the map it replaced");
  t.equal((await pinnedMapShape(old)).maxEntries, REASONS.length, "the pin now has every verdict");
  const stats = await dp.stats();
  t.same(Object.keys(stats.reasons), [...REASONS], "every verdict can be read");
  t.same(
    (await dp.listServices()).map(s => [s.vip, s.port, s.backends.map(b => b.ip)]),
    [["198.19.250.1", 80, ["198.18.250.2"]]],
    "maps of the same shape were reused: the service is still there",
  );
});
