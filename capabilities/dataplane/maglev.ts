// SPDX-License-Identifier: Apache-2.0
// Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights, as pure functions.
//
// Every node agent builds the table for a service from the same backendRefs, so the table must
// depend only on the set of (key, weight) pairs: not on input order, not on the node. The
// dataplane hashes a flow's 5-tuple into the table; a slot holds an index into `backends`.
import { createHash } from "node:crypto";

/**
 * Smallest table size (Cilium's default, too). Removing a backend hands its slots to the others
 * unevenly, and restoring the weights then moves about 0.8/√M of the table that belonged to
 * backends that stayed; below ~16k slots that exceeds 1 % (measured: 2.2 % at M = 1009).
 */
export const MAGLEV_MIN_SIZE = 16381;
/**
 * Largest table size: the biggest prime below 2^16 (Katran's default ring is 65537), so a table
 * costs at most 256 KiB of map memory. Beyond 65 backends a service gets fewer than 1000 slots
 * each; removal disruption then creeps toward 1 % (0.9 % measured at 300 backends), and weights
 * coarsen only past 655 backends, where each gets fewer than 100 slots.
 */
export const MAGLEV_MAX_SIZE = 65521;
/**
 * Slots per backend the table aims for. The paper's M ≥ 100·N keeps the weights exact enough;
 * 1000·N also keeps the slots moved on a backend's removal (beyond its own) under 1 % of M.
 */
export const MAGLEV_SLOTS_PER_BACKEND = 1000;

export interface MaglevBackend {
  /** Stable identity of the backend, e.g. "198.18.1.7:8080"; the same on every node. */
  key: string;
  /** Relative weight as a backendRef gives it; 0 means never chosen. */
  weight: number;
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/** A prime table size ≥ 1000 × backends, clamped to [MAGLEV_MIN_SIZE, MAGLEV_MAX_SIZE]. */
export function maglevTableSize(totalWeightedBackends: number): number {
  if (!Number.isInteger(totalWeightedBackends) || totalWeightedBackends < 0) {
    throw new RangeError(
      `maglevTableSize: backend count must be a non-negative integer, got ${totalWeightedBackends}`,
    );
  }
  const wanted = Math.min(
    Math.max(totalWeightedBackends * MAGLEV_SLOTS_PER_BACKEND, MAGLEV_MIN_SIZE),
    MAGLEV_MAX_SIZE,
  );
  let size = wanted;
  while (!isPrime(size)) size++;
  // The cap itself is prime, so this only rounds up below it.
  return Math.min(size, MAGLEV_MAX_SIZE);
}

/** offset ∈ [0, size) and skip ∈ [1, size) from a stable hash of the key (SHA-256, node-independent). */
function permutation(key: string, size: number): { offset: number; skip: number } {
  const digest = createHash("sha256").update(key).digest();
  // 48-bit integers are exact in a double, so the modulo is exact too.
  const offset = digest.readUIntBE(0, 6) % size;
  const skip = (digest.readUIntBE(6, 6) % (size - 1)) + 1;
  return { offset, skip };
}

/**
 * Slots each backend owns: size × weight / total, rounded by largest remainder (ties broken by
 * key) so the counts sum to exactly `size` and every weight is met within one slot.
 */
function slotQuotas(weights: number[], keys: string[], size: number): number[] {
  const total = weights.reduce((a, b) => a + b, 0);
  const exact = weights.map(w => (size * w) / total);
  const quotas = exact.map(Math.floor);
  let left = size - quotas.reduce((a, b) => a + b, 0);
  const byRemainder = exact
    .map((x, i) => ({ i, rem: x - Math.floor(x) }))
    .filter(({ i }) => weights[i] > 0)
    .sort((a, b) => b.rem - a.rem || (keys[a.i] < keys[b.i] ? -1 : keys[a.i] > keys[b.i] ? 1 : 0));
  for (const { i } of byRemainder) {
    if (left === 0) break;
    quotas[i]++;
    left--;
  }
  return quotas;
}

/**
 * The Maglev lookup table: `table[slot]` is an index into `backends`.
 *
 * Backends take turns in key order, each claiming the next free slot of its own permutation,
 * until it holds its weighted quota of slots. Because turns go by key (not input order) and the
 * permutation comes from the key alone, the same keys and weights give the same table anywhere.
 */
export function buildMaglevTable(backends: MaglevBackend[], size: number): Int32Array {
  if (!isPrime(size))
    throw new RangeError(`buildMaglevTable: size ${size} must be prime (use maglevTableSize)`);
  const seen = new Set<string>();
  for (const [i, b] of backends.entries()) {
    if (!Number.isFinite(b.weight) || b.weight < 0) {
      throw new RangeError(
        `buildMaglevTable: backend "${b.key}" (index ${i}) has weight ${b.weight}; weights must be finite and ≥ 0`,
      );
    }
    if (seen.has(b.key))
      throw new RangeError(
        `buildMaglevTable: backend key "${b.key}" appears twice; merge the duplicates' weights first`,
      );
    seen.add(b.key);
  }
  if (!backends.some(b => b.weight > 0)) {
    throw new RangeError(
      "buildMaglevTable: no backend has a weight > 0; the service has no usable backend and must be rejected",
    );
  }

  // Work in key order; remember each backend's index in the caller's array.
  const order = backends
    .map((b, index) => ({ ...b, index }))
    .filter(b => b.weight > 0)
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const quotas = slotQuotas(
    order.map(b => b.weight),
    order.map(b => b.key),
    size,
  );
  const perms = order.map(b => permutation(b.key, size));
  const next = new Array<number>(order.length).fill(0);

  const table = new Int32Array(size).fill(-1);
  let filled = 0;
  while (filled < size) {
    for (let i = 0; i < order.length && filled < size; i++) {
      if (quotas[i] === 0) continue;
      const { offset, skip } = perms[i];
      let slot = (offset + next[i] * skip) % size;
      while (table[slot] !== -1) {
        next[i]++;
        slot = (offset + next[i] * skip) % size;
      }
      table[slot] = order[i].index;
      next[i]++;
      quotas[i]--;
      filled++;
    }
  }
  return table;
}
