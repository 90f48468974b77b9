// SPDX-License-Identifier: Apache-2.0
/**
 * The agent role: a Pepr capability whose only bindings are the DataplaneConfig watch, and a
 * start() that brings the node's dataplane up and converges it before reporting ready. The
 * work lives in agent.ts (loop), agent-maps.ts (maps), agent-kube.ts (status), agent-node.ts
 * (interface, bpffs) and metrics.ts.
 *
 * Environment (the chart's DaemonSet sets these):
 *   NODE_NAME              this node (downward API spec.nodeName); required
 *   BLIXT_INTERFACE        ingress interface; default: the default route's
 *   BLIXT_ATTACH_MODE      auto | xdp | xdpgeneric | tc; default auto (TC on a veth, else XDP)
 *   BLIXT_PIN_DIR          default /sys/fs/bpf/blixt
 *   BLIXT_BPF_DIR          directory holding blixt.o; default the repository's bpf/
 *   BLIXT_METRICS_PORT     /metrics, /healthz, /readyz; default 9090
 *   BLIXT_RESYNC_SECONDS   periodic resync; default 30
 */
import type { Server } from "node:http";
import { dirname } from "node:path";
import { Capability, Log } from "pepr";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1.js";
import { Agent, type AgentLog } from "./agent.js";
import { acknowledge, listDataplaneConfigs } from "./agent-kube.js";
import { ensureBpffs, ingressInterface, linkKind, parseRequestedMode, pickMode } from "./agent-node.js";
import { DEFAULT_PIN_DIR, Dataplane } from "./dataplane.js";
import { AgentMetrics, serveMetrics } from "./metrics.js";

export interface AgentSettings {
  nodeName: string;
  iface?: string;
  requestedMode: ReturnType<typeof parseRequestedMode>;
  pinDir: string;
  objDir?: string;
  metricsPort: number;
  resyncMs: number;
}

/** Settings from the environment; throws naming the variable that is wrong. Pure. */
export function agentSettings(env: NodeJS.ProcessEnv): AgentSettings {
  const nodeName = env.NODE_NAME?.trim();
  if (!nodeName) throw new Error("NODE_NAME is not set: the agent needs its node's name (set it from the downward API, fieldRef spec.nodeName)");
  const int = (name: string, fallback: number, min: number, max: number) => {
    const raw = env[name]?.trim();
    if (!raw) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name}="${raw}" must be an integer in ${min}..${max}`);
    return n;
  };
  return {
    nodeName,
    iface: env.BLIXT_INTERFACE?.trim() || undefined,
    requestedMode: parseRequestedMode(env.BLIXT_ATTACH_MODE),
    pinDir: env.BLIXT_PIN_DIR?.trim() || DEFAULT_PIN_DIR,
    objDir: env.BLIXT_BPF_DIR?.trim() || undefined,
    metricsPort: int("BLIXT_METRICS_PORT", 9090, 1, 65535),
    resyncMs: int("BLIXT_RESYNC_SECONDS", 30, 0, 86_400) * 1000,
  };
}

const log: AgentLog = {
  info: (fields, message) => Log.info(fields, message),
  error: (fields, message) => Log.error(fields, message),
};

export interface DataplaneAgentRole {
  capability: Capability;
  /** Brings the dataplane up and starts the loop; called once, in the agent process only. */
  start: () => void;
}

export function dataplaneAgent({ env }: { env: NodeJS.ProcessEnv }): DataplaneAgentRole {
  const capability = new Capability({
    name: "dataplane-agent",
    description: "Applies every DataplaneConfig to this node's eBPF maps and acknowledges it in the config's status",
  });
  const { When } = capability;
  // Events that arrive before start() finishes are kept and applied by its first converge.
  let agent: Agent | undefined;
  const pending = new Map<string, { config: DataplaneConfig; deleted: boolean }>();
  const key = (c: DataplaneConfig) => `${c.metadata?.namespace}/${c.metadata?.name}`;
  When(DataplaneConfig)
    .IsCreatedOrUpdated()
    .Watch((config) => {
      if (!agent) return void pending.set(key(config), { config, deleted: false });
      agent.observe(config);
      agent.schedule();
    });
  When(DataplaneConfig)
    .IsDeleted()
    .Watch((config) => {
      if (!agent) return void pending.set(key(config), { config, deleted: true });
      agent.forget(config);
      agent.schedule();
    });

  const run = async () => {
    const settings = agentSettings(env);
    if (settings.pinDir.startsWith("/sys/fs/bpf")) await ensureBpffs("/sys/fs/bpf");
    else await ensureBpffs(dirname(settings.pinDir));
    const iface = await ingressInterface(settings.iface);
    const mode = pickMode(settings.requestedMode, await linkKind(iface));
    const dataplane = new Dataplane({ pinDir: settings.pinDir, objDir: settings.objDir, xdpMode: mode === "xdpgeneric" ? "generic" : "native" });
    // Reuses pinned maps: conntrack and services survive the restart, traffic never stopped.
    await dataplane.load();
    await dataplane.attach(iface, mode === "tc" ? "tc" : "xdp");
    log.info({ node: settings.nodeName, interface: iface, mode, pinDir: settings.pinDir }, "dataplane attached");

    let metrics: AgentMetrics | undefined;
    const a = new Agent({
      nodeName: settings.nodeName,
      dataplane,
      mode,
      acknowledge,
      log,
      resyncMs: settings.resyncMs,
      onApply: (result) => metrics?.observeApply(result),
      // Taking an address over: tell the segment now rather than when neighbours' caches expire.
      onTakeover: async (addresses) => {
        for (const address of addresses) await dataplane.announce(iface, address);
        log.info({ addresses, interface: iface }, "announced taken-over Gateway addresses (gratuitous ARP)");
      },
    });
    metrics = new AgentMetrics(
      {
        stats: () => dataplane.stats(),
        arpCounters: () => dataplane.arpCounters(),
        conntrackEntries: async () => (await dataplane.conntrack()).length,
        listener: (s) => a.listener(s),
        ready: () => a.ready,
        iface,
        mode,
      },
      (error) => log.error({ error: error instanceof Error ? error.message : String(error) }, "reading dataplane counters failed"),
    );
    const server: Server = await serveMetrics({ metrics, ready: () => a.ready, port: settings.metricsPort });

    const listed = await listDataplaneConfigs();
    a.replaceAll(listed);
    // A watch event newer than the list wins; an older one (seen before the list) is dropped.
    const version = (c: DataplaneConfig | undefined) => Number(c?.metadata?.resourceVersion ?? 0);
    const listedByKey = new Map(listed.map((c) => [key(c), c]));
    for (const { config, deleted } of pending.values()) {
      if (version(config) <= version(listedByKey.get(key(config)))) continue;
      if (deleted) a.forget(config);
      else a.observe(config);
    }
    pending.clear();
    agent = a;
    const first = await a.converge();
    log.info({ ok: first.ok, changes: first.changes, seconds: first.seconds }, first.ok ? "converged; ready" : "first converge failed; retrying, not ready");
    a.start();

    // Upgrades and restarts leave programs and maps serving; `blixt dataplane detach` removes them.
    process.once("SIGTERM", () => {
      log.info({}, "SIGTERM: stopping the agent loop, leaving the dataplane attached");
      server.close();
      void a.stop();
    });
  };

  return {
    capability,
    start: () => {
      run().catch((error: unknown) => {
        log.error({ error: error instanceof Error ? error.message : String(error) }, "node agent failed to start");
        // The DaemonSet restarts the pod; the dataplane, if it was serving, keeps serving.
        process.exit(1);
      });
    },
  };
}
