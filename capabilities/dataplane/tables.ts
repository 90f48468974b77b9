// SPDX-License-Identifier: Apache-2.0
// A service as the dataplane holds it, the pure part: its spec and how it is validated, its
// weighted backends merged, and the Maglev table built from them (backend list plus slots).
// No I/O; lines.ts turns these into bpftool batch lines and dataplane.ts runs them.
import { isIPv4 } from "node:net";
import { buildMaglevTable, maglevTableSize } from "./maglev.js";
import { chunkCount, type Proto } from "./maps.js";

export type { Proto } from "./maps.js";
export interface Backend {
  ip: string;
  port: number;
  weight: number;
  /**
   * The backend's pod runs on another node (BACKEND_F_REMOTE): flows to it are encapsulated to
   * that node (IP-in-IP, bpf/encap.h) instead of DNATed here, and its replies go from there
   * straight to the client. Needs this node's address (Dataplane.setNodeAddress).
   */
  remote?: boolean;
}
export interface ServiceSpec {
  vip: string;
  port: number;
  proto: Proto;
  backends: Backend[];
  /** weight of the backendRefs that could not be resolved: that share of new flows is rejected */
  rejectWeight: number;
}

const isPort = (n: unknown) => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
const isWeight = (n: unknown) =>
  Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 0xffffffff;

export function serviceName(s: { vip: string; port: number; proto: string }): string {
  return `${s.vip}:${s.port}/${s.proto}`;
}

/** Throws an Error naming the service and the field that is wrong. */
export function validateServiceSpec(spec: ServiceSpec): void {
  const name = `service ${serviceName(spec)}`;
  if (!isIPv4(spec.vip))
    throw new Error(`${name}: vip "${spec.vip}" must be an IPv4 address literal`);
  if (!isPort(spec.port))
    throw new Error(`${name}: port must be an integer in 1..65535, got ${spec.port}`);
  if (spec.proto !== "tcp" && spec.proto !== "udp")
    throw new Error(`${name}: proto must be "tcp" or "udp", got ${JSON.stringify(spec.proto)}`);
  if (!isWeight(spec.rejectWeight))
    throw new Error(
      `${name}: rejectWeight must be a non-negative integer, got ${spec.rejectWeight}`,
    );
  if (!Array.isArray(spec.backends)) throw new Error(`${name}: backends must be an array`);
  spec.backends.forEach((b, i) => {
    if (!isIPv4(b.ip))
      throw new Error(`${name}: backends[${i}].ip "${b.ip}" must be an IPv4 address literal`);
    if (!isPort(b.port))
      throw new Error(`${name}: backends[${i}].port must be an integer in 1..65535, got ${b.port}`);
    if (!isWeight(b.weight))
      throw new Error(
        `${name}: backends[${i}].weight must be a non-negative integer, got ${b.weight}`,
      );
    if (b.remote !== undefined && typeof b.remote !== "boolean")
      throw new Error(
        `${name}: backends[${i}].remote must be true, false or absent, got ${JSON.stringify(b.remote)}`,
      );
  });
}

/**
 * The same endpoint listed twice (two backendRefs resolving to one pod) carries the sum of its
 * weights; it is remote if either listing says so (one pod runs on one node).
 */
export function mergeBackends(backends: Backend[]): Backend[] {
  const byKey = new Map<string, Backend>();
  for (const b of backends) {
    const key = `${b.ip}:${b.port}`;
    const seen = byKey.get(key);
    const merged = seen ? { ...seen, weight: seen.weight + b.weight } : { ...b };
    if (seen?.remote || b.remote) merged.remote = true;
    byKey.set(key, merged);
  }
  return [...byKey.values()].sort((a, b) => (`${a.ip}:${a.port}` < `${b.ip}:${b.port}` ? -1 : 1));
}

/** Key of the Maglev pseudo-backend that stands for the rejected share; cannot collide with "ip:port". */
const REJECT_KEY = "reject";

/** An entry of a table's backend list: a backend (`remote: true` only when set), or the rejected share. */
export type TableEntry = { ip: string; port: number; remote?: true } | "reject";

export interface ServiceTable {
  tableSize: number;
  /** the table's backend list (blixt_mg_backs): weighted backends in key order, then "reject" if it has a share */
  backends: TableEntry[];
  /** per slot: an index into `backends` (written to blixt_mg_chunks, CHUNK_SLOTS per entry) */
  slots: Uint16Array;
}

/** What slot `slot` of a table holds. */
export const slotEntry = (table: ServiceTable, slot: number): TableEntry | undefined =>
  slot < table.tableSize ? table.backends[table.slots[slot]] : undefined;

/**
 * Tables built lately, by their members (address, port, weight, remote; the rejected share),
 * most recently used last. Routes that share one weighted backend set (a Deployment behind many
 * routes) share one table, and a pass asks for each service's table more than once (to write it,
 * to size it, to check the live one), so without this an agent pass over a thousand such
 * services built three thousand identical tables. Callers never change a returned table.
 */
const builtTables = new Map<string, ServiceTable>();
/** Slot bytes the cache may hold: ~500 tables of the smallest size, 128 of the largest. */
export const TABLE_CACHE_BYTES = 16 * 1024 * 1024;
let builtTableBytes = 0;

/**
 * What a service's Maglev table is made of (its weighted backends, remote or not, and the
 * rejected share), as a string: services with equal keys have equal tables, and share one.
 */
export function tableKey(backends: Backend[], rejectWeight: number): string {
  const members = mergeBackends(backends)
    .filter(b => b.weight > 0)
    .map(b => `${b.ip}:${b.port}*${b.weight}${b.remote ? "r" : ""}`);
  if (rejectWeight > 0) members.push(`${REJECT_KEY}*${rejectWeight}`);
  return members.join(",");
}

/** The Maglev table for a service: weighted backends plus the rejected share; size 0 when nothing has weight. */
export function serviceTable(backends: Backend[], rejectWeight: number): ServiceTable {
  const cacheKey = tableKey(backends, rejectWeight);
  const cached = builtTables.get(cacheKey);
  if (cached) {
    builtTables.delete(cacheKey);
    builtTables.set(cacheKey, cached);
    return cached;
  }
  const weighted = mergeBackends(backends).filter(b => b.weight > 0);
  const members = [
    ...weighted.map(b => ({
      key: `${b.ip}:${b.port}`,
      weight: b.weight,
      entry: (b.remote
        ? { ip: b.ip, port: b.port, remote: true }
        : { ip: b.ip, port: b.port }) as TableEntry,
    })),
    ...(rejectWeight > 0
      ? [{ key: REJECT_KEY, weight: rejectWeight, entry: "reject" as TableEntry }]
      : []),
  ];
  if (members.length === 0) return { tableSize: 0, backends: [], slots: new Uint16Array(0) };
  // Slots name backends by a u16 index (struct table_chunk).
  if (members.length > 0x10000)
    throw new RangeError(
      `a Maglev table indexes at most 65536 backends (the rejected share counts as one), got ${members.length} with weight > 0`,
    );
  const tableSize = maglevTableSize(members.length);
  const table = buildMaglevTable(
    members.map(({ key, weight }) => ({ key, weight })),
    tableSize,
  );
  const built = { tableSize, backends: members.map(m => m.entry), slots: Uint16Array.from(table) };
  builtTables.set(cacheKey, built);
  builtTableBytes += built.slots.byteLength;
  for (const [key, old] of builtTables) {
    if (builtTableBytes <= TABLE_CACHE_BYTES) break;
    builtTables.delete(key);
    builtTableBytes -= old.slots.byteLength;
  }
  return built;
}

/** Which chunks of a table of `size` slots are read back to check it: first, last and a spread between. */
export function sampleChunks(size: number, count = 4): number[] {
  const chunks = chunkCount(size);
  if (chunks <= 0) return [];
  return [
    ...new Set(
      Array.from({ length: count }, (_, i) =>
        Math.floor((i * (chunks - 1)) / Math.max(1, count - 1)),
      ),
    ),
  ];
}
