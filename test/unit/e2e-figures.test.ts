// SPDX-License-Identifier: Apache-2.0
// The e2e figures block of bench/REPORT.md: parsed from recordFigure's JSON lines, summarised
// per figure, and put between its markers without touching the rest of the report.
import t from "tap";
import {
  BEGIN,
  END,
  FANOUT_CHART,
  fanoutBars,
  FAILOVER_BEGIN,
  FAILOVER_END,
  parseFigures,
  renderBlock,
  withBlock,
} from "../../hack/e2e-figures";

const context = { runs: 2, when: "2026-11-27T00:00:00Z", machine: "2 CPUs" };

t.test("figures are summarised per name: median, range, samples, in first-seen order", async t => {
  const figures = parseFigures(
    [
      '{"name":"b","ms":300}',
      '{"name":"a","ms":1000}',
      '{"name":"b","ms":100}',
      '{"name":"b","ms":200}',
      "",
    ].join("\n"),
  );
  const block = renderBlock(figures, context);
  const rows = block
    .split("\n")
    .filter(l => l.startsWith("| ") && !l.startsWith("| figure") && !l.startsWith("| ---"));
  t.same(rows, ["| b | 0.20 s | 0.10 s–0.30 s | 3 |", "| a | 1.00 s | 1.00 s–1.00 s | 1 |"]);
  t.ok(block.startsWith(BEGIN) && block.endsWith(END));
});

t.test("a malformed line is named", async t => {
  t.throws(() => parseFigures('{"name":"a","ms":1}\n{"name":"b"}'), /line 2: want/);
  t.throws(
    () => parseFigures('{"name":"a","value":1,"unit":"furlongs"}'),
    /line 1: want/,
    "an unknown unit",
  );
});

t.test("a rate, a share, a size and a count are shown in their units, not as times", async t => {
  const figures = parseFigures(
    [
      '{"name":"writes","value":2.04,"unit":"/s"}',
      '{"name":"writes","value":1.96,"unit":"/s"}',
      '{"name":"kept","value":100,"unit":"%"}',
      '{"name":"rss","value":211.4,"unit":"MiB"}',
      '{"name":"per change","value":41,"unit":"writes"}',
      '{"name":"time","ms":1500}',
    ].join("\n"),
  );
  const block = renderBlock(figures, context);
  t.match(block, "| writes | 2.00 /s | 1.96 /s–2.04 /s | 2 |");
  t.match(block, "| kept | 100.0 % | 100.0 %–100.0 % | 1 |");
  t.match(block, "| rss | 211 MiB | 211 MiB–211 MiB | 1 |");
  t.match(block, "| per change | 41 writes | 41 writes–41 writes | 1 |");
  t.match(block, "| time | 1.50 s | 1.50 s–1.50 s | 1 |");
  t.throws(
    () =>
      renderBlock(parseFigures('{"name":"a","ms":1}\n{"name":"a","value":1,"unit":"%"}'), context),
    /recorded in ms and in %/,
  );
});

t.test("the fanout rows become a chart: blixt beside kube-proxy, by count and change", async t => {
  const figures = parseFigures(
    [
      '{"name":"1000 routes: scale 2 → 3, EndpointSlice change → the first and last route reach the new pod","ms":2500}',
      '{"name":"1000 routes: scale 2 → 3, EndpointSlice change → the first and last route reach the new pod","ms":3500}',
      '{"name":"1000 ClusterIP Services (kube-proxy): scale 2 → 3, EndpointSlice change → the first and last Service reach the new pod","ms":1200}',
      '{"name":"100 routes: scale 3 → 2, EndpointSlice change → the first and last route stop reaching the removed pod","ms":800}',
      '{"name":"100 routes: controller RSS","value":150,"unit":"MiB"}',
    ].join("\n"),
  );
  t.same(fanoutBars(figures), [
    { label: "blixt, 100, 3 → 2", median: 0.8, min: 0.8, max: 0.8 },
    { label: "blixt, 1,000, 2 → 3", median: 3, min: 2.5, max: 3.5 },
    { label: "kube-proxy, 1,000, 2 → 3", median: 1.2, min: 1.2, max: 1.2 },
  ]);
  t.match(renderBlock(figures, context), `](${FANOUT_CHART})`, "the block shows the chart");
  t.notMatch(
    renderBlock(parseFigures('{"name":"time","ms":1500}'), context),
    FANOUT_CHART,
    "and only when there are fanout rows",
  );
});

t.test("the block replaces the old one and leaves the rest of the report alone", async t => {
  const first = withBlock(
    "# Report\n\nbench tables\n",
    renderBlock([{ name: "x", value: 1, unit: "ms" as const }], context),
  );
  t.match(first, /^# Report\n\nbench tables\n\n<!-- e2e-figures:begin -->/);
  const second = withBlock(
    `${first}\nafter\n`,
    renderBlock([{ name: "y", value: 2, unit: "ms" as const }], context),
  );
  t.notMatch(second, /\| x \|/);
  t.match(second, /\| y \|/);
  t.match(second, /bench tables/);
  t.match(second, /after\n$/);
  t.equal(second.split(BEGIN).length, 2, "one block");
});

t.test("the kind failover figures have a block of their own beside the local one", async t => {
  const local = withBlock(
    "# Report\n",
    renderBlock([{ name: "x", value: 1, unit: "ms" as const }], context),
  );
  const failover = renderBlock(
    [{ name: "failover: node stopped → address answers again", value: 2058, unit: "ms" as const }],
    { ...context, runs: 1 },
    "kind-failover",
  );
  t.ok(failover.startsWith(FAILOVER_BEGIN) && failover.endsWith(FAILOVER_END));
  t.match(failover, /from 1 run of test\/kind\/failover\.test\.ts/);
  const both = withBlock(local, failover, "kind-failover");
  t.match(both, /\| x \|/, "the local block stays");
  t.match(both, /\| failover: node stopped → address answers again \| 2\.06 s \|/);
  const again = withBlock(
    both,
    renderBlock([{ name: "y", value: 5, unit: "ms" as const }], context, "kind-failover"),
    "kind-failover",
  );
  t.notMatch(again, /\| failover: node stopped/, "replaced, not appended");
  t.match(again, /\| x \|/);
  t.equal(again.split(FAILOVER_BEGIN).length, 2, "one failover block");
});
