// SPDX-License-Identifier: Apache-2.0
/**
 * Failover without the controller in the path. Every agent holds a Lease of its own node
 * (`blixt-agent-<node>` in the agent namespace) and renews it every renew interval; every
 * agent watches all of them. An address is announced by the node the controller chose
 * (DataplaneConfig spec.announcingNode) while that node's Lease is live; when it lapses, by
 * the live node with the highest rendezvous hash of address and node name (../rendezvous.ts,
 * the controller's own choice function), which every agent computes alike from the same
 * Leases. So the standby takes the address over, and sends gratuitous ARP, one Lease
 * duration after the announcer stopped renewing, whatever the controller is doing.
 *
 * The Kubernetes calls (apply, list, watch) are in kube.ts; this module is pure but for its
 * timers. Liveness is judged by each agent's own clock, as client-go's leader election does:
 * a Lease is live for leaseDurationSeconds after this agent saw its renewTime change, so clock
 * skew between nodes does not matter. While the agent's view of the Leases is not current (the
 * watch failed and the relist has not answered, or the API server is away), it judges
 * nothing and keeps to spec.announcingNode: nobody takes an address over on a view it cannot
 * trust, and with the API server stopped for everyone, the announcer keeps serving.
 */
import type { V1Lease } from "@kubernetes/client-node";
import { rendezvousPick } from "../rendezvous.js";
import { errorMessage } from "../error-message.js";
import { envInt } from "../env.js";
import type { AgentLog } from "./log.js";
import { Periodic, within } from "./periodic.js";

/** The label every agent Lease carries, and what the agents' watch selects. */
export const LEASE_LABEL = "app.kubernetes.io/component";
export const LEASE_LABEL_VALUE = "agent-lease";

export interface LeaseSettings {
  /** leaseDurationSeconds: how long a Lease stays live after its last renewal was seen */
  durationSeconds: number;
  /** how often the agent renews its own Lease, ms */
  renewMs: number;
}

export const LEASE_DEFAULTS: Readonly<LeaseSettings> = { durationSeconds: 2, renewMs: 500 };

/** Lease settings from the environment; throws naming the variable that is wrong. Pure. */
export function leaseSettings(env: NodeJS.ProcessEnv): LeaseSettings {
  const int = (name: string, fallback: number, min: number, max: number) =>
    envInt(env, name, fallback, min, max);
  const durationSeconds = int(
    "BLIXT_LEASE_DURATION_SECONDS",
    LEASE_DEFAULTS.durationSeconds,
    1,
    3600,
  );
  const renewMs = int("BLIXT_LEASE_RENEW_MILLISECONDS", LEASE_DEFAULTS.renewMs, 100, 3_600_000);
  if (renewMs * 2 > durationSeconds * 1000)
    throw new Error(
      `BLIXT_LEASE_RENEW_MILLISECONDS=${renewMs} must be at most half of BLIXT_LEASE_DURATION_SECONDS=${durationSeconds} (in ms), so that one lost renewal does not let the Lease lapse; lower the renew interval or raise the duration (the chart's agent.lease values)`,
    );
  return { durationSeconds, renewMs };
}

/** The Lease a node's agent holds: a DNS subdomain of at most 253 characters. Pure. */
export function leaseName(nodeName: string): string {
  return `blixt-agent-${nodeName}`.slice(0, 253).replace(/[^a-z0-9]+$/, "");
}

/** The agent Pod that owns its Lease: the Lease goes with it (helm uninstall leaves none). */
export interface LeaseOwner {
  name: string;
  uid: string;
}

/** The Lease a renewal writes (server-side applied). Pure. */
export function leaseObject(
  namespace: string,
  nodeName: string,
  durationSeconds: number,
  renewTime: Date,
  owner?: LeaseOwner,
): V1Lease {
  return {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      namespace,
      name: leaseName(nodeName),
      labels: { "app.kubernetes.io/name": "blixt", [LEASE_LABEL]: LEASE_LABEL_VALUE },
      // Garbage-collected with the Pod; the next agent's first renewal names itself instead.
      ...(owner
        ? { ownerReferences: [{ apiVersion: "v1", kind: "Pod", name: owner.name, uid: owner.uid }] }
        : {}),
    },
    spec: {
      holderIdentity: nodeName,
      leaseDurationSeconds: durationSeconds,
      // MicroTime on the wire: RFC 3339 with microseconds.
      renewTime: microTime(renewTime) as unknown as Date,
    },
  };
}

export function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** Which agents are alive, as one agent (or the controller) sees their Leases. */
export interface Liveness {
  live: ReadonlySet<string>;
  lapsed: ReadonlySet<string>;
}

/** What LiveNodes reads of a Lease. */
export interface LeaseLike {
  metadata?: { name?: string; uid?: string };
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: Date | string };
}

/**
 * Coming back to a current view after a failure, no Lease lapses for at least this many of its
 * durations: an API server that has just returned is slow for a while with every client's
 * relists, and a renewal of the announcer that lands a little late is no reason to move its
 * addresses. A node that really died meanwhile is taken over this much later.
 */
export const RETURN_GRACE_DURATIONS = 3;

/**
 * The longest return grace, ms. After a longer outage the grace is as long as the view saw
 * nothing (`returnGraceMs`), up to this: the time client-go's reflectors (kube-proxy's among
 * them) may take to retry at their longest backoff (30 s, jittered up to twice that).
 */
export const RETURN_GRACE_MAX_MS = 60_000;

/**
 * How long no Lease lapses after a view comes back (ms): RETURN_GRACE_DURATIONS of the longest
 * Lease duration, or as long as the view saw no renewal at all (`awayMs`) when that is longer,
 * up to RETURN_GRACE_MAX_MS. The nodes do not come back together: a stopped API server takes its
 * address out of the `kubernetes` Service, and each node reaches it again only once its own
 * kube-proxy has seen it back, which its reflector retries with a backoff that grew over the
 * outage (on kind, after 40 s away, one node's agent renewed 2.8 s after another's; with a
 * grace of three durations a slower run still saw an address move). Pure.
 */
export function returnGraceMs(longestDurationMs: number, awayMs: number): number {
  const away = Number.isFinite(awayMs) ? Math.max(awayMs, 0) : 0;
  return Math.max(RETURN_GRACE_DURATIONS * longestDurationMs, Math.min(away, RETURN_GRACE_MAX_MS));
}

interface Seen {
  node: string;
  renewTime: string;
  /** monotonic ms at which this agent saw renewTime change */
  at: number;
  durationMs: number;
  /** `at` was moved to the end of a silence of the watch (once per renewal: #bridgeSilence) */
  bridged?: boolean;
}

/**
 * Which agents are alive, as this agent sees their Leases. Pure but for the clocks, which are
 * injected: `now` is monotonic ms, `wall` the wall clock (used only for a Lease seen for the
 * first time, whose age is then taken from its renewTime, so a restarted agent does not think
 * a node that died an hour ago alive for one more Lease duration).
 */
export class LiveNodes {
  readonly #seen = new Map<string, Seen>();
  /** monotonic ms of the latest renewal this agent saw, of any Lease */
  #newest = Number.NEGATIVE_INFINITY;
  /** #newest when the view last stopped being current: where an outage's silence began */
  #newestWhenLost = Number.NEGATIVE_INFINITY;
  #current = false;
  #everCurrent = false;
  /** monotonic ms before which no Lease lapses: returnGraceMs after a return */
  #graceUntil = Number.NEGATIVE_INFINITY;
  readonly #now: () => number;
  readonly #wall: () => number;
  readonly #onBridge: ((silenceMs: number, nodes: string[]) => void) | undefined;
  readonly #onReturn: ((awayMs: number, graceMs: number) => void) | undefined;

  /**
   * `onBridge` hears of every silence of the watch that carried Leases over (#bridgeSilence):
   * how long it was and whose Leases, for the log. `onReturn` hears of every return to a current
   * view after a failure: how long no renewal was seen, and the return grace it gives.
   */
  constructor(
    now: () => number = () => performance.now(),
    wall: () => number = Date.now,
    onBridge?: (silenceMs: number, nodes: string[]) => void,
    onReturn?: (awayMs: number, graceMs: number) => void,
  ) {
    this.#now = now;
    this.#wall = wall;
    this.#onBridge = onBridge;
    this.#onReturn = onReturn;
  }

  /** A Lease was listed, created or renewed. */
  observe(lease: LeaseLike): void {
    const key = lease.metadata?.name;
    const node = lease.spec?.holderIdentity;
    const raw = lease.spec?.renewTime;
    if (!key || !node || raw === undefined) return;
    const renewTime = typeof raw === "string" ? raw : raw.toISOString();
    const durationMs = Math.max(1, lease.spec?.leaseDurationSeconds ?? 0) * 1000;
    const before = this.#seen.get(key);
    if (before && before.renewTime === renewTime && before.node === node) return;
    let at = this.#now();
    this.#bridgeSilence(at);
    this.#newest = Math.max(this.#newest, at);
    if (!before) {
      const age = this.#wall() - Date.parse(renewTime);
      at -= Number.isFinite(age) ? Math.min(Math.max(age, 0), durationMs) : durationMs;
    }
    this.#seen.set(key, { node, renewTime, at, durationMs });
  }

  /**
   * The watch said nothing for longer than half a Lease duration, and speaks again. Every live
   * agent renews at least that often (the renew interval is at most half the duration: this
   * one's own renewals come through the same watch), so the API server or this process stalled,
   * and the renewals it held back now arrive one at a time: the first of them must not prove the
   * others lapsed. Every Lease still live when the silence began counts as seen renewing now,
   * once: a node that died meanwhile lapses one duration later, even if the watch keeps falling
   * silent (a slow API server), and a node whose Lease had lapsed before stays lapsed.
   */
  #bridgeSilence(now: number): void {
    const last = this.#newest;
    if (!Number.isFinite(last)) return;
    const bridged: string[] = [];
    for (const seen of this.#seen.values())
      if (!seen.bridged && now - last > seen.durationMs / 2 && this.#deadline(seen) > last) {
        seen.at = Math.max(seen.at, now);
        seen.bridged = true;
        bridged.push(seen.node);
      }
    if (bridged.length > 0) this.#onBridge?.(Math.round(now - last), bridged.sort());
  }

  /** A Lease was deleted (its agent uninstalled): that node is not live. */
  forget(lease: LeaseLike): void {
    if (lease.metadata?.name) this.#seen.delete(lease.metadata.name);
  }

  /** A relist: Leases not in it are gone; the others are observed as usual. */
  replace(leases: LeaseLike[]): void {
    const names = new Set(leases.map(l => l.metadata?.name));
    for (const key of this.#seen.keys()) if (!names.has(key)) this.#seen.delete(key);
    for (const lease of leases) this.observe(lease);
  }

  /**
   * Whether the view is current: set after a list, cleared when the watch fails. Coming back
   * after a failure, every Lease counts as seen now: renewals made while this agent could not
   * see them (or while the API server was away for everyone) are not lapses, and a node gets
   * the return grace (returnGraceMs: three of its durations, or as long as this view saw no
   * renewal, up to a minute) to be seen renewing again before its addresses move.
   */
  set current(value: boolean) {
    if (!value && this.#current) this.#newestWhenLost = this.#newest;
    if (value && !this.#current && this.#everCurrent) {
      const now = this.#now();
      let longest = 0;
      for (const seen of this.#seen.values()) {
        seen.at = now;
        longest = Math.max(longest, seen.durationMs);
      }
      // Measured from the last renewal seen on the lost view: the relist that brings the view
      // back may hold renewals of the nodes that reached the API server first.
      const away = Number.isFinite(this.#newestWhenLost)
        ? Math.round(now - this.#newestWhenLost)
        : 0;
      const grace = returnGraceMs(longest, away);
      this.#newest = now;
      this.#graceUntil = now + grace;
      this.#onReturn?.(away, grace);
    }
    if (value) this.#everCurrent = true;
    this.#current = value;
  }
  get current(): boolean {
    return this.#current;
  }

  /**
   * The nodes of every agent Lease this agent knows of, live or not; undefined until its view
   * has been current once. A Lease goes with its agent's Pod, so a node whose agent merely died
   * stays in it.
   */
  nodes(): ReadonlySet<string> | undefined {
    if (!this.#everCurrent) return undefined;
    return new Set([...this.#seen.values()].map(seen => seen.node));
  }

  /**
   * The nodes whose Lease is live now, and those whose Lease lapsed; undefined while the view
   * is not current. A Lease counts as lapsed only once some renewal (of any Lease) was seen
   * after its deadline: that proves the watch was still delivering when it should have been
   * renewed (and not merely delivering again after a stall: #bridgeSilence). A watch gone
   * silent lets every Lease age out of `live` but into neither set, and a Lease listed with an
   * old renewTime is lapsed at once. A node in neither set (that, or one with no Lease at all:
   * an agent of an older blixt, mid-upgrade) keeps its addresses.
   */
  liveness(): Liveness | undefined {
    if (!this.#current) return undefined;
    const now = this.#now();
    const live = new Set<string>();
    const lapsed = new Set<string>();
    for (const seen of this.#seen.values()) {
      const deadline = this.#deadline(seen);
      if (now < deadline) live.add(seen.node);
      else if (deadline <= this.#newest) lapsed.add(seen.node);
    }
    for (const node of live) lapsed.delete(node);
    return { live, lapsed };
  }

  /** When a Lease stops being live: a duration after its renewal was seen, or the return grace. */
  #deadline(seen: Seen): number {
    return Math.max(seen.at + seen.durationMs, this.#graceUntil);
  }

  /** ms until the next live Lease lapses (undefined when none is live): when to look again. */
  nextLapseMs(): number | undefined {
    const now = this.#now();
    let next: number | undefined;
    for (const seen of this.#seen.values()) {
      const left = this.#deadline(seen) - now;
      if (left > 0 && (next === undefined || left < next)) next = left;
    }
    return next;
  }
}

/**
 * The node that announces `address` now, as agent `self` sees it: the controller's choice,
 * unless its Lease lapsed; then the live node of highest rendezvous hash. The controller's
 * choice also stands while liveness is unknown, and while `self` does not see its own Lease
 * live: then its view is stale (a watch silent without an error lets every Lease lapse at
 * once, its own too) and it must not take anything over on it. Pure.
 */
export function announcerOf(
  address: string,
  chosen: string | undefined,
  liveness: Liveness | undefined,
  self: string,
): string | undefined {
  if (!liveness || !liveness.live.has(self)) return chosen;
  if (chosen === undefined || !liveness.lapsed.has(chosen)) return chosen;
  return rendezvousPick(address, liveness.live) ?? chosen;
}

export interface LeaseHolderOptions {
  namespace: string;
  nodeName: string;
  owner?: LeaseOwner;
  settings: LeaseSettings;
  log: AgentLog;
  /** writes the Lease (kube.ts applyLease: a server-side apply) */
  write: (lease: V1Lease) => Promise<void>;
  /** called after every renewal attempt with whether the Lease is held (metrics) */
  onRenew?: (held: boolean) => void;
  /**
   * called when a renewal succeeds after failing: the API server was out of reach, and what
   * the agent's other watches should have delivered meanwhile may be missing (a relist)
   */
  onRegained?: () => void;
  /**
   * ms a renewal may take before it counts as failed and the next one is tried on a fresh
   * request (default: the Lease duration, after which a late renewal is worth nothing)
   */
  timeoutMs?: number;
  now?: () => number;
}

/**
 * Renews this node's Lease every renew interval. The Lease is held while the last successful
 * renewal is younger than its duration; losing it (the API server unreachable, RBAC refused)
 * and getting it back are logged once each.
 */
export class LeaseHolder {
  readonly #opts: LeaseHolderOptions;
  readonly #now: () => number;
  readonly #loop: Periodic;
  #lastOk: number | undefined;
  #failing = false;

  constructor(opts: LeaseHolderOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? (() => performance.now());
    this.#loop = new Periodic(() => this.renew(), opts.settings.renewMs);
  }

  held(): boolean {
    return (
      this.#lastOk !== undefined &&
      this.#now() - this.#lastOk < this.#opts.settings.durationSeconds * 1000
    );
  }

  /** One renewal now; resolves when it is written or has failed. */
  async renew(): Promise<void> {
    const { namespace, nodeName, settings, log } = this.#opts;
    const write = this.#opts.write;
    const started = this.#now();
    try {
      await within(
        write(
          leaseObject(namespace, nodeName, settings.durationSeconds, new Date(), this.#opts.owner),
        ),
        this.#opts.timeoutMs ?? settings.durationSeconds * 1000,
        "renewing the node Lease",
      );
      this.#lastOk = started;
      if (this.#failing) {
        log.info(
          { lease: `${namespace}/${leaseName(nodeName)}` },
          "node Lease renewed again; this node's addresses are its own once more",
        );
        this.#failing = false;
        this.#opts.onRegained?.();
      }
    } catch (error) {
      if (!this.#failing)
        log.error(
          {
            lease: `${namespace}/${leaseName(nodeName)}`,
            error: errorMessage(error),
            durationSeconds: settings.durationSeconds,
          },
          "renewing the node Lease failed; other agents take this node's addresses over when it lapses, and this node keeps forwarding what reaches it",
        );
      this.#failing = true;
    }
    this.#opts.onRenew?.(this.held());
  }

  /** The first renewal now, then one every renew interval until stop(). */
  start(): void {
    this.#loop.start(true);
  }

  async stop(): Promise<void> {
    await this.#loop.stop();
  }
}

/**
 * Calls `onChange` when the set of live nodes changes: at a Lease event that changes it, and
 * when a live Lease lapses (a timer armed for the next lapse). Renewals that change nothing
 * call nothing, so a cluster's renewals do not each cost the agent a pass.
 */
export class LivenessNotifier {
  readonly #view: LiveNodes;
  readonly #onChange: (liveness: Liveness | undefined, before: string) => void;
  #last = "";
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(view: LiveNodes, onChange: (liveness: Liveness | undefined, before: string) => void) {
    this.#view = view;
    this.#onChange = onChange;
    this.#last = LivenessNotifier.describe(view.liveness());
  }

  /** "live: a,b; lapsed: c", or "unknown" while the view is not current. */
  static describe(liveness: Liveness | undefined): string {
    if (!liveness) return "unknown";
    const list = (nodes: ReadonlySet<string>) => [...nodes].sort().join(",") || "-";
    return `live: ${list(liveness.live)}; lapsed: ${list(liveness.lapsed)}`;
  }

  /** Looks at the view again (after an event); rearms the lapse timer. */
  check(): void {
    if (this.#stopped) return;
    const liveness = this.#view.liveness();
    const now = LivenessNotifier.describe(liveness);
    if (now !== this.#last) {
      const before = this.#last;
      this.#last = now;
      this.#onChange(liveness, before);
    }
    clearTimeout(this.#timer);
    const next = this.#view.nextLapseMs();
    if (next !== undefined) {
      // 1 ms past the lapse, so the Lease is out of live() when the timer fires.
      this.#timer = setTimeout(() => this.check(), Math.ceil(next) + 1);
      this.#timer.unref?.();
    }
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }
}

export interface AnnounceDeadlineOptions {
  settings: LeaseSettings;
  log: AgentLog;
  /** writes the deadline, CLOCK_MONOTONIC ns (Dataplane.setAnnounceDeadline) */
  write: (untilNs: bigint) => Promise<void>;
  /** CLOCK_MONOTONIC ns, bpf_ktime_get_ns's clock; process.hrtime.bigint() by default */
  now?: () => bigint;
  /**
   * the nodes of every agent Lease known (LiveNodes.nodes; undefined while unknown): with no
   * other node among them there is no deadline
   */
  nodes?: () => ReadonlySet<string> | undefined;
  /** this node's name, as in the Leases */
  self?: string;
}

/**
 * No other node has an agent Lease: nobody could take this node's addresses over, so a dead
 * agent's node keeps answering for them (an agent restart on a one-node cluster keeps its
 * traffic, as before the Leases). Unknown (the Leases not listed yet) is not alone. Pure.
 */
export function aloneIn(nodes: ReadonlySet<string> | undefined, self: string): boolean {
  return nodes !== undefined && [...nodes].every(node => node === self);
}

/**
 * The dead-man's switch of ARP (bpf/arp.h, map blixt_announce): while this agent runs it keeps
 * the node's announce deadline one Lease duration ahead, every renew interval. When the agent
 * dies or hangs, its node stops answering ARP for its addresses when the deadline passes, about
 * when the other agents see its Lease lapse and take the addresses over, so two nodes do not
 * both answer until the agent comes back. It does not depend on the API server: an agent cut
 * off from it keeps its addresses (see the module comment), and the deadline keeps moving.
 * While no other node has an agent Lease (aloneIn), it writes no deadline (0): there is nobody
 * to take over, and a restarting agent should not darken a one-node cluster.
 */
export class AnnounceDeadline {
  readonly #opts: AnnounceDeadlineOptions;
  readonly #now: () => bigint;
  readonly #loop: Periodic;
  #failing = false;

  constructor(opts: AnnounceDeadlineOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? (() => process.hrtime.bigint());
    this.#loop = new Periodic(() => this.move(), opts.settings.renewMs);
  }

  /** Moves the deadline once; a failure is logged (once until it works again), never thrown. */
  async move(): Promise<void> {
    const { settings, log } = this.#opts;
    try {
      const alone =
        this.#opts.nodes !== undefined &&
        this.#opts.self !== undefined &&
        aloneIn(this.#opts.nodes(), this.#opts.self);
      const untilNs = alone ? 0n : this.#now() + BigInt(settings.durationSeconds) * 1_000_000_000n;
      await this.#opts.write(untilNs);
      if (this.#failing)
        log.info({}, "announce deadline moved again; this node answers ARP for its addresses");
      this.#failing = false;
    } catch (error) {
      if (!this.#failing)
        log.error(
          { error: errorMessage(error), durationSeconds: settings.durationSeconds },
          "moving the announce deadline failed; this node stops answering ARP for its addresses when it passes (the other agents take them over), and keeps forwarding what reaches it",
        );
      this.#failing = true;
    }
  }

  /** The first move now (awaited), then one every renew interval until stop(). */
  async start(): Promise<void> {
    await this.move();
    this.#loop.start(false);
  }

  async stop(): Promise<void> {
    await this.#loop.stop();
  }
}

/** An address this node yielded to another node's gratuitous ARP (Dataplane.yields). */
export interface YieldEntry {
  address: string;
  /** CLOCK_MONOTONIC ns the announcement was heard */
  atNs: bigint;
  /** the announcing node's MAC */
  mac: string;
}

/** What the agent does about one yield. Pure. */
export function yieldAction(
  entry: YieldEntry,
  ctx: {
    /** the agent still flags the address ADDR_F_ANNOUNCE */
    announced: boolean;
    /**
     * since when (CLOCK_MONOTONIC ns) the agent has held its Lease on a current view of the
     * Leases, itself live in it, without a break; undefined while it does not
     */
    trustedSinceNs: bigint | undefined;
    nowNs: bigint;
    /** how long a yield must have stood, and the agent been trusted, before it announces again */
    graceNs: bigint;
  },
): "forget" | "announce-again" | "keep" {
  if (!ctx.announced) return "forget";
  if (ctx.trustedSinceNs === undefined) return "keep";
  const since = entry.atNs > ctx.trustedSinceNs ? entry.atNs : ctx.trustedSinceNs;
  return ctx.nowNs - since >= ctx.graceNs ? "announce-again" : "keep";
}

export interface YieldKeeperOptions {
  settings: LeaseSettings;
  log: AgentLog;
  /** the yields the programs recorded (Dataplane.yields) */
  list: () => Promise<YieldEntry[]>;
  /** the addresses this node flags ADDR_F_ANNOUNCE (Dataplane.announced) */
  announced: () => Promise<string[]>;
  /** forgets a yield (Dataplane.clearYield) */
  forget: (address: string) => Promise<void>;
  /** announces the address again: clears the yield and sends gratuitous ARP (Dataplane.announce) */
  announceAgain: (address: string) => Promise<void>;
  /** the agent holds its Lease and its view of the Leases is current, itself live in it */
  trusted: () => boolean;
  /**
   * false when this node flags no address ADDR_F_ANNOUNCE (Agent.mayAnnounce): the programs
   * record yields only for those, so once a look found none there is nothing to read
   */
  mayAnnounce?: () => boolean;
  now?: () => bigint;
}

/**
 * Looks after the addresses the programs yielded (bpf/arp.h: another node's gratuitous ARP for
 * an address this node announces). A node cut off from the API server alone cannot see that
 * its Lease lapsed, but it hears the node that took its address over, and the programs stop
 * answering ARP for it at once; this says so in the log and the metrics, and keeps it so. Once
 * the agent no longer flags the address (its view caught up), the yield is forgotten. If it
 * still flags it after three Lease durations of holding its Lease on a current view (counted
 * from the later of the announcement and the moment it got its Lease back, so that after a
 * partition its DataplaneConfig watch has time to deliver what it missed), the announcement
 * it heard was stale (a restarting agent announcing on an old view, say): it announces the
 * address again. Runs every max(renew interval, 1 s).
 */
export class YieldKeeper {
  readonly #opts: YieldKeeperOptions;
  readonly #now: () => bigint;
  readonly #reported = new Map<string, string>();
  #count = 0;
  /** the last look found no yield */
  #none = false;
  #trustedSinceNs: bigint | undefined;
  readonly #loop: Periodic;

  constructor(opts: YieldKeeperOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? (() => process.hrtime.bigint());
    this.#loop = new Periodic(() => this.check(), Math.max(opts.settings.renewMs, 1000));
  }

  /** Addresses yielded and kept so at the last check (the metric). */
  yielded(): number {
    return this.#count;
  }

  /** One check; failures are logged, never thrown. */
  async check(): Promise<void> {
    const { log, settings } = this.#opts;
    if (!this.#opts.trusted()) this.#trustedSinceNs = undefined;
    else this.#trustedSinceNs ??= this.#now();
    try {
      // A bpftool run a second saved on every node that announces nothing (most of them).
      if (this.#none && this.#opts.mayAnnounce?.() === false) return;
      const entries = await this.#opts.list();
      this.#none = entries.length === 0;
      if (entries.length === 0) {
        this.#count = 0;
        this.#reported.clear();
        return;
      }
      const announced = new Set(await this.#opts.announced());
      const graceNs = 3n * BigInt(settings.durationSeconds) * 1_000_000_000n;
      let kept = 0;
      const seen = new Set<string>();
      for (const entry of entries) {
        seen.add(entry.address);
        const action = yieldAction(entry, {
          announced: announced.has(entry.address),
          trustedSinceNs: this.#trustedSinceNs,
          nowNs: this.#now(),
          graceNs,
        });
        if (action === "forget") {
          await this.#opts.forget(entry.address);
          this.#reported.delete(entry.address);
        } else if (action === "announce-again") {
          log.info(
            { address: entry.address, announcedBy: entry.mac },
            "another node announced an address this node holds (its Lease held, its view current): announcing it again",
          );
          await this.#opts.announceAgain(entry.address);
          this.#reported.delete(entry.address);
        } else {
          kept++;
          const key = `${entry.mac} ${entry.atNs}`;
          if (this.#reported.get(entry.address) !== key) {
            this.#reported.set(entry.address, key);
            log.info(
              { address: entry.address, announcedBy: entry.mac },
              "another node announced this address: this node stopped answering ARP for it, and keeps forwarding what reaches it",
            );
          }
        }
      }
      for (const address of [...this.#reported.keys()])
        if (!seen.has(address)) this.#reported.delete(address);
      this.#count = kept;
    } catch (error) {
      log.error({ error: errorMessage(error) }, "checking the yielded addresses failed");
    }
  }

  start(): void {
    this.#loop.start(false);
  }

  async stop(): Promise<void> {
    await this.#loop.stop();
  }
}
