// SPDX-License-Identifier: Apache-2.0
// Shared setup for packet tests: a Dataplane loaded under a pin directory of the test file's
// own, removed in teardown (also when the test fails), and runners for its three programs.
import type { Test } from "tap";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { progRunMany, type ProgRunResult } from "../../capabilities/dataplane/bpftool.js";
import type { ProgName } from "../../capabilities/dataplane/maps.js";

export const XDP_DROP = 1;
export const XDP_PASS = 2;
export const XDP_TX = 3;
export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;

/** A freshly loaded dataplane pinned under /sys/fs/bpf/blixt-test-<name>-<pid>. */
export async function loadedDataplane(t: Test, name: string): Promise<Dataplane> {
  const dp = new Dataplane({ pinDir: `/sys/fs/bpf/blixt-test-${name}-${process.pid}` });
  t.teardown(() => dp.unpin());
  await dp.load();
  return dp;
}

export async function run(
  dp: Dataplane,
  prog: ProgName,
  packets: Uint8Array[],
): Promise<ProgRunResult[]> {
  return progRunMany(dp.progPin(prog), packets);
}

export async function runOne(
  dp: Dataplane,
  prog: ProgName,
  packet: Uint8Array,
): Promise<ProgRunResult> {
  return (await run(dp, prog, [packet]))[0];
}

/**
 * A struct __sk_buff (192 bytes) whose ingress_ifindex (offset 36) is 1, the loopback: a TC run
 * given it as ctx_in sees a frame that came in on a device, as one off the wire does.
 */
export function skbFromLoopback(): Uint8Array {
  const ctx = new Uint8Array(192);
  new DataView(ctx.buffer).setUint32(36, 1, true);
  return ctx;
}
