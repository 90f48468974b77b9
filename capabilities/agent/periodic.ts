// SPDX-License-Identifier: Apache-2.0
/**
 * A step run again and again, one at a time: the next starts one interval after the last one
 * ended, so a slow step (an API call that hangs, a busy node) never piles up behind itself.
 * The Lease renewals, the announce deadline and the yield checks (leases.ts) each run on one.
 */
export class Periodic {
  readonly #step: () => Promise<void>;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;
  #inFlight: Promise<void> | undefined;

  /** `step` should not throw: a rejection is dropped, and the next step runs as planned. */
  constructor(step: () => Promise<void>, intervalMs: number) {
    this.#step = step;
    this.#intervalMs = intervalMs;
  }

  /** Starts: the first step at once (`now`) or one interval from now. */
  start(now: boolean): void {
    this.#stopped = false;
    if (now) this.#tick();
    else this.#arm();
  }

  /** No step after this; resolves when the one running (if any) has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#inFlight;
  }

  readonly #tick = (): void => {
    if (this.#stopped) return;
    this.#inFlight = this.#step()
      .catch(() => undefined)
      .finally(() => {
        this.#inFlight = undefined;
        this.#arm();
      });
  };

  #arm(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(this.#tick, this.#intervalMs);
    this.#timer.unref?.();
  }
}

/**
 * `promise`, or a rejection naming `what` once `ms` have passed without it settling: a step
 * whose request hangs (a connection to an API server that restarted, kept open with no answer)
 * ends, so the next step runs on a fresh request. The request itself is not cancelled (the
 * client offers no abort for it); it settles or times out on its own, unobserved.
 */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
