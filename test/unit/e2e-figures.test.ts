// SPDX-License-Identifier: Apache-2.0
// The e2e figures block of bench/REPORT.md: parsed from recordFigure's JSON lines, summarised
// per figure, and put between its markers without touching the rest of the report.
import t from "tap";
import { BEGIN, END, parseFigures, renderBlock, withBlock } from "../../hack/e2e-figures";

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
});

t.test("the block replaces the old one and leaves the rest of the report alone", async t => {
  const first = withBlock(
    "# Report\n\nbench tables\n",
    renderBlock([{ name: "x", ms: 1 }], context),
  );
  t.match(first, /^# Report\n\nbench tables\n\n<!-- e2e-figures:begin -->/);
  const second = withBlock(`${first}\nafter\n`, renderBlock([{ name: "y", ms: 2 }], context));
  t.notMatch(second, /\| x \|/);
  t.match(second, /\| y \|/);
  t.match(second, /bench tables/);
  t.match(second, /after\n$/);
  t.equal(second.split(BEGIN).length, 2, "one block");
});
