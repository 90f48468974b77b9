// SPDX-License-Identifier: Apache-2.0
/**
 * Writes the end-to-end convergence and recovery figures (JSON lines that test/lib/cluster.ts
 * recordFigure appends when BLIXT_E2E_FIGURES names a file) into bench/REPORT.md, between the
 * e2e-figures markers: per figure, the median and the range over the runs, and how many. With
 * --kind-failover, the figures of test/kind/failover.test.ts go between the kind-failover
 * markers instead.
 *
 *   npx tsx hack/e2e-figures.ts FIGURES.jsonl [--report bench/REPORT.md] [--runs N] [--machine TEXT]
 *                               [--kind-failover]
 */
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { Command } from "commander";
import { withCarriedBlock } from "../bench/report.js";
import { barChart, type Bar } from "../bench/svg.js";

export const BEGIN = "<!-- e2e-figures:begin -->";
export const END = "<!-- e2e-figures:end -->";
export const FAILOVER_BEGIN = "<!-- kind-failover:begin -->";
export const FAILOVER_END = "<!-- kind-failover:end -->";

/** Which block of the report: the local cluster's convergence figures, or kind's failover ones. */
export type BlockKind = "local" | "kind-failover";

const MARKERS: Record<BlockKind, [string, string]> = {
  local: [BEGIN, END],
  "kind-failover": [FAILOVER_BEGIN, FAILOVER_END],
};

const INTRO: Record<BlockKind, (runs: string) => string[]> = {
  local: runs => [
    "## End to end on the local cluster: convergence and recovery",
    "",
    `Written by \`hack/e2e-figures.sh\` from ${runs} of test/e2e/faults.test.ts and`,
    "test/e2e/scaling.test.ts on the local cluster (one node; the client outside it), measured, never",
    "asserted. Each figure is the median over the samples, with their range. The scaling rows are",
    "themselves p50/p99 over the scale cycles of one run; with a handful of cycles a p99 is",
    "the slowest cycle. The rows that start with a route count come from one run of",
    "test/e2e/fanout.test.ts (that many TCPRoutes to one Deployment, and as many ClusterIP Services",
    "selecting the same pods, for the cluster's own kube-proxy in iptables mode, probed in the same",
    "rounds); its scale rows have a sample per cycle, and a CPU time",
    "per change is the process's CPU time over all the cycles (idle work included) over their changes.",
    "Each probe is timed from the change of the EndpointSlice it follows (tcp-echo's for the routes, its",
    "own Service's for a ClusterIP): the EndpointSlice controller updates the Services' slices one at a",
    "time. A 0 is a first round after the test's own watch saw the change that already showed it.",
    '"EndpointSlice change → traffic moved" spans the controller\'s watch and',
    "compile, the DataplaneConfig write, the node agent's watch and its apply (timed alone in the",
    "agent-apply rows of this report), and the first round of new connections that shows it.",
  ],
  "kind-failover": runs => [
    "## Failover on kind: the announcing node powered off",
    "",
    `Written by \`hack/e2e-figures.sh --kind\` from ${runs} of test/kind/failover.test.ts on the`,
    "3-node kind cluster (`hack/kind.sh`), with the chart's default Lease settings (2 s, renewed every",
    "500 ms; docs/failover.md). In each run the node announcing the Gateway address is killed",
    "(`hack/kind.sh stop-node`) while one TCP connection sends a line every 100 ms and one UDP flow a",
    "datagram every 100 ms, both from the machine's root namespace to a backend on the control plane,",
    "and 20 more TCP connections to it sit idle (each echoes a line before and after the failover).",
    '"address answers again" is from the kill to the first UDP reply after the silence it caused;',
    '"longest TCP round trip" is the slowest echo of a line (retransmission included); "controller',
    'names the new announcer" is when the DataplaneConfig caught up with what the agents did. The',
    "later rows come from the same run's next steps: the EndpointSlice of a Service with a backend",
    "on the stopped node, the announcer's agent killed, the API server stopped, the announcer cut",
    "off from it, and last the controller's own node powered off. Lease writes are the MODIFIED",
    "events a watch of the agents' Leases saw over 10 s, per node (one sample per node and run).",
    "Measured, never asserted; the median over the samples and the range.",
  ],
};

/** A time in milliseconds, a rate per second, a share in per cent, MiB, or a count of writes. */
export type FigureUnit = "ms" | "/s" | "%" | "MiB" | "writes";
const UNITS: FigureUnit[] = ["ms", "/s", "%", "MiB", "writes"];

export interface Figure {
  name: string;
  value: number;
  unit: FigureUnit;
  /** When recordFigure wrote it (ISO 8601), when the line says. */
  at?: string;
}

/** recordFigure's lines: {"name", "ms"} for a time, {"name", "value", "unit"} for the rest. */
export function parseFigures(text: string): Figure[] {
  return text
    .split("\n")
    .filter(line => line.trim())
    .map((line, i) => {
      const parsed = JSON.parse(line) as {
        name?: unknown;
        ms?: unknown;
        value?: unknown;
        unit?: unknown;
        at?: unknown;
      };
      let figure: Figure;
      if (typeof parsed.name === "string" && typeof parsed.ms === "number")
        figure = { name: parsed.name, value: parsed.ms, unit: "ms" };
      else if (
        typeof parsed.name === "string" &&
        typeof parsed.value === "number" &&
        UNITS.includes(parsed.unit as FigureUnit)
      )
        figure = { name: parsed.name, value: parsed.value, unit: parsed.unit as FigureUnit };
      else
        throw new Error(
          `line ${i + 1}: want {"name": string, "ms": number} or {"name": string, "value": number, "unit": ${UNITS.map(u => `"${u}"`).join("|")}}, got ${line}`,
        );
      return typeof parsed.at === "string" ? { ...figure, at: parsed.at } : figure;
    });
}

const median = (values: number[]) => {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
const formatted = (value: number, unit: FigureUnit) =>
  unit === "ms"
    ? seconds(value)
    : unit === "/s"
      ? `${value.toFixed(2)} /s`
      : unit === "%"
        ? `${value.toFixed(1)} %`
        : unit === "MiB"
          ? `${value.toFixed(0)} MiB`
          : `${value.toFixed(0)} writes`;

/** The markdown block, figures in the order they were first recorded. */
export function renderBlock(
  figures: Figure[],
  context: { runs: number; when: string; machine: string },
  kind: BlockKind = "local",
): string {
  const byName = new Map<string, { unit: FigureUnit; values: number[] }>();
  for (const f of figures) {
    const seen = byName.get(f.name);
    if (seen && seen.unit !== f.unit)
      throw new Error(`figure "${f.name}" is recorded in ${seen.unit} and in ${f.unit}`);
    byName.set(f.name, { unit: f.unit, values: [...(seen?.values ?? []), f.value] });
  }
  const rows = [...byName].map(([name, { unit, values }]) => {
    const show = (v: number) => formatted(v, unit);
    return `| ${name} | ${show(median(values))} | ${show(Math.min(...values))}–${show(Math.max(...values))} | ${values.length} |`;
  });
  const [begin, end] = MARKERS[kind];
  const chart =
    kind === "local" && fanoutBars(figures).length > 0
      ? [
          `![EndpointSlice change → traffic moved, blixt's routes and kube-proxy's Services, by count](${FANOUT_CHART})`,
          "",
        ]
      : [];
  return [
    begin,
    ...INTRO[kind](`${context.runs} run${context.runs === 1 ? "" : "s"}`),
    "",
    `- run at ${context.when}; ${context.machine}`,
    "",
    ...chart,
    "| figure | median | range | samples |",
    "| --- | --- | --- | --- |",
    ...rows,
    end,
  ].join("\n");
}

/** The chart of the fanout rows, written next to the report. */
export const FANOUT_CHART = "fanout.svg";
const FANOUT_ROW =
  /^([\d,]+) (routes|ClusterIP Services \(kube-proxy\)): scale (2 → 3|3 → 2), EndpointSlice change/;

/**
 * The fanout rows as bars (test/e2e/fanout.test.ts): per route count and change, blixt's routes
 * beside kube-proxy's Services, the median and range in seconds. Empty without fanout rows.
 */
export function fanoutBars(figures: Figure[]): Bar[] {
  const rows = new Map<string, { order: number[]; values: number[] }>();
  for (const f of figures) {
    const m = FANOUT_ROW.exec(f.name);
    if (!m || f.unit !== "ms") continue;
    const count = Number(m[1].replace(/,/g, ""));
    const blixt = m[2] === "routes";
    const label = `${blixt ? "blixt" : "kube-proxy"}, ${count.toLocaleString("en-US")}, ${m[3]}`;
    const row = rows.get(label) ?? {
      order: [count, m[3] === "2 → 3" ? 0 : 1, blixt ? 0 : 1],
      values: [],
    };
    row.values.push(f.value / 1000);
    rows.set(label, row);
  }
  const byOrder = (a: number[], b: number[]) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
  return [...rows]
    .sort(([, a], [, b]) => byOrder(a.order, b.order))
    .map(([label, { values }]) => ({
      label,
      median: median(values),
      min: Math.min(...values),
      max: Math.max(...values),
    }));
}

/** The report with the block of that kind replaced, or appended when it has none. */
export function withBlock(report: string, block: string, kind: BlockKind = "local"): string {
  return withCarriedBlock(report, MARKERS[kind], block);
}

function main(): void {
  const program = new Command()
    .argument("<figures>", "JSON lines of recorded figures")
    .option("--report <file>", "the report to write into", "bench/REPORT.md")
    .option("--runs <n>", "how many runs the figures come from", "1")
    .option("--machine <text>", "one line about the machine", "")
    .option("--kind-failover", "the figures are test/kind/failover.test.ts's: its block")
    .parse();
  const [file] = program.args;
  const opts = program.opts<{
    report: string;
    runs: string;
    machine: string;
    kindFailover?: boolean;
  }>();
  const kind: BlockKind = opts.kindFailover ? "kind-failover" : "local";
  const figures = parseFigures(readFileSync(file, "utf8"));
  if (figures.length === 0)
    throw new Error(`${file} holds no figure: run the e2e tests with BLIXT_E2E_FIGURES=${file}`);
  const report = existsSync(opts.report) ? readFileSync(opts.report, "utf8") : "# Benchmarks\n";
  // The time of the last figure recorded, so rendering the same file again says when it was measured.
  const when =
    figures
      .map(f => f.at)
      .filter((at): at is string => !!at)
      .sort()
      .at(-1) ?? new Date().toISOString();
  const block = renderBlock(
    figures,
    { runs: Number(opts.runs), when, machine: opts.machine || "this machine" },
    kind,
  );
  writeFileSync(opts.report, withBlock(report, block, kind));
  const bars = kind === "local" ? fanoutBars(figures) : [];
  if (bars.length > 0)
    writeFileSync(
      join(dirname(opts.report), FANOUT_CHART),
      barChart(
        "EndpointSlice change → the first and last route (Service) moved, one node",
        "seconds",
        bars,
      ),
    );
  console.error(
    `e2e-figures: wrote ${new Set(figures.map(f => f.name)).size} figures from ${figures.length} samples into ${opts.report}`,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) main();
