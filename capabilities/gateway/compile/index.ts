// SPDX-License-Identifier: Apache-2.0
/**
 * The compile step: a snapshot of the cluster → the status of every object blixt owns and one
 * DataplaneConfig per accepted Gateway. Pure and deterministic: the same snapshot gives the
 * same output, byte for byte once serialised, so status writes are no-ops when nothing changed.
 */
import { allocateAddresses, announcingNode, parsePools } from "./addresses.js";
import type { AddressRequest, AddressResult } from "./addresses.js";
import type { ResolvedBackends } from "./backends.js";
import { GATEWAY_GROUP, buildBackendIndex, resolveBackends } from "./backends.js";
import type { Verdict } from "./conditions.js";
import { bad, mergeConditions, ok } from "./conditions.js";
import type { ListenerPlan } from "./listeners.js";
import { planListeners } from "./listeners.js";
import type {
  CompileOutput,
  DataplaneConfig,
  GatewayClassStatus,
  GatewayStatus,
  ParentReference,
  RouteKind,
  RouteParentStatus,
  SecretInfo,
  Snapshot,
} from "./types.js";
import { DATAPLANE_API_VERSION } from "./types.js";
import type { Meta } from "./util.js";
import { arr, byAge, cmp, int, jsonEqual, meta, nsName, obj, selectorMatches, str } from "./util.js";
import { unsupportedHTTPRouteField } from "./httproute.js";

export * from "./types.js";

/**
 * Features blixt passes in the upstream suite (GATEWAY-TCP and GATEWAY-UDP profiles): the
 * core ones, and the extended ones listed in conformance/extended-features.txt.
 */
export const SUPPORTED_FEATURES = ["Gateway", "GatewayAddressEmpty", "ReferenceGrant", "TCPRoute", "UDPRoute"];

interface GatewayPlan {
  meta: Meta;
  raw: Record<string, unknown>;
  key: string;
  className: string;
  listeners: ListenerPlan[];
  accepted: Verdict;
  address?: AddressResult;
  /** Accepted routes per listener index, oldest first once sorted. */
  attached: Map<number, RouteRecord[]>;
}

interface RouteRecord {
  kind: RouteKind;
  meta: Meta;
  raw: Record<string, unknown>;
  backends?: ResolvedBackends;
}

export function compile(snapshot: Snapshot): CompileOutput {
  const s = obj(snapshot) as Partial<Snapshot>;
  const controllerName = str(s.controllerName) ?? "";
  const now = str(s.now) ?? "1970-01-01T00:00:00Z";
  const warnings: string[] = [];

  // GatewayClasses of ours.
  const classes = new Map<string, { meta: Meta; accepted: Verdict }>();
  const gatewayClasses: CompileOutput["gatewayClasses"] = [];
  for (const raw of arr(s.gatewayClasses)) {
    const m = meta(raw);
    const spec = obj(obj(raw).spec);
    if (spec.controllerName !== controllerName || !m.name) continue;
    const accepted =
      spec.parametersRef !== undefined
        ? bad("Accepted", "InvalidParameters", `spec.parametersRef: blixt defines no parameters kind, so ${describeRef(spec.parametersRef)} cannot be used; remove spec.parametersRef`)
        : ok("Accepted", "Accepted", "GatewayClass is accepted by blixt");
    classes.set(m.name, { meta: m, accepted });
    const status: GatewayClassStatus = {
      conditions: mergeConditions(obj(obj(raw).status).conditions, [accepted], m.generation, now),
      supportedFeatures: [...SUPPORTED_FEATURES].sort(cmp).map((name) => ({ name })),
    };
    gatewayClasses.push({ name: m.name, status });
  }
  gatewayClasses.sort((a, b) => cmp(a.name, b.name));

  const index = buildBackendIndex(arr(s.services), arr(s.endpointSlices), arr(s.referenceGrants));
  const secrets = new Map<string, SecretInfo>();
  for (const secret of arr(s.secrets) as SecretInfo[]) {
    if (typeof secret?.namespace === "string" && typeof secret?.name === "string") secrets.set(`${secret.namespace}/${secret.name}`, secret);
  }
  const namespaceLabels = new Map<string, Record<string, string>>();
  for (const ns of arr(s.namespaces)) {
    const m = meta(ns);
    namespaceLabels.set(m.name, { "kubernetes.io/metadata.name": m.name, ...m.labels });
  }
  const labelsOf = (ns: string) => namespaceLabels.get(ns) ?? { "kubernetes.io/metadata.name": ns };

  // Gateways of our classes, oldest first so older Gateways win address clashes.
  const gateways: GatewayPlan[] = [];
  for (const raw of arr(s.gateways)) {
    const m = meta(raw);
    const spec = obj(obj(raw).spec);
    const className = str(spec.gatewayClassName) ?? "";
    const gatewayClass = classes.get(className);
    // A Gateway being deleted gives up its address and table now, not when it is gone.
    if (!gatewayClass || !m.name || obj(obj(raw).metadata).deletionTimestamp) continue;
    const listeners = planListeners({ namespace: m.namespace, name: m.name }, arr(spec.listeners), secrets, index);
    gateways.push({
      meta: m,
      raw: obj(raw),
      key: nsName(m.namespace, m.name),
      className,
      listeners,
      accepted: gatewayAccepted(spec, listeners, gatewayClass.accepted, className),
      attached: new Map(),
    });
  }
  gateways.sort((a, b) => byAge(a.meta, b.meta));
  const gatewayByKey = new Map(gateways.map((g) => [g.key, g]));

  // Addresses for accepted Gateways.
  const pools = parsePools(arr(s.addressPools) as Snapshot["addressPools"]);
  warnings.push(...pools.warnings);
  const requests: AddressRequest[] = [];
  for (const g of gateways) {
    if (g.accepted.status !== "True") continue;
    const ips = arr(obj(g.raw.spec).addresses)
      .map(obj)
      .filter((a) => (str(a.type) ?? "IPAddress") === "IPAddress" && str(a.value))
      .map((a) => str(a.value) as string);
    requests.push({ key: g.key, namespace: g.meta.namespace, ...(ips.length > 0 ? { requested: ips } : {}) });
  }
  const addresses = allocateAddresses(requests, pools.pools, obj(s.allocations) as Record<string, string>);
  const allocations: Record<string, string> = {};
  for (const g of gateways) {
    g.address = addresses.get(g.key);
    if (g.address?.kind === "assigned") allocations[g.key] = g.address.address;
  }

  // Routes: attach each parentRef, resolve backends once per route.
  const routes: RouteRecord[] = [];
  const collect = (kind: RouteKind, list: unknown) => {
    for (const raw of arr(list)) {
      const m = meta(raw);
      if (m.name) routes.push({ kind, meta: m, raw: obj(raw) });
    }
  };
  collect("TCPRoute", s.tcpRoutes);
  collect("UDPRoute", s.udpRoutes);
  collect("HTTPRoute", s.httpRoutes);
  routes.sort((a, b) => cmp(a.kind, b.kind) || cmp(a.meta.namespace, b.meta.namespace) || cmp(a.meta.name, b.meta.name));

  const routeOutputs: CompileOutput["routes"] = [];
  for (const route of routes) {
    const spec = obj(route.raw.spec);
    const ours: RouteParentStatus[] = [];
    const seen = new Set<string>();
    const previousParents = arr(obj(route.raw.status).parents).map(obj);
    for (const rawRef of arr(spec.parentRefs)) {
      const ref = obj(rawRef);
      const group = str(ref.group) ?? GATEWAY_GROUP;
      const kind = str(ref.kind) ?? "Gateway";
      if (group !== GATEWAY_GROUP || kind !== "Gateway") continue;
      const parentRef: ParentReference = {
        group,
        kind,
        namespace: str(ref.namespace) || route.meta.namespace,
        name: str(ref.name) ?? "",
      };
      if (str(ref.sectionName)) parentRef.sectionName = str(ref.sectionName);
      if (ref.port !== undefined) parentRef.port = int(ref.port) ?? (ref.port as number);
      const gateway = gatewayByKey.get(nsName(parentRef.namespace as string, parentRef.name));
      if (!gateway) continue;
      const refKey = `${parentRef.namespace}/${parentRef.name}/${parentRef.sectionName ?? ""}/${parentRef.port ?? ""}`;
      if (seen.has(refKey)) continue;
      seen.add(refKey);

      const accepted = attachRoute(route, parentRef, gateway, labelsOf);
      route.backends ??= resolveBackends(index, { kind: route.kind, namespace: route.meta.namespace, name: route.meta.name }, routeBackendRefs(spec));
      const previous = previousParents.find((p) => p.controllerName === controllerName && jsonEqual(normalizeRef(p.parentRef, route.meta.namespace), parentRef));
      ours.push({
        parentRef,
        controllerName,
        conditions: mergeConditions(previous?.conditions, [accepted, route.backends.resolvedRefs], route.meta.generation, now),
      });
    }
    const hadOurs = previousParents.some((p) => p.controllerName === controllerName);
    if (ours.length === 0 && !hadOurs) continue;
    // Other controllers' entries are theirs: passed through as they were.
    const foreign = previousParents.filter((p) => p.controllerName !== controllerName) as unknown as RouteParentStatus[];
    routeOutputs.push({
      kind: route.kind,
      namespace: route.meta.namespace,
      name: route.meta.name,
      status: { parents: [...ours, ...foreign] },
    });
  }

  // Gateways: statuses and tables.
  const existingConfigs = new Map<string, DataplaneConfig>();
  for (const dc of arr(s.dataplaneConfigs) as DataplaneConfig[]) {
    const m = meta(dc);
    existingConfigs.set(nsName(m.namespace, m.name), dc);
  }
  const nodes = arr(s.nodes) as Snapshot["nodes"];
  const gatewayOutputs: CompileOutput["gateways"] = [];
  const dataplaneConfigs: DataplaneConfig[] = [];
  for (const g of gateways) {
    for (const list of g.attached.values()) list.sort((a, b) => byAge(a.meta, b.meta));
    let programmed: Verdict;
    if (g.accepted.status !== "True") {
      programmed = bad("Programmed", "Invalid", `Gateway is not accepted: ${g.accepted.message}`);
    } else {
      const existing = existingConfigs.get(g.key);
      const config = dataplaneConfig(g, existing, nodes);
      dataplaneConfigs.push(config);
      programmed = gatewayProgrammed(g, config, existing, nodes);
    }
    const status: GatewayStatus = {
      conditions: mergeConditions(obj(g.raw.status).conditions, [g.accepted, programmed], g.meta.generation, now),
      listeners: g.listeners.map((l, i) => {
        const previous = arr(obj(g.raw.status).listeners)
          .map(obj)
          .find((p) => p.name === l.name);
        const problem = l.accepted.status !== "True" ? l.accepted : l.conflicted.status !== "False" ? l.conflicted : l.resolvedRefs;
        const listenerProgrammed = !l.valid
          ? bad("Programmed", "Invalid", `listener is not valid: ${problem.message}`)
          : programmed.status === "True"
            ? ok("Programmed", "Programmed", "Listener is programmed on every ready node")
            : bad("Programmed", programmed.reason === "Invalid" ? "Invalid" : "Pending", programmed.message);
        return {
          name: l.name,
          supportedKinds: l.supportedKinds,
          attachedRoutes: g.attached.get(i)?.length ?? 0,
          conditions: mergeConditions(previous?.conditions, [l.accepted, l.conflicted, l.resolvedRefs, listenerProgrammed], g.meta.generation, now),
        };
      }),
    };
    if (g.address?.kind === "assigned") status.addresses = [{ type: "IPAddress", value: g.address.address }];
    gatewayOutputs.push({ namespace: g.meta.namespace, name: g.meta.name, status });
  }
  gatewayOutputs.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
  dataplaneConfigs.sort((a, b) => cmp(meta(a).namespace, meta(b).namespace) || cmp(meta(a).name, meta(b).name));

  const sortedAllocations: Record<string, string> = {};
  for (const key of Object.keys(allocations).sort(cmp)) sortedAllocations[key] = allocations[key];
  return { gatewayClasses, gateways: gatewayOutputs, routes: routeOutputs, dataplaneConfigs, allocations: sortedAllocations, warnings };
}

function describeRef(ref: unknown): string {
  const r = obj(ref);
  return `${str(r.group) || "core"}/${str(r.kind) ?? "?"} ${str(r.namespace) ? `${str(r.namespace)}/` : ""}${str(r.name) ?? "?"}`;
}

function gatewayAccepted(spec: Record<string, unknown>, listeners: ListenerPlan[], classAccepted: Verdict, className: string): Verdict {
  if (classAccepted.status !== "True") {
    return bad("Accepted", "Invalid", `GatewayClass "${className}" is not accepted: ${classAccepted.message}`);
  }
  const infrastructure = obj(spec.infrastructure);
  if (infrastructure.parametersRef !== undefined) {
    return bad("Accepted", "InvalidParameters", `spec.infrastructure.parametersRef: blixt defines no parameters kind, so ${describeRef(infrastructure.parametersRef)} cannot be used; remove it`);
  }
  const unsupported = arr(spec.addresses)
    .map(obj)
    .filter((a) => (str(a.type) ?? "IPAddress") !== "IPAddress");
  if (unsupported.length > 0) {
    return bad("Accepted", "UnsupportedAddress", `spec.addresses: type ${JSON.stringify(unsupported[0].type)} is not supported; blixt assigns one address of type IPAddress`);
  }
  if (listeners.length === 0) return bad("Accepted", "ListenersNotValid", "spec.listeners is empty");
  const invalid = listeners.filter((l) => !l.healthy).map((l) => l.name);
  // A listener that is accepted and unconflicted keeps the Gateway accepted even while its
  // references do not resolve: routes still attach to it, and Programmed says it carries nothing.
  if (!listeners.some((l) => l.attachable)) return bad("Accepted", "ListenersNotValid", `no listener is valid (${invalid.join(", ")}); see status.listeners`);
  if (invalid.length > 0) {
    const which = invalid.length === 1 ? `listener ${invalid[0]} is` : `listeners ${invalid.join(", ")} are`;
    return ok("Accepted", "ListenersNotValid", `Gateway is accepted, but ${which} not valid; see status.listeners`);
  }
  return ok("Accepted", "Accepted", "Gateway is accepted");
}

function normalizeRef(ref: unknown, routeNamespace: string): ParentReference {
  const r = obj(ref);
  const out: ParentReference = {
    group: str(r.group) ?? GATEWAY_GROUP,
    kind: str(r.kind) ?? "Gateway",
    namespace: str(r.namespace) || routeNamespace,
    name: str(r.name) ?? "",
  };
  if (str(r.sectionName)) out.sectionName = str(r.sectionName);
  if (r.port !== undefined) out.port = r.port as number;
  return out;
}

function routeBackendRefs(spec: Record<string, unknown>): unknown[] {
  // TCPRoute and UDPRoute v1 have one rule; an HTTPRoute reaching here has at most one.
  return arr(spec.rules).flatMap((rule) => arr(obj(rule).backendRefs));
}

const PROTOCOL_KIND: Record<string, RouteKind> = { TCP: "TCPRoute", UDP: "UDPRoute", HTTP: "HTTPRoute", HTTPS: "HTTPRoute" };

/** Attaches a route to the listeners its parentRef selects; returns the parent's Accepted verdict. */
function attachRoute(
  route: RouteRecord,
  parentRef: ParentReference,
  gateway: GatewayPlan,
  labelsOf: (ns: string) => Record<string, string>,
): Verdict {
  const what = `Gateway ${gateway.key}`;
  // A Gateway whose listeners are all invalid still tells routes which listener refused them.
  if (gateway.accepted.status !== "True" && gateway.accepted.reason !== "ListenersNotValid") {
    return bad("Accepted", "NoMatchingParent", `${what} is not accepted: ${gateway.accepted.message}`);
  }
  const candidates = gateway.listeners
    .map((listener, i) => ({ listener, i }))
    .filter(({ listener }) => (parentRef.sectionName === undefined || listener.name === parentRef.sectionName) && (parentRef.port === undefined || listener.port === parentRef.port));
  if (candidates.length === 0) {
    const by = [parentRef.sectionName !== undefined ? `named "${parentRef.sectionName}"` : "", parentRef.port !== undefined ? `on port ${parentRef.port}` : ""].filter(Boolean).join(" ");
    return bad("Accepted", "NoMatchingParent", `${what} has no listener ${by || "at all"}`);
  }
  const reasons: string[] = [];
  const matched: number[] = [];
  for (const { listener, i } of candidates) {
    if (!listener.attachable) {
      if (parentRef.sectionName !== undefined || PROTOCOL_KIND[listener.protocol] === route.kind) reasons.push(`listener "${listener.name}" is not valid`);
      continue;
    }
    if (!listener.supportedKinds.some((k) => k.kind === route.kind)) {
      reasons.push(`listener "${listener.name}" (${listener.protocol}) does not allow ${route.kind}`);
      continue;
    }
    if (!namespaceAllowed(listener, gateway.meta.namespace, route.meta.namespace, labelsOf)) {
      reasons.push(`listener "${listener.name}" does not allow routes from namespace "${route.meta.namespace}" (allowedRoutes.namespaces.from: ${listener.allowedFrom})`);
      continue;
    }
    matched.push(i);
  }
  if (matched.length === 0) {
    return bad("Accepted", "NotAllowedByListeners", reasons.length > 0 ? reasons.join("; ") : `no listener of ${what} allows ${route.kind}`);
  }
  if (route.kind === "HTTPRoute") {
    const field = unsupportedHTTPRouteField(obj(route.raw.spec));
    if (field) return bad("Accepted", "UnsupportedValue", `${field}; blixt forwards HTTP per connection at L4, so it carries only HTTPRoutes with one rule, no matches beyond PathPrefix /, no filters, timeouts, retries or session persistence`);
  }
  for (const i of matched) {
    const list = gateway.attached.get(i) ?? [];
    if (!list.includes(route)) list.push(route);
    gateway.attached.set(i, list);
  }
  return ok("Accepted", "Accepted", `Route is accepted by ${what}`);
}

function namespaceAllowed(listener: ListenerPlan, gatewayNamespace: string, routeNamespace: string, labelsOf: (ns: string) => Record<string, string>): boolean {
  switch (listener.allowedFrom) {
    case "All":
      return true;
    case "Same":
      return routeNamespace === gatewayNamespace;
    case "Selector":
      return selectorMatches(listener.selector, labelsOf(routeNamespace));
    default:
      return false;
  }
}

/** The compiled table of one accepted Gateway. */
function dataplaneConfig(g: GatewayPlan, existing: DataplaneConfig | undefined, nodes: Snapshot["nodes"]): DataplaneConfig {
  const address = g.address?.kind === "assigned" ? g.address.address : undefined;
  const currentNode = str(obj(obj(existing).spec).announcingNode);
  const node = address ? announcingNode(address, nodes, currentNode) : undefined;

  // One table entry per (port, transport): listeners sharing one (HTTP/HTTPS by hostname) share
  // it, and the oldest route attached to any of them carries the traffic.
  const groups = new Map<string, { listeners: ListenerPlan[]; routes: RouteRecord[] }>();
  g.listeners.forEach((l, i) => {
    if (!l.valid || !l.transport) return;
    const key = `${l.port}/${l.transport}`;
    const group = groups.get(key) ?? { listeners: [], routes: [] };
    group.listeners.push(l);
    group.routes.push(...(g.attached.get(i) ?? []));
    groups.set(key, group);
  });
  const listeners = [...groups.values()].map(({ listeners: ls, routes }) => {
    const first = ls[0];
    const carrier = [...new Set(routes)].sort((a, b) => byAge(a.meta, b.meta))[0];
    const entry: NonNullable<NonNullable<DataplaneConfig["spec"]>["listeners"]>[number] = {
      name: first.name,
      port: first.port,
      protocol: first.transport as never,
      rejectWeight: carrier?.backends?.rejectWeight ?? 0,
      backends: (carrier?.backends?.backends ?? []).map((b) => ({ name: b.name, weight: b.weight, endpoints: b.endpoints })),
    };
    if (carrier) entry.route = { kind: carrier.kind as never, namespace: carrier.meta.namespace, name: carrier.meta.name };
    const certificateRefs = ls.flatMap((l) => l.certificateRefs);
    if (first.protocol === "HTTPS") entry.tls = { certificateRefs };
    return entry;
  });
  listeners.sort((a, b) => a.port - b.port || cmp(a.protocol, b.protocol));

  const spec: NonNullable<DataplaneConfig["spec"]> = {
    gatewayName: g.meta.name,
    gatewayGeneration: g.meta.generation,
    ...(address ? { address } : {}),
    ...(node ? { announcingNode: node } : {}),
    // Omitted, not [], when empty: server-side apply drops an empty list, so the spec read
    // back would never equal one written with `listeners: []`.
    ...(listeners.length > 0 ? { listeners } : {}),
  };
  const metadata: Record<string, unknown> = {
    name: g.meta.name,
    namespace: g.meta.namespace,
    labels: { "blixt.dev/gateway": g.meta.name },
  };
  if (g.meta.uid) {
    metadata.ownerReferences = [
      { apiVersion: `${GATEWAY_GROUP}/v1`, kind: "Gateway", name: g.meta.name, uid: g.meta.uid, controller: true, blockOwnerDeletion: true },
    ];
  }
  return { apiVersion: DATAPLANE_API_VERSION, kind: "DataplaneConfig", metadata, spec } as DataplaneConfig;
}

/**
 * Programmed tells the truth about traffic: an address is assigned, and every ready node agent
 * has applied the table as compiled now. The table counts as applied only when the
 * DataplaneConfig in the cluster already holds exactly this spec and each agent acknowledged
 * its metadata.generation.
 */
function gatewayProgrammed(g: GatewayPlan, config: DataplaneConfig, existing: DataplaneConfig | undefined, nodes: Snapshot["nodes"]): Verdict {
  if (g.address?.kind === "notUsable") return bad("Programmed", "AddressNotUsable", g.address.message);
  if (g.address?.kind !== "assigned") return bad("Programmed", "AddressNotAssigned", g.address?.message ?? "no address assigned");
  const agents = nodes.filter((n) => n?.ready === true && n?.agentReady === true).map((n) => n.name).sort(cmp);
  if (agents.length === 0) return bad("Programmed", "Pending", "no node has a ready blixt agent to program the address");
  const name = `DataplaneConfig ${g.key}`;
  if (!existing) return bad("Programmed", "Pending", `${name} is not written yet`);
  if (!jsonEqual(obj(existing).spec, config.spec)) return bad("Programmed", "Pending", `${name} is being updated`);
  const generation = int(obj(obj(existing).metadata).generation) ?? 0;
  const acked = new Map<string, number>();
  for (const n of arr(obj(obj(existing).status).nodes)) {
    const entry = obj(n);
    if (typeof entry.name === "string") acked.set(entry.name, int(entry.observedGeneration) ?? -1);
  }
  const lagging = agents.filter((node) => (acked.get(node) ?? -1) < generation);
  if (lagging.length > 0) {
    return bad("Programmed", "Pending", `waiting for node agents to apply ${name} generation ${generation}: ${lagging.join(", ")}`);
  }
  return ok("Programmed", "Programmed", `Address ${g.address.address} is programmed on ${agents.length} node${agents.length === 1 ? "" : "s"}, announced by ${config.spec?.announcingNode}`);
}
