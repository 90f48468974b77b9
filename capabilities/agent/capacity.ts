// SPDX-License-Identifier: Apache-2.0
// What the sized maps can hold, planned before anything is written: a DataplaneConfig whose
// services do not fit in what the other configs left is refused alone (its node status says
// which map is full and which chart value raises it), and every other config applies. Without
// this one config too many would fail the node's whole batch, and every config on the node
// would acknowledge a failure. Pure.
import { maglevTableSize } from "../dataplane/maglev.js";
import { chunkCount, type MapSizes } from "../dataplane/maps.js";
import type { MapsSnapshot, ServiceState } from "../dataplane/lines.js";
import { mergeBackends, serviceName, tableKey, type ServiceSpec } from "../dataplane/tables.js";
import type { ConfigKey, DesiredState } from "./desired.js";

/** The resources a service takes, one count per sized map (conntrack is an LRU: never full). */
export type Usage = Omit<MapSizes, "conntrack">;
const RESOURCES = ["services", "backends", "tableChunks", "tableBackends"] as const;

/** How each resource is named to the user: the map, and the chart value that sizes it. */
const NAMES: Record<keyof Usage, { what: string; map: string; value: string }> = {
  services: { what: "services", map: "blixt_services", value: "agent.maps.services" },
  backends: {
    what: "table member entries",
    map: "blixt_backends",
    value: "agent.maps.backends",
  },
  tableChunks: {
    what: "Maglev table chunks",
    map: "blixt_mg_chunks",
    value: "agent.maps.tableChunks",
  },
  tableBackends: {
    what: "table backend entries",
    map: "blixt_mg_backs",
    value: "agent.maps.tableBackends",
  },
};

/** What a refusal's message says, so the controller can tell it (Programmed: NoResources). */
export const NO_ROOM = "does not fit in the dataplane";

const zero = (): Usage => ({ services: 0, backends: 0, tableChunks: 0, tableBackends: 0 });

/**
 * What one service takes when written as `spec` (lines.ts serviceUpdateLines writes it so): its
 * entry, and its table (backend list, members, chunks), which services of equal tables share.
 */
export function serviceUsage(spec: Pick<ServiceSpec, "backends" | "rejectWeight">): Usage {
  const weighted = mergeBackends(spec.backends).filter(b => b.weight > 0).length;
  const members = weighted + (spec.rejectWeight > 0 ? 1 : 0);
  return {
    services: 1,
    backends: weighted,
    tableChunks: members > 0 ? chunkCount(maglevTableSize(members)) : 0,
    tableBackends: members,
  };
}

/** What one service takes in the maps now (its entry, and its live table with its members). */
export function heldUsage(state: ServiceState): Usage {
  return {
    services: 1,
    backends: state.backends.length,
    tableChunks: chunkCount(state.value.tableSize),
    tableBackends: state.tableBackends.length,
  };
}

const max = (a: Usage, b: Usage): Usage =>
  Object.fromEntries(RESOURCES.map(r => [r, Math.max(a[r], b[r])])) as Usage;
const add = (a: Usage, b: Usage): Usage =>
  Object.fromEntries(RESOURCES.map(r => [r, a[r] + b[r]])) as Usage;

/**
 * `desired` with the configs that do not fit `limits` refused, named in `problems`: what the
 * maps hold for such a config stays as it is (its services, unchanged; the generation its node
 * status names keeps serving), and nothing new of it is written. Configs are admitted in
 * `order` (the oldest first, so a new Gateway cannot push out one that runs, and every node
 * decides alike). A service counts for the larger of what it will take and what it takes now
 * (a table is rewritten beside the live one, and a shrinking one frees its space only after),
 * and room for one more table as large as the largest is kept free for that rewrite. A table
 * services share (the same weighted backends) counts once.
 */
export function admitByCapacity(
  desired: DesiredState,
  order: ConfigKey[],
  limits: Usage,
  snapshot: Pick<MapsSnapshot, "states" | "actual">,
  nodeName: string,
): DesiredState {
  const byConfig = new Map<ConfigKey, ServiceSpec[]>();
  let headroom = zero();
  for (const service of desired.services) {
    const key = desired.listeners.get(serviceName(service))?.config ?? "";
    byConfig.set(key, [...(byConfig.get(key) ?? []), service]);
    headroom = max(headroom, { ...serviceUsage(service), services: 0 });
  }
  const rank = new Map(order.map((key, i) => [key, i]));
  const keys = [...byConfig.keys()].sort(
    (a, b) => (rank.get(a) ?? Infinity) - (rank.get(b) ?? Infinity) || (a < b ? -1 : 1),
  );
  let taken = zero();
  const refused = new Map<ConfigKey, string>();
  // Services with the same table content share one table (lines.ts applyLines): a table counts
  // once, for the first config that needs it (by content) or holds it (by id).
  const counted = new Set<string>();
  const countedHeld = new Set<number>([0]);
  const withoutTable = (u: Usage): Usage => ({
    ...u,
    backends: 0,
    tableChunks: 0,
    tableBackends: 0,
  });
  for (const key of keys) {
    let need = zero();
    let holds = zero();
    const contents = new Set<string>();
    const ids = new Set<number>();
    for (const service of byConfig.get(key)!) {
      const now = snapshot.states.get(serviceName(service));
      const content = tableKey(service.backends, service.rejectWeight);
      let usage = serviceUsage(service);
      if (counted.has(content) || contents.has(content)) usage = withoutTable(usage);
      contents.add(content);
      let held = now ? heldUsage(now) : undefined;
      if (now && held) {
        const id = now.value.tableId;
        if (countedHeld.has(id) || ids.has(id)) held = withoutTable(held);
        ids.add(id);
      }
      need = add(need, held ? max(usage, held) : usage);
      if (held) holds = add(holds, held);
    }
    for (const id of ids) countedHeld.add(id);
    const full = RESOURCES.filter(r => taken[r] + need[r] + headroom[r] > limits[r]);
    if (full.length === 0) {
      taken = add(taken, need);
      for (const content of contents) counted.add(content);
      continue;
    }
    // Refused: what it holds stays, and takes its room.
    taken = add(taken, holds);
    const why = full.map(r => {
      const free = Math.max(0, limits[r] - taken[r] + holds[r] - headroom[r]);
      const { what, map, value } = NAMES[r];
      return `it needs ${need[r]} ${what} and ${free} of ${limits[r]} are free (map ${map}${headroom[r] ? `, ${headroom[r]} kept for rewriting the largest table` : ""}); raise the chart value ${value}`;
    });
    refused.set(
      key,
      `DataplaneConfig ${key} ${NO_ROOM} of node ${nodeName}: ${why.join("; ")}. What this node already serves of it stays as it was, and every other Gateway applies`,
    );
  }
  if (refused.size === 0) return desired;

  const configOf = (name: string) => desired.listeners.get(name)?.config ?? "";
  const actual = new Map(snapshot.actual.services.map(s => [serviceName(s), s]));
  const services: ServiceSpec[] = [];
  for (const service of desired.services) {
    const name = serviceName(service);
    if (!refused.has(configOf(name))) services.push(service);
    else {
      const now = actual.get(name);
      if (now)
        services.push({
          vip: now.vip,
          port: now.port,
          proto: now.proto,
          backends: now.backends,
          rejectWeight: now.rejectWeight,
        });
    }
  }
  const kept = new Set(services.map(s => serviceName(s)));
  const served = new Set(services.map(s => s.vip));
  const problems = new Map(desired.problems);
  for (const [key, message] of refused) {
    const before = problems.get(key);
    problems.set(key, before ? `${before}; ${message}` : message);
  }
  return {
    services,
    addresses: desired.addresses.filter(
      a => served.has(a) || !desired.services.some(s => s.vip === a),
    ),
    announced: desired.announced.filter(
      a => served.has(a) || !desired.services.some(s => s.vip === a),
    ),
    listeners: new Map([...desired.listeners].filter(([name]) => kept.has(name))),
    problems,
    warnings: new Map([...desired.warnings].filter(([key]) => !refused.has(key))),
    unavailable: new Map([...desired.unavailable].filter(([name]) => kept.has(name))),
  };
}
