// SPDX-License-Identifier: Apache-2.0
/**
 * The agent role: a Pepr capability whose only bindings are the DataplaneConfig watch, and a
 * start() that brings the node's dataplane up and converges it before reporting ready. The
 * work lives in start.ts (start-up), loop.ts (the loop), desired.ts (desired state, diff,
 * acknowledgements; pure), kube.ts (status, Secrets), node.ts (interface, bpffs),
 * metrics.ts, log.ts, and for HTTPS listeners tls/certificates.ts (certificates, SNI,
 * backend choice), tls/terminator.ts (one listener's TLS server) and tls/listeners.ts (the
 * node's terminators, synced on every pass). The kernel side is ../dataplane/.
 *
 * Environment (the chart's DaemonSet sets these):
 *   NODE_NAME              this node (downward API spec.nodeName); required
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
 *   BLIXT_CT_*_TIMEOUT_SECONDS  conntrack timeouts (start.ts CONNTRACK_ENV); default Cilium's
 *   BLIXT_NETNS            network namespace the interface is in (the netns lab only)
 */
import { Capability, Log } from "pepr";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1.js";
import type { Agent } from "./loop.js";
import type { AgentLog } from "./log.js";
import { agentSettings, startAgent } from "./start.js";

export { agentSettings, type AgentSettings } from "./start.js";

// Pepr's own (CommonJS) copy of kubernetes-fluent-client does not see the RegisterKind call in
// the generated type, so the watch names the kind itself.
const DATAPLANE_CONFIG = {
  group: "blixt.dev",
  version: "v1alpha1",
  kind: "DataplaneConfig",
  plural: "dataplaneconfigs",
};

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
    description:
      "Applies every DataplaneConfig to this node's eBPF maps and acknowledges it in the config's status",
  });
  const { When } = capability;
  // Events that arrive before start() finishes are kept and applied by its first converge.
  let agent: Agent | undefined;
  const pending = new Map<string, { config: DataplaneConfig; deleted: boolean }>();
  const key = (c: DataplaneConfig) => `${c.metadata?.namespace}/${c.metadata?.name}`;
  When(DataplaneConfig, DATAPLANE_CONFIG)
    .IsCreatedOrUpdated()
    .Watch(config => {
      if (!agent) return void pending.set(key(config), { config, deleted: false });
      agent.observe(config);
      agent.schedule();
    });
  When(DataplaneConfig, DATAPLANE_CONFIG)
    .IsDeleted()
    .Watch(config => {
      if (!agent) return void pending.set(key(config), { config, deleted: true });
      agent.forget(config);
      agent.schedule();
    });

  const run = async () => {
    const running = await startAgent(agentSettings(env), {
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
    // Upgrades and restarts leave programs and maps serving; `blixt dataplane detach` removes them.
    process.once("SIGTERM", () => {
      log.info({}, "SIGTERM: stopping the agent loop, leaving the dataplane attached");
      // Pepr's server used to end the process on SIGTERM; the agent runs none, so it exits here
      // (Pepr's watches would otherwise keep it up until the grace period's SIGKILL).
      void running.stop().finally(() => process.exit(0));
    });
  };

  return {
    capability,
    start: () => {
      run().catch((error: unknown) => {
        log.error(
          { error: error instanceof Error ? error.message : String(error) },
          "node agent failed to start",
        );
        // The DaemonSet restarts the pod; the dataplane, if it was serving, keeps serving.
        process.exit(1);
      });
    },
  };
}
