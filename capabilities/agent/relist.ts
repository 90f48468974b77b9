// SPDX-License-Identifier: Apache-2.0
// The agent's relist: list every DataplaneConfig again, periodically and after a failed list,
// and replace the agent's view with the answer. Pepr's watch feeds the agent between relists,
// but a watch that drops (an API server restart, a cut connection, a watch Pepr gives up on)
// would otherwise leave the agent blind until its pod restarts; the relist bounds that
// blindness by the interval (BLIXT_RELIST_SECONDS).
import type { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1.js";
import { configKey, type ConfigKey } from "./desired.js";
import type { AgentLog } from "./log.js";

/** Why a relist ran: the metric's `reason` label. */
export type RelistReason = "start" | "periodic" | "retry";

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
  /** called after every relist, with its reason and whether the list succeeded (metrics) */
  onRelist?: (reason: RelistReason, ok: boolean) => void;
  log?: AgentLog;
}

export class Relister {
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<boolean> | undefined;

  constructor(private readonly opts: RelisterOptions) {}

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
      this.opts.agent.schedule();
      this.opts.onRelist?.(reason, true);
      return true;
    } catch (error) {
      this.opts.onRelist?.(reason, false);
      const message = error instanceof Error ? error.message : String(error);
      this.opts.log?.error(
        { reason, error: message },
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
    this.timer = this.retryTimer = undefined;
    await this.running?.catch(() => undefined);
  }
}
