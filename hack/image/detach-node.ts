// SPDX-License-Identifier: Apache-2.0
/**
 * What each uninstall pod runs on its node (in blixt's image as /app/dist/detach-node.mjs):
 * detach blixt's programs from every device that runs one, then remove the pins, so nothing
 * of blixt is left in the kernel. The agent's own stop path never does this (restarts and
 * upgrades must keep forwarding); only `helm uninstall` does.
 *
 * env: BLIXT_PIN_DIR (default /sys/fs/bpf/blixt)
 */
import { rm } from "node:fs/promises";
import { bpftoolJson } from "../../capabilities/dataplane/bpftool.js";
import { DEFAULT_PIN_DIR, Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { devicesRunningBlixt, type NetShow } from "./uninstall-plan.js";

async function main(): Promise<void> {
  const pinDir = process.env.BLIXT_PIN_DIR?.trim() || DEFAULT_PIN_DIR;
  const node = process.env.NODE_NAME ?? "this node";
  // objDir is only read by load(); naming it keeps the constructor off import.meta.url.
  const dataplane = new Dataplane({ pinDir, objDir: process.env.BLIXT_BPF_DIR || "/app/bpf" });
  const devices = devicesRunningBlixt((await bpftoolJson(["net", "show"], "listing attached programs")) as NetShow[] | null);
  for (const device of devices) {
    await dataplane.detach(device);
    console.log(`${node}: detached blixt from ${device}`);
  }
  await rm(pinDir, { recursive: true, force: true });
  console.log(`${node}: removed ${pinDir}${devices.length ? "" : " (no device ran blixt)"}`);
}

main().catch(err => {
  // The termination message is what the uninstall Job reports for this node.
  const message = `detach failed: ${err instanceof Error ? err.message : String(err)}`;
  console.error(message);
  process.exit(1);
});
