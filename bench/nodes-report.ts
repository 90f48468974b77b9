// SPDX-License-Identifier: Apache-2.0
// The several-nodes benchmark's pure half: its goals and bench/NODES.md, from the samples
// bench/nodes.ts measured. No I/O here.
import { cell, cite, fmt, goalLine, med, range, type Series, type Verdict } from "./report.js";

/**
 * The paths of the several-nodes lab: blixt with the backend behind the node the client's packets
 * reach (local) or behind the other node (remote), and, as controls, plain routing the same ways
 * with nothing attached (direct-local, direct-remote).
 */
export type NodePath = "direct-local" | "local" | "direct-remote" | "remote";
export const NODE_PATHS: NodePath[] = ["direct-local", "local", "direct-remote", "remote"];
/** Each path's one-node counterpart, the figure its "vs one node" column divides by. */
export const ONE_NODE: Record<NodePath, NodePath> = {
  "direct-local": "direct-local",
  local: "local",
  "direct-remote": "direct-local",
  remote: "local",
};

export interface NodeSettings {
  smoke: boolean;
  /** rounds: each measures every path once */
  repeats: number;
  /** seconds per iperf3 and wrk run */
  seconds: number;
  /** connections wrk keeps open at a time, over its processes */
  connections: number;
  /** wrk processes, all aimed at the path's address */
  wrkProcesses: number;
  /** BPF_PROG_TEST_RUN runs per ns/packet sample (one run per packet) */
  progRuns: number;
  /** round trips per sockperf run */
  latencySamples: number;
}

export type ByNodePath = Partial<Record<NodePath, Series>>;

export interface NodeResults {
  settings: NodeSettings;
  machine: string[];
  tcp1: ByNodePath;
  connectionRate: ByNodePath;
  udpRate: ByNodePath;
  tcpP50: ByNodePath;
  tcpP99: ByNodePath;
  udpP50: ByNodePath;
  udpP99: ByNodePath;
  /** ns/packet rows by case (NS_CASE) */
  nsPerPacket: Record<string, Series>;
}

export const emptyNodeResults = (settings: NodeSettings, machine: string[]): NodeResults => ({
  settings,
  machine,
  tcp1: {},
  connectionRate: {},
  udpRate: {},
  tcpP50: {},
  tcpP99: {},
  udpP50: {},
  udpP99: {},
  nsPerPacket: {},
});

/** The goals' thresholds: targets, never measurements. */
export const NODE_GOALS = { ratio: 0.9, addedNs: 30 } as const;

export const NODE_TABLE = {
  tcp1: "TCP throughput, one stream",
  connections: "TCP connection rate",
  udp: "UDP packet rate",
  latency: "Round-trip latency",
  ns: "ns/packet",
} as const;

/** The ns/packet rows; every one is one `bpftool prog run` per packet. */
export const NS_CASE = {
  floor: (prog: "xdp" | "tc") => `${prog} floor: an IPv6 frame, passed at once`,
  local: (prog: "xdp" | "tc") => `${prog} local backend: conntrack hit, DNAT`,
  encap: (prog: "xdp" | "tc") =>
    `${prog} remote backend, receiving node: conntrack hit, IP-in-IP to the backend's node`,
  decap: "tc remote backend, backend's node: IP-in-IP in, decapsulated, conntrack hit, DNAT",
} as const;

/** max − min of a series of more than one sample, else undefined. */
const spreadOf = (s?: Series) =>
  s && !s.failure && s.samples.length > 1
    ? Math.max(...s.samples) - Math.min(...s.samples)
    : undefined;

function table(title: string, unit: string, results: ByNodePath): string {
  const vs = (p: NodePath) => {
    const [x, one] = [med(results[p]), med(results[ONE_NODE[p]])];
    return x !== undefined && one ? `${(x / one).toFixed(2)}×` : "–";
  };
  return [
    `### ${title}`,
    "",
    "| path | median (min–max) | vs one node |",
    "| --- | --- | --- |",
    ...NODE_PATHS.map(p => `| ${p} | ${cell(results[p], unit)} | ${vs(p)} |`),
  ].join("\n");
}

function latencyTable(r: NodeResults): string {
  const row = (p: NodePath, proto: string, p50: ByNodePath, p99: ByNodePath) => {
    const [x, l] = [med(p99[p]), med(p99[ONE_NODE[p]])];
    return `| ${p} | ${proto} | ${cell(p50[p], "µs")} | ${cell(p99[p], "µs")} | ${x !== undefined && l !== undefined ? `${fmt(x - l)} µs` : "–"} |`;
  };
  return [
    "| path | proto | p50 (min–max) | p99 (min–max) | p99 added vs one node |",
    "| --- | --- | --- | --- | --- |",
    ...NODE_PATHS.map(p => row(p, "TCP", r.tcpP50, r.tcpP99)),
    ...NODE_PATHS.map(p => row(p, "UDP", r.udpP50, r.udpP99)),
  ].join("\n");
}

function nsTable(r: NodeResults): string {
  return [
    "| case (one run per packet) | median (min–max) |",
    "| --- | --- |",
    ...Object.entries(r.nsPerPacket).map(([k, s]) => `| ${k} | ${cell(s, "ns")} |`),
  ].join("\n");
}

const nsFigure = (r: NodeResults, row: string) => {
  const v = med(r.nsPerPacket[row]);
  return v === undefined ? undefined : `${fmt(v)} ns ${cite(NODE_TABLE.ns, row)}`;
};

function ratioGoals(r: NodeResults): Verdict[] {
  const out: Verdict[] = [];
  for (const [what, metric, unit, title] of [
    ["TCP throughput (one stream)", r.tcp1, "Gbit/s", NODE_TABLE.tcp1],
    ["connection rate", r.connectionRate, "conn/s", NODE_TABLE.connections],
    ["UDP packet rate", r.udpRate, "kpps", NODE_TABLE.udp],
  ] as const) {
    const [l, x] = [med(metric.local), med(metric.remote)];
    let why: string | undefined;
    // Short of the goal by no more than the local figure's own spread over the runs: inconclusive.
    const shortfall = l !== undefined && x !== undefined ? NODE_GOALS.ratio * l - x : undefined;
    const noise = spreadOf(metric.local);
    const inconclusive =
      shortfall !== undefined && shortfall > 0 && noise !== undefined && shortfall <= noise;
    if (l !== undefined && x !== undefined) {
      const parts = [
        inconclusive
          ? `remote falls ${fmt(shortfall!)} ${unit} short of ${NODE_GOALS.ratio}× local, no more than local's own samples span ${cite(title, "local")} ${range(metric.local)} ${unit}, ${fmt(noise!)} ${unit}: this run does not tell whether the goal is met`
          : "on the way in, the remote path crosses a second gateway namespace and the bridge between the nodes, and each packet is encapsulated on the receiving node and decapsulated on the backend's (the lab above)",
      ];
      const [dl, dr] = [med(metric["direct-local"]), med(metric["direct-remote"])];
      if (dl && dr !== undefined)
        parts.push(
          `plain routing the same two ways, with nothing attached, gives ${fmt(dr)} ${unit} ${cite(title, "direct-remote")} against ${fmt(dl)} ${unit} ${cite(title, "direct-local")}, ${(dr / dl).toFixed(2)}×, against blixt's ${(x / l).toFixed(2)}× remote to local: ` +
            (dr / dl < NODE_GOALS.ratio
              ? `the way through two nodes falls short of ${NODE_GOALS.ratio}× on this machine without blixt too` +
                (x / l < dr / dl ? ", and blixt's remote path falls further" : "")
              : `the way through two nodes alone stays above ${NODE_GOALS.ratio}×: in this run blixt's remote path loses more against its one-node counterpart than plain routing does`),
        );
      const [enc, loc, dec] = [
        nsFigure(r, NS_CASE.encap("tc")),
        nsFigure(r, NS_CASE.local("tc")),
        nsFigure(r, NS_CASE.decap),
      ];
      if (enc && loc && dec)
        parts.push(
          `in BPF_PROG_TEST_RUN, TC's encapsulating run costs ${enc} and its decapsulating run ${dec}, against ${loc} for the local DNAT`,
        );
      parts.push("this run measures nothing that divides the loss further");
      why = parts.join("; ");
    }
    out.push({
      met:
        l === undefined || x === undefined
          ? undefined
          : inconclusive
            ? "inconclusive"
            : x >= NODE_GOALS.ratio * l,
      text: `remote ≥ ${NODE_GOALS.ratio}× local ${what}: ${
        l !== undefined && x !== undefined
          ? `${(x / l).toFixed(2)}× (${fmt(x)} ${unit} ${cite(title, "remote")} vs ${fmt(l)} ${unit} ${cite(title, "local")})`
          : "–"
      }`,
      why,
    });
  }
  return out;
}

function nsGoals(r: NodeResults): Verdict[] {
  const out: Verdict[] = [];
  for (const [prog, row, what] of [
    ["xdp", NS_CASE.encap("xdp"), "XDP, receiving node (encapsulating)"],
    ["tc", NS_CASE.encap("tc"), "TC, receiving node (encapsulating)"],
    ["tc", NS_CASE.decap, "TC, backend's node (decapsulating)"],
  ] as const) {
    const local = NS_CASE.local(prog);
    const [x, l] = [med(r.nsPerPacket[row]), med(r.nsPerPacket[local])];
    const added = x !== undefined && l !== undefined ? x - l : undefined;
    const ls = r.nsPerPacket[local];
    const noise = spreadOf(ls);
    const inconclusive =
      added !== undefined &&
      added > NODE_GOALS.addedNs &&
      noise !== undefined &&
      added - NODE_GOALS.addedNs <= noise;
    let why: string | undefined;
    if (added !== undefined) {
      const floor = nsFigure(r, NS_CASE.floor(prog));
      why =
        (inconclusive
          ? `${fmt(added - NODE_GOALS.addedNs)} ns over the goal, no more than the local row's own samples span ${cite(NODE_TABLE.ns, local)} ${range(ls)} ns, ${fmt(noise!)} ns: this run does not tell whether the goal is met`
          : `${fmt(added - NODE_GOALS.addedNs)} ns over the goal, more than the local row's own samples span ${cite(NODE_TABLE.ns, local)} ${range(ls)} ns${noise === undefined ? "" : `, ${fmt(noise)} ns`}`) +
        (floor
          ? `; every row includes the per-run cost of a run on its own, the floor row's ${floor}`
          : "") +
        (row === NS_CASE.decap
          ? "; besides the local DNAT's work, the decapsulating run checks the outer header against blixt_backends and takes it off (bpf_skb_adjust_room; bpf/README.md); this run does not time those steps apart"
          : "; instead of the DNAT rewrite, the encapsulating run looks the route to the backend up (bpf_fib_lookup), makes room for and writes the outer header and sends the packet itself (bpf/README.md); this run does not time those steps apart");
    }
    out.push({
      met:
        added === undefined
          ? undefined
          : inconclusive
            ? "inconclusive"
            : added <= NODE_GOALS.addedNs,
      text: `≤ ${NODE_GOALS.addedNs} ns/packet more than the local path, ${what}: ${
        added === undefined
          ? "–"
          : `${fmt(added)} ns more (${fmt(x!)} ns ${cite(NODE_TABLE.ns, row)} vs ${fmt(l!)} ns ${cite(NODE_TABLE.ns, local)})`
      }`,
      why,
    });
  }
  return out;
}

export function nodeGoals(r: NodeResults): Verdict[] {
  return [...ratioGoals(r), ...nsGoals(r)];
}

/** "Reading these figures": how far plain routing through one node, with nothing attached, moves between runs. */
function notes(r: NodeResults): string[] {
  const widest = (
    [
      [NODE_TABLE.tcp1, r.tcp1["direct-local"]],
      [NODE_TABLE.connections, r.connectionRate["direct-local"]],
      [NODE_TABLE.udp, r.udpRate["direct-local"]],
    ] as const
  )
    .filter(([, x]) => x && !x.failure && x.samples.length > 1 && Math.min(...x.samples) > 0)
    .map(([title, x]) => ({
      title,
      x: x!,
      ratio: Math.max(...x!.samples) / Math.min(...x!.samples),
    }))
    .reduce<{ title: string; x: Series; ratio: number } | undefined>(
      (a, b) => (!a || b.ratio > a.ratio ? b : a),
      undefined,
    );
  return widest
    ? [
        `- Plain routing through one node, with nothing attached, moves between runs by up to ${widest.ratio.toFixed(2)}× (${cite(widest.title, "direct-local")} ${range(widest.x)}): ` +
          "treat paths whose ranges overlap as on par, whichever median is higher.",
      ]
    : [];
}

export const NODE_FIGURES_BEGIN = "<!-- nodes-figures";

export function renderNodesReport(r: NodeResults): string {
  const s = r.settings;
  return [
    "# Several nodes: local backend vs remote backend",
    "",
    `Written by \`bench/run.sh --only several-nodes${s.smoke ? " --smoke" : ""}\` (bench/nodes.ts), apart from [REPORT.md](REPORT.md), which`,
    "`bench/run.sh` writes whole from its own run. Each figure is the median of",
    `${s.repeats} run${s.repeats > 1 ? "s" : ""}, with the smallest and largest in brackets; ratios compare medians. The runs go in rounds:`,
    "each round measures every path once, in turn, so the machine's other load falls on all alike.",
    'The direct paths are controls: what the way through one or two nodes costs without blixt; "vs one',
    'node" divides a two-node path by its one-node counterpart (remote by local, direct-remote by direct-local).',
    "Every explanation cites the rows it takes its figures from, in brackets: table › row › column.",
    "",
    "The lab (netns, all on this one machine, as test/lab/dsr.test.ts builds it): a client and two",
    "gateway nodes on one bridge, a backend behind each node on a veth of its own. The client routes",
    "both Gateway addresses and both backend networks to the first node. On the local and remote",
    "paths blixt runs in TC mode on both nodes' bridge-facing veths (ingress and egress), as on veths",
    "in REPORT.md; XDP on a veth is left out here (REPORT.md, blixt-xdp); on the direct paths nothing",
    "is attached. The nodes send no ICMP redirects, so the client keeps its routes.",
    "",
    "| path | client → backend | backend → client |",
    "| --- | --- | --- |",
    "| direct-local | to the first node's backend's own address: routed by the first node; nothing attached | routed by the first node |",
    "| direct-remote | to the second node's backend's own address: routed by the first node, then the second; nothing attached | routed by the second node straight to the client |",
    "| local | first node: conntrack, DNAT, forwarded to its own backend | the backend's node (the first): reverse NAT, to the client |",
    "| remote | first node: conntrack, IP-in-IP to the second node; second node: decapsulated, DNAT, forwarded to its backend | the backend's node (the second): reverse NAT, straight to the client (direct server return) |",
    "",
    "Same tools and method as REPORT.md: iperf3 (one TCP stream; UDP with",
    `64-byte payloads, unlimited rate, received), wrk (${s.wrkProcesses} processes, ${s.connections} connections at a time in all, each`,
    "one HTTP request and reply with `Connection: close`, to nginx on the path's one backend, behind",
    "the first node or the second), sockperf",
    "ping-pong (`--full-rtt`, 1,000 messages a second). iperf3 and wrk run",
    `${s.seconds} s each.`,
    "",
    "## Machine",
    "",
    ...r.machine.map(m => `- ${m}`),
    "",
    "## Goals",
    "",
    "Met and not met compare medians. Inconclusive: short of the goal by no more than the spread",
    "(max − min) of the local row's own samples.",
    "",
    ...nodeGoals(r).map(goalLine),
    "",
    "## Results",
    "",
    table(`${NODE_TABLE.tcp1} (iperf3)`, "Gbit/s", r.tcp1),
    "",
    table(`${NODE_TABLE.connections} (wrk)`, "conn/s", r.connectionRate),
    "",
    table(`${NODE_TABLE.udp} (iperf3 -u)`, "kpps", r.udpRate),
    "",
    `### ${NODE_TABLE.latency} (sockperf)`,
    "",
    "p50 and p99 are sockperf's, over one run's round trips, then the median (min–max) over runs.",
    "",
    latencyTable(r),
    "",
    `### ${NODE_TABLE.ns} (BPF_PROG_TEST_RUN)`,
    "",
    "One `bpftool prog run` per packet, the same packet again and again: a sample is the median over",
    `${s.progRuns} runs. Not REPORT.md's steady state (\`repeat N\`): a repetition runs the program on the`,
    "previous one's output, and an encapsulated packet is 20 bytes longer each time and would take",
    "the decapsulating path next; one run per packet gives every path the same start, and every row",
    "includes the per-run cost of a run on its own (the floor rows: an IPv6 frame, passed at once).",
    "Local backend: an established flow to a service whose backend is on this node (REPORT.md's",
    '"conntrack hit (one run per packet)" rows, measured again here in the same rounds). Receiving',
    "node: an established flow to a service whose backend is flagged remote; the route to it leads",
    "through a next hop whose MAC is known (in a netns of the run's own), so the program sends the",
    "packet itself (XDP: redirect; TC: `bpf_redirect_neigh`). Backend's node: the same client packet",
    "in IP-in-IP from the other node to a local backend, its flow established. A run on its own",
    "pays for the syscall's set-up and starts with whatever the caches hold; how much of a difference",
    "between these rows would remain in a steady flow of packets, this run does not show.",
    "",
    nsTable(r),
    "",
    ...(notes(r).length ? ["## Reading these figures", "", ...notes(r), ""] : []),
    `${NODE_FIGURES_BEGIN}: the figures this report is written from`,
    JSON.stringify(r).replace(/>/g, "\\u003e"),
    "-->",
    "",
  ].join("\n");
}

/** The figures a NODES.md carries (renderNodesReport's closing comment), if it carries them. */
export function embeddedNodeFigures(report: string): NodeResults | undefined {
  const start = report.indexOf(NODE_FIGURES_BEGIN);
  if (start < 0) return undefined;
  const lines = report.slice(start).split("\n");
  if (lines[2] !== "-->")
    throw new Error(
      "the report's nodes-figures comment is not one line of JSON between its markers",
    );
  return JSON.parse(lines[1]) as NodeResults;
}
