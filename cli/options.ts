// SPDX-License-Identifier: Apache-2.0
// Command-line habits every blixt subcommand shares, on top of commander: an option that takes
// one value refuses to be given twice (commander would silently keep the last one), unless it
// is marked repeatable (it collects, like --backend).
import type { Command, Option } from "commander";

const repeatables = new WeakSet<Option>();

/** Marks an option that collects its values, so giving it more than once is the point. */
export function repeatable(option: Option): Option {
  repeatables.add(option);
  return option;
}

/** Makes `cmd` refuse a second occurrence of any of its single-value options, naming it; exit code 2. */
export function refuseRepeatedOptions(cmd: Command): void {
  for (const option of cmd.options) {
    if (repeatables.has(option) || option.variadic || !(option.required || option.optional))
      continue;
    let first: string | undefined;
    // Commander's own listener for this event runs first (it parses and stores the value).
    cmd.on(`option:${option.name()}`, (value: string) => {
      if (first === undefined) {
        first = value;
        return;
      }
      cmd.error(
        `error: option '${option.flags}' given more than once ('${first}', then '${value}'); give it once`,
        { exitCode: 2, code: "blixt.repeatedOption" },
      );
    });
  }
}
