// SPDX-License-Identifier: Apache-2.0
// File I/O around results.ts for hack/conformance.sh: reads the catalogue, the test2json
// events and the suite's report; writes conformance/RESULTS.md; checks (and with --record
// grows) conformance/passing-core-tests.txt. Exit code 1 when a recorded core test failed.
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { Command } from "commander";
import { parse as parseYaml } from "yaml";
import {
  type CatalogueEntry,
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
} from "./results";

const program = new Command()
  .name("report")
  .description("Turn a conformance run into conformance/RESULTS.md and check the passing core tests")
  .requiredOption("--catalogue <file>", "catalogue JSON written by the harness (-catalogue-output)")
  .option("--events <file>", "test2json output of the suite run (absent: no run yet)")
  .option("--report <file>", "the suite's ConformanceReport YAML (-report-output)")
  .option("--report-link <path>", "path of the report as RESULTS.md links it")
  .requiredOption("--passing <file>", "the recorded list of passing core tests")
  .requiredOption("--results <file>", "markdown table to write")
  .option("--readme <file>", "a README whose conformance-table block gets the results table")
  .option("--record", "add this run's passing core tests to the recorded list", false)
  .parse();

const opts = program.opts<{
  catalogue: string;
  events?: string;
  report?: string;
  reportLink?: string;
  passing: string;
  results: string;
  readme?: string;
  record: boolean;
}>();

const log = (line: string) => console.error(`[conformance] ${line}`);

const catalogue = JSON.parse(readFileSync(opts.catalogue, "utf8")) as CatalogueEntry[];
const events = opts.events && existsSync(opts.events) ? parseEvents(readFileSync(opts.events, "utf8")) : [];
const { tests, suiteFailure } = outcomesFromEvents(events);
const rows = resultRows(catalogue, tests, suiteFailure);
const summary =
  opts.report && existsSync(opts.report)
    ? summarizeReport(parseYaml(readFileSync(opts.report, "utf8")))
    : undefined;

writeFileSync(opts.results, renderResults(rows, summary, opts.reportLink ?? opts.report ?? "", suiteFailure));
log(`wrote ${opts.results}: ${rows.length} tests, ${passedCoreTests(rows).length} core tests passed`);
if (opts.readme && summary && !suiteFailure) {
  writeFileSync(opts.readme, withReadmeResults(readFileSync(opts.readme, "utf8"), rows));
  log(`wrote the results table into ${opts.readme}`);
}
if (suiteFailure) log(`the suite itself failed: ${suiteFailure}`);

// The README beside the reports lists each of them (upstream's layout for report folders).
if (opts.report && existsSync(opts.report)) {
  const dir = dirname(opts.report);
  const readmePath = join(dir, "README.md");
  const reports = readdirSync(dir)
    .filter((f) => f.endsWith("-report.yaml"))
    .map((file) => {
      const s = summarizeReport(parseYaml(readFileSync(join(dir, file), "utf8")));
      return { file, channel: s.gatewayAPIChannel, version: s.implementationVersion, mode: s.mode };
    });
  if (existsSync(readmePath)) {
    writeFileSync(readmePath, withReportsTable(readFileSync(readmePath, "utf8"), reports));
    log(`listed ${reports.length} reports in ${readmePath} (newest: ${basename(opts.report)})`);
  }
}

const recorded = existsSync(opts.passing) ? parseTestList(readFileSync(opts.passing, "utf8")) : [];
const failed = regressions(recorded, rows);
for (const { name, reason } of failed) {
  log(`REGRESSION: core test ${name} passed before and does not now (${reason})`);
}

if (opts.record) {
  const grown = recordPassing(recorded, rows);
  writeFileSync(opts.passing, formatTestList(grown));
  log(`recorded ${grown.length - recorded.length} newly passing core tests in ${opts.passing} (${grown.length} in all)`);
}

if (failed.length > 0) {
  log(`${failed.length} core tests that passed before fail now; see ${opts.results}`);
  process.exitCode = 1;
}
