// SPDX-License-Identifier: Apache-2.0
/**
 * backendRefs → weighted groups of ready endpoints, and the route's ResolvedRefs verdict.
 * Only core Services are backends; another namespace needs a ReferenceGrant there.
 */
import { parseIPv4 } from "./addresses.js";
import type { Verdict } from "./conditions.js";
import { bad, ok } from "./conditions.js";
import type { RouteKind } from "./types.js";
import { arr, cmp, int, meta, nsName, obj, str } from "./util.js";

export const GATEWAY_GROUP = "gateway.networking.k8s.io";

export interface Endpoint {
  address: string;
  port: number;
}

export interface WeightedBackend {
  name: string; // "namespace/name:port" of the Service
  weight: number;
  endpoints: Endpoint[];
}

export interface ResolvedBackends {
  resolvedRefs: Verdict;
  backends: WeightedBackend[];
  /** Weight of backendRefs that are invalid or have no ready endpoint: refused connections. */
  rejectWeight: number;
}

/** Indexes built once per compile, shared by every route. */
export interface BackendIndex {
  services: Map<string, unknown>; // "ns/name" → Service
  slices: Map<string, unknown[]>; // "ns/service-name" → EndpointSlices
  grants: Map<string, unknown[]>; // namespace → ReferenceGrants in it
}

export function buildBackendIndex(services: unknown[], endpointSlices: unknown[], referenceGrants: unknown[]): BackendIndex {
  const index: BackendIndex = { services: new Map(), slices: new Map(), grants: new Map() };
  for (const s of arr(services)) {
    const m = meta(s);
    if (m.name) index.services.set(nsName(m.namespace, m.name), s);
  }
  for (const s of arr(endpointSlices)) {
    const m = meta(s);
    const service = m.labels["kubernetes.io/service-name"];
    if (!service) continue;
    const key = nsName(m.namespace, service);
    const list = index.slices.get(key) ?? [];
    list.push(s);
    index.slices.set(key, list);
  }
  for (const g of arr(referenceGrants)) {
    const m = meta(g);
    const list = index.grants.get(m.namespace) ?? [];
    list.push(g);
    index.grants.set(m.namespace, list);
  }
  return index;
}

/** Whether a ReferenceGrant in toNamespace lets (fromGroup, fromKind, fromNamespace) refer to (toGroup, toKind, toName). */
export function referenceGranted(
  index: BackendIndex,
  from: { group: string; kind: string; namespace: string },
  toNamespace: string,
  to: { group: string; kind: string; name: string },
): boolean {
  return (index.grants.get(toNamespace) ?? []).some((grant) => {
    const spec = obj(obj(grant).spec);
    const fromOk = arr(spec.from).some((raw) => {
      const f = obj(raw);
      return (str(f.group) ?? "") === from.group && f.kind === from.kind && f.namespace === from.namespace;
    });
    const toOk = arr(spec.to).some((raw) => {
      const t = obj(raw);
      const name = str(t.name);
      return (str(t.group) ?? "") === to.group && t.kind === to.kind && (!name || name === to.name);
    });
    return fromOk && toOk;
  });
}

interface RefProblem {
  reason: string;
  message: string;
}

/**
 * Resolves every backendRef of a route. The ResolvedRefs verdict reports the first problem's
 * reason (the spec allows one reason) and lists every problem in its message.
 */
export function resolveBackends(
  index: BackendIndex,
  route: { kind: RouteKind; namespace: string; name: string },
  backendRefs: unknown[],
): ResolvedBackends {
  const problems: RefProblem[] = [];
  const backends: WeightedBackend[] = [];
  let rejectWeight = 0;
  const transport = route.kind === "UDPRoute" ? "UDP" : "TCP";

  backendRefs.forEach((raw, i) => {
    const ref = obj(raw);
    const name = str(ref.name) ?? "";
    const group = str(ref.group) ?? "";
    const kind = str(ref.kind) ?? "Service";
    const namespace = str(ref.namespace) || route.namespace;
    const rawWeight = ref.weight === undefined ? 1 : int(ref.weight);
    // An out-of-range weight is no share at all: it must not swamp the valid backends' shares.
    const weight = rawWeight !== undefined && rawWeight >= 0 && rawWeight <= 1_000_000 ? rawWeight : 0;
    const what = `backendRefs[${i}] "${name}"`;
    const fail = (reason: string, message: string) => {
      problems.push({ reason, message: `${what}: ${message}` });
      rejectWeight += weight;
    };

    if (rawWeight === undefined || rawWeight < 0 || rawWeight > 1_000_000) {
      return fail("UnsupportedValue", `weight ${JSON.stringify(ref.weight)} is not an integer from 0 to 1000000`);
    }
    if ((group !== "" && group !== "core") || kind !== "Service") {
      return fail("InvalidKind", `kind ${group ? `${group}/` : ""}${kind} is not supported; blixt forwards only to core Services`);
    }
    if (!name) return fail("BackendNotFound", "name is empty; set the name of a Service");
    if (namespace !== route.namespace) {
      const granted = referenceGranted(
        index,
        { group: GATEWAY_GROUP, kind: route.kind, namespace: route.namespace },
        namespace,
        { group: "", kind: "Service", name },
      );
      if (!granted) {
        return fail(
          "RefNotPermitted",
          `Service ${namespace}/${name} is in another namespace and no ReferenceGrant in "${namespace}" allows ${route.kind}s from "${route.namespace}"; add one or move the route`,
        );
      }
    }
    const service = index.services.get(nsName(namespace, name));
    if (!service) return fail("BackendNotFound", `Service "${name}" not found in namespace "${namespace}"`);
    const port = int(ref.port);
    if (port === undefined || port < 1 || port > 65535) {
      return fail("BackendNotFound", `port ${ref.port === undefined ? "is missing" : `${JSON.stringify(ref.port)} is not a port`}; a backendRef to a Service needs port`);
    }
    const spec = obj(obj(service).spec);
    if (spec.type === "ExternalName") {
      return fail("UnsupportedProtocol", `Service ${namespace}/${name} is of type ExternalName, which has no endpoints to forward to`);
    }
    // A Service may list one port number twice (DNS on TCP and UDP): match the route's transport.
    const samePort = arr(spec.ports).map(obj).filter((p) => int(p.port) === port);
    if (samePort.length === 0) return fail("BackendNotFound", `Service ${namespace}/${name} has no port ${port}`);
    const servicePort = samePort.find((p) => (str(p.protocol) ?? "TCP") === transport);
    if (!servicePort) {
      return fail("UnsupportedProtocol", `Service ${namespace}/${name} port ${port} is ${str(samePort[0].protocol) ?? "TCP"}; a ${route.kind} needs a ${transport} port`);
    }
    const protocol = transport;
    if (weight === 0) return; // valid, and asked for no traffic
    const endpoints = readyEndpoints(index.slices.get(nsName(namespace, name)) ?? [], str(servicePort.name) ?? "", protocol);
    if (endpoints.length === 0) {
      // Valid but nothing to forward to: its share is refused rather than moved to the others.
      rejectWeight += weight;
      return;
    }
    backends.push({ name: `${namespace}/${name}:${port}`, weight, endpoints });
  });

  const resolvedRefs =
    problems.length === 0
      ? ok("ResolvedRefs", "ResolvedRefs", "All references resolved")
      : bad("ResolvedRefs", problems[0].reason === "UnsupportedValue" ? "BackendNotFound" : problems[0].reason, problems.map((p) => p.message).join("; "));
  return { resolvedRefs, backends, rejectWeight };
}

/**
 * Ready endpoints of one Service port: the EndpointSlice port with the Service port's name
 * (the EndpointSlice controller has already resolved a named targetPort to a number).
 */
export function readyEndpoints(slices: unknown[], portName: string, protocol: string): Endpoint[] {
  const seen = new Set<string>();
  const out: Endpoint[] = [];
  for (const slice of slices) {
    const s = obj(slice);
    if (s.addressType !== "IPv4") continue;
    const port = arr(s.ports)
      .map(obj)
      .find((p) => (str(p.name) ?? "") === portName && (str(p.protocol) ?? "TCP") === protocol);
    const number = port && int(port.port);
    if (number === undefined || number < 1 || number > 65535) continue;
    for (const raw of arr(s.endpoints)) {
      const e = obj(raw);
      // The API says a missing ready means ready.
      if (obj(e.conditions).ready === false) continue;
      const address = str(arr(e.addresses)[0]);
      if (!address) continue;
      const key = `${address}:${number}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ address, port: number });
    }
  }
  // Numeric address order (10.0.0.9 before 10.0.0.10), keys computed once per endpoint.
  return out
    .map((e) => ({ e, key: parseIPv4(e.address) ?? -1 }))
    .sort((a, b) => a.key - b.key || cmp(a.e.address, b.e.address) || a.e.port - b.e.port)
    .map(({ e }) => e);
}
