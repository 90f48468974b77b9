// SPDX-License-Identifier: Apache-2.0
// Bringing the node agent up: bpffs, load (or reuse) the pinned objects, attach to the ingress
// interface, serve /metrics, list the DataplaneConfigs and converge to them before reporting
// ready. Used by the agent role (index.ts) and, in-process, by the start-up test.
import type { Server } from "node:http";
import { dirname } from "node:path";
import type { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1.js";
import { Agent, type ConvergeResult } from "./loop.js";
import type { AgentLog } from "./log.js";
import { acknowledge, applyLease, followLeases, listDataplaneConfigsAt } from "./kube.js";
import {
  AnnounceDeadline,
  LeaseHolder,
  YieldKeeper,
  leaseName,
  leaseSettings,
  LiveNodes,
  LivenessNotifier,
  type LeaseSettings,
} from "./leases.js";
import { Relister } from "./relist.js";
import {
  ensureBpffs,
  ingressInterface,
  interfaceAddress,
  linkKind,
  parseRequestedMode,
} from "./node.js";
import { readSecret } from "./kube.js";
import { TlsListeners } from "./tls/listeners.js";
import { tlsLimits, type TlsLimits } from "./tls/terminator.js";
import { isIP, isIPv4 } from "node:net";
import { DEFAULT_PIN_DIR, Dataplane } from "../dataplane/dataplane.js";
import {
  CONNTRACK_TIMEOUT_DEFAULTS,
  type ConntrackTimeouts,
  type MapSizes,
  type SizedMap,
} from "../dataplane/maps.js";
import { AgentMetrics, serveMetrics } from "./metrics.js";
import { modeReason, pickMode, type AttachMode } from "../dataplane/mode.js";
import { errorMessage } from "../error-message.js";
import { envInt } from "../env.js";
import { LinkEvents, PodInterfaces, podInterfacePrefixes } from "./pod-interfaces.js";
import { netnsPrefix } from "../dataplane/bpftool.js";
import { Periodic } from "./periodic.js";

export interface AgentSettings {
  nodeName: string;
  /** the node's own IPv4 address (HOST_IP, from the downward API's status.hostIP); unset outside a cluster */
  nodeAddress?: string;
  iface?: string;
  requestedMode: ReturnType<typeof parseRequestedMode>;
  pinDir: string;
  objDir?: string;
  /** network namespace NAME the interface lives in (the netns lab); unset on a node */
  netns?: string;
  metricsPort: number;
  /** the address /metrics, /healthz and /readyz listen on (the chart: the node's own IP) */
  metricsAddress: string;
  resyncMs: number;
  /** periodic relist of every DataplaneConfig, ms; 0 disables it */
  relistMs: number;
  /** conntrack timeouts written to blixt_ct_config (defaults: Cilium's, maps.ts CONNTRACK_TIMEOUT_DEFAULTS) */
  conntrack: ConntrackTimeouts;
  tlsLimits: TlsLimits;
  /**
   * The agent's namespace (POD_NAMESPACE, from the downward API), where its node Lease lives;
   * unset (the netns lab, tests), the agent holds no Lease and follows spec.announcingNode only.
   */
  namespace?: string;
  /** the agent's Pod (POD_NAME, POD_UID): owner of the node Lease, which goes with it */
  pod?: { name: string; uid: string };
  lease: LeaseSettings;
  /** sizes of the maps whose size is a setting (the chart's agent.maps); unset: bpf/maps.h's */
  mapSizes: Partial<MapSizes>;
  /** name prefixes of the node's ends of pod interfaces (pod-interfaces.ts); empty: no in-cluster clients */
  podInterfacePrefixes: string[];
  /** how often the node's links are listed for new pod interfaces besides the link events, ms */
  podInterfaceScanMs: number;
}

/** The env variable of each map size, and its bounds (the chart's agent.maps values set them). */
export const MAP_SIZE_ENV: Readonly<Record<SizedMap, { name: string; max: number }>> = {
  services: { name: "BLIXT_MAP_SERVICES", max: 16384 },
  backends: { name: "BLIXT_MAP_BACKENDS", max: 1 << 24 },
  tableChunks: { name: "BLIXT_MAP_TABLE_CHUNKS", max: 1 << 20 },
  tableBackends: { name: "BLIXT_MAP_TABLE_BACKENDS", max: 1 << 24 },
  conntrack: { name: "BLIXT_MAP_CONNTRACK", max: 1 << 24 },
};

/** The env variable of each conntrack timeout (the chart's agent.conntrack values set them). */
export const CONNTRACK_ENV: Readonly<Record<keyof ConntrackTimeouts, string>> = {
  tcpNewSeconds: "BLIXT_CT_TCP_NEW_TIMEOUT_SECONDS",
  tcpEstablishedSeconds: "BLIXT_CT_TCP_ESTABLISHED_TIMEOUT_SECONDS",
  tcpClosingSeconds: "BLIXT_CT_TCP_CLOSING_TIMEOUT_SECONDS",
  udpSeconds: "BLIXT_CT_UDP_TIMEOUT_SECONDS",
};

/** Settings from the environment; throws naming the variable that is wrong. Pure. */
export function agentSettings(env: NodeJS.ProcessEnv): AgentSettings {
  const nodeName = env.NODE_NAME?.trim();
  if (!nodeName)
    throw new Error(
      "NODE_NAME is not set: the agent needs its node's name (set it from the downward API, fieldRef spec.nodeName)",
    );
  const int = (name: string, fallback: number, min: number, max: number) =>
    envInt(env, name, fallback, min, max);
  return {
    nodeName,
    nodeAddress: nodeAddress(env.HOST_IP),
    iface: env.BLIXT_INTERFACE?.trim() || undefined,
    requestedMode: parseRequestedMode(env.BLIXT_ATTACH_MODE),
    pinDir: env.BLIXT_PIN_DIR?.trim() || DEFAULT_PIN_DIR,
    objDir: env.BLIXT_BPF_DIR?.trim() || undefined,
    netns: env.BLIXT_NETNS?.trim() || undefined,
    metricsPort: int("BLIXT_METRICS_PORT", 9090, 0, 65535),
    resyncMs: int("BLIXT_RESYNC_SECONDS", 30, 0, 86_400) * 1000,
    relistMs: int("BLIXT_RELIST_SECONDS", 300, 0, 86_400) * 1000,
    conntrack: Object.fromEntries(
      Object.entries(CONNTRACK_ENV).map(([field, name]) => [
        field,
        int(name, CONNTRACK_TIMEOUT_DEFAULTS[field as keyof ConntrackTimeouts], 1, 0xffffffff),
      ]),
    ) as unknown as ConntrackTimeouts,
    metricsAddress: metricsAddress(env.BLIXT_METRICS_ADDRESS),
    tlsLimits: tlsLimits(env),
    podInterfacePrefixes: podInterfacePrefixes(env.BLIXT_POD_INTERFACE_PREFIXES),
    podInterfaceScanMs: int("BLIXT_POD_INTERFACE_SCAN_MILLISECONDS", 10_000, 100, 3_600_000),
    namespace: env.POD_NAMESPACE?.trim() || undefined,
    ...(env.POD_NAME?.trim() && env.POD_UID?.trim()
      ? { pod: { name: env.POD_NAME.trim(), uid: env.POD_UID.trim() } }
      : {}),
    lease: leaseSettings(env),
    mapSizes: Object.fromEntries(
      Object.entries(MAP_SIZE_ENV)
        .filter(([, { name }]) => env[name]?.trim())
        .map(([field, { name, max }]) => [field, int(name, 0, 1, max)]),
    ),
  };
}

// The source of the IP-in-IP packets to backends on other nodes: the dataplane serves IPv4 only.
function nodeAddress(raw: string | undefined): string | undefined {
  const address = raw?.trim();
  if (!address) return undefined;
  if (!isIPv4(address))
    throw new Error(
      `HOST_IP="${address}" is not an IPv4 address; the agent needs its node's IPv4 address there (the chart sets it from the downward API, fieldRef status.hostIP; a node whose first address is IPv6 is not supported)`,
    );
  return address;
}

// Loopback unless told: on the host network every other address is reachable from outside.
function metricsAddress(raw: string | undefined): string {
  const address = raw?.trim();
  if (!address) return "127.0.0.1";
  if (!isIP(address))
    throw new Error(
      `BLIXT_METRICS_ADDRESS="${address}" is not an IP address; set it to the address /metrics and the probes should use (the chart's agent.metricsBindAddress; empty there means the node's own IP)`,
    );
  return address;
}

/** Where HTTPS listeners' TLS terminators listen: the node's own address on the ingress interface. */
async function tlsHost(
  iface: string,
  netns: string | undefined,
): Promise<string | { error: string }> {
  // Sockets open in the agent's own network namespace, which the dataplane's DNAT cannot reach.
  if (netns)
    return {
      error: `TLS termination needs the agent inside the node's network namespace, but BLIXT_NETNS="${netns}" is set`,
    };
  const address = await interfaceAddress(iface).catch(() => undefined);
  return (
    address ?? {
      error: `interface ${iface} has no global IPv4 address for the TLS terminators to listen on; give it one or set BLIXT_INTERFACE to the interface that has the node's address`,
    }
  );
}

/**
 * Renews this node's Lease and watches every agent's; `changed` is called when the set of live
 * nodes changes (an address may have to move). Logs each change of that set.
 */
function startLeases(
  namespace: string,
  settings: AgentSettings,
  log: AgentLog,
  changed: () => void,
  regained: () => void,
) {
  const view = new LiveNodes(
    undefined,
    undefined,
    (silenceMs, nodes) =>
      log.info(
        { silenceMs, nodes: nodes.join(",") },
        "the watch of the agent Leases was silent, a stall: these Leases count as renewed now, so the renewals it held back lapse nobody",
      ),
    (awayMs, graceMs) =>
      log.info(
        { awayMs, graceMs },
        "the agent Leases are in view again: no Lease lapses during the return grace, while the nodes reach the API server again",
      ),
  );
  const holder = new LeaseHolder({
    namespace,
    nodeName: settings.nodeName,
    owner: settings.pod,
    settings: settings.lease,
    log,
    // Abandoned when the holder stops waiting for it: a Lease duration.
    write: lease => applyLease(lease, settings.lease.durationSeconds * 1000),
    onRegained: regained,
  });
  const watch = followLeases(
    namespace,
    view,
    (liveness, before) => {
      log.info(
        { now: LivenessNotifier.describe(liveness), before },
        !liveness
          ? "agent Leases: the view is not current; addresses stay with the controller's choice until it is"
          : liveness.lapsed.size > 0
            ? "agent Leases changed; the addresses of nodes whose Lease lapsed move to live nodes"
            : "agent Leases changed",
      );
      changed();
    },
    detail =>
      log.error({ namespace, error: detail }, "watching the agent Leases failed; reconnecting"),
  );
  holder.start();
  watch.start().catch((error: unknown) => {
    log.error(
      { namespace, error: errorMessage(error) },
      "watching the agent Leases failed to start",
    );
  });
  log.info(
    {
      lease: `${namespace}/${leaseName(settings.nodeName)}`,
      durationSeconds: settings.lease.durationSeconds,
      renewMs: settings.lease.renewMs,
    },
    "holding this node's agent Lease; watching every agent's",
  );
  return {
    view,
    holder,
    stop: async () => {
      watch.close();
      await holder.stop();
    },
  };
}

export interface RunningAgent {
  agent: Agent;
  dataplane: Dataplane;
  server: Server;
  iface: string;
  mode: AttachMode;
  first: ConvergeResult;
  relister: Relister;
  /** Stops the loop and the metrics server; programs and maps stay, traffic keeps flowing. */
  stop(): Promise<void>;
}

export interface StartOptions {
  log: AgentLog;
  /** Called with the listed configs already in the agent, before the first converge (watch events seen meanwhile). */
  beforeFirstConverge?: (agent: Agent, listed: DataplaneConfig[]) => void;
}

export async function startAgent(
  settings: AgentSettings,
  { log, beforeFirstConverge }: StartOptions,
): Promise<RunningAgent> {
  await ensureBpffs(
    settings.pinDir.startsWith("/sys/fs/bpf/") ? "/sys/fs/bpf" : dirname(settings.pinDir),
  );
  const iface = await ingressInterface(settings.iface, settings.netns);
  const kind = await linkKind(iface, settings.netns);
  const mode = pickMode(settings.requestedMode, kind);
  const dataplane = new Dataplane({
    pinDir: settings.pinDir,
    objDir: settings.objDir,
    netns: settings.netns,
    xdpMode: mode === "xdpgeneric" ? "generic" : "native",
    mapSizes: settings.mapSizes,
  });
  // Reuses pinned maps: conntrack and services survive the restart, traffic never stopped.
  const replaced = await dataplane.load();
  if (replaced.length > 0)
    log.info(
      { maps: replaced },
      "pinned maps of another shape (an older blixt) or size (agent.maps changed) were created afresh; what they held is lost: services and tables are written again by the first pass, and until then their traffic is refused; the rest is reused",
    );
  log.info({ capacity: await dataplane.capacity() }, "dataplane maps loaded");
  // Before attaching, so the first packet this agent's programs see is judged by these timeouts.
  await dataplane.setConntrackTimeouts(settings.conntrack);
  // The outer source of packets sent on to a backend on another node (bpf/encap.h): HOST_IP, or
  // else the interface's own address. Without one, new flows to remote backends are refused.
  const nodeAddress =
    settings.nodeAddress ??
    (settings.netns ? undefined : await interfaceAddress(iface).catch(() => undefined));
  if (nodeAddress) await dataplane.setNodeAddress(nodeAddress);
  else
    log.error(
      { node: settings.nodeName, interface: iface },
      "no node address (HOST_IP unset and the interface has no IPv4 address): new flows to backends on other nodes are refused (drop_no_node_address)",
    );
  // With Leases (a cluster), ARP answers last only while this agent keeps moving the announce
  // deadline (leases.ts AnnounceDeadline): a dead agent's node falls silent as the others take
  // its addresses over. Moved once before attaching: a deadline left by an earlier agent passed.
  // Bound once the Leases are followed (below); no other agent's Lease: no deadline.
  let leaseNodes: (() => ReadonlySet<string> | undefined) | undefined;
  const deadline = settings.namespace
    ? new AnnounceDeadline({
        settings: settings.lease,
        log,
        write: untilNs => dataplane.setAnnounceDeadline(untilNs),
        nodes: () => leaseNodes?.(),
        self: settings.nodeName,
      })
    : undefined;
  await deadline?.start();
  await dataplane.attach(iface, mode === "tc" ? "tc" : "xdp");
  // Pods on this node reach Gateway addresses through their own interfaces (pod-interfaces.ts).
  const pods = new PodInterfaces({
    prefixes: settings.podInterfacePrefixes,
    uplink: iface,
    list: () => dataplane.links(),
    attach: name => dataplane.attachPod(name),
    log,
  });
  pods.trigger();
  await pods.settled();
  // New pods are found by the kernel's link events at once, and by a periodic scan besides.
  const linkEvents = new LinkEvents({
    argv: [...netnsPrefix(settings.netns), "ip", "-o", "monitor", "link"],
    onEvent: () => pods.trigger(),
    log,
  });
  if (settings.podInterfacePrefixes.length > 0) linkEvents.start();
  const podScan = new Periodic(async () => {
    pods.trigger();
    await pods.settled();
  }, settings.podInterfaceScanMs);
  podScan.start(false);
  log.info(
    {
      node: settings.nodeName,
      interface: iface,
      mode,
      why: modeReason(settings.requestedMode, kind),
      pinDir: settings.pinDir,
      nodeAddress,
      podInterfaces: pods.count(),
      podInterfacePrefixes: settings.podInterfacePrefixes,
    },
    "dataplane attached",
  );

  let metrics: AgentMetrics | undefined;
  // Failover without the controller (leases.ts): this node's Lease, and every agent's, watched.
  let agent: Agent | undefined;
  let relister: Relister | undefined;
  const leases = settings.namespace
    ? startLeases(
        settings.namespace,
        settings,
        log,
        () => agent?.schedule(),
        // Back from a partition: what the DataplaneConfig watch missed is listed at once.
        () => void relister?.relist("lease"),
      )
    : undefined;
  if (leases) leaseNodes = () => leases.view.nodes();
  const tls = new TlsListeners({
    host: await tlsHost(iface, settings.netns),
    readSecret,
    onEvent: (ref, address, event) => metrics?.observeTls(ref, address, event),
    log,
    limits: settings.tlsLimits,
  });
  agent = new Agent({
    nodeName: settings.nodeName,
    liveness: leases ? () => leases.view.liveness() : undefined,
    dataplane,
    mode,
    acknowledge,
    log,
    resyncMs: settings.resyncMs,
    conntrack: settings.conntrack,
    tls,
    onApply: result => metrics?.observeApply(result),
    // Taking an address over: tell the segment now rather than when neighbours' caches expire.
    onTakeover: async addresses => {
      for (const address of addresses) await dataplane.announce(iface, address);
      log.info(
        { addresses, interface: iface },
        "announced taken-over Gateway addresses (gratuitous ARP)",
      );
    },
  });
  // A node cut off from the API server alone steps down when it hears the node that took its
  // address over (bpf/arp.h yields; leases.ts YieldKeeper logs, counts and settles them).
  const yields = leases
    ? new YieldKeeper({
        settings: settings.lease,
        log,
        list: () => dataplane.yields(),
        announced: () => dataplane.announced(),
        forget: address => dataplane.clearYield(address),
        announceAgain: address => dataplane.announce(iface, address),
        trusted: () =>
          leases.holder.held() && (leases.view.liveness()?.live.has(settings.nodeName) ?? false),
        mayAnnounce: () => agent.mayAnnounce,
      })
    : undefined;
  yields?.start();
  metrics = new AgentMetrics(
    {
      stats: () => dataplane.stats(),
      arpCounters: () => dataplane.arpCounters(),
      conntrackEntries: async () => (await dataplane.conntrack()).length,
      conntrackCounters: () => dataplane.conntrackCounters(),
      tlsConnections: () => tls.openConnections(),
      unavailableEndpoints: () => agent.unavailableEndpoints(),
      listener: s => agent.listener(s),
      ready: () => agent.ready,
      ...(leases
        ? {
            leaseHeld: () => leases.holder.held(),
            liveNodes: () => leases.view.liveness()?.live.size,
            yieldedAddresses: () => yields?.yielded() ?? 0,
          }
        : {}),
      podInterfaces: () => ({ attached: pods.count(), failures: pods.failures() }),
      iface,
      mode,
    },
    error => log.error({ error: errorMessage(error) }, "reading dataplane counters failed"),
  );
  const server = await serveMetrics({
    metrics,
    ready: () => agent.ready,
    port: settings.metricsPort,
    host: settings.metricsAddress,
  });

  const listed = (await listDataplaneConfigsAt()).items;
  agent.replaceAll(listed);
  metrics.observeRelist("start", true);
  relister = new Relister({
    list: listDataplaneConfigsAt,
    agent,
    intervalMs: settings.relistMs,
    onRelist: (reason, ok) => metrics?.observeRelist(reason, ok),
    log,
  });
  beforeFirstConverge?.(agent, listed);
  // Started first, so watch events during the first converge queue a pass behind it.
  agent.start();
  relister.start();
  const first = await agent.converge();
  log.info(
    { ok: first.ok, changes: first.changes, seconds: first.seconds },
    first.ok ? "converged; ready" : "first converge failed; retrying, not ready",
  );

  return {
    agent,
    dataplane,
    server,
    iface,
    mode,
    first,
    relister,
    stop: async () => {
      await leases?.stop();
      await deadline?.stop();
      await yields?.stop();
      await podScan.stop();
      await linkEvents.stop();
      await pods.settled();
      await relister.stop();
      await new Promise<void>(resolve => server.close(() => resolve()));
      await agent.stop();
    },
  };
}
