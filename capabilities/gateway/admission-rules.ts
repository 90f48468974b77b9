// SPDX-License-Identifier: Apache-2.0
/**
 * Admission decisions, pure. Deny only what can never work and has no status to carry it (a
 * DataplaneConfig that is malformed or not written by blixt's controller). Everything the spec
 * says must surface as a condition is approved, with warnings that predict that condition, so
 * `kubectl apply` tells a person at once what `kubectl get -o yaml` will show later.
 */
import { isIP } from "node:net";
import type { V1Service } from "@kubernetes/client-node";
import type { DataplaneConfig, Gateway, GatewayClass, ReferenceGrant, RouteKind } from "./compile/types";
import { GATEWAY_GROUP } from "./compile/types";
import { unsupportedHTTPRouteField } from "./compile/httproute";

export type Verdict = { allowed: true; warnings: string[] } | { allowed: false; code: number; message: string };

export interface AdmissionRequestView<T> {
  operation: string;
  userInfo: { username?: string };
  object?: T;
  oldObject?: T;
}

const canonical = (value: unknown): string => JSON.stringify(value ?? null, (_, v) =>
  v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b))) : v,
);

/** Every field problem of a DataplaneConfig spec, as "field: what is wrong". */
export function dataplaneConfigProblems(config: DataplaneConfig): string[] {
  const problems: string[] = [];
  const spec = config.spec;
  if (!spec) return ["spec: missing"];
  if (spec.gatewayName !== config.metadata?.name) {
    problems.push(`spec.gatewayName: "${spec.gatewayName}" must equal metadata.name "${config.metadata?.name}" (one DataplaneConfig per Gateway, named after it)`);
  }
  if (spec.address !== undefined && isIP(spec.address) === 0) {
    problems.push(`spec.address: "${spec.address}" is not an IPv4 or IPv6 address`);
  }
  const validPort = (port: unknown): boolean => Number.isInteger(port) && (port as number) >= 1 && (port as number) <= 65535;
  const seen = new Set<string>();
  (spec.listeners ?? []).forEach((listener, i) => {
    const at = `spec.listeners[${i}]`;
    if (!validPort(listener.port)) problems.push(`${at}.port: ${listener.port} is not a port (1-65535)`);
    if (listener.protocol !== "TCP" && listener.protocol !== "UDP") problems.push(`${at}.protocol: "${listener.protocol}" must be TCP or UDP`);
    const portKey = `${listener.port}/${listener.protocol}`;
    if (seen.has(portKey)) problems.push(`${at}: a second listener on ${portKey}`);
    seen.add(portKey);
    if (!Number.isInteger(listener.rejectWeight) || listener.rejectWeight < 0) {
      problems.push(`${at}.rejectWeight: ${listener.rejectWeight} must be a non-negative integer`);
    }
    (listener.backends ?? []).forEach((backend, j) => {
      if (!Number.isInteger(backend.weight) || backend.weight < 1) problems.push(`${at}.backends[${j}].weight: ${backend.weight} must be a positive integer`);
      if (!backend.endpoints?.length) problems.push(`${at}.backends[${j}].endpoints: a backend needs at least one endpoint`);
      (backend.endpoints ?? []).forEach((endpoint, k) => {
        if (isIP(endpoint.address) === 0) problems.push(`${at}.backends[${j}].endpoints[${k}].address: "${endpoint.address}" is not an IP address`);
        if (!validPort(endpoint.port)) problems.push(`${at}.backends[${j}].endpoints[${k}].port: ${endpoint.port} is not a port (1-65535)`);
      });
    });
  });
  return problems;
}

/**
 * DataplaneConfigs are blixt's compiled tables: only the controller writes their spec, and a
 * malformed one would be programmed into every node's kernel, with no status to report it.
 */
export function admitDataplaneConfig(
  request: AdmissionRequestView<DataplaneConfig>,
  controllerUsername: string,
): Verdict {
  const config = request.object;
  if (request.operation === "DELETE" || !config) return { allowed: true, warnings: [] };
  const name = `DataplaneConfig ${config.metadata?.namespace}/${config.metadata?.name}`;
  // Metadata-only updates (the garbage collector, finalizers, labels) leave the table alone.
  if (request.operation === "UPDATE" && canonical(config.spec) === canonical(request.oldObject?.spec)) {
    return { allowed: true, warnings: [] };
  }
  if (request.userInfo.username !== controllerUsername) {
    return {
      allowed: false,
      code: 403,
      message: `${name}: spec is written only by blixt's controller (${controllerUsername}), not by "${request.userInfo.username}"; change the Gateway and its routes instead, and the controller recompiles this table`,
    };
  }
  const problems = dataplaneConfigProblems(config);
  if (problems.length) {
    return { allowed: false, code: 422, message: `${name}: ${problems.join("; ")}` };
  }
  return { allowed: true, warnings: [] };
}

/** What the webhook looked up in the cluster for one request. */
export interface AdmissionView {
  controllerName: string;
  gateways: Gateway[];
  gatewayClasses: GatewayClass[];
  services: V1Service[];
  referenceGrants: ReferenceGrant[];
}

const ours = (gateway: Gateway, view: AdmissionView): boolean =>
  view.gatewayClasses.some(c => c.metadata?.name === gateway.spec?.gatewayClassName && c.spec?.controllerName === view.controllerName);

const find = <T extends { metadata?: { namespace?: string; name?: string } }>(list: T[], namespace: string | undefined, name: string): T | undefined =>
  list.find(o => o.metadata?.name === name && (namespace === undefined || o.metadata?.namespace === namespace));

const SUPPORTED_PROTOCOLS = new Set(["TCP", "UDP", "HTTP", "HTTPS"]);
const transport = (protocol: string): string => (protocol === "UDP" ? "UDP" : "TCP");

/** Warnings for a Gateway of blixt's class; none for other controllers' Gateways. */
export function gatewayWarnings(gateway: Gateway, view: AdmissionView): string[] {
  if (!ours(gateway, view)) return [];
  const name = `Gateway ${gateway.metadata?.namespace}/${gateway.metadata?.name}`;
  const warnings: string[] = [];
  const listeners = gateway.spec?.listeners ?? [];
  for (const listener of listeners) {
    const passthrough = listener.protocol === "HTTPS" && listener.tls?.mode === "Passthrough";
    if (!SUPPORTED_PROTOCOLS.has(listener.protocol) || passthrough) {
      const what = passthrough ? "HTTPS with TLS mode Passthrough" : `protocol "${listener.protocol}"`;
      warnings.push(`${name}: listener "${listener.name}" uses ${what}, which blixt does not serve (it serves TCP, UDP, HTTP and HTTPS with TLS Terminate); its Accepted will be False (UnsupportedProtocol)`);
    }
  }
  const byPort = new Map<string, typeof listeners>();
  for (const listener of listeners.filter(l => SUPPORTED_PROTOCOLS.has(l.protocol))) {
    const portKey = `${listener.port}/${transport(listener.protocol)}`;
    byPort.set(portKey, [...(byPort.get(portKey) ?? []), listener]);
  }
  for (const [portKey, sharing] of byPort) {
    const protocols = new Set(sharing.map(l => l.protocol));
    // Same-protocol HTTP(S) listeners may differ by hostname; TCP/UDP ones never can, and
    // different protocols on one transport port always conflict.
    const conflict = protocols.size > 1 || (sharing.length > 1 && (protocols.has("TCP") || protocols.has("UDP")));
    if (conflict) {
      warnings.push(`${name}: listeners ${sharing.map(l => `"${l.name}"`).join(", ")} share ${portKey}; their Conflicted will be True (ProtocolConflict)`);
    }
  }
  return warnings;
}

interface ParentRefLike {
  group?: string;
  kind?: string;
  namespace?: string;
  name: string;
  sectionName?: string;
  port?: number;
}
interface BackendRefLike {
  group?: string;
  kind?: string;
  namespace?: string;
  name: string;
  port?: number;
}
export interface RouteLike {
  metadata?: { namespace?: string; name?: string };
  spec?: { parentRefs?: ParentRefLike[]; rules?: { backendRefs?: BackendRefLike[] }[] };
}

const isGatewayRef = (ref: ParentRefLike): boolean =>
  (ref.group ?? GATEWAY_GROUP) === GATEWAY_GROUP && (ref.kind ?? "Gateway") === "Gateway";
const isServiceRef = (ref: BackendRefLike): boolean => (ref.group ?? "") === "" && (ref.kind ?? "Service") === "Service";

/** The objects a route's warnings depend on, for the webhook to look up. */
export function routeLookups(route: RouteLike): { gateways: { namespace: string; name: string }[]; services: { namespace: string; name: string }[]; grantNamespaces: string[] } {
  const namespace = route.metadata?.namespace ?? "default";
  const gateways = (route.spec?.parentRefs ?? []).filter(isGatewayRef).map(r => ({ namespace: r.namespace ?? namespace, name: r.name }));
  const backendRefs = (route.spec?.rules ?? []).flatMap(r => r.backendRefs ?? []).filter(isServiceRef);
  const services = backendRefs.map(r => ({ namespace: r.namespace ?? namespace, name: r.name }));
  const grantNamespaces = [...new Set(services.map(s => s.namespace).filter(n => n !== namespace))].sort();
  return { gateways, services, grantNamespaces };
}

/** A ReferenceGrant in the Service's namespace lets this route kind from the route's namespace refer to it. */
export function backendRefPermitted(
  routeKind: RouteKind,
  routeNamespace: string,
  service: { namespace: string; name: string },
  grants: ReferenceGrant[],
): boolean {
  if (service.namespace === routeNamespace) return true;
  return grants.some(
    grant =>
      grant.metadata?.namespace === service.namespace &&
      (grant.spec?.from ?? []).some(f => f.group === GATEWAY_GROUP && f.kind === routeKind && f.namespace === routeNamespace) &&
      (grant.spec?.to ?? []).some(t => (t.group ?? "") === "" && t.kind === "Service" && (t.name === undefined || t.name === "" || t.name === service.name)),
  );
}

/**
 * Warnings for a route with at least one parentRef naming a blixt Gateway. A parentRef whose
 * Gateway does not exist yet is not warned about: it may belong to any controller.
 */
export function routeWarnings(routeKind: RouteKind, route: RouteLike, view: AdmissionView): string[] {
  const namespace = route.metadata?.namespace ?? "default";
  const name = `${routeKind} ${namespace}/${route.metadata?.name}`;
  const warnings: string[] = [];
  let anyOurs = false;
  for (const parentRef of (route.spec?.parentRefs ?? []).filter(isGatewayRef)) {
    const gateway = find(view.gateways, parentRef.namespace ?? namespace, parentRef.name);
    if (!gateway || !ours(gateway, view)) continue;
    anyOurs = true;
    const listeners = gateway.spec?.listeners ?? [];
    const matching = listeners.filter(
      l => (parentRef.sectionName === undefined || l.name === parentRef.sectionName) && (parentRef.port === undefined || l.port === parentRef.port),
    );
    if (matching.length === 0) {
      const wanted = [parentRef.sectionName && `sectionName "${parentRef.sectionName}"`, parentRef.port && `port ${parentRef.port}`].filter(Boolean).join(" and ");
      warnings.push(`${name}: Gateway ${gateway.metadata?.namespace}/${gateway.metadata?.name} has no listener with ${wanted}; Accepted will be False (NoMatchingParent)`);
    }
  }
  if (!anyOurs) return [];

  if (routeKind === "HTTPRoute") {
    const field = unsupportedHTTPRouteField((route.spec ?? {}) as Record<string, unknown>);
    if (field) {
      warnings.push(`${name}: ${field}, which blixt's per-connection (L4) forwarding cannot honour; Accepted will be False (UnsupportedValue)`);
    }
  }

  for (const backendRef of (route.spec?.rules ?? []).flatMap(r => r.backendRefs ?? [])) {
    if (!isServiceRef(backendRef)) {
      warnings.push(`${name}: backendRef "${backendRef.name}" is a ${backendRef.kind ?? "Service"} in group "${backendRef.group ?? ""}", but blixt forwards only to core Services; ResolvedRefs will be False (InvalidKind)`);
      continue;
    }
    const service = { namespace: backendRef.namespace ?? namespace, name: backendRef.name };
    if (!backendRefPermitted(routeKind, namespace, service, view.referenceGrants)) {
      warnings.push(`${name}: backendRef to Service ${service.namespace}/${service.name} needs a ReferenceGrant in namespace "${service.namespace}" from ${routeKind}s in "${namespace}"; ResolvedRefs will be False (RefNotPermitted)`);
      continue;
    }
    if (!find(view.services, service.namespace, service.name)) {
      warnings.push(`${name}: Service "${service.name}" not found in namespace "${service.namespace}"; ResolvedRefs will be False (BackendNotFound)`);
    }
  }
  return warnings;
}
