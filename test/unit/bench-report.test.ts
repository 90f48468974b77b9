// SPDX-License-Identifier: Apache-2.0
// bench/REPORT.md's explanations come from the run: rendered from a constructed figures object,
// every explanation quotes the rows it cites (change a row and the sentence changes), and every
// number in the report's prose is one of its table figures, a ratio or difference of two of them,
// or one of the run's settings (a scan that finds a figure no run measured). The committed report
// is checked the same way, and is exactly what the renderer writes from the figures it carries.
import { readFile } from "node:fs/promises";
import t from "tap";
import {
  CARRIED_BLOCKS,
  E2E_BEGIN,
  E2E_END,
  FIGURES_BEGIN,
  GOALS,
  METHOD,
  NOT_MEASURED,
  e2eBlock,
  embeddedFigures,
  latencySeconds,
  oneLookupLabel,
  renderReport,
  type ByPath,
  type Results,
  type Series,
} from "../../bench/report.js";

const s = (...samples: number[]): Series => ({ samples });

/** A run's figures, made up, each with digits of its own so that no planted number is derivable by chance. */
function figures(): Results {
  const byPath = (
    direct: number[],
    xdp: number[],
    tc: number[],
    nft: number[],
    haproxy: number[] | undefined,
    nginx: number[],
  ): ByPath => ({
    direct: s(...direct),
    "blixt-xdp": s(...xdp),
    "blixt-tc": s(...tc),
    nftables: s(...nft),
    ...(haproxy ? { haproxy: s(...haproxy) } : {}),
    nginx: s(...nginx),
  });
  return {
    settings: {
      smoke: false,
      repeats: 3,
      seconds: 3,
      connections: 24,
      progRuns: 700,
      latencySamples: 1000,
      applySizes: [10, 1000],
    },
    machine: [
      "Test OS, kernel 6.1.0-test, host lab",
      "2 × Test CPU, 8 GiB",
      "load average when the run started: 0.3, 0.6, 0.8",
      "run at 2026-12-01T00:00:00.000Z",
    ],
    nsPerPacket: {
      "xdp floor: an IPv6 frame, passed at once (repeat 35000)": s(31.3, 33.7, 36.1),
      [oneLookupLabel("xdp", 35000)]: s(57.9, 61.3, 66.7),
      "xdp conntrack hit (repeat 35000, steady state)": s(121.7, 127.9, 139.3),
      "xdp new flow (one run per packet)": s(2713, 2861, 3011),
      "xdp conntrack hit (one run per packet)": s(503.3, 537.1, 577.9),
      "tc floor: an IPv6 frame, passed at once (repeat 35000)": s(47.3, 51.9, 63.1),
      [oneLookupLabel("tc", 35000)]: s(77.3, 83.9, 91.7),
      "tc conntrack hit (repeat 35000, steady state)": s(287.3, 297.1, 331.9),
      "tc new flow (one run per packet)": s(3017, 3187, 3313),
      "tc conntrack hit (one run per packet)": s(701.3, 733.9, 811.7),
    },
    tcp1: byPath(
      [8.3, 9.7, 10.9],
      [1.7, 2.3, 2.9],
      [6.1, 7.3, 7.9],
      [6.7, 7.1, 8.1],
      [3.7, 4.3, 5.3],
      [4.1, 4.7, 4.9],
    ),
    tcp4: byPath(
      [13.7, 17.3, 19.9],
      [1.3, 1.9, 2.1],
      [11.3, 15.7, 22.9],
      [9.7, 12.3, 17.9],
      [6.1, 6.7, 7.3],
      [5.3, 6.9, 7.9],
    ),
    connectionRate: byPath(
      [9113, 9871, 10313],
      [7313, 8117, 9311],
      [8311, 8917, 9713],
      [7117, 7613, 8911],
      [5113, 5431, 6011],
      [5311, 6131, 6713],
    ),
    udpRate: byPath(
      [117.3, 131.7, 143.9],
      [87.1, 93.7, 109.3],
      [103.7, 119.3, 139.1],
      [101.3, 107.9, 133.7],
      undefined,
      [31.3, 33.1, 37.9],
    ),
    tcpP50: byPath(
      [157.3, 187.1, 391.7],
      [177.9, 293.3, 473.1],
      [159.7, 191.3, 407.9],
      [163.9, 201.7, 431.3],
      [207.1, 263.9, 481.3],
      [185.3, 203.9, 207.7],
    ),
    tcpP99: byPath(
      [317.3, 943.7, 1553.1],
      [521.3, 1409.7, 1767.1],
      [631.7, 897.3, 2071.3],
      [443.9, 1163.3, 1381.7],
      [811.3, 1403.9, 2191.3],
      [371.9, 683.3, 733.7],
    ),
    udpP50: byPath(
      [163.7, 377.9, 429.1],
      [167.3, 183.1, 421.9],
      [157.1, 203.3, 453.7],
      [159.3, 203.9, 471.7],
      undefined,
      [183.3, 201.1, 211.9],
    ),
    udpP99: byPath(
      [451.3, 1277.1, 1703.9],
      [651.7, 1203.3, 1273.9],
      [337.9, 1123.7, 1433.3],
      [1213.3, 1393.7, 2531.9],
      undefined,
      [481.1, 843.7, 1163.9],
    ),
    cpuPerGB: byPath(
      [1.13, 1.21, 1.37],
      [4.13, 4.71, 5.53],
      [1.11, 1.29, 1.31],
      [1.19, 1.33, 1.37],
      [2.31, 2.71, 2.83],
      [2.47, 2.53, 2.71],
    ),
    proxyCpuPerGB: byPath(
      [0, 0, 0],
      [0, 0, 0],
      [0, 0, 0],
      [0, 0, 0],
      [1.41, 1.47, 1.53],
      [1.37, 1.43, 1.49],
    ),
    cpuPerMpkt: byPath(
      [11.3, 12.1, 12.9],
      [13.7, 15.3, 15.9],
      [10.9, 12.7, 13.9],
      [11.3, 14.3, 14.9],
      undefined,
      [47.9, 51.3, 53.9],
    ),
    proxyCpuPerMpkt: byPath(
      [0, 0, 0],
      [0, 0, 0],
      [0, 0, 0],
      [0, 0, 0],
      undefined,
      [25.3, 26.9, 27.7],
    ),
    apply: {
      10: { create: s(0.0673, 0.0847, 0.1011), update: s(0.0859, 0.1053, 0.1297), commands: 41 },
      1000: {
        create: s(0.2213, 0.2557, 0.2719),
        update: s(0.3331, 0.3457, 0.3853),
        commands: 2069,
      },
    },
  };
}

// ---- reading a report back --------------------------------------------------------------------------

/** A number as printed: its value and the half of its last digit (what rounding may have moved it by). */
interface Num {
  text: string;
  value: number;
  half: number;
}

/** Numbers in text: "1,241", "-47.3", "0.93" (in "0.93×"); not the digits of a word such as IPv4, p99, iperf3. */
const NUMBER = /(?<![\p{L}\p{N}_./-])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\p{L}\p{N}_])/gu;
function numbers(text: string): Num[] {
  return [...text.matchAll(NUMBER)].map(m => {
    const decimals = m[0].split(".")[1]?.length ?? 0;
    return { text: m[0], value: Number(m[0].replace(/,/g, "")), half: 0.5 * 10 ** -decimals };
  });
}

interface Table {
  heading: string;
  header: string[];
  rows: string[][];
}

interface Parsed {
  tables: Table[];
  /** prose lines (headings included) with the section they are in */
  prose: { line: string; section: string }[];
  machine: string[];
}

/** The report, less the carried e2e block and the figures comment: its tables, its Machine lines and its prose. */
function parse(report: string): Parsed {
  let text = report;
  for (const [begin, end] of CARRIED_BLOCKS) {
    const at = text.indexOf(begin);
    if (at >= 0) text = text.slice(0, at) + text.slice(text.indexOf(end) + end.length);
  }
  const figures = text.indexOf(FIGURES_BEGIN);
  if (figures >= 0) text = text.slice(0, figures) + text.slice(text.indexOf("-->", figures) + 3);
  const out: Parsed = { tables: [], prose: [], machine: [] };
  let section = "";
  let heading = "";
  let table: Table | undefined;
  for (const line of text.split("\n")) {
    if (line.startsWith("|")) {
      const cells = line
        .split("|")
        .slice(1, -1)
        .map(c => c.trim());
      if (!table) out.tables.push((table = { heading, header: cells, rows: [] }));
      else if (!cells.every(c => /^-+$/.test(c))) table.rows.push(cells);
      continue;
    }
    table = undefined;
    if (line.startsWith("## ")) section = line.slice(3);
    if (line.startsWith("### ")) heading = line.slice(4);
    if (section === "Machine" && line.startsWith("- ")) out.machine.push(line);
    else if (line.trim()) out.prose.push({ line, section });
  }
  return out;
}

const CITATION = /\[([^[\]›]+) › ([^[\]›]+?)(?: › ([^[\]›]+))?\]/g;

/** The cell a citation names: the table whose heading starts with its title, the row, the column (default: the first figure). */
function cited(p: Parsed, title: string, row: string, column?: string): string | undefined {
  const table = p.tables.find(tb => tb.heading.startsWith(title));
  const r = table?.rows.find(cells => cells[0] === row || `${cells[0]} ${cells[1]}` === row);
  if (!table || !r) return undefined;
  const index = column
    ? table.header.findIndex(h => h.startsWith(column))
    : table.header[1] === "proto"
      ? 2
      : 1;
  return index < 0 ? undefined : r[index];
}

/** Every citation in the prose names a row of this report, and a figure written just before it is that row's. */
function citationProblems(report: string): string[] {
  const p = parse(report);
  const problems: string[] = [];
  for (const { line } of p.prose) {
    for (const m of line.matchAll(CITATION)) {
      const cell = cited(p, m[1], m[2], m[3]);
      if (cell === undefined) {
        problems.push(`${m[0]} names no row of this report`);
        continue;
      }
      const before = /(-?[\d,]+(?:\.\d+)?) \S+ $/.exec(line.slice(0, m.index));
      if (before && before[1] !== numbers(cell)[0]?.text)
        problems.push(`${before[1]} before ${m[0]}, whose figure is ${cell}`);
    }
  }
  return problems;
}

type Interval = [number, number];
const interval = (n: Num): Interval => [n.value - n.half, n.value + n.half];

/**
 * The numbers in the prose that are none of: a number printed in the report's tables or Machine
 * lines (the same value), a setting of the run, how the bench is set up (METHOD), a goal's threshold
 * (in the Goals section only), or, from the rows the same line cites, the difference or ratio of two of their
 * figures or the spread (max − min, max / min) of one. Rounding is allowed for: a printed figure
 * stands for every value it rounds from.
 */
function unsourced(report: string, r: Results): string[] {
  const p = parse(report);
  const exact: Interval[] = [
    ...Object.values(r.settings).flatMap(v =>
      Array.isArray(v) ? v : typeof v === "number" ? [v] : [],
    ),
    latencySeconds(r.settings),
    ...Object.values(METHOD),
  ].map(x => [x, x]);
  const goals: Interval[] = Object.values(GOALS).map(x => [x, x]);
  // A figure quoted as printed: the same value exactly, not anything that rounds near it.
  const printed: Interval[] = [
    ...exact,
    // (less the run's timestamp, whose pieces are no figures)
    ...p.machine.flatMap(l =>
      numbers(l.replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, "")).map((n): Interval => [n.value, n.value]),
    ),
    ...p.tables.flatMap(table =>
      table.rows.flatMap(row =>
        row.flatMap(c => numbers(c).map((n): Interval => [n.value, n.value])),
      ),
    ),
  ];
  const found: string[] = [];
  for (const { line, section } of p.prose) {
    const derived: Interval[] = [];
    const cells = [...line.matchAll(CITATION)]
      .map(m => numbers(cited(p, m[1], m[2], m[3]) ?? ""))
      .filter(ns => ns.length > 0);
    for (const ns of cells.filter(c => c.length === 3)) {
      const [[minLo, minHi], [maxLo, maxHi]] = [interval(ns[1]), interval(ns[2])];
      derived.push([maxLo - minHi, maxHi - minLo]);
      if (minLo > 0) derived.push([maxLo / minHi, maxHi / minLo]);
    }
    for (const [aLo, aHi] of cells.map(c => interval(c[0]))) {
      for (const [bLo, bHi] of cells.map(c => interval(c[0]))) {
        derived.push([aLo - bHi, aHi - bLo]);
        if (aLo > 0 && bLo > 0) derived.push([aLo / bHi, aHi / bLo]);
      }
    }
    const allowed = [...printed, ...derived, ...(section === "Goals" ? goals : [])];
    for (const n of numbers(line.replace(CITATION, ""))) {
      const [lo, hi] = interval(n);
      if (!allowed.some(([a, b]) => (a === b ? a === n.value : a < hi && b > lo)))
        found.push(`${n.text} in "${line.slice(0, 100)}…"`);
    }
  }
  return found;
}

const goalLine = (report: string, start: string): string =>
  report.split("\n").find(l => l.includes(start)) ?? "";
const noteLine = (report: string, start: string): string =>
  report.split("\n").find(l => l.startsWith(`- ${start}`)) ?? "";

// ---- the tests ---------------------------------------------------------------------------------------

t.test(
  "every number in the prose comes from the run, every citation names a row and quotes its figure",
  async t => {
    const r = figures();
    const report = renderReport(r);
    t.same(unsourced(report, r), [], "no number without a source");
    t.same(citationProblems(report), [], "citations resolve");
    t.ok([...report.matchAll(CITATION)].length >= 20, "the explanations cite rows");
  },
);

t.test("the scan finds a figure no run measured", async t => {
  const r = figures();
  const report = renderReport(r);
  const planted = [
    ["on this VM one hash lookup alone costs some 40–50 ns", ["40", "50"]],
    [
      "waking one costs on the order of 100 µs: a p50 near 50 µs means busy, near 150–200 µs quiet",
      ["100", "50", "150", "200"],
    ],
    ["the key is the 16-byte five-tuple and the tick is 6 ms", ["16", "6"]],
  ] as const;
  for (const [sentence, tokens] of planted) {
    const withIt = report.replace(
      "## Reading these figures\n",
      `## Reading these figures\n\n- ${sentence}.\n`,
    );
    const flagged = unsourced(withIt, r).filter(f => f.includes(sentence.slice(0, 30)));
    t.same(
      flagged.map(f => f.split(" ")[0]),
      tokens,
      `"${sentence}": ${tokens.join(", ")} flagged`,
    );
  }
  // A goal's threshold is a source in the Goals section only.
  const outside = report.replace(
    "## Reading these figures\n",
    "## Reading these figures\n\n- a bound of 20 µs.\n",
  );
  t.equal(unsourced(outside, r).length, 1, "a goal's threshold outside the goals is flagged");
  // A citation of a row the report does not have, or with another figure than the row's.
  t.match(
    citationProblems(
      report.replace("[TCP connection rate › direct]", "[TCP connection rate › ipvs]"),
    ).join("\n"),
    /names no row/,
  );
  t.match(
    citationProblems(
      report.replace(/33\.7 ns \[ns\/packet › xdp floor/, "34.7 ns [ns/packet › xdp floor"),
    ).join("\n"),
    /34\.7 before/,
  );
});

t.test(
  "the conntrack-hit goal: the hit, floor and one-lookup rows, and their differences",
  async t => {
    const r = figures();
    const line = goalLine(renderReport(r), "ns/packet on a conntrack hit");
    t.match(line, /^- \*\*not met\*\*/, "127.9 ns is over the goal");
    for (const quoted of [
      "127.9 ns [ns/packet › xdp conntrack hit",
      "33.7 ns [ns/packet › xdp floor",
      "61.3 ns [ns/packet › xdp one hash lookup",
      "is 94.2 ns",
      "27.6 ns above the floor",
      "the other 66.6 ns",
    ]) {
      t.ok(line.includes(quoted), `quotes "${quoted}"`);
    }
    t.notMatch(line, /40–50|some \d/, "no fixed figure");

    const floorKey = Object.keys(r.nsPerPacket).find(k => k.startsWith("xdp floor"))!;
    r.nsPerPacket[floorKey] = s(21.1, 22.9, 25.3);
    const changed = goalLine(renderReport(r), "ns/packet on a conntrack hit");
    for (const quoted of [
      "22.9 ns [ns/packet › xdp floor",
      "is 105.0 ns",
      "38.4 ns above the floor",
    ])
      t.ok(changed.includes(quoted), `after the floor row changed: "${quoted}"`);
    t.notOk(changed.includes("94.2"), "the old difference is gone");

    delete r.nsPerPacket[oneLookupLabel("xdp", 35000)];
    const without = renderReport(r);
    t.ok(
      goalLine(without, "ns/packet on a conntrack hit").includes(
        `what one hash lookup costs is ${NOT_MEASURED}`,
      ),
      "a missing row is said to be missing",
    );
    t.ok(
      without.includes(`| xdp one hash lookup | ${NOT_MEASURED} |`),
      "and shown as such in its table",
    );
    t.same(unsourced(without, r), []);
  },
);

t.test("the throughput goal quotes nftables' row and the CPU rows", async t => {
  const r = figures();
  const line = goalLine(renderReport(r), "direct TCP throughput");
  t.match(line, /^- \*\*not met\*\*: blixt ≥ 0\.9× direct TCP throughput: blixt-tc 0\.75×/);
  for (const quoted of [
    "7.1 Gbit/s [TCP throughput, one stream › nftables], 0.73× direct",
    "0.120 s [CPU cost › nftables › added vs direct]",
    "0.080 s [CPU cost › blixt-tc › added vs direct]",
    "297.1 ns [ns/packet › tc conntrack hit",
  ]) {
    t.ok(line.includes(quoted), `quotes "${quoted}"`);
  }
  r.tcp1.nftables = s(5.9, 6.3, 6.5);
  t.ok(
    goalLine(renderReport(r), "direct TCP throughput").includes(
      "6.3 Gbit/s [TCP throughput, one stream › nftables], 0.65× direct",
    ),
    "follows the nftables row",
  );
  // Overlapping ranges: the sentence says so, with both ranges.
  r.tcp1["blixt-tc"] = s(6.1, 7.3, 8.5);
  t.ok(
    goalLine(renderReport(r), "direct TCP throughput").includes(
      "the ranges overlap (blixt-tc [TCP throughput, one stream › blixt-tc] 6.1–8.5, direct [TCP throughput, one stream › direct] 8.3–10.9 Gbit/s",
    ),
  );
});

t.test("the rate goals compare with direct routing's row", async t => {
  const r = figures();
  const line = goalLine(renderReport(r), "2× haproxy connection rate");
  for (const quoted of [
    "9,871 conn/s [TCP connection rate › direct], 1.82× haproxy's 5,431 conn/s [TCP connection rate › haproxy]",
    "fall short of 2× haproxy",
    "between 5,431 and 9,871 conn/s",
  ]) {
    t.ok(line.includes(quoted), `quotes "${quoted}"`);
  }
  r.connectionRate.direct = s(11311, 11917, 12113);
  const changed = goalLine(renderReport(r), "2× haproxy connection rate");
  t.ok(
    changed.includes("11,917 conn/s [TCP connection rate › direct], 2.19× haproxy's"),
    "follows the direct row",
  );
  t.ok(
    changed.includes("and blixt-tc reaches 0.75× direct"),
    "direct itself clears 2×: the shortfall is blixt's, said as a ratio",
  );
});

t.test("the latency goals quote direct routing's spread", async t => {
  const r = figures();
  const line = goalLine(renderReport(r), "(TCP):");
  t.match(
    line,
    /^- \*\*inconclusive\*\*: p99 added latency vs direct < 20 µs \(TCP\): blixt-tc -46\.4 µs/,
  );
  t.ok(
    line.includes(
      "[Round-trip latency › direct TCP › p99] spans 1,236 µs over the runs (317.3–1,553 µs), no less than the 46.4 µs",
    ),
    line,
  );
  r.tcpP99.direct = s(873.3, 943.7, 1003.1);
  t.ok(
    goalLine(renderReport(r), "(TCP):").includes("spans 129.8 µs over the runs (873.3–1,003 µs)"),
    "follows the direct row",
  );
  r.tcpP99.direct = s(923.3, 943.7, 963.1);
  t.match(
    goalLine(renderReport(r), "(TCP):"),
    /^- \*\*met\*\*/,
    "a spread smaller than the difference decides it",
  );
  r.tcpP99.direct = s(1003.1);
  r.tcpP99["blixt-tc"] = s(1057.3);
  const one = goalLine(renderReport(r), "(TCP):");
  t.match(one, /^- \*\*not met\*\*/);
  t.ok(
    one.includes("has one run here: no spread to weigh the 54.2 µs against"),
    "one run: no spread claimed",
  );
});

t.test("the notes are computed from the rows they cite", async t => {
  const r = figures();
  const report = renderReport(r);
  t.ok(
    noteLine(report, "Direct routing, with nothing in the path").includes(
      "1.45× ([TCP throughput, four streams › direct] 13.7–19.9)",
    ),
  );
  const xdp = noteLine(report, "XDP on a veth");
  for (const quoted of [
    "2.3 Gbit/s [TCP throughput, one stream › blixt-xdp], 0.32× blixt-tc's 7.3 Gbit/s",
    "4.7 s [CPU cost › blixt-xdp › CPU s per GB]",
    "127.9 ns [ns/packet › xdp conntrack hit",
    "the difference lies outside the program",
  ]) {
    t.ok(xdp.includes(quoted), `XDP note quotes "${quoted}"`);
  }
  t.ok(
    noteLine(report, "Client, gateway and backends").includes("the machine's 2 CPUs"),
    "CPU count from the Machine lines",
  );
  r.machine[1] = "4 × Test CPU, 8 GiB";
  r.nsPerPacket["xdp conntrack hit (repeat 35000, steady state)"] = s(301.3, 317.9, 339.3);
  const changed = renderReport(r);
  t.ok(noteLine(changed, "Client, gateway and backends").includes("the machine's 4 CPUs"));
  t.notOk(
    noteLine(changed, "XDP on a veth").includes("lies outside the program"),
    "an XDP program dearer than TC's per packet: no claim that the cause lies elsewhere",
  );
  t.ok(
    noteLine(report, "Direct routing's own p50").includes(
      "[Round-trip latency › direct TCP › p50] 157.3–391.7 µs",
    ),
  );
  t.match(
    report,
    /per-run set-up: the one-run-per-packet hit is above the steady-state hit by 409\.2 ns for xdp/,
  );
  t.same(unsourced(changed, r), []);
});

t.test("the figures ride along in the report and render it again unchanged", async t => {
  const r = figures();
  r.machine.push("a tool --> that prints arrows");
  const report = renderReport(r, `${E2E_BEGIN}\nfrom elsewhere\n${E2E_END}`);
  t.same(embeddedFigures(report), r);
  t.equal(renderReport(embeddedFigures(report)!, e2eBlock(report)), report);
});

t.test(
  "bench/REPORT.md: written by this renderer from the figures it carries; every number sourced",
  async t => {
    const report = await readFile(new URL("../../bench/REPORT.md", import.meta.url), "utf8");
    const r = embeddedFigures(report);
    if (!r)
      return t.fail(
        "bench/REPORT.md carries no figures: write it again with `npx tsx bench/rerender.ts`",
      );
    t.equal(
      renderReport(r, e2eBlock(report)),
      report,
      "bench/REPORT.md is renderReport of its own figures (run `npx tsx bench/rerender.ts` after changing bench/report.ts)",
    );
    t.same(unsourced(report, r), []);
    t.same(citationProblems(report), []);
  },
);

t.test("both blocks hack/e2e-figures.ts writes are carried over, in their order", async t => {
  const local = `${E2E_BEGIN}\nlocal figures\n${E2E_END}`;
  const failover = `${CARRIED_BLOCKS[1][0]}\nkind failover figures\n${CARRIED_BLOCKS[1][1]}`;
  t.equal(e2eBlock(`# r\n\n${local}\n\n${failover}\n`), `${local}\n\n${failover}`);
  t.equal(e2eBlock(`# r\n\n${failover}\n`), failover, "the failover block alone");
  t.equal(e2eBlock("# r\n"), undefined);
});
