// SPDX-License-Identifier: Apache-2.0
// Turns the runs of the upstream Gateway API conformance suite (one, or two when a claimed test
// failed and the suite was run again) into blixt's results: the outcome of every GATEWAY-TCP
// and GATEWAY-UDP test with a one-line reason for each that did not pass, the markdown table,
// and the ratchet: every claimed test (core, and extended with only claimed features) and every
// test that passed before must pass; one that failed once and passed once is flaky, reported,
// and one that failed in every run is a regression.
// Pure: plain data in, plain data out; hack/conformance/report.ts does the file I/O.

/** One upstream test as the harness's catalogue lists it (test/conformance/catalogue.go). */
export interface CatalogueEntry {
  name: string;
  description: string;
  features: string[];
  provisional?: boolean;
  /** profile name (GATEWAY-TCP, GATEWAY-UDP) → "core" | "extended" */
  profiles: Record<string, SupportLevel>;
}

export type SupportLevel = "core" | "extended";

/** One line of `go tool test2json` output (the fields blixt reads). */
export interface TestEvent {
  Action: string;
  Test?: string;
  Output?: string;
}

/** "flaky": failed in one run and passed in another (only when runs are combined). */
export type Outcome = "pass" | "flaky" | "fail" | "skip" | "not run";

export interface TestResult {
  outcome: Outcome;
  /** One line: why the test failed, was skipped or never ran; empty for a pass. */
  reason: string;
}

export interface ResultRow extends CatalogueEntry, TestResult {}

/** The parent test of the suite's subtests in test/conformance/conformance_test.go. */
export const SUITE_TEST = "TestConformance";

export const PROFILES = ["GATEWAY-TCP", "GATEWAY-UDP"] as const;

/** The core features of both profiles: claimed by every run, as hack/conformance.sh passes them. */
export const CORE_FEATURES = ["Gateway", "ReferenceGrant", "TCPRoute", "UDPRoute"] as const;

const MAX_REASON = 200;

/**
 * Reads the outcome of each suite test from test2json events. A subtest's output includes
 * that of its own subtests (the suite nests assertions under t.Run), so a failure reason
 * found anywhere below a test belongs to it.
 */
export function outcomesFromEvents(events: TestEvent[]): {
  tests: Map<string, TestResult>;
  /** Why TestConformance itself failed outside any test (e.g. the suite's setup), if it did. */
  suiteFailure?: string;
} {
  const outputs = new Map<string, string[]>();
  const actions = new Map<string, Outcome>();
  const suiteOutput: string[] = [];
  let suiteFailed = false;

  for (const event of events) {
    if (!event.Test) continue;
    const [parent, name] = event.Test.split("/", 3);
    if (parent !== SUITE_TEST) continue;
    if (name === undefined) {
      if (event.Action === "output" && event.Output) suiteOutput.push(event.Output);
      if (event.Action === "fail") suiteFailed = true;
      continue;
    }
    if (event.Action === "output" && event.Output) {
      const lines = outputs.get(name) ?? [];
      lines.push(event.Output);
      outputs.set(name, lines);
    }
    // Only the test's own verdict counts, not that of a nested assertion subtest.
    if (event.Test === `${SUITE_TEST}/${name}`) {
      if (event.Action === "pass") actions.set(name, "pass");
      if (event.Action === "fail") actions.set(name, "fail");
      if (event.Action === "skip") actions.set(name, "skip");
    }
  }

  const tests = new Map<string, TestResult>();
  for (const [name, outcome] of actions) {
    const lines = outputs.get(name) ?? [];
    const reason =
      outcome === "fail" ? failureReason(lines) : outcome === "skip" ? skipReason(lines) : "";
    tests.set(name, { outcome, reason });
  }
  const result: { tests: Map<string, TestResult>; suiteFailure?: string } = { tests };
  // A failed subtest fails its parent too; only a failure with no failed subtest is the suite's own.
  const subtestFailed = [...actions.values()].includes("fail");
  if (suiteFailed && !subtestFailed) result.suiteFailure = failureReason(suiteOutput);
  else if (suiteFailed) {
    const ownReason = failureReason(suiteOutput, "");
    if (ownReason) result.suiteFailure = ownReason;
  }
  return result;
}

/**
 * The one line that says why a test failed: testify's `Messages:` (what the suite was
 * waiting for) followed by the first line of its `Error:`, else the first `t.Fatal`/`t.Error`
 * line of the output.
 */
export function failureReason(
  output: string[],
  fallback = "failed (no message in the test output)",
): string {
  const lines = output.join("").split("\n");
  const field = (name: string): string | undefined => {
    const at = lines.findIndex(l => new RegExp(`^\\s+${name}:\\s`).test(l));
    if (at < 0) return undefined;
    let text = lines[at].replace(new RegExp(`^\\s+${name}:\\s*`), "").trim();
    // testify wraps a field's value onto continuation lines that carry no field name.
    if (text === "" || text.endsWith(":")) {
      const next = lines[at + 1];
      if (next !== undefined && !/^\s+[A-Z][A-Za-z ]*:\s/.test(next)) {
        text = `${text} ${next.trim()}`.trim();
      }
    }
    return text;
  };
  const messages = field("Messages");
  const error = field("Error");
  if (messages && error) return oneLine(`${messages} (${error})`);
  if (messages || error) return oneLine((messages ?? error) as string);
  const logged = lines.map(loggedMessage).find(m => m !== undefined && m !== "" && !isProgress(m));
  return logged ? oneLine(logged) : fallback;
}

/** The reason of a t.Skip: the suite names the feature that was not claimed. */
export function skipReason(output: string[]): string {
  const lines = output.join("").split("\n");
  for (const line of lines) {
    const message = loggedMessage(line);
    if (message === undefined) continue;
    const unsupported = /^Skipping \S+: suite does not support (\S+)/.exec(message);
    if (unsupported) return `feature ${unsupported[1]} not claimed`;
    if (/^Skipping \S+: test explicitly skipped/.test(message))
      return "left out by the suite's test filter (-run-test); blixt's runs filter none";
    return oneLine(message);
  }
  return "skipped";
}

/**
 * One row per catalogue test, in the suite's order. A test the run never reached is
 * `not run`, with the suite's own failure as the reason when that is why.
 */
export function resultRows(
  catalogue: CatalogueEntry[],
  tests: Map<string, TestResult>,
  suiteFailure?: string,
): ResultRow[] {
  const notRun = suiteFailure
    ? "the suite stopped before this test (reason above the table)"
    : tests.size === 0
      ? "no run yet"
      : "the run ended before this test";
  return catalogue.map(entry => {
    const result = tests.get(entry.name) ?? { outcome: "not run" as const, reason: notRun };
    return { ...entry, ...result };
  });
}

/**
 * One result per test from several runs of the whole suite, in run order (the second run is
 * the rerun after a claimed test failed in the first). A test that passed in one run and
 * failed in another is flaky; one that failed in every run that reached it (and passed in
 * none) failed; a test no run reached is not run. The reason says which run did what.
 */
export function combineRuns(runs: Map<string, TestResult>[]): Map<string, TestResult> {
  if (runs.length === 1) return runs[0];
  const combined = new Map<string, TestResult>();
  const names = new Set(runs.flatMap(run => [...run.keys()]));
  for (const name of names) {
    const results = runs.map(run => run.get(name));
    const runsWith = (outcome: Outcome) =>
      results.flatMap((r, i) => (r?.outcome === outcome ? [i + 1] : []));
    const [passed, failed, skipped] = [runsWith("pass"), runsWith("fail"), runsWith("skip")];
    const lastFailure = [...results].reverse().find(r => r?.outcome === "fail")?.reason ?? "";
    const of = `of ${runs.length}`;
    if (passed.length > 0 && failed.length > 0) {
      combined.set(name, {
        outcome: "flaky",
        reason: oneLine(
          `failed in run ${failed.join(", ")} ${of}, passed in run ${passed.join(", ")}: ${lastFailure}`,
        ),
      });
    } else if (passed.length > 0) {
      combined.set(name, { outcome: "pass", reason: "" });
    } else if (failed.length > 0) {
      const where =
        failed.length === runs.length
          ? `every run (${runs.length})`
          : `run ${failed.join(", ")} ${of}, reached by no other`;
      combined.set(name, {
        outcome: "fail",
        reason: oneLine(`failed in ${where}: ${lastFailure}`),
      });
    } else if (skipped.length > 0) {
      combined.set(name, results.find(r => r?.outcome === "skip") as TestResult);
    }
  }
  return combined;
}

/**
 * The tests blixt claims to pass: every catalogue test whose features are all claimed, the
 * profiles' core features and the extended ones in conformance/extended-features.txt. A
 * claimed extended feature claims every test that needs it, not only those that passed.
 */
export function claimedTests(catalogue: CatalogueEntry[], extendedFeatures: string[]): string[] {
  const claimed = new Set<string>([...CORE_FEATURES, ...extendedFeatures]);
  return sortedUnique(
    catalogue.filter(entry => entry.features.every(f => claimed.has(f))).map(entry => entry.name),
  );
}

/** Tests that passed (in at least one run) and are claimed, core or extended. */
export function passedClaimedTests(rows: ResultRow[], extendedFeatures: string[]): string[] {
  const claimed = new Set(claimedTests(rows, extendedFeatures));
  return sortedUnique(
    rows
      .filter(r => (r.outcome === "pass" || r.outcome === "flaky") && claimed.has(r.name))
      .map(r => r.name),
  );
}

/** Tests that passed and are core in at least one of the profiles. */
export function passedCoreTests(rows: ResultRow[]): string[] {
  return sortedUnique(
    rows
      .filter(r => r.outcome === "pass" && Object.values(r.profiles).includes("core"))
      .map(r => r.name),
  );
}

export interface Verdict {
  /** Required tests that passed in no run: CI fails. */
  regressions: { name: string; reason: string }[];
  /** Required tests that failed in one run and passed in another: reported, CI passes. */
  flaky: { name: string; reason: string }[];
  /** Every test that must pass: the recorded list and the claimed tests. */
  required: string[];
}

/**
 * The ratchet. Required: every test on the recorded list (it passed before) and every claimed
 * test. A required test that passed in no run is a regression; one that failed and then
 * passed is flaky. A test the suite no longer has is a regression too: the list is edited by
 * hand then, never silently.
 */
export function verdict(recorded: string[], claimed: string[], rows: ResultRow[]): Verdict {
  const byName = new Map(rows.map(r => [r.name, r]));
  const required = sortedUnique([...recorded, ...claimed]);
  const result: Verdict = { regressions: [], flaky: [], required };
  for (const name of required) {
    const row = byName.get(name);
    if (!row) {
      result.regressions.push({
        name,
        reason: "no longer in the suite's GATEWAY-TCP or GATEWAY-UDP profile",
      });
    } else if (row.outcome === "flaky") {
      result.flaky.push({ name, reason: row.reason });
    } else if (row.outcome !== "pass") {
      result.regressions.push({ name, reason: `${row.outcome}: ${row.reason}` });
    }
  }
  return result;
}

/** Recorded tests that did not pass in any run, each with its reason (the recorded list alone). */
export function regressions(
  recorded: string[],
  rows: ResultRow[],
): { name: string; reason: string }[] {
  return verdict(recorded, [], rows).regressions;
}

/** The recorded list only grows: what passed before stays, what passes now and is claimed is added. */
export function recordPassing(
  recorded: string[],
  rows: ResultRow[],
  extendedFeatures: string[] = [],
): string[] {
  return sortedUnique([...recorded, ...passedClaimedTests(rows, extendedFeatures)]);
}

/** Parses conformance/passing-tests.txt and extended-features.txt: one name a line, `#` comments. */
export function parseTestList(text: string): string[] {
  return sortedUnique(
    text
      .split("\n")
      .map(l => l.replace(/#.*/, "").trim())
      .filter(l => l !== ""),
  );
}

export function formatTestList(names: string[]): string {
  return [
    "# Tests of the GATEWAY-TCP and GATEWAY-UDP conformance profiles that blixt passes: core, and",
    "# extended ones of the features in extended-features.txt. hack/conformance.sh fails when one",
    "# of them, or any other claimed test, passes in no run (--retry gives it a second run);",
    "# `hack/conformance.sh --record` adds newly passing claimed tests. The list only grows.",
    ...sortedUnique(names),
    "",
  ].join("\n");
}

export interface ReportSummary {
  implementationVersion: string;
  gatewayAPIVersion: string;
  gatewayAPIChannel: string;
  mode: string;
  date: string;
  /** profile name → the suite's one-line summary of it */
  profiles: Record<string, string>;
  /** profile name → extended features claimed in the run */
  supportedFeatures: Record<string, string[]>;
}

/** The few fields of the suite's ConformanceReport (conformance/apis/v1) that the table shows. */
export function summarizeReport(report: unknown): ReportSummary {
  const r = (report ?? {}) as Record<string, unknown>;
  const implementation = (r.implementation ?? {}) as Record<string, unknown>;
  const profiles: Record<string, string> = {};
  const supportedFeatures: Record<string, string[]> = {};
  for (const p of (r.profiles ?? []) as Record<string, unknown>[]) {
    const name = String(p.name ?? "");
    profiles[name] = String(p.summary ?? "");
    const extended = (p.extended ?? {}) as Record<string, unknown>;
    supportedFeatures[name] = ((extended.supportedFeatures ?? []) as unknown[]).map(String);
  }
  return {
    implementationVersion: String(implementation.version ?? ""),
    gatewayAPIVersion: String(r.gatewayAPIVersion ?? ""),
    gatewayAPIChannel: String(r.gatewayAPIChannel ?? ""),
    mode: String(r.mode ?? ""),
    date: String(r.date ?? ""),
    profiles,
    supportedFeatures,
  };
}

const OUTCOME_LABEL: Record<Outcome, string> = {
  pass: "pass",
  flaky: "**flaky**",
  fail: "**fail**",
  skip: "skip",
  "not run": "not run",
};

/** conformance/RESULTS.md: a summary of the report, then one row per test of both profiles. */
export function renderResults(
  rows: ResultRow[],
  summary: ReportSummary | undefined,
  reportPath: string,
  suiteFailure?: string,
  runs = 1,
  suiteSource?: string,
): string {
  const out: string[] = [
    "# Gateway API conformance results",
    "",
    "Written by `hack/conformance.sh` from the last run of the upstream suite; do not edit by hand.",
    "",
  ];
  if (suiteSource) out.push(`**Suite**: ${suiteSource}.`, "");
  if (summary) {
    out.push(
      `blixt ${summary.implementationVersion}, Gateway API ${summary.gatewayAPIVersion} ` +
        `(${summary.gatewayAPIChannel} channel), mode \`${summary.mode}\`, run ${summary.date}. ` +
        `Report: [${reportPath}](${reportPath}).`,
      "",
    );
    const listed = PROFILES.filter(p => summary.profiles[p] !== undefined);
    for (const profile of listed) {
      const claimed = summary.supportedFeatures[profile] ?? [];
      out.push(
        `- **${profile}**: ${summary.profiles[profile].replace(/\.$/, "")}.` +
          (claimed.length
            ? ` Extended features claimed: ${claimed.join(", ")}.`
            : " No extended feature claimed."),
      );
    }
    if (listed.length > 0) out.push("");
  } else {
    out.push("No report yet: the suite has not completed a run.", "");
  }
  if (suiteFailure) out.push(`**The suite itself failed**: ${cell(suiteFailure)}`, "");
  if (runs > 1) {
    const flaky = rows.filter(r => r.outcome === "flaky").map(r => r.name);
    out.push(
      `Combined from ${runs} runs of the suite: a claimed test failed in the first, so it was run again. ` +
        (flaky.length
          ? `**Flaky** (failed in one run, passed in another): ${flaky.join(", ")}.`
          : "No test both failed and passed."),
      "",
    );
  }
  const shown: Outcome[] =
    runs > 1 ? ["pass", "flaky", "fail", "skip", "not run"] : ["pass", "fail", "skip", "not run"];
  const counts = shown.map(o => `${rows.filter(r => r.outcome === o).length} ${o}`).join(", ");
  out.push(
    `${rows.length} tests in GATEWAY-TCP and GATEWAY-UDP: ${counts}. A skipped extended test needs a feature blixt does not claim.`,
    "",
    ...resultsTable(rows),
    "",
  );
  return out.join("\n");
}

/** The table of every test: level per profile, result, one-line reason. */
export function resultsTable(rows: ResultRow[]): string[] {
  const out = [
    "| Test | GATEWAY-TCP | GATEWAY-UDP | Result | Reason |",
    "| --- | --- | --- | --- | --- |",
  ];
  for (const row of rows) {
    const level = (p: string) => row.profiles[p] ?? "–";
    out.push(
      `| ${cell(row.name)}${row.provisional ? " (provisional)" : ""} | ${level("GATEWAY-TCP")} | ` +
        `${level("GATEWAY-UDP")} | ${OUTCOME_LABEL[row.outcome]} | ${cell(row.reason)} |`,
    );
  }
  return out;
}

export const README_BEGIN = "<!-- conformance-table:begin (written by hack/conformance.sh) -->";
export const README_END = "<!-- conformance-table:end -->";

/** What the README's table needs of a test's result in one channel. */
export type ChannelRow = Pick<ResultRow, "name" | "profiles" | "outcome" | "reason"> & {
  provisional?: boolean;
};

/**
 * The rows of a table resultsTable wrote (a channel's RESULTS file), read back: how the README
 * shows a channel this run did not run.
 */
export function parseResultsTable(markdown: string): ChannelRow[] {
  const byLabel = new Map(Object.entries(OUTCOME_LABEL).map(([o, label]) => [label, o as Outcome]));
  const rows: ChannelRow[] = [];
  for (const line of markdown.split("\n")) {
    if (!line.startsWith("| ") || line.startsWith("| Test |") || line.startsWith("| ---")) continue;
    const cells = line
      .slice(2, -2)
      .split(" | ")
      .map(c => c.replace(/\\\|/g, "|"));
    if (cells.length !== 5) continue;
    const [test, tcp, udp, label, reason] = cells;
    const outcome = byLabel.get(label);
    if (!outcome) continue;
    const profiles: Record<string, SupportLevel> = {};
    for (const [profile, level] of [
      ["GATEWAY-TCP", tcp],
      ["GATEWAY-UDP", udp],
    ])
      if (level === "core" || level === "extended") profiles[profile] = level;
    const provisional = test.endsWith(" (provisional)");
    rows.push({
      name: provisional ? test.slice(0, -" (provisional)".length) : test,
      profiles,
      outcome,
      reason,
      ...(provisional ? { provisional } : {}),
    });
  }
  return rows;
}

/**
 * The README's table: one row per test, its result in each channel (in the order given; a
 * test a channel did not list is "not run" there), and the reasons, named by channel where
 * they differ.
 */
export function channelsTable(channels: [string, ChannelRow[]][]): string[] {
  const out = [
    `| Test | GATEWAY-TCP | GATEWAY-UDP | ${channels.map(([c]) => c).join(" | ")} | Reason |`,
    `| --- | --- | --- | ${channels.map(() => "---").join(" | ")} | --- |`,
  ];
  const names: string[] = [];
  for (const [, rows] of channels)
    for (const r of rows) if (!names.includes(r.name)) names.push(r.name);
  for (const name of names) {
    const found = channels.map(
      ([channel, rows]) => [channel, rows.find(r => r.name === name)] as const,
    );
    const first = found.find(([, r]) => r)?.[1] as ChannelRow;
    const level = (p: string) => first.profiles[p] ?? "–";
    const reasons = [...new Set(found.map(([, r]) => r?.reason ?? "").filter(Boolean))];
    const reason =
      reasons.length <= 1
        ? (reasons[0] ?? "")
        : found
            .filter(([, r]) => r?.reason)
            .map(([channel, r]) => `${channel}: ${r?.reason}`)
            .join("; ");
    out.push(
      `| ${cell(name)}${first.provisional ? " (provisional)" : ""} | ${level("GATEWAY-TCP")} | ` +
        `${level("GATEWAY-UDP")} | ${found.map(([, r]) => OUTCOME_LABEL[r?.outcome ?? "not run"]).join(" | ")} | ${cell(reason)} |`,
    );
  }
  return out;
}

/** The project README with the results table between its markers replaced. */
export function withReadmeResults(readme: string, rows: ResultRow[] | string[]): string {
  const start = readme.indexOf(README_BEGIN);
  const end = readme.indexOf(README_END);
  if (start < 0 || end < start) {
    throw new Error(
      `README.md: no "${README_BEGIN}" … "${README_END}" block to write the conformance table into`,
    );
  }
  const table =
    rows.length > 0 && typeof rows[0] === "string"
      ? (rows as string[])
      : resultsTable(rows as ResultRow[]);
  return `${readme.slice(0, start + README_BEGIN.length)}\n${table.join("\n")}\n${readme.slice(end)}`;
}

/** Parses test2json output; lines that are not JSON (a build error, say) are kept as output. */
export function parseEvents(text: string): TestEvent[] {
  const events: TestEvent[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      events.push(JSON.parse(line) as TestEvent);
    } catch {
      events.push({ Action: "output", Output: `${line}\n` });
    }
  }
  return events;
}

/** `    file.go:123: message` (t.Log / t.Fatal) → `message`; other lines → undefined. */
function loggedMessage(line: string): string | undefined {
  const m = /^\s*[\w.-]+\.go:\d+:\s?(.*)$/.exec(line);
  return m ? m[1].trim() : undefined;
}

// The suite logs what it is doing (applying manifests, waiting); such lines are no reason.
function isProgress(message: string): boolean {
  return /^(Applying|Creating|Deleting|Running|Waiting|Sleeping|Gateway expected observedGeneration)/.test(
    message,
  );
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > MAX_REASON ? `${line.slice(0, MAX_REASON - 1)}…` : line;
}

function cell(text: string): string {
  return text.replace(/\|/g, "\\|");
}

function sortedUnique(names: string[]): string[] {
  return [...new Set(names)].sort();
}

/** One report file in conformance/reports/<version>/blixt/, as the table of contents lists it. */
export interface ReportFile {
  file: string;
  channel: string;
  version: string;
  mode: string;
}

/**
 * The reports README with its "Table of contents" section rewritten from the report files, in
 * the form upstream's conformance/reports/README.md asks for (one row per report).
 */
export function withReportsTable(readme: string, reports: ReportFile[]): string {
  const start = readme.indexOf("## Table of contents");
  const end = readme.indexOf("\n## ", start + 1);
  if (start < 0 || end < 0) {
    throw new Error(
      'reports README: no "## Table of contents" section followed by another "## " section to rewrite',
    );
  }
  const rows = [...reports]
    .sort((a, b) => a.file.localeCompare(b.file))
    .map(r => `| ${r.channel} | ${r.version} | ${r.mode} | [${r.version} report](./${r.file}) |`);
  const section = [
    "## Table of contents",
    "",
    "| API channel | Implementation version | Mode | Report |",
    "|-------------|------------------------|------|--------|",
    ...rows,
    "",
  ];
  if (rows.length === 0)
    section.push("No report yet: `hack/conformance.sh` adds one after a complete run.", "");
  return `${readme.slice(0, start)}${section.join("\n")}${readme.slice(end)}`;
}
