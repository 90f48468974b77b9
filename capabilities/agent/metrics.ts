// SPDX-License-Identifier: Apache-2.0
// The node agent's /metrics (Prometheus text format), /healthz and /readyz. Dataplane counters
// are read from the per-CPU maps at scrape time (the kernel is the source of truth; the agent
// keeps no copy), and labelled with the Gateway listener each service serves.
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { DataplaneStats } from "../dataplane/dataplane.js";
import { serviceName } from "../dataplane/tables.js";
import type { ConvergeResult } from "./loop.js";
import type { ListenerRef } from "./desired.js";
import type { AttachMode } from "../dataplane/mode.js";
import type { TlsEvent } from "./tls/terminator.js";
import { errorMessage } from "../error-message.js";

/** What the metrics read: the dataplane's counters and the agent's view of listeners. */
export interface MetricsSource {
  stats(): Promise<DataplaneStats>;
  /** ARP replies the programs sent for announced addresses, and requests they could not answer */
  arpCounters?(): Promise<Record<string, number>>;
  conntrackEntries(): Promise<number>;
  /** conntrack counters (blixt_ct_stats: new, pickup, confirmed, repaired, closed, expired, clash_replaced, clash_refused) */
  conntrackCounters?(): Promise<Record<string, number>>;
  /** open client connections per running TLS terminator */
  tlsConnections?(): { ref: ListenerRef; address: string; connections: number }[];
  /** per listener, endpoints on a node with no agent entry in the config's status (share refused) */
  unavailableEndpoints?(): { ref: ListenerRef; address: string; count: number }[];
  listener(service: string): ListenerRef | undefined;
  ready(): boolean;
  /** whether this node's agent Lease is held (renewed within its duration); unset without Leases */
  leaseHeld?(): boolean;
  /** the nodes whose agent Lease this agent sees live; undefined while its view is not current */
  liveNodes?(): number | undefined;
  /** addresses this node announces but yielded to another node's gratuitous ARP */
  yieldedAddresses?(): number;
  /** pod interfaces the programs run on (pod-interfaces.ts), and attach failures so far */
  podInterfaces?(): { attached: number; failures: number };
  iface: string;
  mode: AttachMode;
}

const LISTENER_LABELS = [
  "namespace",
  "gateway",
  "listener",
  "protocol",
  "port",
  "address",
] as const;
type ListenerLabels = Record<(typeof LISTENER_LABELS)[number], string>;

const listenerLabels = (ref: ListenerRef, address: string): ListenerLabels => ({
  namespace: ref.namespace,
  gateway: ref.gateway,
  listener: ref.listener,
  protocol: ref.protocol,
  port: String(ref.port),
  address,
});

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly applies: Counter;
  private readonly applyErrors: Counter;
  private readonly applyDuration: Histogram;
  private readonly mapCommands: Counter;
  private readonly scrapeErrors: Counter;
  private readonly relists: Counter;
  private readonly relistErrors: Counter;
  private readonly tlsCounters: Record<TlsEvent, Counter>;
  private scrape: Promise<DataplaneStats | undefined> | undefined;

  constructor(
    private readonly source: MetricsSource,
    private readonly onScrapeError: (error: unknown) => void = () => {},
  ) {
    const registers = [this.registry];
    this.applies = new Counter({
      name: "blixt_agent_applies_total",
      help: "Applies of DataplaneConfigs to the maps that changed something or failed",
      registers,
    });
    this.applyErrors = new Counter({
      name: "blixt_agent_apply_errors_total",
      help: "Applies that failed (the previous tables kept serving)",
      registers,
    });
    this.applyDuration = new Histogram({
      name: "blixt_agent_apply_duration_seconds",
      help: "Time from reading the maps back to the end of the bpftool batch",
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.mapCommands = new Counter({
      name: "blixt_agent_map_commands_total",
      help: "bpftool map commands (updates and deletes) the applies sent: what the changes cost in map writes",
      registers,
    });
    this.scrapeErrors = new Counter({
      name: "blixt_agent_scrape_errors_total",
      help: "Scrapes that could not read the dataplane's counters",
      registers,
    });
    this.relists = new Counter({
      name: "blixt_agent_relists_total",
      help: "Lists of every DataplaneConfig by reason (start, periodic, watch: the watch reported a failure, retry: after a failed one, lease: the node Lease renewed again after failing, so the watch may have missed changes); the agent's view is replaced by each",
      labelNames: ["reason"],
      registers,
    });
    this.relistErrors = new Counter({
      name: "blixt_agent_relist_errors_total",
      help: "Relists that failed (the agent kept its last view and lists again soon)",
      labelNames: ["reason"],
      registers,
    });
    const tlsCounter = (name: string, help: string) =>
      new Counter({ name, help, labelNames: LISTENER_LABELS, registers });
    this.tlsCounters = {
      connection: tlsCounter(
        "blixt_tls_connections_total",
        "Connections an HTTPS listener's TLS terminator on this node completed the handshake for and forwarded to a backend",
      ),
      handshake_failure: tlsCounter(
        "blixt_tls_handshake_failures_total",
        "TLS handshakes that failed on an HTTPS listener's terminator on this node",
      ),
      backend_error: tlsCounter(
        "blixt_tls_backend_errors_total",
        "Terminated connections whose backend could not be reached (the client's connection is closed)",
      ),
      handshake_timeout: tlsCounter(
        "blixt_tls_handshake_timeouts_total",
        "Connections closed because the TLS handshake did not finish within agent.tls.handshakeTimeoutSeconds",
      ),
      idle_close: tlsCounter(
        "blixt_tls_idle_closes_total",
        "Terminated connections closed after agent.tls.idleTimeoutSeconds without a byte either way",
      ),
      refused: tlsCounter(
        "blixt_tls_connections_refused_total",
        "Connections refused at accept because the listener's terminator had agent.tls.maxConnectionsPerListener open",
      ),
    };
    if (source.tlsConnections) {
      const tlsConnections = source.tlsConnections.bind(source);
      new Gauge({
        name: "blixt_tls_open_connections",
        help: "Client connections open now on an HTTPS listener's TLS terminator on this node (in handshake or forwarded)",
        labelNames: LISTENER_LABELS,
        registers,
        collect() {
          this.reset();
          for (const { ref, address, connections } of tlsConnections())
            this.set(listenerLabels(ref, address), connections);
        },
      });
    }

    if (source.unavailableEndpoints) {
      const unavailableEndpoints = source.unavailableEndpoints.bind(source);
      new Gauge({
        name: "blixt_listener_unavailable_endpoints",
        help: "Endpoints of a listener on a node that has no blixt agent entry in the DataplaneConfig's status: this node refuses their share of new flows (TCP RST, UDP drop) until an agent there acknowledges",
        labelNames: LISTENER_LABELS,
        registers,
        collect() {
          this.reset();
          for (const { ref, address, count } of unavailableEndpoints())
            this.set(listenerLabels(ref, address), count);
        },
      });
    }

    const readStats = () => this.readStats();
    const labelsOf = (s: DataplaneStats["services"][number]) => this.labelsOf(s);
    const scrapeFailed = (error: unknown) => {
      this.scrapeErrors.inc();
      this.onScrapeError(error);
    };
    // Kernel counters are cumulative already: each scrape sets the counter to the map's value.
    const fromStats = (
      name: string,
      help: string,
      pick: (s: DataplaneStats["services"][number]) => number,
    ) => {
      new Counter({
        name,
        help,
        labelNames: LISTENER_LABELS,
        registers,
        // prom-client calls collect() with the metric as `this`.
        async collect() {
          const stats = await readStats();
          this.reset();
          for (const s of stats?.services ?? []) this.inc(labelsOf(s), pick(s));
        },
      });
    };
    fromStats(
      "blixt_listener_packets_total",
      "Packets to a listener's address and port",
      s => s.packets,
    );
    fromStats("blixt_listener_bytes_total", "Bytes to a listener's address and port", s => s.bytes);
    fromStats(
      "blixt_listener_new_flows_total",
      "New flows (conntrack entries created) per listener",
      s => s.newFlows,
    );
    fromStats(
      "blixt_listener_rejects_total",
      "New flows refused per listener (TCP RST, UDP drop): no backend, or the invalid backendRefs' share",
      s => s.rejects,
    );

    new Counter({
      name: "blixt_dataplane_packets_by_reason_total",
      help: "Packets by what the dataplane did with them: passed, translated, dropped or refused, and why",
      labelNames: ["reason"],
      registers,
      async collect() {
        const stats = await readStats();
        this.reset();
        for (const [reason, count] of Object.entries(stats?.reasons ?? {}))
          this.inc({ reason }, count);
      },
    });
    if (source.arpCounters) {
      const arpCounters = source.arpCounters.bind(source);
      new Counter({
        name: "blixt_arp_total",
        help: "ARP requests for announced Gateway addresses, by outcome (replied, no_iface: no MAC recorded for the device, deadline_passed: left unanswered because the agent stopped moving the announce deadline)",
        labelNames: ["result"],
        registers,
        async collect() {
          try {
            const counts = await arpCounters();
            this.reset();
            for (const [result, count] of Object.entries(counts)) this.inc({ result }, count);
          } catch (error) {
            scrapeFailed(error);
          }
        },
      });
    }
    new Gauge({
      name: "blixt_conntrack_entries",
      help: "Entries in both conntrack tables, blixt_ct4 (confirmed flows) and blixt_ct4_new (unconfirmed flows); each flow has a forward and a reverse entry",
      registers,
      async collect() {
        try {
          this.set(await source.conntrackEntries());
        } catch (error) {
          scrapeFailed(error);
        }
      },
    });
    if (source.conntrackCounters) {
      const conntrackCounters = source.conntrackCounters.bind(source);
      new Counter({
        name: "blixt_conntrack_events_total",
        help: "Conntrack events (blixt_ct_stats): new (unconfirmed flow created by a SYN or a first UDP datagram), pickup (unconfirmed flow created by a mid-flow packet no entry knew), confirmed (moved from blixt_ct4_new to blixt_ct4), repaired (a flow's missing direction recreated), closed (TCP RST, or FIN each way), expired (an entry found idle past its timeout, removed), clash_replaced (a new flow took its backend-to-client 4-tuple from another flow of the same client port through another VIP:port: closed, expired or UDP), clash_refused (a new TCP flow dropped: an open connection through another VIP:port holds that 4-tuple)",
        labelNames: ["event"],
        registers,
        async collect() {
          try {
            const counts = await conntrackCounters();
            this.reset();
            for (const [event, count] of Object.entries(counts)) this.inc({ event }, count);
          } catch (error) {
            scrapeFailed(error);
          }
        },
      });
    }
    new Gauge({
      name: "blixt_agent_ready",
      help: "1 once the maps serve what the API server asks",
      registers,
      collect() {
        this.set(source.ready() ? 1 : 0);
      },
    });
    if (source.leaseHeld) {
      const held = source.leaseHeld.bind(source);
      new Gauge({
        name: "blixt_agent_lease_held",
        help: "1 while this node's agent Lease is renewed within its duration; 0 once it lapsed (other agents take this node's addresses over; this node keeps forwarding what reaches it)",
        registers,
        collect() {
          this.set(held() ? 1 : 0);
        },
      });
    }
    if (source.yieldedAddresses) {
      const yielded = source.yieldedAddresses.bind(source);
      new Gauge({
        name: "blixt_agent_yielded_addresses",
        help: "Gateway addresses this node announces but no longer answers ARP for, because another node announced them (gratuitous ARP) while this node could not confirm its Lease; it keeps forwarding what reaches it",
        registers,
        collect() {
          this.set(yielded());
        },
      });
    }
    if (source.podInterfaces) {
      const pods = source.podInterfaces.bind(source);
      new Gauge({
        name: "blixt_agent_pod_interfaces",
        help: "Pods' interfaces on this node that blixt's programs run on, so the pods behind them reach Gateway addresses",
        registers,
        collect() {
          this.set(pods().attached);
        },
      });
      new Counter({
        name: "blixt_agent_pod_interface_attach_failures_total",
        help: "Attaches to a pod's interface that failed while the interface was still there (each is tried again at the next scan)",
        registers,
        collect() {
          this.reset();
          this.inc(pods().failures);
        },
      });
    }
    if (source.liveNodes) {
      const live = source.liveNodes.bind(source);
      new Gauge({
        name: "blixt_agent_live_nodes",
        help: "Nodes whose agent Lease this agent sees live (absent while its view of the Leases is not current: then no address is taken over)",
        registers,
        collect() {
          const n = live();
          if (n === undefined) this.reset();
          else this.set(n);
        },
      });
    }
    new Gauge({
      name: "blixt_agent_attach_info",
      help: "The interface the programs are attached to, and how",
      labelNames: ["interface", "mode"],
      registers,
    }).set({ interface: source.iface, mode: source.mode }, 1);
  }

  /** One read of the maps per scrape, shared by every counter that needs it. */
  private readStats(): Promise<DataplaneStats | undefined> {
    this.scrape ??= this.source
      .stats()
      .catch(error => {
        this.scrapeErrors.inc();
        this.onScrapeError(error);
        return undefined;
      })
      .finally(() => setImmediate(() => (this.scrape = undefined)));
    return this.scrape;
  }

  private labelsOf(s: { vip: string; port: number; proto: string }): ListenerLabels {
    const ref = this.source.listener(serviceName(s));
    return {
      namespace: ref?.namespace ?? "",
      gateway: ref?.gateway ?? "",
      listener: ref?.listener ?? "",
      protocol: ref?.protocol ?? s.proto.toUpperCase(),
      port: String(s.port),
      address: s.vip,
    };
  }

  /** Counts one TLS terminator event on a listener (from TlsListeners' onEvent). */
  observeTls(ref: ListenerRef, address: string, event: TlsEvent): void {
    this.tlsCounters[event].inc(listenerLabels(ref, address));
  }

  /** Counts one relist of the DataplaneConfigs (from the Relister's onRelist). */
  observeRelist(reason: string, ok: boolean): void {
    (ok ? this.relists : this.relistErrors).inc({ reason });
  }

  /** Feeds an apply's outcome (from Agent's onApply). */
  observeApply(result: ConvergeResult): void {
    this.applies.inc();
    if (!result.ok) this.applyErrors.inc();
    this.applyDuration.observe(result.seconds);
    this.mapCommands.inc(result.commands);
  }
}

/** Serves /metrics, /healthz and /readyz; resolves once listening. */
export async function serveMetrics(opts: {
  metrics: AgentMetrics;
  ready: () => boolean;
  port: number;
  host?: string;
}): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const reply = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      res.writeHead(status, { "Content-Type": type });
      res.end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return reply(405, "only GET\n");
    if (path === "/healthz") return reply(200, "ok\n");
    if (path === "/readyz")
      return opts.ready()
        ? reply(200, "ready\n")
        : reply(503, "not ready: the maps have not converged to the DataplaneConfigs yet\n");
    if (path === "/metrics") {
      opts.metrics.registry.metrics().then(
        text => reply(200, text, opts.metrics.registry.contentType),
        (error: unknown) => reply(500, `reading metrics failed: ${errorMessage(error)}\n`),
      );
      return;
    }
    reply(404, "not found: try /metrics, /healthz or /readyz\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}
