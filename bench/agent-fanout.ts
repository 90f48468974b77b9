// SPDX-License-Identifier: Apache-2.0
/**
 * What the node agent's converge pass costs when many routes send to one backend set (a
 * thousand TCPRoutes behind one Deployment) beside the same number of routes with a backend set
 * each, measured side by side in one run on real pinned maps (TC mode, nothing attached): the
 * first apply, an apply that replaces every backend (one EndpointSlice change reaching every
 * route), and a pass with nothing to do. Listeners go 50 to a Gateway, 3 backends each. Writes
 * its block into bench/REPORT.md (between the agent-fanout markers).
 *
 *   npx tsx bench/agent-fanout.ts [--repeats N] [--report bench/REPORT.md] [--smoke]
 *
 * --smoke (bench/run.sh --smoke, in CI): 100 listeners once, written only where --report says.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { Command } from "commander";
import type { DataplaneConfig } from "../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { withBenchAgent } from "./apply.js";
import { AGENT_FANOUT_BEGIN, AGENT_FANOUT_END, withCarriedBlock } from "./report.js";

const BEGIN = AGENT_FANOUT_BEGIN;
const END = AGENT_FANOUT_END;

const PER_GATEWAY = 50;
const BACKENDS = 3;

type Sets = "one" | "each";

/** Backend i of backend set `set`, generation `generation`: distinct addresses in 198.18.128.0/17. */
function backend(set: number, i: number, generation: number): { address: string; port: number } {
  const n = (set * BACKENDS + i) * 2 + (generation - 1);
  return { address: `198.18.${128 + ((n >> 8) & 127)}.${n & 255}`, port: 8080 };
}

/**
 * The configs of generation `generation`; `grown` gives every backend set one more backend (a
 * Deployment scaled up by one pod), the others kept.
 */
function configs(
  listeners: number,
  sets: Sets,
  generation: number,
  grown = false,
): DataplaneConfig[] {
  return Array.from({ length: Math.ceil(listeners / PER_GATEWAY) }, (_, g) => ({
    apiVersion: "blixt.dev/v1alpha1",
    kind: "DataplaneConfig",
    metadata: { namespace: "bench", name: `fanout-${g}`, generation },
    spec: {
      gatewayName: `fanout-${g}`,
      gatewayGeneration: 1,
      address: `198.19.${(g >> 8) & 255}.${g & 255}`,
      listeners: Array.from(
        { length: Math.min(PER_GATEWAY, listeners - g * PER_GATEWAY) },
        (_, l) => {
          const set = sets === "one" ? 0 : g * PER_GATEWAY + l;
          return {
            name: `l${l}`,
            port: 10000 + l,
            protocol: "TCP",
            rejectWeight: 0,
            backends: [
              {
                weight: 1,
                endpoints: [
                  ...Array.from({ length: BACKENDS }, (_, i) => backend(set, i, generation)),
                  ...(grown ? [{ address: grownBackend(set), port: 8080 }] : []),
                ],
              },
            ],
          };
        },
      ),
    },
  })) as DataplaneConfig[];
}

interface Pass {
  seconds: number;
  commands: number;
}
interface Sample {
  create: Pass;
  replace: Pass;
  grow: Pass;
  idle: Pass;
}

/** The backend a grown set gains: distinct addresses in 198.19.128.0/17. */
const grownBackend = (set: number) => `198.19.${128 + (((set + 1) >> 8) & 127)}.${(set + 1) & 255}`;

function once(listeners: number, sets: Sets, run: number): Promise<Sample> {
  // The maps' default sizes hold 10,000 services of 3 backends, and 1,000 tables of their own.
  return withBenchAgent(`fanout-${run}`, async agent => {
    const pass = async (what: string): Promise<Pass> => {
      const r = await agent.converge();
      if (!r.ok) throw new Error(`${what} of ${listeners} listeners failed: ${r.error}`);
      return { seconds: r.seconds, commands: r.commands };
    };
    agent.replaceAll(configs(listeners, sets, 1));
    const create = await pass("the first apply");
    agent.replaceAll(configs(listeners, sets, 2));
    const replace = await pass("replacing every backend");
    agent.replaceAll(configs(listeners, sets, 2, true));
    const grow = await pass("one backend more in every set");
    const idle = await pass("a pass with nothing to do");
    return { create, replace, grow, idle };
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const secs = (s: number) => (s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);

function row(label: string, samples: Sample[], key: keyof Sample): string {
  const xs = samples.map(s => s[key].seconds);
  return `${label} | ${secs(median(xs))} (${secs(Math.min(...xs))}–${secs(Math.max(...xs))}) | ${samples[0][key].commands.toLocaleString("en-US")}`;
}

async function main(): Promise<void> {
  const opts = new Command()
    .option("--repeats <n>", "runs of each case", "3")
    .option("--report <file>", "the report to write into (bench/REPORT.md; with --smoke, none)")
    .option("--smoke", "100 listeners, one run")
    .parse()
    .opts<{ repeats: string; report?: string; smoke?: boolean }>();
  const repeats = opts.smoke ? 1 : Number(opts.repeats);
  const cases: [number, Sets][] = opts.smoke
    ? [
        [100, "one"],
        [100, "each"],
      ]
    : [
        [100, "one"],
        [100, "each"],
        [1000, "one"],
        [1000, "each"],
        [10000, "one"],
      ];
  const results = new Map<string, Sample[]>();
  let run = 0;
  // Interleaved, so the cases share whatever else the machine does.
  for (let r = 0; r < repeats; r++)
    for (const [listeners, sets] of cases) {
      const sample = await once(listeners, sets, run++);
      const key = `${listeners} ${sets}`;
      results.set(key, [...(results.get(key) ?? []), sample]);
      console.error(
        `agent-fanout: ${listeners} listeners, ${sets === "one" ? "one backend set" : "a set each"}: create ${secs(sample.create.seconds)} (${sample.create.commands}), replace ${secs(sample.replace.seconds)} (${sample.replace.commands}), grow ${secs(sample.grow.seconds)} (${sample.grow.commands}), idle ${secs(sample.idle.seconds)}`,
      );
    }
  const reportFile = opts.report ?? (opts.smoke ? undefined : "bench/REPORT.md");
  if (!reportFile) return;

  const lines = [
    BEGIN,
    "### Node agent apply: many routes, one backend set",
    "",
    `Written by \`bench/agent-fanout.ts\` (${repeats} run${repeats === 1 ? "" : "s"} of each case, interleaved; ${new Date().toISOString()}).`,
    `The node agent's converge pass on real pinned maps (TC mode, nothing attached), ${PER_GATEWAY}`,
    `listeners to a DataplaneConfig, ${BACKENDS} backends per listener: every listener sends to one`,
    "backend set (many routes behind one Deployment), or each to a set of its own. *replace* gives",
    "every listener new backends (one EndpointSlice change reaching every route); *create* is the",
    "agent's first pass, which also reads the whole epoch array back (ids no service uses get a new",
    "epoch: bpf/README.md); *grow* gives",
    "every backend set one backend more (the Deployment scaled up by one pod); *idle* is the pass",
    "after, with nothing to do (it still reads every table's sampled chunks back). Services with the",
    "same backend set share one Maglev table, and its members. Median (range) seconds, as the agent",
    "measures its pass; bpftool commands of the pass.",
    "",
    "| listeners, backend sets | pass | seconds | bpftool commands |",
    "| --- | --- | --- | --- |",
  ];
  for (const [listeners, sets] of cases) {
    const samples = results.get(`${listeners} ${sets}`)!;
    const label = `${listeners.toLocaleString("en-US")}, ${sets === "one" ? "one" : "one each"}`;
    for (const key of ["create", "replace", "grow", "idle"] as const)
      lines.push(`| ${row(`${label} | ${key}`, samples, key)} |`);
  }
  lines.push("");
  for (const listeners of [...new Set(cases.map(([n]) => n))]) {
    const one = results.get(`${listeners} one`)!;
    const each = results.get(`${listeners} each`);
    if (!each) continue;
    const ratio = (key: keyof Sample) =>
      (median(each.map(s => s[key].seconds)) / median(one.map(s => s[key].seconds))).toFixed(1);
    lines.push(
      `- ${listeners.toLocaleString("en-US")} listeners: a backend set each costs ${ratio("create")}× one shared set to create, ${ratio("replace")}× to replace every backend, ${ratio("idle")}× for a pass with nothing to do (medians of this run).`,
    );
  }
  lines.push(END);
  const block = lines.join("\n");
  const report = existsSync(reportFile) ? readFileSync(reportFile, "utf8") : "";
  writeFileSync(reportFile, withCarriedBlock(report, [BEGIN, END], block));
  console.error(`agent-fanout: wrote ${reportFile}`);
}

await main();
