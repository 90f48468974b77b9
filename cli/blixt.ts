// SPDX-License-Identifier: Apache-2.0
// The `blixt` command. Each subcommand lives in its own module and registers with one line here.
import { Command, CommanderError } from "commander";
import { uninstallCommand } from "./uninstall/index.js";
import { dataplaneCommand } from "./dataplane.js";
import { compileCommand } from "./compile.js";
import { refuseRepeatedOptions } from "./options.js";

/** Exit code for a command line blixt cannot act on (bad or missing argument), as sysexits' EX_USAGE family uses. */
export const EXIT_USAGE = 2;

export function blixtProgram(): Command {
  const program = new Command("blixt").description(
    "blixt: an eBPF Layer-4 Gateway API implementation",
  );
  program.addCommand(dataplaneCommand());
  program.addCommand(compileCommand());
  program.addCommand(uninstallCommand());
  return program;
}

/** Commander settings copy only to subcommands made with .command(), so apply them to the whole tree. */
function configureTree(cmd: Command): void {
  cmd.exitOverride().showSuggestionAfterError(true);
  refuseRepeatedOptions(cmd);
  for (const sub of cmd.commands) configureTree(sub);
}

async function main(argv: string[]): Promise<number> {
  const program = blixtProgram();
  configureTree(program);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version print and exit 0; commander has already printed its one-line error.
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    process.stderr.write(`blixt: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
