// SPDX-License-Identifier: Apache-2.0
/**
 * backendRefs → weighted groups of ready endpoints, and the route's ResolvedRefs verdict.
 * Only core Services are backends; another namespace needs a ReferenceGrant there.
 */
import { parseIPv4 } from "../../ipv4.js";
import type { Verdict } from "./conditions.js";
import { bad, ok } from "./conditions.js";
import type { RouteKind } from "./types.js";
import { GATEWAY_GROUP } from "./types.js";
import { cmp, firstFew, nsName } from "./util.js";
import type { BackendRefView, CompileInput, EndpointSliceView } from "./views.js";

export interface Endpoint {
  address: string;
  port: number;
  /** the node the endpoint runs on (EndpointSlice endpoints[].nodeName); absent when unknown */
  nodeName?: string;
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

/** The indexes backendRefs are resolved against, built once per compile (views.ts). */
export type BackendIndex = Pick<CompileInput, "services" | "endpointSlices" | "referenceGrants">;

/** Whether a ReferenceGrant in toNamespace lets (fromGroup, fromKind, fromNamespace) refer to (toGroup, toKind, toName). */
export function referenceGranted(
  index: Pick<CompileInput, "referenceGrants">,
  from: { group: string; kind: string; namespace: string },
  toNamespace: string,
  to: { group: string; kind: string; name: string },
): boolean {
  return (index.referenceGrants.get(toNamespace) ?? []).some(
    grant =>
      grant.from.some(
        f => f.group === from.group && f.kind === from.kind && f.namespace === from.namespace,
      ) &&
      grant.to.some(
        t => t.group === to.group && t.kind === to.kind && (!t.name || t.name === to.name),
      ),
  );
}

/** A backendRef names a core Service, the only backend kind blixt forwards to. */
export function isServiceRef(ref: Pick<BackendRefView, "group" | "kind">): boolean {
  return (ref.group === "" || ref.group === "core") && ref.kind === "Service";
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
  backendRefs: BackendRefView[],
): ResolvedBackends {
  const problems: RefProblem[] = [];
  const backends: WeightedBackend[] = [];
  let rejectWeight = 0;
  const transport = route.kind === "UDPRoute" ? "UDP" : "TCP";

  backendRefs.forEach((ref, i) => {
    const { name, group, kind, namespace } = ref;
    const rawWeight = ref.weight;
    // An out-of-range weight is no share at all: it must not swamp the valid backends' shares.
    const weight =
      rawWeight !== undefined && rawWeight >= 0 && rawWeight <= 1_000_000 ? rawWeight : 0;
    const what = `backendRefs[${i}] "${name}"`;
    const fail = (reason: string, message: string) => {
      problems.push({ reason, message: `${what}: ${message}` });
      rejectWeight += weight;
    };

    if (rawWeight === undefined || rawWeight < 0 || rawWeight > 1_000_000) {
      return fail(
        "UnsupportedValue",
        `weight ${ref.weightText} is not an integer from 0 to 1000000`,
      );
    }
    if (!isServiceRef(ref)) {
      return fail(
        "InvalidKind",
        `kind ${group ? `${group}/` : ""}${kind} is not supported; blixt forwards only to core Services`,
      );
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
    if (!service)
      return fail("BackendNotFound", `Service "${name}" not found in namespace "${namespace}"`);
    const port = ref.port;
    if (port === undefined || port < 1 || port > 65535) {
      return fail(
        "BackendNotFound",
        `port ${ref.portText === undefined ? "is missing" : `${ref.portText} is not a port`}; a backendRef to a Service needs port`,
      );
    }
    if (service.type === "ExternalName") {
      return fail(
        "UnsupportedProtocol",
        `Service ${namespace}/${name} is of type ExternalName, which has no endpoints to forward to`,
      );
    }
    // A Service may list one port number twice (DNS on TCP and UDP): match the route's transport.
    const samePort = service.ports.filter(p => p.port === port);
    if (samePort.length === 0)
      return fail("BackendNotFound", `Service ${namespace}/${name} has no port ${port}`);
    const servicePort = samePort.find(p => (p.protocol ?? "TCP") === transport);
    if (!servicePort) {
      return fail(
        "UnsupportedProtocol",
        `Service ${namespace}/${name} port ${port} is ${samePort[0].protocol ?? "TCP"}; a ${route.kind} needs a ${transport} port`,
      );
    }
    const protocol = transport;
    if (weight === 0) return; // valid, and asked for no traffic
    const endpoints = readyEndpoints(
      index.endpointSlices.get(nsName(namespace, name)) ?? [],
      servicePort.name,
      protocol,
    );
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
      : bad(
          "ResolvedRefs",
          problems[0].reason === "UnsupportedValue" ? "BackendNotFound" : problems[0].reason,
          firstFew(
            problems.map(p => p.message),
            "; ",
          ),
        );
  return { resolvedRefs, backends, rejectWeight };
}

/**
 * Ready endpoints of one Service port: the EndpointSlice port with the Service port's name
 * (the EndpointSlice controller has already resolved a named targetPort to a number).
 */
export function readyEndpoints(
  slices: EndpointSliceView[],
  portName: string,
  protocol: string,
): Endpoint[] {
  const byKey = new Map<string, Endpoint>();
  for (const slice of slices) {
    if (slice.addressType !== "IPv4") continue;
    const number = slice.ports.find(p => p.name === portName && p.protocol === protocol)?.port;
    if (number === undefined || number < 1 || number > 65535) continue;
    for (const { address, ready, nodeName } of slice.endpoints) {
      if (!ready || !address) continue;
      const key = `${address}:${number}`;
      const seen = byKey.get(key);
      // One address in two slices (a pod moving between them): the same node name whatever
      // the slices' order, the smallest one given.
      if (seen && (!nodeName || (seen.nodeName !== undefined && seen.nodeName <= nodeName)))
        continue;
      byKey.set(key, nodeName ? { address, port: number, nodeName } : { address, port: number });
    }
  }
  const out = [...byKey.values()];
  // Numeric address order (198.18.1.9 before 198.18.1.10), keys computed once per endpoint.
  return out
    .map(e => ({ e, key: parseIPv4(e.address) ?? -1 }))
    .sort((a, b) => a.key - b.key || cmp(a.e.address, b.e.address) || a.e.port - b.e.port)
    .map(({ e }) => e);
}
