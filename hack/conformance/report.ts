// SPDX-License-Identifier: Apache-2.0
// File I/O around results.ts for hack/conformance.sh: reads the catalogue, the test2json
// events of each run (two when the suite was run again) and the suite's report; writes
// conformance/RESULTS.md; checks every claimed and recorded test (and with --record grows
// conformance/passing-tests.txt). Exit code 1 when one of them passed in no run; one that
// failed and then passed is logged as flaky.
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { Command } from "commander";
import { parse as parseYaml } from "yaml";
import {
  type CatalogueEntry,
  channelsTable,
  claimedTests,
  combineRuns,
  formatTestList,
  outcomesFromEvents,
  parseEvents,
  parseResultsTable,
  parseTestList,
  passedClaimedTests,
  recordPassing,
  renderResults,
  resultRows,
  summarizeReport,
  withReadmeResults,
  verdict,
  withReportsTable,
} from "./results";

const program = new Command()
  .name("report")
  .description(
    "Turn a conformance run into conformance/RESULTS.md and check the passing core tests",
  )
  .requiredOption("--catalogue <file>", "catalogue JSON written by the harness (-catalogue-output)")
  .option(
    "--events <file>",
    "test2json output of a suite run; repeat, in run order, for a rerun (absent: no run yet)",
    (file: string, previous: string[]) => [...previous, file],
    [] as string[],
  )
  .option("--report <file>", "the suite's ConformanceReport YAML (-report-output)")
  .option("--report-link <path>", "path of the report as RESULTS.md links it")
  .requiredOption("--passing <file>", "the recorded list of passing tests")
  .requiredOption(
    "--extended-features <file>",
    "the extended features blixt claims (conformance/extended-features.txt)",
  )
  .requiredOption("--results <file>", "markdown table to write")
  .option("--readme <file>", "a README whose conformance-table block gets the results table")
  .option("--channel <name>", "the Gateway API release channel this run ran (standard)", "standard")
  .option(
    "--channel-results <channel=file>",
    "another channel's RESULTS file, for the README's column of that channel; repeat",
    (spec: string, previous: string[]) => [...previous, spec],
    [] as string[],
  )
  .option("--record", "add this run's passing claimed tests to the recorded list", false)
  .option(
    "--suite-source <text>",
    "where the suite came from, when not the pinned module (a local gateway-api tree)",
  )
  .parse();

const opts = program.opts<{
  catalogue: string;
  events: string[];
  extendedFeatures: string;
  report?: string;
  reportLink?: string;
  passing: string;
  results: string;
  readme?: string;
  channel: string;
  channelResults: string[];
  record: boolean;
  suiteSource?: string;
}>();

const log = (line: string) => console.error(`[conformance] ${line}`);

const catalogue = JSON.parse(readFileSync(opts.catalogue, "utf8")) as CatalogueEntry[];
const runs = opts.events
  .filter(file => existsSync(file))
  .map(file => outcomesFromEvents(parseEvents(readFileSync(file, "utf8"))));
runs.forEach((run, i) => {
  if (run.suiteFailure && i < runs.length - 1)
    log(`run ${i + 1} of ${runs.length}: the suite itself failed: ${run.suiteFailure}`);
});
const suiteFailure = runs.at(-1)?.suiteFailure;
const rows = resultRows(
  catalogue,
  runs.length ? combineRuns(runs.map(run => run.tests)) : new Map(),
  suiteFailure,
);
const extended = existsSync(opts.extendedFeatures)
  ? parseTestList(readFileSync(opts.extendedFeatures, "utf8"))
  : [];
const summary =
  opts.report && existsSync(opts.report)
    ? summarizeReport(parseYaml(readFileSync(opts.report, "utf8")))
    : undefined;

writeFileSync(
  opts.results,
  renderResults(
    rows,
    summary,
    opts.reportLink ?? opts.report ?? "",
    suiteFailure,
    runs.length,
    opts.suiteSource,
  ),
);
log(
  `wrote ${opts.results}: ${rows.length} tests, ${passedClaimedTests(rows, extended).length} claimed tests passed`,
);
if (opts.readme && summary && !suiteFailure) {
  // One column per channel: this run's, and each other channel's last RESULTS file.
  const others = opts.channelResults
    .map(spec => spec.split("=", 2) as [string, string])
    .filter(([channel, file]) => channel !== opts.channel && existsSync(file))
    .map(([channel, file]) => [channel, parseResultsTable(readFileSync(file, "utf8"))] as const);
  const channels = [[opts.channel, rows] as const, ...others].sort(([a], [b]) =>
    a === "standard" ? -1 : b === "standard" ? 1 : a.localeCompare(b),
  );
  writeFileSync(
    opts.readme,
    withReadmeResults(
      readFileSync(opts.readme, "utf8"),
      channelsTable(channels.map(([c, r]) => [c, [...r]])),
    ),
  );
  log(
    `wrote the results table into ${opts.readme} (channels: ${channels.map(([c]) => c).join(", ")})`,
  );
}
if (suiteFailure) log(`the suite itself failed: ${suiteFailure}`);

// The README beside the reports lists each of them (upstream's layout for report folders).
if (opts.report && existsSync(opts.report)) {
  const dir = dirname(opts.report);
  const readmePath = join(dir, "README.md");
  const reports = readdirSync(dir)
    .filter(f => f.endsWith("-report.yaml"))
    .map(file => {
      const s = summarizeReport(parseYaml(readFileSync(join(dir, file), "utf8")));
      return { file, channel: s.gatewayAPIChannel, version: s.implementationVersion, mode: s.mode };
    });
  if (existsSync(readmePath)) {
    writeFileSync(readmePath, withReportsTable(readFileSync(readmePath, "utf8"), reports));
    log(`listed ${reports.length} reports in ${readmePath} (newest: ${basename(opts.report)})`);
  }
}

const recorded = existsSync(opts.passing) ? parseTestList(readFileSync(opts.passing, "utf8")) : [];
const { regressions, flaky, required } = verdict(recorded, claimedTests(catalogue, extended), rows);
for (const { name, reason } of flaky) {
  log(`FLAKY: ${name} needed the rerun (${reason})`);
}
for (const { name, reason } of regressions) {
  log(`REGRESSION: ${name} is claimed or passed before, and passed in no run (${reason})`);
}

if (opts.record) {
  const grown = recordPassing(recorded, rows, extended);
  writeFileSync(opts.passing, formatTestList(grown));
  log(
    `recorded ${grown.length - recorded.length} newly passing claimed tests in ${opts.passing} (${grown.length} in all)`,
  );
}

log(
  `${required.length} required tests (claimed or recorded): ${required.length - regressions.length - flaky.length} pass, ` +
    `${flaky.length} flaky, ${regressions.length} failed`,
);
if (regressions.length > 0) {
  log(`${regressions.length} required tests failed; see ${opts.results}`);
  process.exitCode = 1;
}
