// SPDX-License-Identifier: Apache-2.0
// The node agent's acknowledgements in flight, apart from its passes: a pass hands each
// config's status entry here and returns, so the next pass (the next EndpointSlice change)
// does not wait for the API server's answers. Per config one write at a time, and of those
// waiting only the newest is sent (an older one not yet sent says less than it); across
// configs a few at a time. No I/O of its own: `send` writes, and handles its own failures.

export class AckQueue<K, A> {
  readonly #concurrency: number;
  readonly #send: (key: K, ack: A) => Promise<void>;
  /** per key, the write being sent */
  readonly #sending = new Map<K, Entry<A>>();
  /** per key, the next write, sent once the key's current one settles */
  readonly #waiting = new Map<K, Entry<A>>();
  /** keys whose waiting write may start (none of theirs is being sent), oldest first */
  readonly #ready: K[] = [];

  constructor(concurrency: number, send: (key: K, ack: A) => Promise<void>) {
    if (!Number.isInteger(concurrency) || concurrency < 1)
      throw new Error(`AckQueue: concurrency must be a positive integer, got ${concurrency}`);
    this.#concurrency = concurrency;
    this.#send = send;
  }

  /**
   * Queues `ack` for `key`, replacing a write of that key that has not started. Resolves once
   * it was sent (whatever the answer: `send` deals with it) or replaced by a newer one.
   */
  submit(key: K, ack: A): Promise<void> {
    let resolve!: () => void;
    const settled = new Promise<void>(r => (resolve = r));
    const replaced = this.#waiting.get(key);
    this.#waiting.set(key, { ack, settled, resolve });
    if (replaced) replaced.resolve();
    else if (!this.#sending.has(key)) this.#ready.push(key);
    this.#pump();
    return settled;
  }

  /** The newest write queued or being sent for `key`, if any: a pass need not queue its equal. */
  newest(key: K): A | undefined {
    return (this.#waiting.get(key) ?? this.#sending.get(key))?.ack;
  }

  /** Writes being sent or waiting. */
  get size(): number {
    return this.#sending.size + this.#waiting.size;
  }

  /** Resolves once nothing is being sent or waiting (writes queued meanwhile included). */
  async idle(): Promise<void> {
    while (this.size > 0)
      await Promise.all([...this.#sending.values(), ...this.#waiting.values()].map(e => e.settled));
  }

  #pump(): void {
    while (this.#sending.size < this.#concurrency && this.#ready.length > 0) {
      const key = this.#ready.shift()!;
      const entry = this.#waiting.get(key)!;
      this.#waiting.delete(key);
      this.#sending.set(key, entry);
      void (async () => this.#send(key, entry.ack))()
        .catch(() => undefined)
        .finally(() => {
          this.#sending.delete(key);
          entry.resolve();
          if (this.#waiting.has(key)) this.#ready.push(key);
          this.#pump();
        });
    }
  }
}

interface Entry<A> {
  ack: A;
  settled: Promise<void>;
  resolve: () => void;
}
