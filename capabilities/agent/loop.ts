// SPDX-License-Identifier: Apache-2.0
// The node agent's loop: keep the DataplaneConfigs it was told about, converge the pinned maps
// to them (read back, diff, one batch), acknowledge per config (acks.ts: the next pass need not
// wait for the API server's answers), retry failures with backoff,
// and resync periodically so a change made behind its back is put back. Kubernetes is reached
// only through the `acknowledge` callback, so the loop runs the same in tests and on a node.
import type { DataplaneConfig, Node as NodeStatus } from "../generated/dataplaneconfig-v1alpha1.js";
import type { Dataplane } from "../dataplane/dataplane.js";
import { AckQueue } from "./acks.js";
import { admitByCapacity, type Usage } from "./capacity.js";
import { tlsListenerSpecs } from "./tls/certificates.js";
import type { TlsListeners } from "./tls/listeners.js";
import type { AgentLog } from "./log.js";
import type { AttachMode } from "../dataplane/mode.js";
import type { ConntrackTimeouts } from "../dataplane/maps.js";
import {
  changeCount,
  changesByConfig,
  configKey,
  desiredState,
  diffState,
  nodeAck,
  nodeEntry,
  retryDelay,
  type ApplyOutcome,
  type ConfigKey,
  type DesiredState,
  type ListenerRef,
  type NodeAck,
} from "./desired.js";
import { errorMessage } from "../error-message.js";
import type { Liveness } from "./leases.js";

/**
 * The order configs are admitted in when the maps cannot hold them all: the oldest first (by
 * creationTimestamp, then namespace/name), the same on every node.
 */
export function admissionOrder(configs: DataplaneConfig[]): ConfigKey[] {
  const created = (c: DataplaneConfig) => {
    const t = c.metadata?.creationTimestamp;
    return t === undefined ? "" : t instanceof Date ? t.toISOString() : String(t);
  };
  return [...configs]
    .sort((a, b) => {
      const ta = created(a);
      const tb = created(b);
      if (ta !== tb) return ta < tb ? -1 : 1;
      return configKey(a) < configKey(b) ? -1 : 1;
    })
    .map(configKey);
}

/**
 * Whether a pass could do anything else with `next` than with `held`, the same config as the
 * agent last kept it: what a pass reads of a config is its spec, the set of nodes in its status
 * (endpointPlaces), and this node's own entry (nodeAck compares it). Another node's message,
 * mode or generation, or this node's acknowledgement coming back as it was sent, change none.
 */
export function passInputChanged(
  held: DataplaneConfig,
  next: DataplaneConfig,
  nodeName: string,
  /** the entry this node last wrote into the config: its echo may come before the write's answer */
  written?: NodeAck,
): boolean {
  if (Boolean(held.metadata?.deletionTimestamp) !== Boolean(next.metadata?.deletionTimestamp))
    return true;
  if (held.spec !== next.spec && JSON.stringify(held.spec) !== JSON.stringify(next.spec))
    return true;
  const names = (c: DataplaneConfig) =>
    (c.status?.nodes ?? [])
      .map(n => n.name)
      .sort()
      .join("\n");
  if (names(held) !== names(next)) return true;
  type Entry = { observedGeneration?: number; mode?: string; message?: string };
  const own = (entry: Entry | undefined) => {
    if (!entry) return "";
    const since = (entry as { lastTransitionTime?: unknown }).lastTransitionTime;
    return JSON.stringify([
      entry.observedGeneration,
      entry.mode,
      entry.message,
      since instanceof Date ? since.toISOString() : since,
    ]);
  };
  const mine = own(nodeEntry(next, nodeName));
  return mine !== own(nodeEntry(held, nodeName)) && (!written || mine !== own(written));
}

/** One run of the loop, as metrics and tests see it. */
export interface ConvergeResult {
  ok: boolean;
  /** entries changed (services set or removed, addresses written or removed) */
  changes: number;
  /** bpftool commands in the batch (0 when nothing changed) */
  commands: number;
  seconds: number;
  error?: string;
}

export interface AgentOptions {
  nodeName: string;
  dataplane: Dataplane;
  /** how the programs are attached on this node, reported in every acknowledgement */
  mode: AttachMode;
  /** writes this node's entry into the config's status; throws when the API server refuses */
  acknowledge: (config: DataplaneConfig, ack: NodeAck) => Promise<void>;
  log?: AgentLog;
  /**
   * Called after an apply that made this node announce addresses it did not announce before
   * (a takeover): the place to send gratuitous ARP. A failure is logged, not retried.
   */
  onTakeover?: (addresses: string[]) => Promise<void>;
  /** called after every apply that changed something or failed (metrics) */
  onApply?: (result: ConvergeResult) => void;
  now?: () => Date;
  /** first retry delay and cap, ms */
  retry?: { base: number; max: number };
  /** periodic resync, ms; 0 disables it */
  resyncMs?: number;
  /**
   * The node's TLS terminators for HTTPS listeners, synced (Secrets read again) on every pass.
   * Without it an HTTPS listener is refused and its config says why.
   */
  tls?: TlsListeners;
  /** conntrack timeouts to keep in blixt_ct_config: written back by a resync pass that finds them changed */
  conntrack?: ConntrackTimeouts;
  /**
   * The agent Leases as this agent sees them (leases.ts LiveNodes), read at every pass;
   * undefined (or unset) while unknown: then spec.announcingNode alone decides.
   */
  liveness?: () => Liveness | undefined;
}

const silent: AgentLog = { info: () => {}, error: () => {} };

/**
 * Acknowledgements (status patches of DataplaneConfigs) in flight at once. A few at a time: one
 * after another, twenty held the next pass (and so the next EndpointSlice change) back by a
 * second or more, when passes still waited for them.
 */
const ACK_CONCURRENCY = 8;

/** Whether two status entries of this node say the same (the time of the transition aside). */
const sameAck = (a: NodeAck, b: NodeAck) =>
  a.observedGeneration === b.observedGeneration && a.mode === b.mode && a.message === b.message;

export class Agent {
  readonly nodeName: string;
  /** how the programs are attached, reported in acknowledgements; known once attached */
  mode: AttachMode;
  private readonly dataplane: Dataplane;
  private readonly opts: AgentOptions;
  private readonly log: AgentLog;
  private readonly configs = new Map<ConfigKey, DataplaneConfig>();
  /** per config, the status entry this node last sent (observe: its echo runs no pass) */
  private readonly written = new Map<ConfigKey, NodeAck>();
  /** serviceName → listener, as of the last converge: metric labels, and who owned a removed service */
  private listenersByService = new Map<string, ListenerRef>();
  /** serviceName → how many of its endpoints this node refuses the share of, as of the last converge */
  private unavailableByService = new Map<string, number>();
  /** the pass writing the maps now (its acknowledgements go on apart, in `acks`) */
  private running: Promise<ConvergeResult> | undefined;
  private queued: Promise<ConvergeResult> | undefined;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;
  /** true once a converge has succeeded: the maps serve what the API server asks */
  ready = false;
  /**
   * false only while the last converge succeeded and flagged no address ADDR_F_ANNOUNCE: this
   * node answers ARP for nothing, so the programs record no yields (leases.ts YieldKeeper)
   */
  mayAnnounce = true;
  /** passes run so far */
  passes = 0;

  /** this node's status entries on their way to the API server, per config */
  private readonly acks = new AckQueue<ConfigKey, { config: DataplaneConfig; ack: NodeAck }>(
    ACK_CONCURRENCY,
    (key, { config, ack }) => this.sendAck(key, config, ack),
  );

  constructor(opts: AgentOptions) {
    this.opts = opts;
    this.nodeName = opts.nodeName;
    this.mode = opts.mode;
    this.dataplane = opts.dataplane;
    this.log = opts.log ?? silent;
  }

  /** The listener a service (by serviceName) serves, for metric labels. */
  listener(service: string): ListenerRef | undefined {
    return this.listenersByService.get(service);
  }

  /**
   * Per listener, the endpoints whose share this node refuses because their node has no agent
   * entry in the config's status (the metric): services with none are left out.
   */
  unavailableEndpoints(): { ref: ListenerRef; address: string; count: number }[] {
    return [...this.unavailableByService].flatMap(([service, count]) => {
      const ref = this.listenersByService.get(service);
      return ref ? [{ ref, address: service.slice(0, service.indexOf(":")), count }] : [];
    });
  }

  /**
   * A config was created or changed (its status too: which nodes' agents acknowledged it
   * decides which endpoints are reachable). Call converge() (or let a scheduled one run).
   * Returns whether the change can matter to a pass (`passInputChanged`): the watch brings
   * every acknowledgement back, this node's own among them, and a pass for each of those would
   * do nothing but hold the next real change back behind it.
   */
  observe(config: DataplaneConfig): boolean {
    const key = configKey(config);
    const held = this.configs.get(key);
    this.configs.set(key, config);
    return (
      held === undefined || passInputChanged(held, config, this.nodeName, this.written.get(key))
    );
  }

  forget(config: DataplaneConfig): void {
    this.configs.delete(configKey(config));
    this.written.delete(configKey(config));
  }

  /** The configs the agent holds now (what a relist merges with). */
  held(): DataplaneConfig[] {
    return [...this.configs.values()];
  }

  /** Replaces the whole set (the initial list at start, and every relist). */
  replaceAll(configs: DataplaneConfig[]): void {
    this.configs.clear();
    for (const c of configs) this.observe(c);
  }

  /** Asks for a converge soon; changes that arrive while one runs are folded into the next. */
  schedule(): void {
    // Before start() the maps may not be loaded yet: the initial converge is explicit.
    if (!this.started || this.stopped) return;
    void this.enqueue();
  }

  /**
   * One pass: desired state → read back → diff → one batch → acknowledgements; resolves once
   * the pass's acknowledgements were sent too. At most one pass writes the maps and one waits;
   * every call made while one runs shares the waiting one, which starts after it (not after
   * its acknowledgements) and so sees every change made so far.
   */
  converge(): Promise<ConvergeResult> {
    this.checkTables = true;
    return this.enqueue();
  }

  /**
   * Whether the next pass also reads back sampled chunks of every live table (a few thousand
   * lookups at a thousand services): the periodic resync, an explicit converge() and a retry
   * do; a pass for a watch event trusts the tables' sizes and backend lists, which it reads
   * anyway, so a change reaches the kernel without re-reading every table.
   */
  private checkTables = true;

  /** What the sized maps hold at most (Dataplane.capacity), read at the first pass. */
  private capacity: Usage | undefined;

  /**
   * Whether the next pass gives every service a new epoch, so each established flow is checked
   * against its service once more: the first pass (the agent before may have stopped half-way
   * through a batch) and any pass after a failed one.
   */
  private recheckFlows = true;

  private enqueue(): Promise<ConvergeResult> {
    if (!this.running) return this.startPass();
    this.queued ??= this.running.then(
      () => this.startPass(),
      () => this.startPass(),
    );
    return this.queued;
  }

  private startPass(): Promise<ConvergeResult> {
    this.queued = undefined;
    const work = this.pass();
    const pass = work
      .then(({ result }) => result)
      .finally(() => {
        if (this.running === pass) this.running = undefined;
      });
    this.running = pass;
    return work.then(async ({ result, acknowledged }) => {
      await acknowledged;
      return result;
    });
  }

  /** Writes the maps; `acknowledged` settles once the pass's acknowledgements were sent. */
  private async pass(): Promise<{ result: ConvergeResult; acknowledged: Promise<void> }> {
    this.passes++;
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    const configs = [...this.configs.values()];
    // Before the maps: a terminator listens before the dataplane steers connections to it.
    const tls = this.opts.tls ? await this.opts.tls.sync(tlsListenerSpecs(configs)) : undefined;
    const desired = desiredState(configs, this.nodeName, tls, this.opts.liveness?.());
    // What is written and acknowledged: `desired` less the configs that do not fit the maps.
    let planned = desired;
    let result: ConvergeResult;
    try {
      const checkTables = this.checkTables || this.failures > 0;
      this.checkTables = false;
      if (
        checkTables &&
        this.opts.conntrack &&
        (await this.dataplane.setConntrackTimeouts(this.opts.conntrack))
      ) {
        this.log.info(
          { conntrack: this.opts.conntrack },
          "conntrack timeouts differed from the agent's settings; rewritten",
        );
      }
      // The first pass and one after a failure also have every established flow checked again
      // (lines.ts applyLines), those of services removed half-way included (deadIds).
      const recheck = this.recheckFlows || this.failures > 0;
      const snapshot = await this.dataplane.readMaps({ chunks: checkTables, deadIds: recheck });
      this.capacity ??= await this.dataplane.capacity();
      planned = admitByCapacity(
        desired,
        admissionOrder(configs),
        this.capacity,
        snapshot,
        this.nodeName,
      );
      const diff = diffState(planned, snapshot.actual);
      const changes = changeCount(diff) + snapshot.orphanBackends.length;
      // After a failure, old tables may be half-deleted: remove them slot-safely.
      const commands =
        changes > 0 ||
        (recheck && (snapshot.states.size > 0 || (snapshot.deadIds?.length ?? 0) > 0))
          ? await this.dataplane.apply(diff, snapshot, {
              tolerant: this.failures > 0,
              recheckAll: recheck,
              keepEpochs: true,
            })
          : 0;
      this.recheckFlows = false;
      this.mayAnnounce = planned.announced.length > 0;
      result = { ok: true, changes, commands, seconds: seconds() };
      const perConfig = changesByConfig(diff, planned.listeners, this.listenersByService);
      for (const [key, changed] of perConfig) {
        const config = this.configs.get(key);
        const reasons = Object.fromEntries(
          [...diff.reasons].filter(([service]) => planned.listeners.get(service)?.config === key),
        );
        this.log.info(
          {
            gateway: key || "(none)",
            generation: config?.metadata?.generation,
            changed,
            reasons,
            seconds: result.seconds,
          },
          config ? "applied DataplaneConfig" : "removed services no DataplaneConfig asks for",
        );
      }
      this.listenersByService = planned.listeners;
      this.unavailableByService = new Map(
        [...planned.unavailable].map(([service, endpoints]) => [service, endpoints.length]),
      );
      this.failures = 0;
      const takenOver = diff.addresses.upsert.filter(a => a.announce).map(a => a.ip);
      if (takenOver.length > 0 && this.opts.onTakeover) {
        await this.opts.onTakeover(takenOver).catch((error: unknown) =>
          this.log.error(
            {
              addresses: takenOver,
              error: errorMessage(error),
            },
            "gratuitous ARP for taken-over addresses failed; neighbours learn the move at their next ARP request",
          ),
        );
      }
      this.ready = true;
    } catch (error) {
      const message = errorMessage(error);
      result = { ok: false, changes: 0, commands: 0, seconds: seconds(), error: message };
      this.mayAnnounce = true; // the batch may have flagged some before it failed
      this.failures++;
      const delay = retryDelay(this.failures, this.opts.retry?.base, this.opts.retry?.max);
      this.log.error(
        { error: message, attempt: this.failures, retryInMs: delay },
        "applying DataplaneConfigs failed; the previous tables keep serving",
      );
      this.scheduleRetry(delay);
    }
    if (result.changes > 0 || !result.ok) this.opts.onApply?.(result);
    return { result, acknowledged: this.acknowledgeAll(configs, planned, result) };
  }

  /**
   * Queues this node's status entry for every config whose entry the pass changes; resolves
   * once they were sent (or replaced by a newer pass's). An entry equal to one already on its
   * way is not queued again: the config as this pass read it may not show that one yet.
   */
  private acknowledgeAll(
    configs: DataplaneConfig[],
    { problems, warnings }: Pick<DesiredState, "problems" | "warnings">,
    result: ConvergeResult,
  ): Promise<void> {
    const now = (this.opts.now?.() ?? new Date()).toISOString();
    const sent: Promise<void>[] = [];
    for (const passed of configs) {
      const key = configKey(passed);
      // The config as held now when it is still the generation this pass applied: an entry an
      // earlier pass sent while this one ran shows there, not in what this pass read at its start.
      const held = this.configs.get(key);
      const config =
        held && held.metadata?.generation === passed.metadata?.generation ? held : passed;
      const problem = problems.get(key);
      const outcome: ApplyOutcome = problem
        ? { applied: false, message: problem }
        : result.ok
          ? { applied: true, message: warnings.get(key) }
          : { applied: false, message: `node ${this.nodeName}: ${result.error}` };
      const ack = nodeAck(config, this.nodeName, outcome, this.mode, now);
      if (!ack) continue;
      const newest = this.acks.newest(key);
      if (newest && sameAck(newest.ack, ack)) continue;
      sent.push(this.acks.submit(key, { config, ack }));
    }
    return Promise.all(sent).then(() => undefined);
  }

  /** Writes one status entry (AckQueue's `send`): never throws, schedules a retry on failure. */
  private async sendAck(key: ConfigKey, config: DataplaneConfig, ack: NodeAck): Promise<void> {
    try {
      // Before the write: the watch may bring it back before the API server's answer does.
      this.written.set(key, ack);
      await this.opts.acknowledge(config, ack);
      // Until the watch brings the new status back, remember it, so the same ack is not sent
      // twice. (The wire form carries lastTransitionTime as the RFC 3339 string it is.)
      const nodes = (config.status?.nodes ?? []).filter(n => n.name !== this.nodeName);
      const acked: DataplaneConfig = Object.assign(
        Object.create(Object.getPrototypeOf(config)),
        config,
        {
          status: { ...config.status, nodes: [...nodes, ack as unknown as NodeStatus] },
        },
      );
      if (this.configs.get(key) === config) this.configs.set(key, acked);
    } catch (error) {
      if (this.written.get(key) === ack) this.written.delete(key);
      // Deleted meanwhile (its Gateway or namespace went away): nothing to acknowledge, and
      // the watch's delete event removes it from this agent's view.
      if ((error as { status?: number } | undefined)?.status === 404) return;
      // A newer entry for the same config follows this one: it is the retry.
      if (this.acks.newest(key)?.ack !== ack) return;
      const message = errorMessage(error);
      this.log.error(
        { gateway: key, generation: config.metadata?.generation, error: message },
        "acknowledging DataplaneConfig failed; will retry",
      );
      this.scheduleRetry(retryDelay(1, this.opts.retry?.base, this.opts.retry?.max));
    }
  }

  private scheduleRetry(delay: number): void {
    if (this.stopped || this.retryTimer) return;

    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.schedule();
    }, delay);
    this.retryTimer.unref?.();
  }

  /** Lets watch events and retries schedule passes, and starts the periodic resync. */
  start(): void {
    this.started = true;
    // An initial converge that failed is retried now that the loop runs.
    if (this.failures > 0) this.schedule();
    const every = this.opts.resyncMs ?? 30_000;
    if (every > 0 && !this.resyncTimer) {
      this.resyncTimer = setInterval(() => {
        this.checkTables = true;
        this.schedule();
      }, every);
      this.resyncTimer.unref?.();
    }
  }

  /**
   * Stops timers and waits for a running pass. Programs and maps stay: TCP and UDP traffic
   * keeps flowing; HTTPS listeners stop with their TLS terminators, which live in this process.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.resyncTimer);
    this.retryTimer = this.resyncTimer = undefined;
    await this.running?.catch(() => undefined);
    await this.acks.idle();
    await this.opts.tls?.close();
  }
}
