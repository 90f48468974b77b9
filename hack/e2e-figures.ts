// SPDX-License-Identifier: Apache-2.0
/**
 * Writes the end-to-end convergence and recovery figures (JSON lines that test/lib/cluster.ts
 * recordFigure appends when BLIXT_E2E_FIGURES names a file) into bench/REPORT.md, between the
 * e2e-figures markers: per figure, the median and the range over the runs, and how many.
 *
 *   npx tsx hack/e2e-figures.ts FIGURES.jsonl [--report bench/REPORT.md] [--runs N] [--machine TEXT]
 */
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { Command } from "commander";

export const BEGIN = "<!-- e2e-figures:begin -->";
export const END = "<!-- e2e-figures:end -->";

export interface Figure {
  name: string;
  ms: number;
  /** When recordFigure wrote it (ISO 8601), when the line says. */
  at?: string;
}

export function parseFigures(text: string): Figure[] {
  return text
    .split("\n")
    .filter(line => line.trim())
    .map((line, i) => {
      const parsed = JSON.parse(line) as Partial<Figure>;
      if (typeof parsed.name !== "string" || typeof parsed.ms !== "number")
        throw new Error(`line ${i + 1}: want {"name": string, "ms": number}, got ${line}`);
      return typeof parsed.at === "string"
        ? { name: parsed.name, ms: parsed.ms, at: parsed.at }
        : { name: parsed.name, ms: parsed.ms };
    });
}

const median = (values: number[]) => {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;

/** The markdown block, figures in the order they were first recorded. */
export function renderBlock(
  figures: Figure[],
  context: { runs: number; when: string; machine: string },
): string {
  const byName = new Map<string, number[]>();
  for (const f of figures) byName.set(f.name, [...(byName.get(f.name) ?? []), f.ms]);
  const rows = [...byName].map(
    ([name, values]) =>
      `| ${name} | ${seconds(median(values))} | ${seconds(Math.min(...values))}–${seconds(Math.max(...values))} | ${values.length} |`,
  );
  return [
    BEGIN,
    "## End to end on the local cluster: convergence and recovery",
    "",
    `Written by \`hack/e2e-figures.sh\` from ${context.runs} run${context.runs === 1 ? "" : "s"} of test/e2e/faults.test.ts and`,
    "test/e2e/scaling.test.ts on the local cluster (one node; the client outside it), measured, never",
    "asserted. Each figure is the median over the samples, with their range. The scaling rows are",
    "themselves p50/p99 over the scale cycles of one run; with a handful of cycles a p99 is",
    "the slowest cycle. The rows that start with a route count come from one run of",
    "test/e2e/fanout.test.ts (that many TCPRoutes to one Deployment); its scale rows have a sample per cycle.",
    '"EndpointSlice change → traffic moved" spans the controller\'s watch and',
    "compile, the DataplaneConfig write, the node agent's watch and its apply (timed alone in the",
    "agent-apply rows of this report), and the first round of new connections that shows it.",
    "",
    `- run at ${context.when}; ${context.machine}`,
    "",
    "| figure | median | range | samples |",
    "| --- | --- | --- | --- |",
    ...rows,
    END,
  ].join("\n");
}

/** The report with its e2e block replaced, or appended when it has none. */
export function withBlock(report: string, block: string): string {
  const begin = report.indexOf(BEGIN);
  const end = report.indexOf(END);
  if (begin >= 0 && end > begin)
    return report.slice(0, begin) + block + report.slice(end + END.length);
  return `${report.trimEnd()}\n\n${block}\n`;
}

function main(): void {
  const program = new Command()
    .argument("<figures>", "JSON lines of recorded figures")
    .option("--report <file>", "the report to write into", "bench/REPORT.md")
    .option("--runs <n>", "how many runs the figures come from", "1")
    .option("--machine <text>", "one line about the machine", "")
    .parse();
  const [file] = program.args;
  const opts = program.opts<{ report: string; runs: string; machine: string }>();
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
  const block = renderBlock(figures, {
    runs: Number(opts.runs),
    when,
    machine: opts.machine || "this machine",
  });
  writeFileSync(opts.report, withBlock(report, block));
  console.error(
    `e2e-figures: wrote ${new Set(figures.map(f => f.name)).size} figures from ${figures.length} samples into ${opts.report}`,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) main();
