// SPDX-License-Identifier: Apache-2.0
// `blixt uninstall ...`: what the chart's pre-delete hook runs in blixt's image so that
// `helm uninstall` leaves no program attached and no map pinned on any node. Each option can
// come from the environment variable named in its help, as the chart passes them.
import { Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_PIN_DIR } from "../../capabilities/dataplane/dataplane.js";
import { detachAll, type DetachAllOptions } from "./detach-all.js";
import { detachNode, type DetachNodeOptions } from "./detach-node.js";

function parseDir(value: string): string {
  if (value.trim() === "") throw new InvalidArgumentError("is empty; give a directory.");
  return value.trim();
}

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1)
    throw new InvalidArgumentError(`"${value}" is not a number of seconds (1 or more).`);
  return n;
}

export function uninstallCommand(): Command {
  const cmd = new Command("uninstall").description(
    "remove blixt's dataplane from the nodes (the Helm chart's pre-delete hook)",
  );

  cmd
    .command("detach-all")
    .description(
      "run a detach-node pod on every node an agent pod runs on, wait for all of them, then delete them",
    )
    .addOption(
      new Option("--namespace <ns>", "the release namespace, where the agents and detach pods run")
        .env("NAMESPACE")
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--agent-selector <k=v,...>", "labels of the agent pods")
        .env("AGENT_SELECTOR")
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--pod-template <file>", "the detach pod template (JSON) the chart renders")
        .env("POD_TEMPLATE")
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--name-prefix <prefix>", "name prefix of the detach pods")
        .env("NAME_PREFIX")
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--timeout-seconds <n>", "how long to wait for every node")
        .env("TIMEOUT_SECONDS")
        .argParser(parseSeconds)
        .default(120),
    )
    .action((o: DetachAllOptions) => detachAll(o));

  cmd
    .command("detach-node")
    .description(
      "detach blixt's programs from every device on this node that runs one, then remove the pins",
    )
    .addOption(
      new Option("--pin-dir <dir>", "where blixt's maps and programs are pinned")
        .env("BLIXT_PIN_DIR")
        .argParser(parseDir)
        .default(DEFAULT_PIN_DIR),
    )
    .addOption(
      new Option("--node-name <name>", "this node's name, for the log")
        .env("NODE_NAME")
        .default("this node"),
    )
    .action(async (o: DetachNodeOptions) => {
      try {
        await detachNode(o);
      } catch (err) {
        // The pod's termination message is what the uninstall Job reports for this node.
        throw new Error(`detach failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    });

  return cmd;
}
