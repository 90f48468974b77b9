// SPDX-License-Identifier: Apache-2.0
// The agent's relist: list every DataplaneConfig again and replace the agent's view with the
// answer: periodically, after a failed list, and as soon as the watch reports a failure. The
// watch (kube.ts watchDataplaneConfigs) feeds the agent between relists, but a watch that
// drops (an API server restart, a cut connection, 410 Gone) may miss events; relisting at its
// first failure closes that gap at once, and the periodic relist (BLIXT_RELIST_SECONDS) bounds
// the blindness of a watch that fails without saying so.
import type { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1.js";
import { configKey, type ConfigKey } from "./desired.js";
import type { AgentLog } from "./log.js";
import { errorMessage } from "../error-message.js";

/** Why a relist ran: the metric's `reason` label. */
export type RelistReason = "start" | "periodic" | "retry" | "watch" | "lease";

export interface ListedConfigs {
  items: DataplaneConfig[];
  /** the list's resourceVersion: a config seen in a watch event newer than this is kept */
  resourceVersion?: string;
}

const version = (v: string | undefined): number => {
  const n = Number(v ?? 0);
  return Number.isFinite(n) ? n : 0;
};

/**
 * The agent's view after a relist. Pure. The list wins, except where a watch event that
 * arrived while the list was in flight is newer: a config the list holds in an older version,
 * or one created after the list was taken (absent from it, version above the list's).
 */
export function mergeRelist(
  current: Iterable<DataplaneConfig>,
  listed: ListedConfigs,
): DataplaneConfig[] {
  const listVersion = version(listed.resourceVersion);
  const merged = new Map<ConfigKey, DataplaneConfig>(listed.items.map(c => [configKey(c), c]));
  for (const seen of current) {
    const key = configKey(seen);
    const inList = merged.get(key);
    const seenVersion = version(seen.metadata?.resourceVersion);
    if (
      inList
        ? seenVersion > version(inList.metadata?.resourceVersion)
        : listVersion > 0 && seenVersion > listVersion
    )
      merged.set(key, seen);
  }
  return [...merged.values()];
}

export interface RelistTarget {
  held(): DataplaneConfig[];
  replaceAll(configs: DataplaneConfig[]): void;
  schedule(): void;
}

export interface RelisterOptions {
  list: () => Promise<ListedConfigs>;
  agent: RelistTarget;
  /** periodic relist, ms; 0 disables it */
  intervalMs: number;
  /** delay before a failed relist is tried again, ms */
  retryMs?: number;
  /** delay from a watch failure to its relist, ms: the failures of one break (a list error,
   * then a network error) share one relist */
  watchDebounceMs?: number;
  /** called after every relist, with its reason and whether the list succeeded (metrics) */
  onRelist?: (reason: RelistReason, ok: boolean) => void;
  log?: AgentLog;
}

export class Relister {
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<boolean> | undefined;
  /** resourceVersion of the newest list applied: watch events up to it are already in the view */
  private listedVersion = 0;
  /** newest resourceVersion the watch delivered per config since that list, deletions included */
  private readonly watched = new Map<ConfigKey, number>();

  constructor(private readonly opts: RelisterOptions) {}

  /**
   * Whether a watch event is news to the agent (and records it). kubernetes-fluent-client's
   * Watcher resumes a broken watch at the resourceVersion of its last successful list, so a
   * reconnect whose list fails replays every event since then: older versions of live configs,
   * and configs deleted long ago. Applying those would take the node back in time, so an event
   * no newer than the last relist, or than the last event of its config, is dropped.
   */
  watchEvent(config: DataplaneConfig): boolean {
    const seen = version(config.metadata?.resourceVersion);
    if (seen === 0) return true;
    const key = configKey(config);
    if (seen <= this.listedVersion || seen <= (this.watched.get(key) ?? 0)) return false;
    this.watched.set(key, seen);
    return true;
  }

  /** Lists now and replaces the agent's view; resolves false (and retries later) when the list fails. */
  relist(reason: RelistReason): Promise<boolean> {
    // One at a time: a periodic tick during a slow list shares it.
    this.running ??= this.run(reason).finally(() => (this.running = undefined));
    return this.running;
  }

  private async run(reason: RelistReason): Promise<boolean> {
    try {
      const listed = await this.opts.list();
      if (this.stopped) return false;
      this.opts.agent.replaceAll(mergeRelist(this.opts.agent.held(), listed));
      this.listedVersion = Math.max(this.listedVersion, version(listed.resourceVersion));
      for (const [key, seen] of this.watched)
        if (seen <= this.listedVersion) this.watched.delete(key);
      this.opts.agent.schedule();
      this.opts.onRelist?.(reason, true);
      if (reason !== "periodic" && reason !== "start")
        this.opts.log?.info(
          { reason, configs: listed.items.length },
          "relisted every DataplaneConfig; the agent's view is current again",
        );
      return true;
    } catch (error) {
      this.opts.onRelist?.(reason, false);
      this.opts.log?.error(
        { reason, error: errorMessage(error) },
        "listing DataplaneConfigs failed; the agent keeps its last view and lists again soon",
      );
      if (!this.stopped && !this.retryTimer) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          void this.relist("retry");
        }, this.opts.retryMs ?? 5_000);
        this.retryTimer.unref?.();
      }
      return false;
    }
  }

  /**
   * The watch reported a failure (kube.ts WATCH_FAILURES), so it may have missed changes:
   * relist now rather than at the next periodic relist. A failed relist is retried as usual,
   * so an API server that is down is listed again as soon as it answers.
   */
  watchFailed(event: string, detail: string): void {
    if (this.stopped || this.watchTimer) return;
    this.opts.log?.error(
      { event, error: detail },
      `the DataplaneConfig watch failed (${event}); relisting every DataplaneConfig now`,
    );
    this.watchTimer = setTimeout(() => {
      this.watchTimer = undefined;
      // A list already in flight may have been taken before what the watch missed: list after it.
      void (this.running ?? Promise.resolve()).then(() => this.relist("watch"));
    }, this.opts.watchDebounceMs ?? 250);
    this.watchTimer.unref?.();
  }

  /** Starts the periodic relist. */
  start(): void {
    if (this.opts.intervalMs > 0 && !this.timer && !this.stopped) {
      this.timer = setInterval(() => void this.relist("periodic"), this.opts.intervalMs);
      this.timer.unref?.();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchTimer);
    this.timer = this.retryTimer = this.watchTimer = undefined;
    await this.running?.catch(() => undefined);
  }
}
