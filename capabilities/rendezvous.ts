// SPDX-License-Identifier: Apache-2.0
/**
 * Rendezvous (highest random weight) choice of the node that announces an address. The
 * controller (compile/addresses.ts) and every agent (agent/leases.ts) pick with this one
 * function, so from the same candidates they all name the same node, and a node leaving moves
 * only the addresses it announced.
 */

/** 32-bit FNV-1a, for rendezvous hashing: stable across processes and versions of Node. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  // A final avalanche so that names differing in the last character spread over the range.
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b) >>> 0;
  hash ^= hash >>> 13;
  return hash >>> 0;
}

/** The candidate with the highest hash of address and name (ties: the smaller name). Pure. */
export function rendezvousPick(address: string, candidates: Iterable<string>): string | undefined {
  let best: { name: string; score: number } | undefined;
  for (const name of candidates) {
    const score = fnv1a(`${address}|${name}`);
    if (!best || score > best.score || (score === best.score && name < best.name))
      best = { name, score };
  }
  return best?.name;
}
