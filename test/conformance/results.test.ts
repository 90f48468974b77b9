// SPDX-License-Identifier: Apache-2.0
// The conformance results pipeline (hack/conformance/results.ts) on test2json streams shaped
// like the suite's: testify failures, feature skips, a suite that stops in its setup.
import t from "tap";
import {
  type CatalogueEntry,
  type TestEvent,
  failureReason,
  formatTestList,
  outcomesFromEvents,
  parseEvents,
  parseTestList,
  passedCoreTests,
  recordPassing,
  regressions,
  renderResults,
  resultRows,
  summarizeReport,
  withReadmeResults,
  withReportsTable,
} from "../../hack/conformance/results";

const catalogue: CatalogueEntry[] = [
  {
    name: "GatewayObservedGenerationBump",
    description: "A Gateway in the gateway-conformance-infra namespace should update the observedGeneration in all of its Status.Conditions after an update to the spec",
    features: ["Gateway"],
    profiles: { "GATEWAY-TCP": "core", "GATEWAY-UDP": "core" },
  },
  {
    name: "GatewayStaticAddresses",
    description: "A Gateway in the gateway-conformance-infra namespace should be able to use previously determined addresses.",
    features: ["Gateway", "GatewayStaticAddresses"],
    profiles: { "GATEWAY-TCP": "extended", "GATEWAY-UDP": "extended" },
  },
  {
    name: "TCPRouteWeightedRouting",
    description: "A TCPRoute with weighted backends",
    features: ["Gateway", "TCPRoute"],
    profiles: { "GATEWAY-TCP": "core" },
  },
  {
    name: "UDPRoute",
    description: "Make sure UDPRoute is working",
    features: ["Gateway", "UDPRoute"],
    profiles: { "GATEWAY-UDP": "core" },
  },
];

const out = (test: string, ...lines: string[]): TestEvent[] =>
  lines.map((Output) => ({ Action: "output", Test: test, Output }));

// A run in which the Gateway test passes, the static-address test is skipped for its
// feature, the TCP test fails in a nested assertion and the UDP test is never reached.
const run: TestEvent[] = [
  { Action: "run", Test: "TestConformance" },
  { Action: "run", Test: "TestConformance/GatewayObservedGenerationBump" },
  ...out("TestConformance/GatewayObservedGenerationBump", "    apply.go:276: Creating gateway-observed-generation-bump Gateway\n"),
  { Action: "pass", Test: "TestConformance/GatewayObservedGenerationBump" },
  { Action: "run", Test: "TestConformance/GatewayStaticAddresses" },
  ...out(
    "TestConformance/GatewayStaticAddresses",
    "    conformance.go:56: Skipping GatewayStaticAddresses: suite does not support GatewayStaticAddresses\n",
  ),
  { Action: "skip", Test: "TestConformance/GatewayStaticAddresses" },
  { Action: "run", Test: "TestConformance/TCPRouteWeightedRouting" },
  { Action: "run", Test: "TestConformance/TCPRouteWeightedRouting/Weighted_backends" },
  ...out(
    "TestConformance/TCPRouteWeightedRouting/Weighted_backends",
    "    helpers.go:211: \n",
    "        \tError Trace:\t/go/conformance/utils/kubernetes/helpers.go:211\n",
    "        \tError:      \tReceived unexpected error:\n",
    "        \t            \tcontext deadline exceeded\n",
    "        \tTest:       \tTestConformance/TCPRouteWeightedRouting/Weighted_backends\n",
    "        \tMessages:   \ttimed out waiting for Gateway address to be assigned\n",
  ),
  { Action: "fail", Test: "TestConformance/TCPRouteWeightedRouting/Weighted_backends" },
  { Action: "fail", Test: "TestConformance/TCPRouteWeightedRouting" },
  { Action: "fail", Test: "TestConformance" },
];

t.test("outcomes and one-line reasons come from the suite's own output", async (t) => {
  const { tests, suiteFailure } = outcomesFromEvents(run);
  t.same(tests.get("GatewayObservedGenerationBump"), { outcome: "pass", reason: "" });
  t.same(tests.get("GatewayStaticAddresses"), {
    outcome: "skip",
    reason: "feature GatewayStaticAddresses not claimed",
  });
  t.same(tests.get("TCPRouteWeightedRouting"), {
    outcome: "fail",
    reason: "timed out waiting for Gateway address to be assigned (Received unexpected error: context deadline exceeded)",
  });
  t.notOk(tests.has("Weighted_backends"), "a nested assertion is no test of its own");
  t.equal(suiteFailure, undefined, "the parent failed only because a test did");
});

t.test("a suite that stops in setup leaves every test not run, with the reason", async (t) => {
  const setupFailure: TestEvent[] = [
    { Action: "run", Test: "TestConformance" },
    ...out(
      "TestConformance",
      "    suite.go:412: Applying base manifests\n",
      "    helpers.go:300: \n",
      "        \tError Trace:\thelpers.go:300\n",
      "        \tError:      \tReceived unexpected error:\n",
      "        \t            \tcontext deadline exceeded\n",
      "        \tMessages:   \tgateways were not ready in time\n",
    ),
    { Action: "fail", Test: "TestConformance" },
  ];
  const { tests, suiteFailure } = outcomesFromEvents(setupFailure);
  t.equal(tests.size, 0);
  t.equal(suiteFailure, "gateways were not ready in time (Received unexpected error: context deadline exceeded)");
  const rows = resultRows(catalogue, tests, suiteFailure);
  t.same(
    rows.map((r) => [r.name, r.outcome]),
    catalogue.map((c) => [c.name, "not run"]),
  );
  t.equal(rows[0].reason, "the suite stopped before this test (reason above the table)");
  const md = renderResults(rows, undefined, "", suiteFailure);
  t.match(md, "**The suite itself failed**: gateways were not ready in time");
});

t.test("a t.Fatalf failure without testify fields gives its message, not a progress line", async (t) => {
  t.equal(
    failureReason([
      "    apply.go:276: Creating udproute-simple UDPRoute\n",
      "    udproute-simple.go:70: failed to resolve foo.bar.com via 198.18.0.100:53: i/o timeout\n",
    ]),
    "failed to resolve foo.bar.com via 198.18.0.100:53: i/o timeout",
  );
  t.equal(failureReason([]), "failed (no message in the test output)");
});

t.test("passed core tests, regressions and the list that only grows", async (t) => {
  const { tests } = outcomesFromEvents(run);
  const rows = resultRows(catalogue, tests);
  t.same(passedCoreTests(rows), ["GatewayObservedGenerationBump"], "a skipped or failed test never counts");

  const recorded = ["GatewayObservedGenerationBump", "TCPRouteWeightedRouting", "TCPRouteRemovedUpstream"];
  t.same(regressions(recorded, rows), [
    {
      name: "TCPRouteWeightedRouting",
      reason: "fail: timed out waiting for Gateway address to be assigned (Received unexpected error: context deadline exceeded)",
    },
    { name: "TCPRouteRemovedUpstream", reason: "no longer in the suite's GATEWAY-TCP or GATEWAY-UDP profile" },
  ]);
  t.same(recordPassing(["UDPRoute"], rows), ["GatewayObservedGenerationBump", "UDPRoute"], "a recorded test stays");
  t.same(regressions(["GatewayObservedGenerationBump"], rows), [], "a passing recorded test is no regression");
});

t.test("with no run at all, every test says so", async (t) => {
  const rows = resultRows(catalogue, new Map());
  t.same(new Set(rows.map((r) => `${r.outcome}: ${r.reason}`)), new Set(["not run: no run yet"]));
});

t.test("the list file round-trips and ignores comments", async (t) => {
  const text = formatTestList(["UDPRoute", "GatewayObservedGenerationBump", "UDPRoute"]);
  t.match(text, /^# /);
  t.same(parseTestList(text), ["GatewayObservedGenerationBump", "UDPRoute"]);
  t.same(parseTestList(""), []);
});

t.test("the table has a row per test with its level in each profile", async (t) => {
  const { tests } = outcomesFromEvents(run);
  const rows = resultRows(catalogue, tests);
  const summary = summarizeReport({
    implementation: { project: "blixt", version: "0.1.0" },
    gatewayAPIVersion: "v1.6.3",
    gatewayAPIChannel: "standard",
    mode: "default",
    date: "2026-11-27T14:00:00Z",
    profiles: [
      { name: "GATEWAY-TCP", summary: "Core tests failed with 1 test failures.", core: {} },
      { name: "GATEWAY-UDP", summary: "Core tests succeeded.", core: {}, extended: { supportedFeatures: ["GatewayPort8080"] } },
    ],
  });
  const md = renderResults(rows, summary, "reports/v1.6.3/blixt/standard-0.1.0-default-report.yaml");
  t.match(md, "| TCPRouteWeightedRouting | core | – | **fail** | timed out waiting for Gateway address to be assigned");
  t.match(md, "| GatewayStaticAddresses | extended | extended | skip | feature GatewayStaticAddresses not claimed |");
  t.match(md, "| UDPRoute | – | core | not run | the run ended before this test |");
  t.match(md, "- **GATEWAY-TCP**: Core tests failed with 1 test failures. No extended feature claimed.");
  t.match(md, "Extended features claimed: GatewayPort8080.");
  t.equal(md.split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| Test") && !l.startsWith("| ---")).length, catalogue.length);
});

t.test("test2json lines that are not JSON are kept as output", async (t) => {
  t.same(parseEvents('{"Action":"pass","Test":"TestConformance/UDPRoute"}\nbuild failed\n'), [
    { Action: "pass", Test: "TestConformance/UDPRoute" },
    { Action: "output", Output: "build failed\n" },
  ]);
});

t.test("the reports README lists every report, as upstream's rules ask", async (t) => {
  const readme = "# blixt\n\nAbout.\n\n## Table of contents\n\nold table\n\n## Reproduce\n\nSteps.\n";
  const updated = withReportsTable(readme, [
    { file: "standard-0.2.0-default-report.yaml", channel: "standard", version: "v0.2.0", mode: "default" },
    { file: "standard-0.1.0-default-report.yaml", channel: "standard", version: "v0.1.0", mode: "default" },
  ]);
  t.match(updated, /^# blixt\n\nAbout\.\n\n## Table of contents\n/);
  t.notMatch(updated, "old table");
  t.match(
    updated,
    "| standard | v0.1.0 | default | [v0.1.0 report](./standard-0.1.0-default-report.yaml) |\n" +
      "| standard | v0.2.0 | default | [v0.2.0 report](./standard-0.2.0-default-report.yaml) |\n",
  );
  t.match(updated, /\n## Reproduce\n\nSteps\.\n$/);
  t.match(withReportsTable(readme, []), "No report yet");
  t.throws(() => withReportsTable("# no sections\n", []), /Table of contents/);
});

t.test("the project README gets the results table between its markers, and nothing else changes", async (t) => {
  const rows = resultRows(catalogue, outcomesFromEvents(run).tests);
  const readme = [
    "# blixt",
    "before",
    "<!-- conformance-table:begin (written by hack/conformance.sh) -->",
    "| stale | table |",
    "<!-- conformance-table:end -->",
    "after",
  ].join("\n");
  const written = withReadmeResults(readme, rows);
  t.match(written, /^# blixt\nbefore\n<!-- conformance-table:begin/);
  t.match(written, /<!-- conformance-table:end -->\nafter$/);
  t.notMatch(written, /stale/, "the old table is gone");
  for (const row of rows) t.match(written, new RegExp(`\\| ${row.name} \\|`), `a row for ${row.name}`);
  t.equal(withReadmeResults(written, rows), written, "writing twice changes nothing");
  t.throws(() => withReadmeResults("# no markers", rows), /conformance-table/, "a README without the block is an error, not a silent no-op");
});
