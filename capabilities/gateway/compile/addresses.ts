// SPDX-License-Identifier: Apache-2.0
/**
 * Gateway addresses: every Gateway gets one IPv4 address of its own from the configured pools,
 * stable for the Gateway's life, and one ready node announces it.
 */
import type { GatewayContext } from "./gateways.js";
import type { AddressPool, NodeInfo } from "./types.js";
import { cmp, firstFew } from "./util.js";
import { rendezvousPick } from "../../rendezvous.js";
import type { CompileInput } from "./views.js";
import { parseIPv4 } from "../../ipv4.js";

/**
 * ProcessAddresses: an address for every accepted Gateway (GatewayContext.address), the new
 * allocation table, and a warning for each pool entry that does not parse.
 */
export function processAddresses(
  input: Pick<CompileInput, "addressPools" | "allocations">,
  gateways: GatewayContext[],
): { allocations: Record<string, string>; warnings: string[] } {
  const pools = parsePools(input.addressPools);
  const requests: AddressRequest[] = [];
  for (const g of gateways) {
    if (g.accepted.status !== "True") continue;
    const ips = g.view.addresses
      .filter(a => a.type === "IPAddress" && a.value)
      .map(a => a.value as string);
    requests.push({
      key: g.key,
      namespace: g.view.meta.namespace,
      ...(ips.length > 0 ? { requested: ips } : {}),
    });
  }
  const addresses = allocateAddresses(requests, pools.pools, input.allocations);
  const allocations: Record<string, string> = {};
  for (const g of gateways) {
    g.address = addresses.get(g.key);
    if (g.address?.kind === "assigned") allocations[g.key] = g.address.address;
  }
  const sorted: Record<string, string> = {};
  for (const key of Object.keys(allocations).sort(cmp)) sorted[key] = allocations[key];
  return { allocations: sorted, warnings: pools.warnings };
}

export function formatIPv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join(".");
}

interface Range {
  first: number;
  last: number;
}

export interface ParsedPool {
  name: string;
  ranges: Range[];
  namespaces?: string[];
}

/** Pools with their ranges parsed; what does not parse becomes a warning naming the pool. */
export function parsePools(pools: AddressPool[]): { pools: ParsedPool[]; warnings: string[] } {
  const warnings: string[] = [];
  const parsed: ParsedPool[] = [];
  for (const pool of [...(Array.isArray(pools) ? pools : [])].sort((a, b) =>
    cmp(String(a?.name), String(b?.name)),
  )) {
    const name = typeof pool?.name === "string" ? pool.name : "";
    const ranges: Range[] = [];
    for (const entry of Array.isArray(pool?.cidrs) ? pool.cidrs : []) {
      const range = typeof entry === "string" ? parseRange(entry.trim()) : undefined;
      if (range) ranges.push(range);
      else
        warnings.push(
          `address pool "${name}": "${String(entry)}" is neither an IPv4 CIDR nor a range "A-B"; it is ignored`,
        );
    }
    const namespaces = Array.isArray(pool?.namespaces)
      ? pool.namespaces.filter(n => typeof n === "string")
      : undefined;
    parsed.push({ name, ranges, namespaces });
  }
  return { pools: parsed, warnings };
}

function parseRange(text: string): Range | undefined {
  const dash = text.indexOf("-");
  if (dash >= 0) {
    const first = parseIPv4(text.slice(0, dash).trim());
    const last = parseIPv4(text.slice(dash + 1).trim());
    return first !== undefined && last !== undefined && first <= last ? { first, last } : undefined;
  }
  const [ip, bitsText] = text.split("/");
  const base = parseIPv4(ip);
  const bits = bitsText === undefined ? 32 : /^\d{1,2}$/.test(bitsText) ? Number(bitsText) : NaN;
  if (base === undefined || !(bits >= 0 && bits <= 32)) return undefined;
  const size = 2 ** (32 - bits);
  const first = Math.floor(base / size) * size;
  // The network and broadcast addresses of a prefix trip up many clients (as MetalLB's
  // avoidBuggyIPs knows); a range "A-B" is taken as written.
  if (bits <= 30) return { first: first + 1, last: first + size - 2 };
  return { first, last: first + size - 1 };
}

function poolAllows(pool: ParsedPool, namespace: string): boolean {
  return pool.namespaces === undefined || pool.namespaces.includes(namespace);
}

function poolHolds(pool: ParsedPool, address: number): boolean {
  return pool.ranges.some(r => address >= r.first && address <= r.last);
}

export interface AddressRequest {
  key: string; // "namespace/name" of the Gateway
  namespace: string;
  /** spec.addresses values of type IPAddress, when the Gateway asks for some (in spec order). */
  requested?: string[];
}

export type AddressResult =
  | { kind: "assigned"; address: string }
  | { kind: "notUsable"; message: string }
  | { kind: "notAssigned"; message: string };

/**
 * Assigns addresses in three passes so that nothing moves without need: first every Gateway
 * keeps the address it had (if still valid), then requested static addresses, then the rest
 * take the lowest free address of the first pool (by name) open to their namespace.
 * Requests must come oldest first: on a clash the older Gateway wins.
 */
export function allocateAddresses(
  requests: AddressRequest[],
  pools: ParsedPool[],
  previous: Record<string, string>,
): Map<string, AddressResult> {
  const taken = new Set<number>();
  const results = new Map<string, AddressResult>();
  const eligible = (req: AddressRequest, address: number) =>
    pools.some(p => poolAllows(p, req.namespace) && poolHolds(p, address));

  for (const req of requests) {
    const had = typeof previous?.[req.key] === "string" ? parseIPv4(previous[req.key]) : undefined;
    if (had === undefined || taken.has(had) || !eligible(req, had)) continue;
    if (
      req.requested !== undefined &&
      (req.requested.length !== 1 || parseIPv4(req.requested[0]) !== had)
    )
      continue;
    taken.add(had);
    results.set(req.key, { kind: "assigned", address: formatIPv4(had) });
  }
  for (const req of requests) {
    if (results.has(req.key) || req.requested === undefined) continue;
    // Every requested address must be usable, and blixt serves one per Gateway: the first
    // problem found is the reason none is assigned (Programmed=False AddressNotUsable).
    let problem: string | undefined;
    for (const requested of req.requested) {
      const want = parseIPv4(requested);
      if (want === undefined) problem = `spec.addresses: "${requested}" is not an IPv4 address`;
      else if (!eligible(req, want))
        problem = `spec.addresses: ${requested} is in no address pool open to namespace "${req.namespace}"; use an address from a pool or remove it from spec.addresses`;
      else if (taken.has(want))
        problem = `spec.addresses: ${requested} is already used by another Gateway`;
      if (problem) break;
    }
    if (!problem && req.requested.length > 1) {
      problem = `spec.addresses: ${req.requested.length} addresses requested (${firstFew(req.requested)}); blixt serves one address per Gateway: keep one`;
    }
    if (problem) {
      results.set(req.key, { kind: "notUsable", message: problem });
    } else {
      const want = parseIPv4(req.requested[0]) as number;
      taken.add(want);
      results.set(req.key, { kind: "assigned", address: formatIPv4(want) });
    }
  }
  const cursors = new Map<Range, number>();
  for (const req of requests) {
    if (results.has(req.key)) continue;
    const free = firstFree(
      pools.filter(p => poolAllows(p, req.namespace)),
      taken,
      cursors,
    );
    if (free === undefined) {
      results.set(req.key, {
        kind: "notAssigned",
        message: `no free address in the address pools open to namespace "${req.namespace}"; add addresses to a pool or delete an unused Gateway`,
      });
    } else {
      taken.add(free);
      results.set(req.key, { kind: "assigned", address: formatIPv4(free) });
    }
  }
  return results;
}

/** Lowest free address; a cursor per range (addresses below it are taken) keeps n allocations linear. */
function firstFree(
  pools: ParsedPool[],
  taken: Set<number>,
  cursors: Map<Range, number>,
): number | undefined {
  for (const pool of pools) {
    for (const range of pool.ranges) {
      let a = cursors.get(range) ?? range.first;
      while (a <= range.last && taken.has(a)) a++;
      cursors.set(range, a);
      if (a <= range.last) return a;
    }
  }
  return undefined;
}

/**
 * The node that announces an address: the current one while it stays ready (so an address
 * moves only when its node goes), or while no other node can take it, else the highest rendezvous hash of address and node name
 * among ready nodes whose agent is ready, so every controller replica picks the same node and
 * a node leaving moves only its own addresses.
 */
export function announcingNode(
  address: string,
  nodes: NodeInfo[],
  current: string | undefined,
): string | undefined {
  const candidates = nodes.filter(
    n => n?.ready === true && n?.agentReady === true && typeof n.name === "string",
  );
  if (current !== undefined && candidates.some(n => n.name === current)) return current;
  const best = rendezvousPick(
    address,
    candidates.map(n => n.name),
  );
  // With nowhere else to go (the only agent restarting, say), the address stays where it is:
  // that node's programs keep forwarding, and taking the announcement away would only stop
  // the ARP answers clients need until an agent is ready again.
  if (!best && current !== undefined && nodes.some(n => n?.name === current)) return current;
  return best;
}
