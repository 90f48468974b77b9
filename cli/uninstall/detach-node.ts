// SPDX-License-Identifier: Apache-2.0
/**
 * `blixt uninstall detach-node`, what each uninstall pod runs on its node: detach blixt's
 * programs from every device that runs one, then remove the pins, so nothing of blixt is left
 * in the kernel. The agent's own stop path never does this (restarts and upgrades must keep
 * forwarding); only `helm uninstall` does.
 */
import { rm } from "node:fs/promises";
import { bpftoolJson } from "../../capabilities/dataplane/bpftool.js";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { devicesRunningBlixt, type NetShow } from "./plan.js";

export interface DetachNodeOptions {
  pinDir: string;
  /** The node's name, for the log lines the uninstall Job reports. */
  nodeName: string;
}

export async function detachNode({ pinDir, nodeName: node }: DetachNodeOptions): Promise<void> {
  const dataplane = new Dataplane({ pinDir });
  const devices = devicesRunningBlixt(
    (await bpftoolJson(["net", "show"], "listing attached programs")) as NetShow[] | null,
  );
  for (const device of devices) {
    await dataplane.detach(device);
    console.log(`${node}: detached blixt from ${device}`);
  }
  await rm(pinDir, { recursive: true, force: true });
  console.log(`${node}: removed ${pinDir}${devices.length ? "" : " (no device ran blixt)"}`);
}
