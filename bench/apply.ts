// SPDX-License-Identifier: Apache-2.0
// How long the node agent takes to apply one Gateway listener of N backends to the pinned maps:
// the Agent's own converge pass (desired state, read back, diff, Maglev table, one bpftool
// batch) on real maps in bpffs. Nothing is attached, so no traffic shares the machine with it.
import type { DataplaneConfig } from "../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { Agent } from "../capabilities/agent/loop.js";
import { Dataplane } from "../capabilities/dataplane/dataplane.js";
import type { Series } from "./report.js";

export interface ApplyTimes {
  /** seconds for the first apply of a listener with this many backends */
  create: Series;
  /** seconds for an apply that replaces one backend (a whole new table, the old one removed) */
  update: Series;
  /** bpftool commands in the create batch */
  commands: number;
}

/** Backend i of a listener: distinct addresses in 10.64.0.0/10, one port. */
const endpoint = (i: number, generation: number): { address: string; port: number } => {
  const n = i + (generation > 1 && i === 0 ? 1 << 20 : 0);
  return { address: `10.${64 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`, port: 8080 };
};

function config(backends: number, generation: number): DataplaneConfig {
  return {
    apiVersion: "blixt.dev/v1alpha1",
    kind: "DataplaneConfig",
    metadata: { namespace: "bench", name: "apply", generation },
    spec: {
      gatewayName: "apply",
      gatewayGeneration: generation,
      address: "198.51.100.77",
      listeners: [
        {
          name: "tcp",
          port: 80,
          protocol: "TCP",
          rejectWeight: 0,
          backends: [
            {
              weight: 1,
              endpoints: Array.from({ length: backends }, (_, i) => endpoint(i, generation)),
            },
          ],
        },
      ],
    },
  } as DataplaneConfig;
}

/**
 * Runs `body` with a node agent of its own on fresh pinned maps (loaded; TC mode, nothing
 * attached, no resync, acknowledgements dropped), then stops the agent and unpins the maps.
 */
export async function withBenchAgent<T>(
  name: string,
  body: (agent: Agent) => Promise<T>,
): Promise<T> {
  const dp = new Dataplane({ pinDir: `/sys/fs/bpf/blixt-bench-${name}-${process.pid}` });
  const agent = new Agent({
    nodeName: "bench",
    dataplane: dp,
    mode: "tc",
    resyncMs: 0,
    acknowledge: async () => {},
  });
  try {
    await dp.load();
    return await body(agent);
  } finally {
    await agent.stop();
    await dp.unpin();
  }
}

/** One run on maps of its own: the first apply, then one backend replaced. */
function once(
  size: number,
  run: number,
): Promise<{ create: number; update: number | Error; commands: number }> {
  return withBenchAgent(`apply-${run}`, async agent => {
    agent.replaceAll([config(size, 1)]);
    const first = await agent.converge();
    if (!first.ok)
      throw new Error(`the node agent's apply of ${size} backends failed: ${first.error}`);
    agent.replaceAll([config(size, 2)]);
    const second = await agent.converge();
    return {
      create: first.seconds,
      update: second.ok
        ? second.seconds
        : new Error(`replacing one of ${size} backends failed: ${second.error}`),
      commands: first.commands,
    };
  });
}

export async function applyTimes(
  sizes: number[],
  repeats: number,
  progress: (line: string) => void,
): Promise<Record<number, ApplyTimes>> {
  const out: Record<number, ApplyTimes> = {};
  let run = 0;
  for (const size of sizes) {
    const times: ApplyTimes = { create: { samples: [] }, update: { samples: [] }, commands: 0 };
    for (let r = 0; r < repeats; r++) {
      try {
        const t = await once(size, run++);
        times.create.samples.push(t.create);
        times.commands = t.commands;
        if (t.update instanceof Error) times.update.failure = t.update.message.slice(0, 160);
        else times.update.samples.push(t.update);
      } catch (err) {
        times.create.failure = (err instanceof Error ? err.message : String(err)).slice(0, 160);
        break;
      }
    }
    out[size] = times;
    const show = (s: Series) =>
      s.failure ? `failed: ${s.failure}` : `${s.samples.map(x => x.toFixed(3)).join(", ")} s`;
    progress(
      `apply ${size} backends: create ${show(times.create)}; replace one ${show(times.update)}`,
    );
  }
  return out;
}
