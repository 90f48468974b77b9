// SPDX-License-Identifier: Apache-2.0
/**
 * The agent role: a Pepr capability with no bindings, and a start() that watches every
 * DataplaneConfig, brings the node's dataplane up and converges it before reporting ready.
 * The watch is kubernetes-fluent-client's own (kube.ts watchDataplaneConfigs), not a Pepr
 * Watch binding: Pepr keeps its watcher's failure events to itself, and the agent relists
 * (relist.ts) at the first one. The work lives in start.ts (start-up), loop.ts (the loop),
 * desired.ts (desired state, diff, acknowledgements; pure), kube.ts (watch, lists, status,
 * Secrets), node.ts (interface, bpffs), metrics.ts, log.ts, and for HTTPS listeners
 * tls/certificates.ts (certificates, SNI, backend choice), tls/terminator.ts (one listener's
 * TLS server) and tls/listeners.ts (the node's terminators, synced on every pass). The kernel
 * side is ../dataplane/.
 *
 * Environment (the chart's DaemonSet sets these):
 *   NODE_NAME              this node (downward API spec.nodeName); required
 *   HOST_IP                this node's IPv4 address (downward API status.hostIP): the source
 *                          of IP-in-IP packets to backends on other nodes; must be IPv4 if set
 *   BLIXT_INTERFACE        ingress interface; default: the default route's
 *   BLIXT_ATTACH_MODE      auto | xdp | xdpgeneric | tc; default auto (TC on a veth, else XDP)
 *   BLIXT_PIN_DIR          default /sys/fs/bpf/blixt
 *   BLIXT_BPF_DIR          directory holding blixt.o; default the repository's bpf/
 *   BLIXT_METRICS_PORT     /metrics, /healthz, /readyz; default 9090
 *   BLIXT_METRICS_ADDRESS  the address they listen on; default 127.0.0.1 (the chart: the node's IP)
 *   BLIXT_TLS_HANDSHAKE_TIMEOUT_SECONDS, BLIXT_TLS_IDLE_TIMEOUT_SECONDS,
 *   BLIXT_TLS_MAX_CONNECTIONS_PER_LISTENER
 *                          the TLS terminators' limits; default 10, 300, 1024
 *   BLIXT_RESYNC_SECONDS   periodic resync; default 30
 *   BLIXT_RELIST_SECONDS   periodic relist of every DataplaneConfig (relist.ts); default 300
 *   POD_NAMESPACE, POD_NAME, POD_UID
 *                          the agent's namespace and Pod: where its node Lease lives and what
 *                          owns it (leases.ts); without POD_NAMESPACE no Lease is held
 *   BLIXT_LEASE_DURATION_SECONDS, BLIXT_LEASE_RENEW_MILLISECONDS
 *                          the node Lease's duration and renew interval; default 2 and 500
 *   BLIXT_CT_*_TIMEOUT_SECONDS  conntrack timeouts (start.ts CONNTRACK_ENV); default Cilium's
 *   BLIXT_MAP_SERVICES, BLIXT_MAP_BACKENDS, BLIXT_MAP_TABLE_CHUNKS, BLIXT_MAP_TABLE_BACKENDS,
 *   BLIXT_MAP_CONNTRACK    entries of the sized maps (start.ts MAP_SIZE_ENV); default bpf/maps.h's
 *   BLIXT_NETNS            network namespace the interface is in (the netns lab only)
 */
import { Capability, Log } from "pepr";
import type { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1.js";
import type { Agent } from "./loop.js";
import type { AgentLog } from "./log.js";
import { watchDataplaneConfigs, type DataplaneConfigWatchHandlers } from "./kube.js";
import type { Relister } from "./relist.js";
import { agentSettings, startAgent } from "./start.js";
import { errorMessage } from "../error-message.js";

export { agentSettings, type AgentSettings } from "./start.js";

const log: AgentLog = {
  info: (fields, message) => Log.info(fields, message),
  error: (fields, message) => Log.error(fields, message),
};

export interface DataplaneAgentRole {
  capability: Capability;
  /** Watches, brings the dataplane up and starts the loop; called once, in the agent process only. */
  start: () => void;
  /** What start()'s DataplaneConfig watch calls: events before the agent runs are kept for it. */
  watchHandlers: DataplaneConfigWatchHandlers;
}

export function dataplaneAgent({ env }: { env: NodeJS.ProcessEnv }): DataplaneAgentRole {
  const capability = new Capability({
    name: "dataplane-agent",
    description:
      "Applies every DataplaneConfig to this node's eBPF maps and acknowledges it in the config's status",
  });
  // Events that arrive before start() finishes are kept and applied by its first converge.
  let agent: Agent | undefined;
  let relister: Relister | undefined;
  // A watch failure before the relister exists: reported to it once it does.
  let earlyFailure: { event: string; detail: string } | undefined;
  const pending = new Map<string, { config: DataplaneConfig; deleted: boolean }>();
  const key = (c: DataplaneConfig) => `${c.metadata?.namespace}/${c.metadata?.name}`;
  const watchFailed = (event: string, detail: string) => {
    if (relister) relister.watchFailed(event, detail);
    else earlyFailure ??= { event, detail };
  };
  const handlers: DataplaneConfigWatchHandlers = {
    changed: config => {
      if (!agent) return void pending.set(key(config), { config, deleted: false });
      if (relister && !relister.watchEvent(config)) return;
      // A change no pass would act on (this node's own acknowledgement coming back) runs none.
      if (agent.observe(config)) agent.schedule();
    },
    deleted: config => {
      if (!agent) return void pending.set(key(config), { config, deleted: true });
      if (relister && !relister.watchEvent(config)) return;
      agent.forget(config);
      agent.schedule();
    },
    failed: (event, detail) => watchFailed(event, detail),
  };

  const run = async () => {
    const settings = agentSettings(env);
    // Before the start's list, as Pepr started its watches: nothing falls between the two.
    const watch = watchDataplaneConfigs(handlers);
    watch.start().catch((error: unknown) => watchFailed("start", errorMessage(error)));
    const running = await startAgent(settings, {
      log,
      beforeFirstConverge: (a, listed) => {
        // A watch event newer than the list wins; an older one (seen before the list) is dropped.
        const version = (c: DataplaneConfig | undefined) =>
          Number(c?.metadata?.resourceVersion ?? 0);
        const listedByKey = new Map(listed.map(c => [key(c), c]));
        for (const { config, deleted } of pending.values()) {
          if (version(config) <= version(listedByKey.get(key(config)))) continue;
          if (deleted) a.forget(config);
          else a.observe(config);
        }
        pending.clear();
        agent = a;
      },
    });
    relister = running.relister;
    if (earlyFailure) relister.watchFailed(earlyFailure.event, earlyFailure.detail);
    // Upgrades and restarts leave programs and maps serving; `blixt dataplane detach` removes them.
    process.once("SIGTERM", () => {
      log.info({}, "SIGTERM: stopping the agent loop, leaving the dataplane attached");
      watch.close();
      // Pepr's server used to end the process on SIGTERM; the agent runs none, so it exits here.
      void running.stop().finally(() => process.exit(0));
    });
  };

  return {
    capability,
    watchHandlers: handlers,
    start: () => {
      run().catch((error: unknown) => {
        log.error({ error: errorMessage(error) }, "node agent failed to start");
        // The DaemonSet restarts the pod; the dataplane, if it was serving, keeps serving.
        process.exit(1);
      });
    },
  };
}
