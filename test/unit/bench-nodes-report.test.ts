// SPDX-License-Identifier: Apache-2.0
// bench/NODES.md from figures: the goals' verdicts follow the medians (met, not met, inconclusive
// within the local row's own spread), every citation names a row of the report's own tables and
// quotes that row's median, and the committed report is exactly what the renderer writes from the
// figures it carries.
import { readFile } from "node:fs/promises";
import t from "tap";
import {
  NS_CASE,
  embeddedNodeFigures,
  nodeGoals,
  renderNodesReport,
  type NodeResults,
} from "../../bench/nodes-report.js";
import type { Series } from "../../bench/report.js";

const s = (...samples: number[]): Series => ({ samples });

function figures(): NodeResults {
  return {
    settings: {
      smoke: false,
      repeats: 3,
      seconds: 4,
      connections: 32,
      wrkProcesses: 3,
      progRuns: 1000,
      latencySamples: 1000,
    },
    machine: ["Test OS", "load average when the run started: 0.5, 0.6, 0.7"],
    tcp1: {
      "direct-local": s(9.1, 9.7, 10.3),
      local: s(8.6, 9.2, 9.9),
      "direct-remote": s(8.8, 9.4, 9.8),
      remote: s(8.4, 8.9, 9.5),
    },
    connectionRate: {
      "direct-local": s(10100, 10400, 10900),
      local: s(9700, 9900, 10300),
      "direct-remote": s(5500, 5700, 6100),
      remote: s(4700, 4800, 5100),
    },
    udpRate: {
      "direct-local": s(120, 130, 140),
      local: s(110, 117, 125),
      "direct-remote": s(112, 118, 128),
      remote: s(70, 74, 79),
    },
    tcpP50: { local: s(60, 70, 80), remote: s(61, 72, 83) },
    tcpP99: { local: s(600, 700, 800), remote: s(610, 720, 830) },
    udpP50: { local: s(60, 70, 80), remote: s(61, 72, 83) },
    udpP99: { local: s(600, 700, 800), remote: s(610, 720, 830) },
    nsPerPacket: {
      [NS_CASE.floor("xdp")]: s(140, 151, 160),
      [NS_CASE.local("xdp")]: s(330, 341, 350),
      [NS_CASE.encap("xdp")]: s(350, 361, 380),
      [NS_CASE.floor("tc")]: s(141, 150, 162),
      [NS_CASE.local("tc")]: s(450, 501, 560),
      [NS_CASE.encap("tc")]: s(770, 801, 830),
      [NS_CASE.decap]: s(520, 571, 600),
    },
  };
}

/** Each table's rows by their first cell, under the heading it follows. */
function tables(report: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let heading = "";
  for (const line of report.split("\n")) {
    if (line.startsWith("### ")) heading = line.slice(4);
    else if (line.startsWith("| ") && heading) {
      const cells = line
        .split("|")
        .slice(1, -1)
        .map(c => c.trim());
      if (!out.has(heading)) out.set(heading, new Map());
      out.get(heading)!.set(cells[0], cells.slice(1));
    }
  }
  return out;
}

t.test("the goals follow the medians, and say why when not met", async t => {
  const goals = nodeGoals(figures());
  t.same(
    goals.map(g => g.met),
    [true, false, false, true, false, "inconclusive"],
  );
  t.match(goals[0].text, /remote ≥ 0\.9× local TCP throughput \(one stream\): 0\.97×/);
  t.match(
    goals[1].why,
    /plain routing the same two ways, with nothing attached, gives 5,700 conn\/s \[TCP connection rate › direct-remote\] against 10,400 conn\/s \[TCP connection rate › direct-local\], 0\.55×, against blixt.s 0\.48× remote to local: the way through two nodes falls short of 0\.9× on this machine without blixt too, and blixt.s remote path falls further/,
  );
  t.match(goals[2].why, /the way through two nodes alone stays above 0\.9×/);
  t.match(goals[3].text, /XDP, receiving node \(encapsulating\): 20\.0 ns more/);
  t.match(
    goals[4].why,
    /^270\.0 ns over the goal, more than the local row's own samples span \[ns\/packet › tc local backend: conntrack hit, DNAT\] 450\.0–560\.0 ns, 110\.0 ns/,
  );
  t.match(
    goals[5].why,
    /^40\.0 ns over the goal, no more than the local row's own samples span \[ns\/packet › tc local backend: conntrack hit, DNAT\] 450\.0–560\.0 ns, 110\.0 ns: this run does not tell/,
  );
});

t.test("every citation names a row of the report's tables and quotes its median", async t => {
  const report = renderNodesReport(figures());
  const byTitle = tables(report);
  const cited = [...report.matchAll(/([\d.,]+) [^\s[]+ \[([^\]›]+?) › ([^\]›]+?)\]/g)];
  t.ok(cited.length >= 10, `${cited.length} citations`);
  for (const [, figure, title, row] of cited) {
    const table = [...byTitle].find(([h]) => h.startsWith(title.trim()))?.[1];
    t.ok(table?.has(row.trim()), `[${title} › ${row}] is a row`);
    t.ok(
      table?.get(row.trim())?.[0].startsWith(`${figure} `),
      `${figure} is the median of [${title} › ${row}]`,
    );
  }
});

t.test("the figures ride along and render the report again unchanged", async t => {
  const report = renderNodesReport(figures());
  t.same(embeddedNodeFigures(report), figures());
  t.equal(renderNodesReport(embeddedNodeFigures(report)!), report);
});

t.test("bench/NODES.md is renderNodesReport of the figures it carries", async t => {
  const report = await readFile(new URL("../../bench/NODES.md", import.meta.url), "utf8");
  const r = embeddedNodeFigures(report);
  if (!r) return t.fail("bench/NODES.md carries no figures");
  t.equal(
    renderNodesReport(r),
    report,
    "run `npx tsx bench/nodes.ts --rerender` after changing bench/nodes-report.ts",
  );
});
