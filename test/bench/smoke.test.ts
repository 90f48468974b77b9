// SPDX-License-Identifier: Apache-2.0
// The benchmark still works: `bench/run.sh --smoke` measures every path in the netns lab and
// writes a report with a non-zero figure in each path's row, the charts, and the several-nodes
// report (NODES.md) next to it with a figure for each of its paths, and leaves nothing behind
// (namespaces, pins, proxies). It asserts that figures exist, never how fast they are.
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { execa } from "execa";
import { CHARTS, PATHS, UDP_PATHS } from "../../bench/report.js";
import { NODE_PATHS } from "../../bench/nodes-report.js";

const repo = fileURLToPath(new URL("../..", import.meta.url));

/** The table rows under a "### title" heading, as cells. */
function rows(report: string, title: string): string[][] {
  const start = report.indexOf(`### ${title}`);
  if (start < 0) return [];
  const section = report.slice(start).split("\n").slice(1);
  const end = section.findIndex(l => l.startsWith("#"));
  return section
    .slice(0, end < 0 ? undefined : end)
    .filter(l => l.startsWith("| ") && !l.startsWith("| ---"))
    .slice(1)
    .map(l =>
      l
        .split("|")
        .slice(1, -1)
        .map(c => c.trim()),
    );
}

/** The leading number of a cell like "8.7 Gbit/s (7.8–9.2)" or "1,234 conn/s (…)". */
const figure = (cell: string | undefined) =>
  Number(/^-?[\d,]*\.?\d+/.exec(cell ?? "")?.[0].replace(/,/g, "") ?? NaN);

// Made in t.before, so every subtest below is declared at once and runs after the benchmark.
let dir = "";
let report = "";
let nodes = "";
// What another run (killed before its clean-up) left: this run answers only for its own.
const benchNamespaces = async () =>
  (await execa("ip", ["netns", "list"])).stdout
    .split("\n")
    .map(line => line.split(" ")[0])
    .filter(name => name.startsWith("blixt-bench-"));
const benchPins = async () =>
  (await readdir("/sys/fs/bpf").catch(() => [] as string[])).filter(
    p => p === "blixt-lab-bench" || p.startsWith("blixt-bench-"),
  );
let before = { namespaces: [] as string[], pins: [] as string[] };
t.before(async () => {
  before = { namespaces: await benchNamespaces(), pins: await benchPins() };
  dir = await mkdtemp(join(tmpdir(), "blixt-bench-smoke-"));
  const out = join(dir, "REPORT.md");
  const run = await execa("bench/run.sh", ["--smoke", "--out", out], {
    cwd: repo,
    reject: false,
    timeout: 360_000,
    all: true,
  });
  t.equal(
    run.exitCode,
    0,
    `bench/run.sh --smoke exits 0${run.exitCode === 0 ? "" : `; it printed:\n${run.all?.slice(-3000)}`}`,
  );
  report = await readFile(out, "utf8").catch(() => "");
  nodes = await readFile(join(dir, "NODES.md"), "utf8").catch(() => "");
});
t.teardown(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));

const tables: [string, string[]][] = [
  ["TCP throughput, one stream", PATHS],
  ["TCP throughput, four streams", PATHS],
  ["TCP connection rate", PATHS],
  ["UDP packet rate", UDP_PATHS],
];
for (const [title, paths] of tables) {
  t.test(title, async t => {
    const byPath = new Map(rows(report, title).map(r => [r[0], r]));
    for (const path of paths)
      t.ok(
        figure(byPath.get(path)?.[1]) > 0,
        `${path}: a non-zero figure (${byPath.get(path)?.[1] ?? "no row"})`,
      );
  });
}

t.test("round-trip latency: p50 and p99 per path and protocol", async t => {
  const all = rows(report, "Round-trip latency");
  for (const [proto, paths] of [
    ["TCP", PATHS],
    ["UDP", UDP_PATHS],
  ] as const) {
    for (const path of paths) {
      const row = all.find(r => r[0] === path && r[1] === proto);
      t.ok(
        figure(row?.[2]) > 0 && figure(row?.[3]) >= figure(row?.[2]),
        `${path} ${proto}: p50 > 0 and p99 ≥ p50 (${row?.slice(2, 4).join(" / ") ?? "no row"})`,
      );
    }
  }
});

t.test("CPU cost per path", async t => {
  const byPath = new Map(rows(report, "CPU cost").map(r => [r[0], r]));
  for (const path of PATHS)
    t.ok(
      figure(byPath.get(path)?.[1]) > 0,
      `${path}: CPU per GB (${byPath.get(path)?.[1] ?? "no row"})`,
    );
  for (const path of UDP_PATHS)
    t.ok(
      figure(byPath.get(path)?.[4]) > 0,
      `${path}: CPU per million packets (${byPath.get(path)?.[4] ?? "no row"})`,
    );
});

t.test("node agent apply time and ns/packet", async t => {
  const apply = rows(report, "Node agent apply time");
  t.ok(apply.length >= 2, "a row per table size");
  for (const r of apply)
    t.ok(figure(r[2]) > 0, `${r[0]} backends: the first apply took a measured time (${r[2]})`);
  const prog = rows(report, "ns/packet of the ingress program");
  t.ok(
    prog.length >= 6 && prog.every(r => figure(r[1]) > 0),
    "every BPF_PROG_TEST_RUN case has a figure",
  );
});

t.test("node agent apply, many routes: one backend set beside a set each", async t => {
  const fanout = rows(report, "Node agent apply: many routes, one backend set");
  for (const sets of ["one", "one each"])
    for (const pass of ["create", "replace", "idle"]) {
      const row = fanout.find(r => r[0] === `100, ${sets}` && r[1] === pass);
      t.ok(figure(row?.[2]) > 0, `100 listeners, ${sets}, ${pass}: ${row?.[2] ?? "no row"}`);
    }
  t.match(report, /100 listeners: a backend set each costs [\d.]+× one shared set/);
});

t.test("goals, IPVS and charts", async t => {
  t.match(report, /IPVS is not measured/, "the report says IPVS is unavailable");
  t.match(report, /≤ 100 ns\/packet/, "the goals are listed");
  for (const chart of Object.values(CHARTS)) {
    t.match(report, `](${chart})`, `the report links ${chart}`);
    t.match(
      await readFile(join(dir, chart), "utf8").catch(() => ""),
      /^<svg [^]*<\/svg>\s*$/,
      `${chart} is an SVG next to the report`,
    );
  }
});

t.test(
  "several nodes: a figure per path, and the encapsulating and decapsulating runs",
  async t => {
    for (const title of ["TCP throughput, one stream", "TCP connection rate", "UDP packet rate"]) {
      const byPath = new Map(rows(nodes, title).map(r => [r[0], r]));
      for (const path of NODE_PATHS)
        t.ok(
          figure(byPath.get(path)?.[1]) > 0,
          `${title}, ${path}: a non-zero figure (${byPath.get(path)?.[1] ?? "no row"})`,
        );
    }
    const prog = rows(nodes, "ns/packet");
    t.ok(
      prog.length >= 7 && prog.every(r => figure(r[1]) > 0),
      "every BPF_PROG_TEST_RUN case of NODES.md has a figure",
    );
    t.match(report, "](NODES.md)", "REPORT.md links NODES.md");
  },
);

t.test("nothing is left behind", async t => {
  if (before.namespaces.length + before.pins.length > 0)
    t.comment(
      `left by an earlier run, not counted: ${[...before.namespaces, ...before.pins].join(", ")}`,
    );
  t.same(
    (await benchNamespaces()).filter(name => !before.namespaces.includes(name)),
    [],
    "no lab namespace is left (with them go their links, nft table and processes)",
  );
  t.same(
    (await benchPins()).filter(pin => !before.pins.includes(pin)),
    [],
    "no pins are left",
  );
  const procs = (await execa("ps", ["-eo", "args"])).stdout.split("\n");
  t.same(
    procs.filter(p => /(haproxy|nginx).*blixt-bench-/.test(p)),
    [],
    "no proxy started by the benchmark still runs",
  );
});
