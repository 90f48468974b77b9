// SPDX-License-Identifier: Apache-2.0
// The conformance results pipeline (hack/conformance/results.ts) on test2json streams shaped
// like the suite's: testify failures, feature skips, a suite that stops in its setup; and the
// ratchet: which tests are claimed, how a rerun's results combine with the first run's, what
// fails CI and what is reported as flaky. No cluster: the runs are constructed event streams.
import t from "tap";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { execa } from "execa";
import {
  type CatalogueEntry,
  type TestEvent,
  channelsTable,
  claimedTests,
  combineRuns,
  failureReason,
  formatTestList,
  outcomesFromEvents,
  parseEvents,
  parseResultsTable,
  parseTestList,
  passedCoreTests,
  recordPassing,
  regressions,
  renderResults,
  resultRows,
  summarizeReport,
  verdict,
  withReadmeResults,
  withReportsTable,
} from "../../hack/conformance/results";

const repo = resolve(import.meta.dirname, "../..");

const catalogue: CatalogueEntry[] = [
  {
    name: "GatewayObservedGenerationBump",
    description:
      "A Gateway in the gateway-conformance-infra namespace should update the observedGeneration in all of its Status.Conditions after an update to the spec",
    features: ["Gateway"],
    profiles: { "GATEWAY-TCP": "core", "GATEWAY-UDP": "core" },
  },
  {
    name: "GatewayStaticAddresses",
    description:
      "A Gateway in the gateway-conformance-infra namespace should be able to use previously determined addresses.",
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
  lines.map(Output => ({ Action: "output", Test: test, Output }));

// A run in which the Gateway test passes, the static-address test is skipped for its
// feature, the TCP test fails in a nested assertion and the UDP test is never reached.
const run: TestEvent[] = [
  { Action: "run", Test: "TestConformance" },
  { Action: "run", Test: "TestConformance/GatewayObservedGenerationBump" },
  ...out(
    "TestConformance/GatewayObservedGenerationBump",
    "    apply.go:276: Creating gateway-observed-generation-bump Gateway\n",
  ),
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

t.test("outcomes and one-line reasons come from the suite's own output", async t => {
  const { tests, suiteFailure } = outcomesFromEvents(run);
  t.same(tests.get("GatewayObservedGenerationBump"), { outcome: "pass", reason: "" });
  t.same(tests.get("GatewayStaticAddresses"), {
    outcome: "skip",
    reason: "feature GatewayStaticAddresses not claimed",
  });
  t.same(tests.get("TCPRouteWeightedRouting"), {
    outcome: "fail",
    reason:
      "timed out waiting for Gateway address to be assigned (Received unexpected error: context deadline exceeded)",
  });
  t.notOk(tests.has("Weighted_backends"), "a nested assertion is no test of its own");
  t.equal(suiteFailure, undefined, "the parent failed only because a test did");
});

t.test("a suite that stops in setup leaves every test not run, with the reason", async t => {
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
  t.equal(
    suiteFailure,
    "gateways were not ready in time (Received unexpected error: context deadline exceeded)",
  );
  const rows = resultRows(catalogue, tests, suiteFailure);
  t.same(
    rows.map(r => [r.name, r.outcome]),
    catalogue.map(c => [c.name, "not run"]),
  );
  t.equal(rows[0].reason, "the suite stopped before this test (reason above the table)");
  const md = renderResults(rows, undefined, "", suiteFailure);
  t.match(md, "**The suite itself failed**: gateways were not ready in time");
});

t.test(
  "a t.Fatalf failure without testify fields gives its message, not a progress line",
  async t => {
    t.equal(
      failureReason([
        "    apply.go:276: Creating udproute-simple UDPRoute\n",
        "    udproute-simple.go:70: failed to resolve foo.bar.com via 198.18.0.100:53: i/o timeout\n",
      ]),
      "failed to resolve foo.bar.com via 198.18.0.100:53: i/o timeout",
    );
    t.equal(failureReason([]), "failed (no message in the test output)");
  },
);

t.test("passed core tests, regressions and the list that only grows", async t => {
  const { tests } = outcomesFromEvents(run);
  const rows = resultRows(catalogue, tests);
  t.same(
    passedCoreTests(rows),
    ["GatewayObservedGenerationBump"],
    "a skipped or failed test never counts",
  );

  const recorded = [
    "GatewayObservedGenerationBump",
    "TCPRouteWeightedRouting",
    "TCPRouteRemovedUpstream",
  ];
  t.same(regressions(recorded, rows), [
    {
      name: "TCPRouteRemovedUpstream",
      reason: "no longer in the suite's GATEWAY-TCP or GATEWAY-UDP profile",
    },
    {
      name: "TCPRouteWeightedRouting",
      reason:
        "fail: timed out waiting for Gateway address to be assigned (Received unexpected error: context deadline exceeded)",
    },
  ]);
  t.same(
    recordPassing(["UDPRoute"], rows),
    ["GatewayObservedGenerationBump", "UDPRoute"],
    "a recorded test stays",
  );
  t.same(
    regressions(["GatewayObservedGenerationBump"], rows),
    [],
    "a passing recorded test is no regression",
  );
});

t.test("with no run at all, every test says so", async t => {
  const rows = resultRows(catalogue, new Map());
  t.same(new Set(rows.map(r => `${r.outcome}: ${r.reason}`)), new Set(["not run: no run yet"]));
});

t.test("the list file round-trips and ignores comments", async t => {
  const text = formatTestList(["UDPRoute", "GatewayObservedGenerationBump", "UDPRoute"]);
  t.match(text, /^# /);
  t.same(parseTestList(text), ["GatewayObservedGenerationBump", "UDPRoute"]);
  t.same(parseTestList(""), []);
});

t.test("the table has a row per test with its level in each profile", async t => {
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
      {
        name: "GATEWAY-UDP",
        summary: "Core tests succeeded.",
        core: {},
        extended: { supportedFeatures: ["GatewayPort8080"] },
      },
    ],
  });
  const md = renderResults(
    rows,
    summary,
    "reports/v1.6.3/blixt/standard-0.1.0-default-report.yaml",
  );
  t.match(
    md,
    "| TCPRouteWeightedRouting | core | – | **fail** | timed out waiting for Gateway address to be assigned",
  );
  t.match(
    md,
    "| GatewayStaticAddresses | extended | extended | skip | feature GatewayStaticAddresses not claimed |",
  );
  t.match(md, "| UDPRoute | – | core | not run | the run ended before this test |");
  t.match(
    md,
    "- **GATEWAY-TCP**: Core tests failed with 1 test failures. No extended feature claimed.",
  );
  t.match(md, "Extended features claimed: GatewayPort8080.");
  t.equal(
    md
      .split("\n")
      .filter(l => l.startsWith("| ") && !l.startsWith("| Test") && !l.startsWith("| ---")).length,
    catalogue.length,
  );
});

t.test("test2json lines that are not JSON are kept as output", async t => {
  t.same(parseEvents('{"Action":"pass","Test":"TestConformance/UDPRoute"}\nbuild failed\n'), [
    { Action: "pass", Test: "TestConformance/UDPRoute" },
    { Action: "output", Output: "build failed\n" },
  ]);
});

t.test("the reports README lists every report, as upstream's rules ask", async t => {
  const readme =
    "# blixt\n\nAbout.\n\n## Table of contents\n\nold table\n\n## Reproduce\n\nSteps.\n";
  const updated = withReportsTable(readme, [
    {
      file: "standard-0.2.0-default-report.yaml",
      channel: "standard",
      version: "v0.2.0",
      mode: "default",
    },
    {
      file: "standard-0.1.0-default-report.yaml",
      channel: "standard",
      version: "v0.1.0",
      mode: "default",
    },
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

t.test(
  "the project README gets the results table between its markers, and nothing else changes",
  async t => {
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
    for (const row of rows)
      t.match(written, new RegExp(`\\| ${row.name} \\|`), `a row for ${row.name}`);
    t.equal(withReadmeResults(written, rows), written, "writing twice changes nothing");
    t.throws(
      () => withReadmeResults("# no markers", rows),
      /conformance-table/,
      "a README without the block is an error, not a silent no-op",
    );
  },
);

t.test("a channel's RESULTS table reads back as the rows it was written from", async t => {
  const rows = resultRows(catalogue, outcomesFromEvents(run).tests);
  rows[0] = { ...rows[0], reason: "a reason | with a pipe", provisional: true };
  const parsed = parseResultsTable(renderResults(rows, undefined, ""));
  t.same(
    parsed,
    rows.map(r => ({
      name: r.name,
      profiles: r.profiles,
      outcome: r.outcome,
      reason: r.reason,
      ...(r.provisional ? { provisional: true } : {}),
    })),
  );
  t.same(parseResultsTable("# no table\n"), [], "nothing to read is no rows");
});

t.test("the README's table has a column per channel and names the channel of a reason", async t => {
  const rows = resultRows(catalogue, outcomesFromEvents(run).tests);
  const experimental = rows.map(r =>
    r.name === "UDPRoute" ? { ...r, outcome: "fail" as const, reason: "timed out" } : r,
  );
  const table = channelsTable([
    ["standard", rows],
    ["experimental", experimental.filter(r => r.name !== "TCPRouteWeightedRouting")],
  ]);
  t.equal(table[0], "| Test | GATEWAY-TCP | GATEWAY-UDP | standard | experimental | Reason |");
  t.equal(table.length, 2 + rows.length, "one row per test");
  const udp = table.find(l => l.startsWith("| UDPRoute |"));
  const standardUdp = rows.find(r => r.name === "UDPRoute")!;
  t.match(udp, `| ${standardUdp.outcome === "pass" ? "pass" : standardUdp.outcome} | **fail** |`);
  t.match(
    udp,
    standardUdp.reason
      ? `standard: ${standardUdp.reason}; experimental: timed out`
      : "| timed out |",
  );
  t.match(
    table.find(l => l.startsWith("| TCPRouteWeightedRouting |")),
    /\| not run \|[^|]*\|$/,
    "a test a channel did not list is not run there",
  );
});

// ---- the ratchet: claimed tests, reruns, flakes ---------------------------------------------

/** The catalogue above plus tests of claimed and unclaimed extended features, as v1.6.3 has them. */
const fullCatalogue: CatalogueEntry[] = [
  ...catalogue,
  {
    name: "GatewayOptionalAddressValue",
    description: "Gateway with an address entry without a value",
    features: ["Gateway", "GatewayAddressEmpty"],
    profiles: { "GATEWAY-TCP": "extended", "GATEWAY-UDP": "extended" },
  },
  {
    name: "ListenerSetHostnameConflict",
    description: "ListenerSet listeners with conflicting hostnames",
    features: ["Gateway", "ListenerSet"],
    profiles: { "GATEWAY-TCP": "extended", "GATEWAY-UDP": "extended" },
  },
];
const CLAIMED_EXTENDED = ["GatewayAddressEmpty", "GatewayStaticAddresses"];

/** One run's test2json events: each named test with its verdict (a failure carries a testify message). */
function runOf(verdicts: Record<string, "pass" | "fail" | "skip">): TestEvent[] {
  const events: TestEvent[] = [{ Action: "run", Test: "TestConformance" }];
  for (const [name, action] of Object.entries(verdicts)) {
    const test = `TestConformance/${name}`;
    events.push({ Action: "run", Test: test });
    if (action === "fail")
      events.push(
        ...out(test, "    helpers.go:211: \n", `        \tMessages:   \t${name} timed out\n`),
      );
    if (action === "skip")
      events.push(
        ...out(
          test,
          `    conformance.go:56: Skipping ${name}: suite does not support ListenerSet\n`,
        ),
      );
    events.push({ Action: action, Test: test });
  }
  events.push({
    Action: Object.values(verdicts).includes("fail") ? "fail" : "pass",
    Test: "TestConformance",
  });
  return events;
}
const testsOf = (verdicts: Record<string, "pass" | "fail" | "skip">) =>
  outcomesFromEvents(runOf(verdicts)).tests;

/** Every claimed test passes, the unclaimed extended one is skipped; `changes` alters some. */
function allPass(
  changes: Record<string, "pass" | "fail" | "skip"> = {},
): Record<string, "pass" | "fail" | "skip"> {
  const verdicts: Record<string, "pass" | "fail" | "skip"> = {};
  for (const entry of fullCatalogue)
    verdicts[entry.name] = entry.name.startsWith("ListenerSet") ? "skip" : "pass";
  return { ...verdicts, ...changes };
}

t.test(
  "claimed tests: every core test, and every test whose extended features are all claimed",
  async t => {
    t.same(claimedTests(fullCatalogue, CLAIMED_EXTENDED), [
      "GatewayObservedGenerationBump",
      "GatewayOptionalAddressValue",
      "GatewayStaticAddresses",
      "TCPRouteWeightedRouting",
      "UDPRoute",
    ]);
    t.same(
      claimedTests(fullCatalogue, []),
      ["GatewayObservedGenerationBump", "TCPRouteWeightedRouting", "UDPRoute"],
      "no extended feature: core only",
    );
    t.notOk(
      claimedTests(fullCatalogue, ["GatewayStaticAddresses"]).includes(
        "GatewayOptionalAddressValue",
      ),
      "a test needing an unclaimed feature is not claimed",
    );
  },
);

t.test(
  "a claimed extended test that fails is a regression even though no list names it (the gap of a core-only ratchet)",
  async t => {
    const recordedCoreOnly = [
      "GatewayObservedGenerationBump",
      "TCPRouteWeightedRouting",
      "UDPRoute",
    ];
    const rows = resultRows(fullCatalogue, testsOf(allPass({ GatewayStaticAddresses: "fail" })));
    t.same(regressions(recordedCoreOnly, rows), [], "the recorded core list alone lets it through");
    const { regressions: failed, flaky } = verdict(
      recordedCoreOnly,
      claimedTests(fullCatalogue, CLAIMED_EXTENDED),
      rows,
    );
    t.same(failed, [
      { name: "GatewayStaticAddresses", reason: "fail: GatewayStaticAddresses timed out" },
    ]);
    t.same(flaky, []);
    t.same(
      verdict(
        recordedCoreOnly,
        claimedTests(fullCatalogue, CLAIMED_EXTENDED),
        resultRows(fullCatalogue, testsOf(allPass())),
      ).regressions,
      [],
      "a skipped unclaimed test is no regression",
    );
  },
);

t.test(
  "two runs combined: failed then passed is flaky, failed twice fails, a flake either way round counts",
  async t => {
    const first = testsOf(
      allPass({
        UDPRoute: "fail",
        TCPRouteWeightedRouting: "fail",
        GatewayStaticAddresses: "fail",
      }),
    );
    const second = testsOf(
      allPass({ TCPRouteWeightedRouting: "fail", GatewayObservedGenerationBump: "fail" }),
    );
    const combined = combineRuns([first, second]);
    t.same(combined.get("UDPRoute"), {
      outcome: "flaky",
      reason: "failed in run 1 of 2, passed in run 2: UDPRoute timed out",
    });
    t.same(
      combined.get("GatewayStaticAddresses")?.outcome,
      "flaky",
      "a claimed extended test flakes like a core one",
    );
    t.same(combined.get("TCPRouteWeightedRouting"), {
      outcome: "fail",
      reason: "failed in every run (2): TCPRouteWeightedRouting timed out",
    });
    t.same(
      combined.get("GatewayObservedGenerationBump"),
      {
        outcome: "flaky",
        reason: "failed in run 2 of 2, passed in run 1: GatewayObservedGenerationBump timed out",
      },
      "passed in the first run, failed in the rerun: it fails sometimes, so it is flaky too",
    );
    t.same(combined.get("GatewayOptionalAddressValue"), { outcome: "pass", reason: "" });
    t.same(combined.get("ListenerSetHostnameConflict"), {
      outcome: "skip",
      reason: "feature ListenerSet not claimed",
    });

    const rows = resultRows(fullCatalogue, combined);
    const judged = verdict(["UDPRoute"], claimedTests(fullCatalogue, CLAIMED_EXTENDED), rows);
    t.same(
      judged.regressions.map(r => r.name),
      ["TCPRouteWeightedRouting"],
      "only the test that failed in both runs fails CI",
    );
    t.same(
      judged.flaky.map(r => r.name),
      ["GatewayObservedGenerationBump", "GatewayStaticAddresses", "UDPRoute"],
    );
    t.same(combineRuns([first]), first, "one run is its own result");
  },
);

t.test(
  "a test failing in run 1 that the rerun never reached passed in no run: a regression",
  async t => {
    const setupFailure: TestEvent[] = [
      { Action: "run", Test: "TestConformance" },
      ...out("TestConformance", "        \tMessages:   \tgateways were not ready in time\n"),
      { Action: "fail", Test: "TestConformance" },
    ];
    const combined = combineRuns([
      testsOf(allPass({ UDPRoute: "fail" })),
      outcomesFromEvents(setupFailure).tests,
    ]);
    t.same(combined.get("UDPRoute"), {
      outcome: "fail",
      reason: "failed in run 1 of 2, reached by no other: UDPRoute timed out",
    });
    t.equal(
      combined.get("TCPRouteWeightedRouting")?.outcome,
      "pass",
      "what passed in run 1 still passed",
    );
    const judged = verdict(
      [],
      claimedTests(fullCatalogue, CLAIMED_EXTENDED),
      resultRows(fullCatalogue, combined),
    );
    t.same(
      judged.regressions.map(r => r.name),
      ["UDPRoute"],
    );
  },
);

t.test(
  "a test that fails half the time: CI fails only when both runs fail it, and every rerun it needs is reported",
  async t => {
    // The rerun happens only after a failure, so the three histories are: pass (1/2),
    // fail-pass (1/4), fail-fail (1/4). Before, the second run alone decided: 3/4 green, no trace.
    const claimed = claimedTests(fullCatalogue, CLAIMED_EXTENDED);
    const judge = (...runs: ("pass" | "fail")[]) => {
      const combined = combineRuns(runs.map(v => testsOf(allPass({ UDPRoute: v }))));
      const { regressions: failed, flaky } = verdict(
        [],
        claimed,
        resultRows(fullCatalogue, combined),
      );
      return failed.length ? "CI fails" : flaky.length ? "flaky, reported" : "pass";
    };
    t.same(
      [judge("pass"), judge("fail", "pass"), judge("fail", "fail")],
      ["pass", "flaky, reported", "CI fails"],
    );
  },
);

t.test("RESULTS.md names the flaky tests and says the runs were combined", async t => {
  const combined = combineRuns([testsOf(allPass({ UDPRoute: "fail" })), testsOf(allPass())]);
  const md = renderResults(resultRows(fullCatalogue, combined), undefined, "", undefined, 2);
  t.match(
    md,
    "Combined from 2 runs of the suite: a claimed test failed in the first, so it was run again. **Flaky** (failed in one run, passed in another): UDPRoute.",
  );
  t.match(
    md,
    "| UDPRoute | – | core | **flaky** | failed in run 1 of 2, passed in run 2: UDPRoute timed out |",
  );
  t.match(
    md,
    "6 tests in GATEWAY-TCP and GATEWAY-UDP: 4 pass, 1 flaky, 0 fail, 1 skip, 0 not run.",
  );
  const single = renderResults(resultRows(fullCatalogue, testsOf(allPass())), undefined, "");
  t.notMatch(single, /flaky|Combined/, "a single run says nothing of reruns");
});

t.test("a run of a local gateway-api tree names the tree above the table", async t => {
  const rows = resultRows(fullCatalogue, testsOf(allPass()));
  const source = "the local gateway-api tree /src/gateway-api at commit 0123456789ab";
  const md = renderResults(rows, undefined, "", undefined, 1, source);
  t.match(md, `**Suite**: ${source}.`);
  t.notMatch(renderResults(rows, undefined, ""), "**Suite**", "the pinned suite's results do not");
});

t.test(
  "the recorded list grows by passing claimed tests, extended ones included, never by unclaimed ones",
  async t => {
    const rows = resultRows(
      fullCatalogue,
      testsOf(allPass({ ListenerSetHostnameConflict: "pass" })),
    );
    t.same(recordPassing(["UDPRoute"], rows, CLAIMED_EXTENDED), [
      "GatewayObservedGenerationBump",
      "GatewayOptionalAddressValue",
      "GatewayStaticAddresses",
      "TCPRouteWeightedRouting",
      "UDPRoute",
    ]);
  },
);

t.test(
  "the checked-in list holds every test the last recorded run passed, extended ones included",
  async t => {
    const recorded = parseTestList(
      readFileSync(join(repo, "conformance/passing-tests.txt"), "utf8"),
    );
    const passedInResults = readFileSync(join(repo, "conformance/RESULTS.md"), "utf8")
      .split("\n")
      .map(line => /^\| (\S+)(?: \(provisional\))? \| [^|]+ \| [^|]+ \| pass \|/.exec(line)?.[1])
      .filter((name): name is string => name !== undefined);
    t.ok(passedInResults.length > 0, "RESULTS.md has passing rows");
    t.same(recorded, [...passedInResults].sort());
    t.ok(
      recorded.includes("GatewayStaticAddresses") &&
        recorded.includes("GatewayOptionalAddressValue"),
      "the claimed extended tests are on it",
    );
  },
);

t.test(
  "report.ts, as hack/conformance.sh runs it: flaky logged and CI green; failed twice logged and exit 1",
  async t => {
    const dir = mkdtempSync(join(tmpdir(), "blixt-conformance-report-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const events = (verdicts: Record<string, "pass" | "fail" | "skip">) =>
      runOf(verdicts)
        .map(e => JSON.stringify(e))
        .join("\n");
    const common = [
      "--catalogue",
      file("catalogue.json", JSON.stringify(fullCatalogue)),
      "--passing",
      file("passing.txt", formatTestList(["UDPRoute"])),
      "--extended-features",
      file("extended.txt", CLAIMED_EXTENDED.join("\n")),
      "--results",
      join(dir, "RESULTS.md"),
    ];
    const report = (...runs: string[]) =>
      execa(
        process.execPath,
        [
          "--import",
          "tsx",
          "hack/conformance/report.ts",
          ...common,
          ...runs.flatMap(r => ["--events", r]),
        ],
        {
          cwd: repo,
          reject: false,
        },
      );

    const run1 = file(
      "run1.json",
      events(allPass({ UDPRoute: "fail", GatewayStaticAddresses: "fail" })),
    );
    const flakyRun = await report(run1, file("run2.json", events(allPass())));
    t.equal(flakyRun.exitCode, 0, flakyRun.stderr);
    t.match(
      flakyRun.stderr,
      "[conformance] FLAKY: GatewayStaticAddresses needed the rerun (failed in run 1 of 2, passed in run 2: GatewayStaticAddresses timed out)",
    );
    t.match(flakyRun.stderr, "[conformance] FLAKY: UDPRoute needed the rerun");
    t.match(flakyRun.stderr, "5 required tests (claimed or recorded): 3 pass, 2 flaky, 0 failed");
    t.match(
      readFileSync(join(dir, "RESULTS.md"), "utf8"),
      "| GatewayStaticAddresses | extended | extended | **flaky** |",
    );

    const failedTwice = await report(
      run1,
      file("run3.json", events(allPass({ GatewayStaticAddresses: "fail" }))),
    );
    t.equal(failedTwice.exitCode, 1, "a claimed extended test that failed in both runs fails CI");
    t.match(
      failedTwice.stderr,
      "[conformance] REGRESSION: GatewayStaticAddresses is claimed or passed before, and passed in no run (fail: failed in every run (2): GatewayStaticAddresses timed out)",
    );
    t.match(failedTwice.stderr, "FLAKY: UDPRoute");
  },
);
