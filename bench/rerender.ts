// SPDX-License-Identifier: Apache-2.0
// Writes bench/REPORT.md again from the figures it carries (its bench-figures comment), without a
// run: for a change to the report's text. A report written before it carried its figures is read
// back from its tables as printed: each series becomes its printed min, median and max (the
// samples themselves were not kept), and the report says so under Machine.
//
//   npx tsx bench/rerender.ts [--report bench/REPORT.md]
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import {
  PATHS,
  UDP_PATHS,
  TABLE,
  e2eBlock,
  embeddedFigures,
  emptyResults,
  renderReport,
  type ByPath,
  type Path,
  type Results,
  type Series,
} from "./report.js";

/** "1,176" → 1176. */
const num = (s: string): number => Number(s.replace(/,/g, ""));

/**
 * A printed cell back to a series of `n` samples with the same median, min and max:
 * "9.6 Gbit/s (7.7–10.6)", "0.000", "failed: …", or undefined for "n/a" and "–".
 */
export function cellSeries(cellText: string, n: number, scale = 1): Series | undefined {
  const text = cellText.trim();
  if (text.startsWith("failed: ")) return { samples: [], failure: text.slice("failed: ".length) };
  const m = /^(-?[\d,]*\.?\d+)(?: [^(]*)?(?:\((-?[\d,]*\.?\d+)–(-?[\d,]*\.?\d+)\))?$/.exec(text);
  if (!m) return undefined;
  const [median, min, max] = [
    num(m[1]),
    m[2] === undefined ? num(m[1]) : num(m[2]),
    m[3] === undefined ? num(m[1]) : num(m[3]),
  ].map(x => x * scale);
  if (n === 1) return { samples: [median] };
  if (n === 2 && median !== (min + max) / 2)
    throw new Error(`a median of two runs must lie halfway between them: ${text}`);
  return { samples: n === 2 ? [min, max] : [min, ...Array(n - 2).fill(median), max] };
}

/** The rows of the table under the heading that starts with `### title`, as trimmed cells. */
export function tableRows(report: string, title: string): string[][] {
  const start = report.indexOf(`### ${title}`);
  if (start < 0) throw new Error(`the report has no "### ${title}" table`);
  const lines = report.slice(start).split("\n").slice(1);
  const first = lines.findIndex(l => l.startsWith("|"));
  const rows: string[][] = [];
  for (const l of lines.slice(first)) {
    if (!l.startsWith("|")) break;
    rows.push(
      l
        .split("|")
        .slice(1, -1)
        .map(c => c.trim()),
    );
  }
  return rows.slice(2); // header and separator
}

/** The figures of a report that does not carry them, read from its tables as printed. */
export function figuresFromTables(report: string): Results {
  const grab = (re: RegExp, what: string): string => {
    const m = re.exec(report);
    if (!m) throw new Error(`the report does not say ${what}`);
    return m[1];
  };
  const repeats = num(
    grab(/Each figure is the median of (\d+) run/, "how many runs each figure is the median of"),
  );
  const machineStart = report.indexOf("## Machine\n\n");
  const machine = report
    .slice(machineStart + "## Machine\n\n".length)
    .split("\n")
    .filter((l, i, all) => l.startsWith("- ") && all.slice(0, i).every(x => x.startsWith("- ")))
    .map(l => l.slice(2));
  const applyRows = tableRows(report, TABLE.apply);
  const latencySeconds = num(grab(/for (\d+) s per run/, "how long a latency run lasts"));
  const r = emptyResults(
    {
      smoke: report.includes("`bench/run.sh --smoke`"),
      repeats,
      // Not printed in the report, and not used in it.
      seconds: NaN,
      connections: num(grab(/(\d+) connections at a time/, "the connection-rate concurrency")),
      progRuns: num(
        grab(/a sample is the median over (\d+) runs/, "the runs per ns/packet sample"),
      ),
      latencySamples: Math.max(1, latencySeconds - 1) * 1000,
      applySizes: applyRows.map(row => num(row[0])),
    },
    machine,
  );
  const byPath = (title: string, column: number, into: ByPath, paths: Path[]) => {
    for (const row of tableRows(report, title)) {
      const series = cellSeries(row[column], repeats);
      if (paths.includes(row[0] as Path) && series) into[row[0] as Path] = series;
    }
  };
  byPath(TABLE.tcp1, 1, r.tcp1, PATHS);
  byPath(TABLE.tcp4, 1, r.tcp4, PATHS);
  byPath(TABLE.connections, 1, r.connectionRate, PATHS);
  byPath(TABLE.udp, 1, r.udpRate, UDP_PATHS);
  for (const row of tableRows(report, TABLE.latency)) {
    const [path, proto] = [row[0] as Path, row[1]];
    const [p50, p99] = [cellSeries(row[2], repeats), cellSeries(row[3], repeats)];
    if (p50) (proto === "TCP" ? r.tcpP50 : r.udpP50)[path] = p50;
    if (p99) (proto === "TCP" ? r.tcpP99 : r.udpP99)[path] = p99;
  }
  byPath(TABLE.cpu, 1, r.cpuPerGB, PATHS);
  byPath(TABLE.cpu, 3, r.proxyCpuPerGB, PATHS);
  byPath(TABLE.cpu, 4, r.cpuPerMpkt, UDP_PATHS);
  byPath(TABLE.cpu, 6, r.proxyCpuPerMpkt, UDP_PATHS);
  for (const row of applyRows) {
    const [create, update] = [
      cellSeries(row[2], repeats, 1 / 1000),
      cellSeries(row[3], repeats, 1 / 1000),
    ];
    if (create && update) r.apply[num(row[0])] = { create, update, commands: num(row[1]) };
  }
  for (const row of tableRows(report, TABLE.ns)) {
    const series = cellSeries(row[1], repeats);
    if (series) r.nsPerPacket[row[0]] = series;
  }
  r.source =
    "read back from the tables of this run's report as printed, by bench/rerender.ts: its samples were not kept, so each series is its printed min, median and max, " +
    "and the ratios and differences are computed again from the printed, rounded medians";
  return r;
}

async function main(): Promise<void> {
  const program = new Command("bench/rerender.ts")
    .description("write bench/REPORT.md again from the figures it carries, without a run")
    .option(
      "--report <file>",
      "the report to rewrite",
      fileURLToPath(new URL("./REPORT.md", import.meta.url)),
    )
    .parse();
  const file = program.opts<{ report: string }>().report;
  const report = await readFile(file, "utf8");
  const figures = embeddedFigures(report) ?? figuresFromTables(report);
  await writeFile(file, renderReport(figures, e2eBlock(report)));
  console.error(
    `wrote ${file}${figures.source ? ` (figures ${figures.source.split(" (")[0]})` : ""}`,
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
