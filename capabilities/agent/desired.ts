// SPDX-License-Identifier: Apache-2.0
// The node agent's decisions, as pure functions: which services and Gateway addresses this
// node's maps must hold (from the DataplaneConfigs), how that differs from what the maps hold
// now, what this node writes into each DataplaneConfig's status, and how long to wait before
// retrying a failed apply. No I/O: the agent feeds in plain objects and acts on the answer.
import { isIPv4 } from "node:net";
import type {
  DataplaneConfig,
  Endpoint,
  Listener,
  Node as NodeStatus,
} from "../generated/dataplaneconfig-v1alpha1.js";
import {
  mergeBackends,
  serviceName,
  serviceTable,
  type Backend,
  type ServiceSpec,
  type TableEntry,
} from "../dataplane/tables.js";
import type { ActualService, ActualState, DataplaneDiff } from "../dataplane/lines.js";
import type { AttachMode } from "../dataplane/mode.js";
import { CHUNK_SLOTS } from "../dataplane/maps.js";
import { parseIPv4 } from "../ipv4.js";
import { announcerOf, type Liveness } from "./leases.js";
import { dataplaneConfigProblems } from "../dataplaneconfig-check.js";

/** Each config's spec problems, computed once per object the agent holds (a change is a new object). */
const specProblems = new WeakMap<DataplaneConfig, string[]>();

function checkedSpec(config: DataplaneConfig): string[] {
  let problems = specProblems.get(config);
  if (!problems) specProblems.set(config, (problems = dataplaneConfigProblems(config)));
  return problems;
}

/** "namespace/name" of a DataplaneConfig (and of its Gateway: same namespace, same name). */
export type ConfigKey = string;

export const configKey = (config: DataplaneConfig): ConfigKey =>
  `${config.metadata?.namespace ?? ""}/${config.metadata?.name ?? ""}`;

/** "namespace/gateway#listener": one listener of one Gateway, whatever its address. */
export const listenerKey = (config: DataplaneConfig, listenerName: string): string =>
  `${configKey(config)}#${listenerName}`;

/** The Gateway listener a service in the maps stands for, to label metrics and logs. */
export interface ListenerRef {
  config: ConfigKey;
  namespace: string;
  gateway: string;
  listener: string;
  port: number;
  protocol: "TCP" | "UDP";
}

export interface DesiredState {
  /** every service this node programs, backends merged and sorted, by serviceName */
  services: ServiceSpec[];
  /** every Gateway address (sorted): a packet to one on a port no listener has is refused */
  addresses: string[];
  /** the addresses whose DataplaneConfig names this node as announcingNode (sorted) */
  announced: string[];
  /** serviceName → the listener it serves */
  listeners: Map<string, ListenerRef>;
  /** configs (by key) that cannot be applied as they are, and why; the rest still apply */
  problems: Map<ConfigKey, string>;
  /**
   * configs (by key) that apply, but with endpoints whose share this node refuses (their node
   * has no agent entry in the config's status), and which: the node's status entry says so
   */
  warnings: Map<ConfigKey, string>;
  /** serviceName → its unavailable endpoints (the metric counts them per listener) */
  unavailable: Map<string, UnavailableEndpoint[]>;
}

/**
 * Where an endpoint is, as one node sees it. local: on this node, or on no node the
 * EndpointSlice named (forwarded directly). remote: on another node whose agent has an entry
 * in the config's status.nodes, so it has programmed this Gateway and decapsulates for it
 * (forwarded IP-in-IP). unavailable: on a node with no such entry (unknown to blixt, or its
 * agent has not acknowledged yet): its share of new flows is refused, never sent where no one
 * would deliver it.
 */
export type EndpointPlace = "local" | "remote" | "unavailable";

/** An endpoint this node refuses the share of, and the node it is on. */
export interface UnavailableEndpoint {
  address: string;
  port: number;
  nodeName: string;
}

/** How `nodeName` places each endpoint of `config`: by the nodes in its status.nodes. */
export function endpointPlaces(
  config: Pick<DataplaneConfig, "status">,
  nodeName: string,
): (endpoint: Pick<Endpoint, "nodeName">) => EndpointPlace {
  const agents = new Set((config.status?.nodes ?? []).map(n => n.name));
  return ({ nodeName: on }) =>
    !on || on === nodeName ? "local" : agents.has(on) ? "remote" : "unavailable";
}

// How many unavailable endpoints a status message names; the rest are counted.
const NAMED_ENDPOINTS = 3;

/** The status message for a config's unavailable endpoints: the first few named, the rest counted. */
export function unavailableMessage(
  key: ConfigKey,
  nodeName: string,
  endpoints: UnavailableEndpoint[],
): string {
  const named = endpoints
    .slice(0, NAMED_ENDPOINTS)
    .map(e => `${e.address}:${e.port} (node ${JSON.stringify(e.nodeName)})`);
  const rest = endpoints.length - named.length;
  const count = `${endpoints.length} endpoint${endpoints.length === 1 ? "" : "s"}`;
  return `DataplaneConfig ${key}: node ${nodeName} refuses the share of new flows of ${count} whose node has no blixt agent entry in this DataplaneConfig's status: ${named.join(", ")}${rest > 0 ? `, and ${rest} more` : ""}; run the blixt node agent on that node (or wait for it to acknowledge)`;
}

// Backend weights in the maps are u32; keep exact ratios only while they fit well below that.
const MAX_EXACT_WEIGHT = 0x7fffffff;
// When exact ratios do not fit, weights are rounded onto this scale: far finer than the
// Maglev table (at most 65521 slots) can express, so the rounding never shows in traffic.
const ROUNDED_SCALE = 1_000_000;

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
const lcm = (a: number, b: number): number => (a / gcd(a, b)) * b;

/**
 * A listener's backendRefs as per-endpoint integer weights. A backendRef's weight is split
 * evenly over its endpoints (the CRD says so); to keep that exact in integers every weight is
 * scaled by the lcm of the endpoint counts, then everything is divided by the common gcd.
 * `place` says where each endpoint is (by default every one is local): an unavailable one's
 * share joins rejectWeight, so the others keep exactly the shares they would have had.
 */
export function listenerWeights(
  listener: Pick<Listener, "backends" | "rejectWeight">,
  place: (endpoint: Endpoint) => EndpointPlace = () => "local",
): {
  backends: Backend[];
  rejectWeight: number;
  /** endpoints whose share went to rejectWeight, once each, in address order */
  unavailable: UnavailableEndpoint[];
} {
  const refs = listener.backends.filter(b => b.weight > 0 && b.endpoints.length > 0);
  const places = new Map(refs.flatMap(b => b.endpoints.map(e => [e, place(e)] as const)));
  // An unavailable endpoint's share joins the rejected share; the others are backends.
  const split = (weighted: { endpoint: Endpoint; weight: number }[], rejected: number) => {
    const backends: Backend[] = [];
    let rejectWeight = rejected;
    for (const { endpoint, weight } of weighted) {
      const where = places.get(endpoint);
      if (where === "unavailable") rejectWeight += weight;
      else
        backends.push({
          ip: endpoint.address,
          port: endpoint.port,
          weight,
          ...(where === "remote" ? { remote: true } : {}),
        });
    }
    return { backends, rejectWeight };
  };
  const scale = refs.reduce((l, b) => lcm(l, b.endpoints.length), 1);
  let { backends, rejectWeight } = split(
    refs.flatMap(b =>
      b.endpoints.map(endpoint => ({
        endpoint,
        weight: (b.weight * scale) / b.endpoints.length,
      })),
    ),
    listener.rejectWeight * scale,
  );
  if (
    ![...backends.map(b => b.weight), rejectWeight].every(
      w => Number.isSafeInteger(w) && w <= MAX_EXACT_WEIGHT,
    )
  ) {
    const total = refs.reduce((s, b) => s + b.weight, 0) + listener.rejectWeight;
    const round = (share: number) => Math.max(1, Math.round((share / total) * ROUNDED_SCALE));
    ({ backends, rejectWeight } = split(
      refs.flatMap(b =>
        b.endpoints.map(endpoint => ({ endpoint, weight: round(b.weight / b.endpoints.length) })),
      ),
      listener.rejectWeight > 0 ? round(listener.rejectWeight) : 0,
    ));
  }
  // Merge first (one endpoint behind two backendRefs carries both shares), then reduce.
  backends = mergeBackends(backends);
  const divisor =
    [...backends.map(b => b.weight), rejectWeight].filter(w => w > 0).reduce(gcd, 0) || 1;
  const unavailable = new Map<string, UnavailableEndpoint>();
  for (const [e, where] of places)
    if (where === "unavailable" && e.nodeName)
      unavailable.set(`${e.address}:${e.port}`, {
        address: e.address,
        port: e.port,
        nodeName: e.nodeName,
      });
  return {
    backends: backends.map(b => ({ ...b, weight: b.weight / divisor })),
    rejectWeight: rejectWeight / divisor,
    unavailable: sortEndpoints([...unavailable.values()]),
  };
}

/** Numeric address order (10.0.0.9 before 10.0.0.10), then port, then node. */
const sortEndpoints = (endpoints: UnavailableEndpoint[]): UnavailableEndpoint[] =>
  endpoints
    .map(e => ({ e, n: parseIPv4(e.address) ?? -1 }))
    .sort(
      (a, b) =>
        a.n - b.n ||
        a.e.port - b.e.port ||
        (a.e.nodeName < b.e.nodeName ? -1 : a.e.nodeName > b.e.nodeName ? 1 : 0),
    )
    .map(({ e }) => e);

const byKey = (a: DataplaneConfig, b: DataplaneConfig) =>
  configKey(a) < configKey(b) ? -1 : configKey(a) > configKey(b) ? 1 : 0;

/** What the TLS terminator of an HTTPS listener is on this node: serving at address:port, or why not. */
export type TlsOutcome =
  | { ok: true; address: string; port: number; warning?: string }
  | { ok: false; error: string };

/**
 * The service an HTTPS listener is programmed as: every accepted connection goes to the
 * node-local terminator (which spreads them over the backends), and the invalid backendRefs'
 * share is refused in the kernel, as for a TCP listener. With no usable backend, or no
 * terminator, every connection is refused.
 */
export function terminatedService(
  weights: { backends: Backend[]; rejectWeight: number },
  outcome: TlsOutcome | undefined,
): { backends: Backend[]; rejectWeight: number } {
  const served = weights.backends.reduce((s, b) => s + Math.max(0, b.weight), 0);
  if (!outcome?.ok || served <= 0) return { backends: [], rejectWeight: 0 };
  let weight = served;
  let rejectWeight = weights.rejectWeight;
  if (weight > MAX_EXACT_WEIGHT || rejectWeight > MAX_EXACT_WEIGHT) {
    const total = weight + rejectWeight;
    weight = Math.max(1, Math.round((weight / total) * ROUNDED_SCALE));
    rejectWeight =
      rejectWeight > 0 ? Math.max(1, Math.round((rejectWeight / total) * ROUNDED_SCALE)) : 0;
  }
  const divisor = rejectWeight > 0 ? gcd(weight, rejectWeight) : weight;
  return {
    backends: [{ ip: outcome.address, port: outcome.port, weight: weight / divisor }],
    rejectWeight: rejectWeight / divisor,
  };
}

/**
 * What this node's maps must hold. Every node programs every Gateway's listeners (so a node
 * that takes an address over serves it at once); only the announcing node answers ARP for an
 * address: the controller's choice, or once its Lease lapsed (`liveness`, the agent Leases as
 * this agent sees them) the live node leases.ts announcerOf picks. A config that cannot be
 * applied (an address the dataplane cannot take, a listener another Gateway already holds) is
 * left out and named in `problems`, and the others apply.
 * An HTTPS listener (one with `tls`) is steered to this node's TLS terminator, `tls` by
 * listenerKey; one whose terminator cannot run is refused, named in `problems`, and the
 * config's other listeners still apply. Which endpoints this node can reach depends on the
 * config's status.nodes (endpointPlaces): a status-only change can change the maps.
 */
export function desiredState(
  configs: DataplaneConfig[],
  nodeName: string,
  tls: Map<string, TlsOutcome> = new Map(),
  liveness?: Liveness,
): DesiredState {
  const services = new Map<string, ServiceSpec>();
  const listeners = new Map<string, ListenerRef>();
  const problems = new Map<ConfigKey, string>();
  const warnings = new Map<ConfigKey, string>();
  const unavailable = new Map<string, UnavailableEndpoint[]>();
  const addresses = new Set<string>();
  const announced = new Set<string>();

  // Oldest name first, so when two configs collide the same one wins on every node.
  for (const config of [...configs].sort(byKey)) {
    const key = configKey(config);
    const spec = config.spec;
    if (!spec?.address) continue; // no address assigned yet: nothing to program
    if (!isIPv4(spec.address)) {
      problems.set(
        key,
        `DataplaneConfig ${key}: spec.address "${spec.address}" is not an IPv4 address; this dataplane serves IPv4 only, so the Gateway is not programmed on node ${nodeName}`,
      );
      continue;
    }
    // The API server keeps listener entries as they come (the CRD leaves them without a
    // schema): a table blixt's controller did not write is refused here, not programmed.
    const invalid = checkedSpec(config);
    if (invalid.length > 0) {
      problems.set(
        key,
        `DataplaneConfig ${key}: not programmed on node ${nodeName}, its spec is not one blixt's controller writes: ${invalid.join("; ")}; only the controller writes spec (is the admission webhook installed?), and its next write of this table replaces it`,
      );
      continue;
    }
    const mine: [string, ServiceSpec, ListenerRef, UnavailableEndpoint[]][] = [];
    const clashes: string[] = [];
    const tlsProblems: string[] = [];
    const place = endpointPlaces(config, nodeName);
    for (const listener of spec.listeners ?? []) {
      const proto = listener.protocol === "UDP" ? "udp" : "tcp";
      const name = serviceName({ vip: spec.address, port: listener.port, proto });
      const holder = listeners.get(name);
      if (holder) {
        clashes.push(
          `listener "${listener.name}" (${name}) is already served for DataplaneConfig ${holder.config}`,
        );
        continue;
      }
      // A TLS terminator reaches its backends through the node's own network stack, so for
      // an HTTPS listener every endpoint counts as reachable.
      const { unavailable: refused, ...weighted } = listenerWeights(
        listener,
        listener.tls ? undefined : place,
      );
      let weights = weighted;
      if (listener.tls) {
        const outcome = tls.get(listenerKey(config, listener.name));
        weights = terminatedService(weights, outcome);
        if (!outcome?.ok) {
          tlsProblems.push(
            `HTTPS listener "${listener.name}" (${name}) refuses connections on node ${nodeName}: ${outcome?.error ?? "no TLS terminator runs for it on this node"}`,
          );
        } else if (outcome.warning) {
          tlsProblems.push(
            `HTTPS listener "${listener.name}" (${name}) on node ${nodeName}: ${outcome.warning}`,
          );
        }
      }
      mine.push([
        name,
        {
          vip: spec.address,
          port: listener.port,
          proto,
          backends: weights.backends,
          rejectWeight: weights.rejectWeight,
        },
        {
          config: key,
          namespace: config.metadata?.namespace ?? "",
          gateway: spec.gatewayName,
          listener: listener.name,
          port: listener.port,
          protocol: listener.protocol === "UDP" ? "UDP" : "TCP",
        },
        refused,
      ]);
    }
    if (clashes.length > 0) {
      problems.set(
        key,
        `DataplaneConfig ${key}: ${clashes.join("; ")}; give each Gateway its own address`,
      );
      continue;
    }
    const refused = new Map<string, UnavailableEndpoint>();
    for (const [name, service, ref, endpoints] of mine) {
      services.set(name, service);
      listeners.set(name, ref);
      if (endpoints.length > 0) unavailable.set(name, endpoints);
      for (const e of endpoints) refused.set(`${e.address}:${e.port}`, e);
    }
    const warning =
      refused.size > 0
        ? unavailableMessage(key, nodeName, sortEndpoints([...refused.values()]))
        : undefined;
    if (tlsProblems.length > 0)
      problems.set(
        key,
        `DataplaneConfig ${key}: ${tlsProblems.join("; ")}${warning ? `; ${warning}` : ""}`,
      );
    else if (warning) warnings.set(key, warning);
    addresses.add(spec.address);
    if (announcerOf(spec.address, spec.announcingNode, liveness, nodeName) === nodeName)
      announced.add(spec.address);
  }
  return {
    services: [...services.keys()].sort().map(name => services.get(name)!),
    addresses: [...addresses].sort(),
    announced: [...announced].sort(),
    listeners,
    problems,
    warnings,
    unavailable,
  };
}

// ---- diff ----------------------------------------------------------------------------------

export const changeCount = (d: DataplaneDiff): number =>
  d.set.length + d.remove.length + d.addresses.upsert.length + d.addresses.remove.length;

const weighted = (backends: Backend[]) => backends.filter(b => b.weight > 0);

// `remote` is compared only when the maps read back say (a dataplane that does not encode it
// would otherwise look changed on every pass).
const sameBackends = (want: Backend[], have: Backend[]) =>
  want.length === have.length &&
  want.every(
    (x, i) =>
      x.ip === have[i].ip &&
      x.port === have[i].port &&
      x.weight === have[i].weight &&
      (have[i].remote === undefined || Boolean(x.remote) === have[i].remote),
  );

const sameEntry = (a: TableEntry | undefined, b: TableEntry | undefined): boolean =>
  a === "reject" || b === "reject" || a === undefined || b === undefined
    ? a === b
    : a.ip === b.ip && a.port === b.port && Boolean(a.remote) === Boolean(b.remote);

/** Whether the live table matches the Maglev table the spec builds: in size, backend list, and every sampled chunk. */
function tableIntact(spec: ServiceSpec, actual: ActualService): boolean {
  const expected = serviceTable(spec.backends, spec.rejectWeight);
  if (actual.tableSize !== expected.tableSize) return false;
  if (actual.tableBackends) {
    if (actual.tableBackends.size !== expected.backends.length) return false;
    if (
      !expected.backends.every((want, index) => sameEntry(want, actual.tableBackends!.get(index)))
    )
      return false;
  }
  for (const [chunk, got] of actual.chunks ?? []) {
    if (!got) return false;
    const from = chunk * CHUNK_SLOTS;
    const to = Math.min(expected.tableSize, from + CHUNK_SLOTS);
    for (let slot = from; slot < to; slot++)
      if (got[slot - from] !== expected.slots[slot]) return false;
  }
  return true;
}

/** What to write so the maps hold `desired`: only what differs, so an unchanged service keeps its table. */
export function diffState(
  desired: Pick<DesiredState, "services" | "addresses" | "announced">,
  actual: ActualState,
): DataplaneDiff {
  const have = new Map(actual.services.map(s => [serviceName(s), s]));
  const want = new Map(desired.services.map(s => [serviceName(s), s]));
  const set: ServiceSpec[] = [];
  const reasons = new Map<string, string>();
  for (const [name, spec] of want) {
    const current = have.get(name);
    const backends = mergeBackends(spec.backends);
    const normalized = { ...spec, backends };
    let reason: string | undefined;
    if (!current) reason = "new";
    // The maps hold a table's weighted members only (blixt_backends): a backend of weight 0 is
    // as absent, there and for every packet.
    else if (!sameBackends(weighted(backends), weighted(mergeBackends(current.backends))))
      reason = "backends";
    else if (current.rejectWeight !== spec.rejectWeight) reason = "rejectWeight";
    else if (!tableIntact(normalized, current)) reason = "table";
    if (reason) {
      set.push(normalized);
      reasons.set(name, reason);
    }
  }
  const remove = [...have.entries()]
    .filter(([name]) => !want.has(name))
    .map(([, s]) => ({ vip: s.vip, port: s.port, proto: s.proto }));
  const announced = new Set(desired.announced);
  const haveAddresses = new Map(actual.addresses.map(a => [a.ip, a.announce]));
  const wantAddresses = [...new Set(desired.addresses)].sort();
  const addresses = {
    upsert: wantAddresses
      .filter(ip => haveAddresses.get(ip) !== announced.has(ip))
      .map(ip => ({ ip, announce: announced.has(ip) })),
    remove: [...haveAddresses.keys()].filter(ip => !wantAddresses.includes(ip)).sort(),
  };
  return { set, remove, addresses, reasons };
}

/** The services of one Gateway that a diff touches, for the per-Gateway apply log line. */
export function changesByConfig(
  diff: DataplaneDiff,
  listeners: Map<string, ListenerRef>,
  previous: Map<string, ListenerRef>,
): Map<ConfigKey, number> {
  const counts = new Map<ConfigKey, number>();
  const bump = (key: ConfigKey | undefined) =>
    key !== undefined && counts.set(key, (counts.get(key) ?? 0) + 1);
  for (const s of diff.set) bump(listeners.get(serviceName(s))?.config);
  // A removed service belonged to a Gateway this agent knew before (or to no one known).
  for (const s of diff.remove) bump(previous.get(serviceName(s))?.config ?? "");
  return counts;
}

// ---- acknowledgement -----------------------------------------------------------------------

/**
 * The outcome of applying one config on this node. An applied config may still carry a
 * message: which endpoints' share this node refuses.
 */
export type ApplyOutcome =
  | { applied: true; message?: string }
  | { applied: false; message: string };

// The CRD caps status.nodes[].message at 1024 characters.
const MAX_MESSAGE = 1024;

const timeString = (t: Date | string | undefined): string | undefined =>
  t === undefined ? undefined : t instanceof Date ? t.toISOString() : t;

/** This node's current entry in a config's status, if it has one. */
export const nodeEntry = (config: DataplaneConfig, nodeName: string): NodeStatus | undefined =>
  config.status?.nodes?.find(n => n.name === nodeName);

/** This node's entry in status.nodes, as written to the API server. */
export interface NodeAck {
  name: string;
  observedGeneration: number;
  mode: AttachMode;
  message?: string;
  /** RFC 3339: when observedGeneration last changed */
  lastTransitionTime: string;
}

/**
 * The status entry this node should have for a config, or undefined when the one it has is
 * already right (so an acknowledgement never triggers another one). After a failure the
 * entry keeps the generation that last applied, and says why the new one did not.
 */
export function nodeAck(
  config: DataplaneConfig,
  nodeName: string,
  outcome: ApplyOutcome,
  mode: AttachMode,
  now: string,
): NodeAck | undefined {
  const current = nodeEntry(config, nodeName);
  const generation = Number(config.metadata?.generation ?? 0);
  const observedGeneration = outcome.applied ? generation : (current?.observedGeneration ?? 0);
  const message =
    outcome.message === undefined || outcome.message.length <= MAX_MESSAGE
      ? outcome.message
      : `${outcome.message.slice(0, MAX_MESSAGE - 1)}…`;
  const moved = current?.observedGeneration !== observedGeneration;
  const since = timeString(current?.lastTransitionTime);
  if (
    current &&
    !moved &&
    current.mode === mode &&
    current.message === message &&
    since !== undefined
  )
    return undefined;
  const ack: NodeAck = {
    name: nodeName,
    observedGeneration,
    mode,
    lastTransitionTime: moved || since === undefined ? now : since,
  };
  if (message !== undefined) ack.message = message;
  return ack;
}

// ---- retry ---------------------------------------------------------------------------------

/** Delay before retry number `attempt` (1-based) of a failed apply: doubling from `base`, capped at `max`. */
export function retryDelay(attempt: number, base = 500, max = 30_000): number {
  return Math.min(max, base * 2 ** Math.max(0, attempt - 1));
}
