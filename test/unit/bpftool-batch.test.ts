// SPDX-License-Identifier: Apache-2.0
// bpftool.batch against the real bpftool and a real pinned map: a batch larger than one run's
// word budget is split into several runs, in order, with every output returned; a failing line
// stops it there (no later run starts) and the error names that line by its place in the whole
// batch.
import t from "tap";
import { execa } from "execa";
import { existsSync } from "node:fs";
import {
  batch,
  mapDeleteLine,
  mapLookup,
  mapUpdateLine,
} from "../../capabilities/dataplane/bpftool.js";

const pin = `/sys/fs/bpf/blixt-test-batch-${process.pid}`;
const skip =
  process.getuid?.() !== 0
    ? "needs root (bpftool map create)"
    : !existsSync("/sys/fs/bpf")
      ? "needs bpffs at /sys/fs/bpf"
      : undefined;

if (skip) {
  t.plan(0, skip);
} else {
  t.before(async () => {
    await execa("bpftool", [
      "map",
      "create",
      pin,
      "type",
      "hash",
      "key",
      "4",
      "value",
      "2048",
      "entries",
      "256",
      "name",
      "blixt_t_batch",
    ]);
  });
  t.teardown(() => execa("rm", ["-f", pin]));

  const key = (i: number) =>
    [i & 0xff, (i >> 8) & 0xff, 0, 0].map(b => `0x${b.toString(16).padStart(2, "0")}`);
  const value = (i: number) =>
    Array.from({ length: 2048 }, (_, j) => `0x${((i + j) & 0xff).toString(16).padStart(2, "0")}`);

  t.test("a batch of more words than one run takes is split into runs, in order", async t => {
    // 120 lines of ~2,060 words: about 250,000 words, more than two runs' budget.
    const lines = Array.from({ length: 120 }, (_, i) => mapUpdateLine(pin, key(i), value(i)));
    const outputs = await batch(lines, "writing test entries");
    t.equal(outputs.length, 120, "one output per line");
    for (const i of [0, 59, 119]) {
      const entry = await mapLookup(pin, key(i));
      t.equal(entry?.value?.[0], i & 0xff, `entry ${i} written`);
      t.equal(entry?.value?.[2047], (i + 2047) & 0xff, `entry ${i} written whole`);
    }
  });

  t.test(
    "a failing line stops the batch there and is named by its place in the whole batch",
    async t => {
      const lines = [
        ...Array.from({ length: 100 }, (_, i) => mapUpdateLine(pin, key(i), value(i + 1))),
        mapDeleteLine(pin, key(200)), // line 101: no such key
        ...Array.from({ length: 19 }, (_, i) => mapUpdateLine(pin, key(100 + i), value(7))),
      ];
      await t.rejects(batch(lines, "writing test entries"), /line 101 \(map delete/);
      t.equal(
        (await mapLookup(pin, key(99)))?.value?.[0],
        100 & 0xff,
        "lines before the failure were applied",
      );
      t.equal(
        (await mapLookup(pin, key(100)))?.value?.[0],
        100 & 0xff,
        "no line after it ran (entry 100 keeps its earlier value)",
      );
    },
  );
}
