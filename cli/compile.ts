// SPDX-License-Identifier: Apache-2.0
/**
 * `blixt compile -f FILE_OR_DIR... [-o yaml|json]`: runs the compile step on objects from files,
 * with no cluster, and prints the statuses, DataplaneConfigs and allocations it produces.
 * Exit code 2 when an input cannot be read (one line per problem, naming file and object).
 * The input format, including the blixt-only CompileEnvironment document, is described in
 * capabilities/gateway/compile/documents.ts.
 */
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { Command, Option } from "commander";
import { compile } from "../capabilities/gateway/compile/index.js";
import { loadSnapshot, renderOutput } from "../capabilities/gateway/compile/documents.js";
import type { Source } from "../capabilities/gateway/compile/documents.js";

export const EXIT_UNREADABLE = 2;

/** Files named on the command line; a directory contributes its *.yaml, *.yml and *.json, sorted. */
export function readSources(paths: string[]): { sources: Source[]; errors: string[] } {
  const sources: Source[] = [];
  const errors: string[] = [];
  const read = (file: string) => {
    try {
      sources.push({
        name: file,
        text: file === "-" ? readFileSync(0, "utf8") : readFileSync(file, "utf8"),
      });
    } catch (e) {
      errors.push(`${file}: cannot read: ${(e as Error).message}`);
    }
  };
  for (const path of paths) {
    let isDir = false;
    try {
      isDir = path !== "-" && statSync(path).isDirectory();
    } catch {
      // read() reports the missing file.
    }
    if (!isDir) {
      read(path);
      continue;
    }
    for (const entry of readdirSync(path).sort()) {
      if (/\.(ya?ml|json)$/.test(entry)) read(join(path, entry));
    }
  }
  return { sources, errors };
}

export interface CompileCliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The command's work without touching process state, so tests can call it directly. */
export function runCompile(
  paths: string[],
  format: "yaml" | "json",
  now: string,
): CompileCliResult {
  const { sources, errors: readErrors } = readSources(paths);
  const { snapshot, errors, ignored } = loadSnapshot(sources, now);
  const problems = [...readErrors, ...errors];
  if (problems.length > 0)
    return { code: EXIT_UNREADABLE, stdout: "", stderr: `${problems.join("\n")}\n` };
  const output = compile(snapshot);
  const notes = [
    ...(ignored.length > 0
      ? [
          `blixt compile: ignored ${ignored.length} object(s) that are no input of the compile step: ${ignored.join(", ")}`,
        ]
      : []),
    ...output.warnings.map(w => `blixt compile: warning: ${w}`),
  ];
  return {
    code: 0,
    stdout: renderOutput(output, format),
    stderr: notes.length > 0 ? `${notes.join("\n")}\n` : "",
  };
}

export function compileCommand(): Command {
  return new Command("compile")
    .description(
      "compile Gateway API objects from files (no cluster) and print the statuses and DataplaneConfigs blixt would write",
    )
    .requiredOption(
      "-f, --filename <path...>",
      "YAML/JSON files or directories of them (- for stdin)",
    )
    .addOption(
      new Option("-o, --output <format>", "output format")
        .choices(["yaml", "json"])
        .default("yaml"),
    )
    .action(function (this: Command, options: { filename: string[]; output: "yaml" | "json" }) {
      const result = runCompile(options.filename, options.output, new Date().toISOString());
      // Through commander's error path, so `blixt` (which maps command errors to exit codes) and
      // a standalone run both exit 2 after printing one line per unreadable object.
      if (result.code !== 0)
        this.error(result.stderr.trimEnd(), {
          exitCode: result.code,
          code: "blixt.compile.unreadable",
        });
      process.stdout.write(result.stdout);
      process.stderr.write(result.stderr);
    });
}
