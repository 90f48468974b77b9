// SPDX-License-Identifier: Apache-2.0
// The benchmark's pure half: statistics, the goals of the benchmark, the Markdown report and the
// charts, from measured samples. No I/O here; bench/dataplane.ts measures and writes.
import {
  MAGLEV_MAX_SIZE,
  MAGLEV_MIN_SIZE,
  MAGLEV_SLOTS_PER_BACKEND,
} from "../capabilities/dataplane/maglev.js";
import { barChart, type Bar } from "./svg.js";

export type Path = "direct" | "blixt-xdp" | "blixt-tc" | "nftables" | "haproxy" | "nginx";
export const PATHS: Path[] = ["direct", "blixt-xdp", "blixt-tc", "nftables", "haproxy", "nginx"];
/** Paths that carry UDP (haproxy has no UDP proxy). */
export const UDP_PATHS: Path[] = ["direct", "blixt-xdp", "blixt-tc", "nftables", "nginx"];
const BLIXT: Path[] = ["blixt-xdp", "blixt-tc"];

export interface Settings {
  smoke: boolean;
  repeats: number;
  /** seconds per iperf3 run */
  seconds: number;
  /** connections wrk keeps open at a time in a connection-rate run (each carries one request) */
  connections: number;
  /** BPF_PROG_TEST_RUN runs per ns/packet sample */
  progRuns: number;
  /** request/response round trips per latency run */
  latencySamples: number;
  /** backend counts the agent's apply is timed with */
  applySizes: number[];
}

/** One measurement's repeated samples; `failure` when a run did not complete. */
export interface Series {
  samples: number[];
  failure?: string;
}

export type ByPath = Partial<Record<Path, Series>>;

export interface ApplyRow {
  create: Series;
  update: Series;
  commands: number;
}

export interface Results {
  settings: Settings;
  machine: string[];
  nsPerPacket: Record<string, Series>;
  tcp1: ByPath;
  tcp4: ByPath;
  connectionRate: ByPath;
  udpRate: ByPath;
  tcpP50: ByPath;
  tcpP99: ByPath;
  udpP50: ByPath;
  udpP99: ByPath;
  /** CPU seconds per GB received of the tasks that carry the traffic (see bench/dataplane.ts) */
  cpuPerGB: ByPath;
  /** of which: processes in the gateway namespace (the proxy) */
  proxyCpuPerGB: ByPath;
  /** the same per million UDP packets received */
  cpuPerMpkt: ByPath;
  proxyCpuPerMpkt: ByPath;
  apply: Record<number, ApplyRow>;
  /** where the figures come from when not straight from a run of bench/dataplane.ts (bench/rerender.ts) */
  source?: string;
}

export const emptyResults = (settings: Settings, machine: string[]): Results => ({
  settings,
  machine,
  nsPerPacket: {},
  tcp1: {},
  tcp4: {},
  connectionRate: {},
  udpRate: {},
  tcpP50: {},
  tcpP99: {},
  udpP50: {},
  udpP99: {},
  cpuPerGB: {},
  proxyCpuPerGB: {},
  cpuPerMpkt: {},
  proxyCpuPerMpkt: {},
  apply: {},
});

// ---- statistics ---------------------------------------------------------------------------------

export function median(xs: number[]): number {
  return percentile(xs, 50);
}

/** Nearest-rank percentile (p in 0..100) of the samples; NaN when there are none. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  if (p === 50 && s.length % 2 === 0) return (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** The median of a series that completed, else undefined. */
export const med = (s?: Series): number | undefined =>
  s && !s.failure && s.samples.length > 0 ? median(s.samples) : undefined;

export const fmt = (x: number, digits = 1): string =>
  Math.abs(x) >= 1000
    ? x.toLocaleString("en-US", { maximumFractionDigits: 0 })
    : x.toFixed(Math.abs(x) < 1 && digits < 3 ? 3 : digits);

/** "median unit (min–max)" of a series, or why there is none. */
export function cell(series: Series | undefined, unit: string): string {
  if (!series) return "n/a";
  if (series.failure) return `failed: ${series.failure}`;
  if (series.samples.length === 0) return "n/a";
  const spread = `${fmt(Math.min(...series.samples))}–${fmt(Math.max(...series.samples))}`;
  return `${fmt(median(series.samples))} ${unit} (${spread})`;
}

function ratio(a: Series | undefined, b: Series | undefined): string {
  const [x, y] = [med(a), med(b)];
  return x === undefined || y === undefined || y === 0 ? "–" : `${(x / y).toFixed(2)}×`;
}

/** The blixt mode with the better median (higher, or lower when `lower`), and that median. */
function bestBlixt(results: ByPath, lower = false): { path: Path; value: number } | undefined {
  const found = BLIXT.map(path => ({ path, value: med(results[path]) })).filter(
    (r): r is { path: Path; value: number } => r.value !== undefined,
  );
  if (found.length === 0) return undefined;
  return found.reduce((a, b) => ((lower ? b.value < a.value : b.value > a.value) ? b : a));
}

function table(title: string, unit: string, results: ByPath, paths: Path[]): string {
  const best = bestBlixt(results);
  const rows = paths.map(
    p =>
      `| ${p} | ${cell(results[p], unit)} | ${ratio(results[p], results.direct)} | ${best ? ratio(results[p], results[best.path]) : "–"} |`,
  );
  return [
    `### ${title}`,
    "",
    `| path | median (min–max) | vs direct | vs ${best?.path ?? "blixt"} |`,
    "| --- | --- | --- | --- |",
    ...rows,
  ].join("\n");
}

function latencyTable(r: Results): string {
  const row = (p: Path, p50: ByPath, p99: ByPath, proto: string) => {
    const added =
      med(p99[p]) !== undefined && med(p99.direct) !== undefined
        ? `${fmt(med(p99[p])! - med(p99.direct)!)} µs`
        : "–";
    return `| ${p} | ${proto} | ${cell(p50[p], "µs")} | ${cell(p99[p], "µs")} | ${added} |`;
  };
  return [
    "| path | proto | p50 (min–max) | p99 (min–max) | p99 added vs direct |",
    "| --- | --- | --- | --- | --- |",
    ...PATHS.map(p => row(p, r.tcpP50, r.tcpP99, "TCP")),
    ...UDP_PATHS.map(p => row(p, r.udpP50, r.udpP99, "UDP")),
  ].join("\n");
}

function cpuTable(r: Results): string {
  const added = (all: ByPath, p: Path) =>
    med(all[p]) !== undefined && med(all.direct) !== undefined
      ? fmt(med(all[p])! - med(all.direct)!, 2)
      : "–";
  const proxy = (s: Series | undefined) => (med(s) === undefined ? "–" : fmt(med(s)!, 2));
  return [
    "| path | CPU s per GB, TCP (min–max) | added vs direct | in gateway processes | CPU s per M packets, UDP (min–max) | added vs direct | in gateway processes |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...PATHS.map(p => {
      const udp = UDP_PATHS.includes(p);
      return `| ${p} | ${cell(r.cpuPerGB[p], "s")} | ${added(r.cpuPerGB, p)} | ${proxy(r.proxyCpuPerGB[p])} | ${udp ? cell(r.cpuPerMpkt[p], "s") : "n/a"} | ${udp ? added(r.cpuPerMpkt, p) : "–"} | ${udp ? proxy(r.proxyCpuPerMpkt[p]) : "–"} |`;
    }),
  ].join("\n");
}

function applyTable(r: Results): string {
  return [
    "| backends | bpftool commands | create (min–max) | replace one backend (min–max) |",
    "| --- | --- | --- | --- |",
    ...Object.entries(r.apply).map(
      ([n, a]) =>
        `| ${Number(n).toLocaleString("en-US")} | ${a.commands.toLocaleString("en-US")} | ${cell(scale(a.create, 1000), "ms")} | ${cell(scale(a.update, 1000), "ms")} |`,
    ),
  ].join("\n");
}

const scale = (s: Series, k: number): Series => ({ ...s, samples: s.samples.map(x => x * k) });

export type Verdict = { met: boolean | "inconclusive" | undefined; text: string; why?: string };

/** The goals' thresholds: targets the report checks figures against, never measurements. */
export const GOALS = { hitNs: 100, throughput: 0.9, rate: 2, p99AddedUs: 20 } as const;

/**
 * How the bench is set up (bench/dataplane.ts uses the same values), for the report's text: none of
 * these is a measurement. The Maglev sizing is the node agent's own (capabilities/dataplane/maglev.ts).
 */
export const METHOD = {
  streams: 4,
  udpPayloadBytes: 64,
  latencyMessagesPerSecond: 1000,
  maglevSlotsPerBackend: MAGLEV_SLOTS_PER_BACKEND,
  maglevMinSize: MAGLEV_MIN_SIZE,
  maglevMaxSize: MAGLEV_MAX_SIZE,
} as const;

/** Seconds per sockperf run (bench/dataplane.ts, latency()). */
export const latencySeconds = (s: Settings): number =>
  Math.max(2, Math.ceil(s.latencySamples / METHOD.latencyMessagesPerSecond) + 1);

/** The IP protocol of the one-hash-lookup frame: one blixt does not handle (RFC 3692, for experiments). */
export const ONE_LOOKUP_PROTOCOL = 253;
/** The ns/packet row of a frame that costs the ingress program its parse and exactly one hash lookup. */
export const oneLookupLabel = (prog: "xdp" | "tc", repeat: number): string =>
  `${prog} one hash lookup: an IPv4 frame of protocol ${ONE_LOOKUP_PROTOCOL} to no Gateway address, passed (repeat ${repeat})`;

/** The tables' titles, as their headings begin; an explanation cites a row as [title › row › column]. */
export const TABLE = {
  tcp1: "TCP throughput, one stream",
  tcp4: "TCP throughput, four streams",
  connections: "TCP connection rate",
  udp: "UDP packet rate",
  latency: "Round-trip latency",
  cpu: "CPU cost",
  apply: "Node agent apply time",
  ns: "ns/packet",
} as const;

export const NOT_MEASURED = "not measured in this run";

/** A citation of a row (and column, when the row has more than one figure) of this report's tables. */
/** A citation of a report row: [table › row › column]. */
export const cite = (table: string, row: string, column?: string): string =>
  `[${table} › ${row}${column ? ` › ${column}` : ""}]`;

/** A row of the ns/packet table: the first whose case starts with `prefix`. */
function nsRow(r: Results, prefix: string): { label: string; value: number } | undefined {
  const found = Object.entries(r.nsPerPacket).find(([k]) => k.startsWith(prefix));
  const value = med(found?.[1]);
  return found && value !== undefined ? { label: found[0], value } : undefined;
}

const nsRows = (r: Results, prog: "xdp" | "tc") => ({
  floor: nsRow(r, `${prog} floor`),
  lookup: nsRow(r, `${prog} one hash lookup`),
  hit: nsRow(r, `${prog} conntrack hit (repeat`),
  hitPerRun: nsRow(r, `${prog} conntrack hit (one run per packet)`),
});

/** "118.0 ns [ns/packet › …]": a row's median, as its table prints it, with the citation. */
const nsFigure = (row: { label: string; value: number }): string =>
  `${fmt(row.value)} ns ${cite(TABLE.ns, row.label)}`;

export const range = (x?: Series) =>
  x && !x.failure && x.samples.length
    ? `${fmt(Math.min(...x.samples))}–${fmt(Math.max(...x.samples))}`
    : "–";
const spread = (x?: Series) =>
  x && !x.failure && x.samples.length > 1 ? Math.max(...x.samples) - Math.min(...x.samples) : 0;
const progOf = (path: Path): "xdp" | "tc" => (path === "blixt-xdp" ? "xdp" : "tc");

/** The number of CPUs the Machine section names ("2 × AMD EPYC, …"), if it does. */
const cpuCount = (r: Results): number | undefined => {
  for (const line of r.machine) {
    const m = /^(\d+) × /.exec(line);
    if (m) return Number(m[1]);
  }
  return undefined;
};

function hitGoal(r: Results): Verdict {
  const { floor, lookup, hit } = nsRows(r, "xdp");
  const why: string[] = [];
  if (hit && floor) {
    why.push(
      `the hit row includes BPF_PROG_TEST_RUN's own cost per repetition, which the floor row measures: ${nsFigure(floor)}; ` +
        `the program's own work on a hit is ${fmt(hit.value - floor.value)} ns`,
    );
    why.push(
      lookup
        ? `a frame that costs the program its IPv4 parse and one hash lookup (a miss) takes ${nsFigure(lookup)}, ${fmt(lookup.value - floor.value)} ns above the floor; ` +
            `a hit does that and more (the conntrack entry it finds, the service epoch, counters, the rewrite: bpf/README.md) for the other ${fmt(hit.value - lookup.value)} ns`
        : `what one hash lookup costs is ${NOT_MEASURED} (no "xdp one hash lookup" row)`,
    );
  } else
    why.push(
      `without a floor row this run does not separate the program's work from BPF_PROG_TEST_RUN's own cost`,
    );
  return {
    met: hit === undefined ? undefined : hit.value <= GOALS.hitNs,
    text: `≤ ${GOALS.hitNs} ns/packet on a conntrack hit: XDP ${hit ? nsFigure(hit) : "–"}, BPF_PROG_TEST_RUN steady state`,
    why: why.join("; "),
  };
}

function throughputGoal(r: Results): Verdict {
  const thr = bestBlixt(r.tcp1);
  const direct = med(r.tcp1.direct);
  const overlap = (a?: Series, b?: Series) =>
    !!a &&
    !!b &&
    a.samples.length > 0 &&
    b.samples.length > 0 &&
    Math.max(...a.samples) >= Math.min(...b.samples) &&
    Math.max(...b.samples) >= Math.min(...a.samples);
  const added = (p: Path) =>
    med(r.cpuPerGB[p]) !== undefined && med(r.cpuPerGB.direct) !== undefined
      ? fmt(med(r.cpuPerGB[p])! - med(r.cpuPerGB.direct)!, 2)
      : undefined;
  let why: string | undefined;
  if (thr && direct) {
    if (overlap(r.tcp1[thr.path], r.tcp1.direct)) {
      why = `the ranges overlap (${thr.path} ${cite(TABLE.tcp1, thr.path)} ${range(r.tcp1[thr.path])}, direct ${cite(TABLE.tcp1, "direct")} ${range(r.tcp1.direct)} Gbit/s): this run does not tell the two apart`;
    } else {
      const parts: string[] = [];
      const nft = med(r.tcp1.nftables);
      if (nft !== undefined) {
        parts.push(
          `nftables DNAT, with no BPF program at all, reaches ${fmt(nft)} Gbit/s ${cite(TABLE.tcp1, "nftables")}, ${(nft / direct).toFixed(2)}× direct` +
            (added("nftables") !== undefined && added(thr.path) !== undefined
              ? `, and adds ${added("nftables")} s ${cite(TABLE.cpu, "nftables", "added vs direct")} of CPU per GB over direct, against ${added(thr.path)} s ${cite(TABLE.cpu, thr.path, "added vs direct")} for ${thr.path}`
              : ""),
        );
      }
      const hit = nsRows(r, progOf(thr.path)).hit;
      if (hit) parts.push(`${thr.path}'s program costs ${nsFigure(hit)} per packet`);
      parts.push("this run measures nothing that divides the loss further");
      why = parts.join("; ");
    }
  }
  return {
    met: thr && direct ? thr.value >= GOALS.throughput * direct : undefined,
    text: `blixt ≥ ${GOALS.throughput}× direct TCP throughput: ${thr && direct ? `${thr.path} ${(thr.value / direct).toFixed(2)}× (${fmt(thr.value)} Gbit/s ${cite(TABLE.tcp1, thr.path)} vs ${fmt(direct)} Gbit/s ${cite(TABLE.tcp1, "direct")})` : "–"}`,
    why,
  };
}

function rateGoals(r: Results): Verdict[] {
  const out: Verdict[] = [];
  for (const [what, metric, unit, table, paths] of [
    ["connection rate", r.connectionRate, "conn/s", TABLE.connections, PATHS],
    ["UDP packet rate", r.udpRate, "kpps", TABLE.udp, UDP_PATHS],
  ] as const) {
    const best = bestBlixt(metric);
    const direct = med(metric.direct);
    for (const proxy of ["haproxy", "nginx"] as const) {
      if (!paths.includes(proxy)) {
        out.push({
          met: undefined,
          text: `blixt ≥ ${GOALS.rate}× ${proxy} ${what}: n/a, haproxy has no UDP proxy`,
        });
        continue;
      }
      const other = med(metric[proxy]);
      let why: string | undefined;
      if (best && other && direct !== undefined) {
        const medians = paths.map(p => med(metric[p])).filter((x): x is number => x !== undefined);
        why =
          `direct routing, with no balancer at all, reaches ${fmt(direct)} ${unit} ${cite(table, "direct")}, ${(direct / other).toFixed(2)}× ${proxy}'s ${fmt(other)} ${unit} ${cite(table, proxy)}` +
          (direct / other < GOALS.rate
            ? `: in this run the endpoints with nothing between them fall short of ${GOALS.rate}× ${proxy} themselves`
            : `, and ${best.path} reaches ${(best.value / direct).toFixed(2)}× direct`) +
          `; every path lands between ${fmt(Math.min(...medians))} and ${fmt(Math.max(...medians))} ${unit}`;
      }
      out.push({
        met: best && other ? best.value >= GOALS.rate * other : undefined,
        text: `blixt ≥ ${GOALS.rate}× ${proxy} ${what}: ${best && other ? `${best.path} ${(best.value / other).toFixed(2)}× (${fmt(best.value)} ${unit} ${cite(table, best.path)} vs ${fmt(other)} ${unit} ${cite(table, proxy)})` : "–"}`,
        why,
      });
    }
  }
  return out;
}

function latencyGoals(r: Results): Verdict[] {
  const out: Verdict[] = [];
  for (const [proto, p99] of [
    ["TCP", r.tcpP99],
    ["UDP", r.udpP99],
  ] as const) {
    const best = bestBlixt(p99, true);
    const d = med(p99.direct);
    const added = best && d !== undefined ? best.value - d : undefined;
    // The p99 of direct routing itself moves between runs; an added figure inside that spread says nothing.
    const noise = spread(p99.direct);
    const inconclusive =
      added !== undefined && Math.abs(added) <= noise && Math.abs(added) >= GOALS.p99AddedUs;
    let why: string | undefined;
    if (best && added !== undefined) {
      const hit = nsRows(r, progOf(best.path)).hit;
      why =
        (p99.direct && p99.direct.samples.length > 1
          ? `direct routing's own p99 ${cite(TABLE.latency, `direct ${proto}`, "p99")} spans ${fmt(noise)} µs over the runs (${range(p99.direct)} µs), ` +
            `${Math.abs(added) <= noise ? "no less than" : "less than"} the ${fmt(Math.abs(added))} µs between ${best.path}'s p99 and direct's`
          : `direct routing's p99 ${cite(TABLE.latency, `direct ${proto}`, "p99")} has one run here: no spread to weigh the ${fmt(Math.abs(added))} µs against`) +
        (hit ? `; ${best.path}'s program costs ${nsFigure(hit)} per packet` : "");
    }
    out.push({
      met:
        added === undefined ? undefined : inconclusive ? "inconclusive" : added < GOALS.p99AddedUs,
      text: `p99 added latency vs direct < ${GOALS.p99AddedUs} µs (${proto}): ${
        added === undefined
          ? "–"
          : `${best!.path} ${fmt(added)} µs (p99 ${fmt(best!.value)} µs ${cite(TABLE.latency, `${best!.path} ${proto}`, "p99")} vs ${fmt(d!)} µs ${cite(TABLE.latency, `direct ${proto}`, "p99")})`
      }`,
      why,
    });
  }
  return out;
}

function goals(r: Results): Verdict[] {
  return [
    hitGoal(r),
    throughputGoal(r),
    ...rateGoals(r),
    { met: undefined, text: "blixt ≥ IPVS: n/a, the bench has no IPVS path" },
    ...latencyGoals(r),
  ];
}

/** One line of a report's Goals section. */
export function goalLine(g: Verdict): string {
  const mark =
    g.met === undefined
      ? "n/a"
      : g.met === "inconclusive"
        ? "**inconclusive**"
        : g.met
          ? "**met**"
          : "**not met**";
  return `- ${mark}: ${g.text}${(g.met === false || g.met === "inconclusive") && g.why ? `. Why: ${g.why}.` : ""}`;
}

/** "Reading these figures": each note computed from this run's rows. */
function notes(r: Results): string[] {
  const out: string[] = [];
  // How much direct routing, with nothing in the path, moves between runs: the widest of its ranges.
  const directs = (
    [
      [TABLE.tcp1, r.tcp1.direct],
      [TABLE.tcp4, r.tcp4.direct],
      [TABLE.connections, r.connectionRate.direct],
      [TABLE.udp, r.udpRate.direct],
    ] as const
  )
    .filter(([, s]) => s && !s.failure && s.samples.length > 1 && Math.min(...s.samples) > 0)
    .map(([table, s]) => ({
      table,
      s: s!,
      ratio: Math.max(...s!.samples) / Math.min(...s!.samples),
    }));
  if (directs.length > 0) {
    const widest = directs.reduce((a, b) => (b.ratio > a.ratio ? b : a));
    out.push(
      `Direct routing, with nothing in the path, moves between runs by up to ${widest.ratio.toFixed(2)}× (${cite(widest.table, "direct")} ${range(widest.s)}): ` +
        "treat paths whose ranges overlap as on par, whichever median is higher.",
    );
  }
  const [xdp, tc] = [med(r.tcp1["blixt-xdp"]), med(r.tcp1["blixt-tc"])];
  const [xdpCpu, tcCpu] = [med(r.cpuPerGB["blixt-xdp"]), med(r.cpuPerGB["blixt-tc"])];
  const [xdpHit, tcHit] = [nsRows(r, "xdp").hit, nsRows(r, "tc").hit];
  if (
    xdp !== undefined &&
    tc !== undefined &&
    tc > 0 &&
    xdpCpu !== undefined &&
    tcCpu !== undefined &&
    tcCpu > 0 &&
    xdpHit &&
    tcHit
  ) {
    const cheaper = xdpHit.value <= tcHit.value;
    out.push(
      `XDP on a veth: blixt-xdp carries ${fmt(xdp)} Gbit/s ${cite(TABLE.tcp1, "blixt-xdp")}, ${(xdp / tc).toFixed(2)}× blixt-tc's ${fmt(tc)} Gbit/s ${cite(TABLE.tcp1, "blixt-tc")}, ` +
        `at ${fmt(xdpCpu)} s ${cite(TABLE.cpu, "blixt-xdp", "CPU s per GB")} of CPU per GB against ${fmt(tcCpu)} s ${cite(TABLE.cpu, "blixt-tc", "CPU s per GB")}, ` +
        `while its program costs ${nsFigure(xdpHit)} on a hit against TC's ${nsFigure(tcHit)}` +
        (cheaper && xdp < tc
          ? ": the difference lies outside the program. The veth driver turns GSO/TSO off on its peer while an XDP program is attached " +
            "(frames must fit one page; drivers/net/veth.c), so the client sends MTU-size segments, many more packets for the same bytes; " +
            "this run does not count packets, so that cause is not measured here. blixt uses TC ingress on veths; native XDP is for NICs."
          : "."),
    );
  }
  const conn = med(r.connectionRate.direct);
  const udp = med(r.udpRate.direct);
  const bestOther = (metric: ByPath, paths: Path[]) =>
    paths
      .filter(p => p !== "direct")
      .map((p): { p: Path; v: number | undefined } => ({ p, v: med(metric[p]) }))
      .filter((x): x is { p: Path; v: number } => x.v !== undefined)
      .reduce<{ p: Path; v: number } | undefined>((a, b) => (!a || b.v > a.v ? b : a), undefined);
  const [bestConn, bestUdp] = [bestOther(r.connectionRate, PATHS), bestOther(r.udpRate, UDP_PATHS)];
  if (conn && udp && bestConn && bestUdp) {
    const cpus = cpuCount(r);
    out.push(
      `Client, gateway and backends share ${cpus ? `the machine's ${cpus} CPUs` : "the machine's CPUs"} (Machine above): direct routing, with nothing in the path, ` +
        `reaches ${fmt(conn)} conn/s ${cite(TABLE.connections, "direct")} and ${fmt(udp)} kpps ${cite(TABLE.udp, "direct")}; the fastest other path, ` +
        `${bestConn.p} ${(bestConn.v / conn).toFixed(2)}× ${cite(TABLE.connections, bestConn.p)} and ${bestUdp.p} ${(bestUdp.v / udp).toFixed(2)}× ${cite(TABLE.udp, bestUdp.p)} of that.`,
    );
  }
  const [tcpP50, udpP50] = [r.tcpP50.direct, r.udpP50.direct];
  if (
    med(tcpP50) !== undefined &&
    med(udpP50) !== undefined &&
    tcpP50!.samples.length > 1 &&
    udpP50!.samples.length > 1
  ) {
    out.push(
      `Direct routing's own p50 ranges from run to run over ${cite(TABLE.latency, "direct TCP", "p50")} ${range(tcpP50)} µs and ${cite(TABLE.latency, "direct UDP", "p50")} ${range(udpP50)} µs ` +
        "at the same fixed message rate: compare paths within one run, by the added column.",
    );
  }
  return out.map(n => `- ${n}`);
}

export const CHARTS = {
  throughput: "throughput.svg",
  connections: "connections.svg",
  udp: "udp.svg",
  latency: "latency.svg",
} as const;

const bar = (label: string, s: Series | undefined): Bar => {
  if (!s || s.failure || s.samples.length === 0)
    return { label, median: 0, min: 0, max: 0, note: s?.failure ? "failed" : "n/a" };
  return {
    label,
    median: median(s.samples),
    min: Math.min(...s.samples),
    max: Math.max(...s.samples),
  };
};

/** The charts' SVG text, by file name. */
export function renderCharts(r: Results): Record<string, string> {
  return {
    [CHARTS.throughput]: barChart("TCP throughput (iperf3), median and min–max", "Gbit/s", [
      ...PATHS.map(p => bar(`${p} · 1 stream`, r.tcp1[p])),
      ...PATHS.map(p => bar(`${p} · 4 streams`, r.tcp4[p])),
    ]),
    [CHARTS.connections]: barChart(
      "TCP connection rate, median and min–max",
      "connections/s",
      PATHS.map(p => bar(p, r.connectionRate[p])),
    ),
    [CHARTS.udp]: barChart(
      "UDP packet rate (64-byte payloads), median and min–max",
      "kpps received",
      UDP_PATHS.map(p => bar(p, r.udpRate[p])),
    ),
    [CHARTS.latency]: barChart("Round-trip latency p99, median and min–max over runs", "µs", [
      ...PATHS.map(p => bar(`${p} · TCP`, r.tcpP99[p])),
      ...UDP_PATHS.map(p => bar(`${p} · UDP`, r.udpP99[p])),
    ]),
  };
}

export const E2E_BEGIN = "<!-- e2e-figures:begin -->";
export const E2E_END = "<!-- e2e-figures:end -->";
export const FAILOVER_BEGIN = "<!-- kind-failover:begin -->";
export const FAILOVER_END = "<!-- kind-failover:end -->";
export const AGENT_FANOUT_BEGIN = "<!-- agent-fanout:begin -->";
export const AGENT_FANOUT_END = "<!-- agent-fanout:end -->";
export const API_REQUESTS_BEGIN = "<!-- api-requests:begin -->";
export const API_REQUESTS_END = "<!-- api-requests:end -->";

/**
 * The blocks other scripts write into the report (hack/e2e-figures.ts; bench/agent-fanout.ts;
 * bench/requests.ts), which a bench run carries over.
 */
export const CARRIED_BLOCKS: readonly (readonly [string, string])[] = [
  [E2E_BEGIN, E2E_END],
  [FAILOVER_BEGIN, FAILOVER_END],
  [AGENT_FANOUT_BEGIN, AGENT_FANOUT_END],
  [API_REQUESTS_BEGIN, API_REQUESTS_END],
];

/**
 * `report` with `block` (its markers `begin` and `end` included) in place of the block there, or
 * after its end when it has none.
 */
export function withCarriedBlock(
  report: string,
  [begin, end]: readonly [string, string],
  block: string,
): string {
  const at = report.indexOf(begin);
  const until = report.indexOf(end, at);
  return at >= 0 && until > at
    ? report.slice(0, at) + block + report.slice(until + end.length)
    : `${report.trimEnd()}\n\n${block}\n`;
}

/**
 * The blocks of an earlier report that other scripts wrote (the local cluster's figures, kind's
 * failover figures, the agent-fanout figures, the API request figures; markers included), in
 * that order, if it has any.
 */
export function e2eBlock(previous: string | undefined): string | undefined {
  if (!previous) return undefined;
  const blocks = CARRIED_BLOCKS.flatMap(([begin, endMarker]) => {
    const start = previous.indexOf(begin);
    const end = previous.indexOf(endMarker, start);
    return start >= 0 && end > start ? [previous.slice(start, end + endMarker.length)] : [];
  });
  return blocks.length ? blocks.join("\n\n") : undefined;
}

/** The ns/packet table; a missing one-hash-lookup row is shown as not measured, after its floor row. */
function nsTable(r: Results): string {
  const rows: string[] = [];
  for (const [what, series] of Object.entries(r.nsPerPacket)) {
    rows.push(`| ${what} | ${cell(series, "ns")} |`);
    const prog = what.startsWith("xdp floor")
      ? "xdp"
      : what.startsWith("tc floor")
        ? "tc"
        : undefined;
    if (prog && !Object.keys(r.nsPerPacket).some(k => k.startsWith(`${prog} one hash lookup`))) {
      rows.push(`| ${prog} one hash lookup | ${NOT_MEASURED} |`);
    }
  }
  return ["| case | median (min–max) |", "| --- | --- |", ...rows].join("\n");
}

/** The sentence on what one run per packet adds: the per-run hit row minus the steady-state one. */
function perRunSetup(r: Results): string {
  const parts = (["xdp", "tc"] as const).flatMap(prog => {
    const { hit, hitPerRun } = nsRows(r, prog);
    return hit && hitPerRun
      ? [
          `${fmt(hitPerRun.value - hit.value)} ns for ${prog} (${nsFigure(hitPerRun)} against ${nsFigure(hit)})`,
        ]
      : [];
  });
  return parts.length
    ? `: the one-run-per-packet hit is above the steady-state hit by ${parts.join(", and ")}`
    : "";
}

export const FIGURES_BEGIN = "<!-- bench-figures";

/**
 * The run's figures, as JSON in an HTML comment at the end of the report (before the e2e block), so
 * the report can be written again from them (bench/rerender.ts) without a run. `>` is escaped so
 * no string can close the comment.
 */
export function figuresComment(r: Results): string {
  return [
    `${FIGURES_BEGIN}: the figures this report is written from (bench/rerender.ts)`,
    JSON.stringify(r).replace(/>/g, "\\u003e"),
    "-->",
  ].join("\n");
}

/** The figures a report carries (figuresComment), if it carries them. */
export function embeddedFigures(report: string): Results | undefined {
  const start = report.indexOf(FIGURES_BEGIN);
  if (start < 0) return undefined;
  const lines = report.slice(start).split("\n");
  if (lines[2] !== "-->")
    throw new Error(
      "the report's bench-figures comment is not one line of JSON between its markers",
    );
  return JSON.parse(lines[1]) as Results;
}

export function renderReport(r: Results, carried?: string): string {
  const s = r.settings;
  return [
    "# Dataplane benchmark",
    "",
    `Written by \`bench/run.sh${s.smoke ? " --smoke" : ""}\`. Each figure is the median of ${s.repeats} run${s.repeats > 1 ? "s" : ""}, with the`,
    "smallest and largest run in brackets; ratios compare medians. The runs go in rounds: each round",
    "measures every path once, in turn, so the machine's other load falls on all paths alike. All paths cross the same",
    "gateway namespace of the netns lab (test/lib/lab.ts): veth pairs, one client, three backends",
    "in namespaces of their own, all on this one machine, so these figures compare paths, not NICs.",
    "Every explanation cites the rows it takes its figures from, in brackets: table › row › column.",
    "",
    "| path | what carries client → backend |",
    "| --- | --- |",
    "| direct | the gateway namespace's kernel routes to the backend's own address; nothing attached |",
    "| blixt-xdp | the VIP; blixt's XDP ingress + TC egress on the gateway's client-facing veth |",
    "| blixt-tc | the VIP; blixt's TC ingress + TC egress |",
    "| nftables | the VIP; a prerouting `dnat` through `numgen random` to per-backend chains, as kube-proxy's nftables mode writes it, with conntrack |",
    "| haproxy | haproxy (`mode tcp`) in the gateway namespace; TCP only |",
    "| nginx | nginx `stream` (TCP and UDP) in the gateway namespace |",
    "",
    "IPVS is not measured: the bench has no IPVS path.",
    "",
    "Backends on other nodes (a local backend against a remote one, reached by IP-in-IP with direct",
    "server return) have a lab and a report of their own, written apart from this one:",
    "[NODES.md](NODES.md) (`bench/run.sh --only several-nodes`).",
    "",
    "## Machine",
    "",
    ...r.machine.map(m => `- ${m}`),
    ...(r.source ? [`- figures: ${r.source}`] : []),
    "",
    "## Goals",
    "",
    '"blixt" is the better of its two modes for each figure, named with it. Inconclusive: the',
    "difference is smaller than the run-to-run spread of direct routing's own figure.",
    "",
    ...goals(r).map(goalLine),
    "- several nodes, remote backend against local (throughput, connection rate, UDP packet rate,",
    "  ns/packet of encapsulation and decapsulation): their verdicts are in [NODES.md](NODES.md#goals)",
    "",
    "## Charts",
    "",
    `![TCP throughput](${CHARTS.throughput}) ![connection rate](${CHARTS.connections})`,
    `![UDP packet rate](${CHARTS.udp}) ![latency p99](${CHARTS.latency})`,
    "",
    "## Results",
    "",
    table(`${TABLE.tcp1} (iperf3)`, "Gbit/s", r.tcp1, PATHS),
    "",
    table(`${TABLE.tcp4} (iperf3 -P ${METHOD.streams})`, "Gbit/s", r.tcp4, PATHS),
    "",
    table(
      `${TABLE.connections} (wrk, one process per backend, ${r.settings.connections} connections at a time in all, each one HTTP request and reply with \`Connection: close\`, to nginx on the three backends; direct aims a process at each backend)`,
      "conn/s",
      r.connectionRate,
      PATHS,
    ),
    "",
    table(
      `${TABLE.udp} (iperf3 -u, ${METHOD.udpPayloadBytes}-byte payloads, unlimited rate, received)`,
      "kpps",
      r.udpRate,
      UDP_PATHS,
    ),
    "",
    `### ${TABLE.latency}`,
    "",
    "sockperf ping-pong (`--full-rtt`) in the client namespace against sockperf servers on the backends:",
    `one message at a time, ${METHOD.latencyMessagesPerSecond.toLocaleString("en-US")} a second (a low, fixed rate: nothing queues), for ${latencySeconds(s)} s per run after`,
    "sockperf's own warm-up, on one TCP connection or one UDP socket. p50 and p99 are sockperf's, over one",
    "run's round trips, then the median (min–max) over runs. Compare paths by the added column.",
    "",
    latencyTable(r),
    "",
    `### ${TABLE.cpu}`,
    "",
    "Measured during the one-stream TCP and the UDP runs above: the CPU time of the tasks that",
    "carry the traffic, divided by the GB or million packets the backend received. The bench",
    "assumes a kernel that accounts CPU by ticks without separate IRQ time (no",
    "CONFIG_IRQ_TIME_ACCOUNTING), so softirq work (veth receive, routing, conntrack, blixt's",
    "programs) is charged to the task it runs in: on veths the sending task, or ksoftirqd when",
    "deferred. The tasks are iperf3 at both ends (from iperf3's own report),",
    "every process in the gateway namespace (from /proc/PID/stat) and the ksoftirqd threads.",
    "Other work on the machine is left out. The gateway's forwarding cannot be told apart from",
    "the endpoints' stacks (it runs inside their system time), so what a path costs is the",
    '"added vs direct" column; "in gateway processes" is the proxy\'s own user + system time,',
    "already part of the total. CPU time is counted in whole ticks: short runs give coarse figures.",
    "",
    cpuTable(r),
    "",
    `### ${TABLE.apply}`,
    "",
    "One Gateway listener with N backends, applied by the node agent's own converge pass (desired",
    "state, read the maps back, diff, Maglev table, one `bpftool batch`) to real pinned maps; then",
    "one backend replaced (a new table under a free id, the switch, the old table deleted). Each",
    `run loads fresh maps. Tables have ${METHOD.maglevSlotsPerBackend} slots per backend, ${METHOD.maglevMinSize.toLocaleString("en-US")} to ${METHOD.maglevMaxSize.toLocaleString("en-US")}; the seconds are`,
    "the agent's own measure of its pass. A failed replace is the agent's error, as it reported it.",
    "",
    applyTable(r),
    "",
    `### ${TABLE.ns} of the ingress program (BPF_PROG_TEST_RUN)`,
    "",
    "Steady state: one `bpftool prog run ... repeat N` of an established flow to a service whose",
    "backend is its own VIP:port, so the DNAT writes the same bytes back and every repetition is a",
    "full conntrack hit + DNAT; the kernel's average per run. The floor row is the same measure of a",
    "frame the program passes at once (IPv6): BPF_PROG_TEST_RUN's own cost per repetition and the",
    "program's first check, to subtract. The one-hash-lookup row is the same measure of an IPv4 frame",
    "of a protocol blixt does not handle, to an address that is no Gateway address: the program parses",
    "it, looks the address up in `blixt_addrs` (one hash-map lookup, a miss) and passes it. A hit is the",
    "fast path: one conntrack lookup, the entry's service epoch, counters, rewrite (bpf/README.md).",
    `One run per packet: one \`bpftool prog run\` per packet (a new five-tuple each for "new flow": Maglev`,
    `lookup and conntrack insert), a sample is the median over ${s.progRuns} runs; this includes the syscall's`,
    `per-run set-up${perRunSetup(r)}.`,
    "",
    nsTable(r),
    "",
    "## Reading these figures",
    "",
    ...notes(r),
    "",
    figuresComment(r),
    "",
    ...(carried ? [carried, ""] : []),
  ].join("\n");
}
