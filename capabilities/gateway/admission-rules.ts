// SPDX-License-Identifier: Apache-2.0
/**
 * Admission decisions, pure. Deny only what can never work and has no status to carry it (a
 * DataplaneConfig that is malformed or not written by blixt's controller). Everything the spec
 * says must surface as a condition is approved, with warnings that predict that condition, so
 * `kubectl apply` tells a person at once what `kubectl get -o yaml` will show later.
 *
 * The warnings are not a second copy of the rules: they run the compile step's own phases on
 * what the webhook looked up, and report each condition that will not be as it should. What
 * the webhook does not read cannot be predicted: Secrets (it holds no permission to read them,
 * so a certificateRef is assumed to name a valid kubernetes.io/tls Secret), EndpointSlices,
 * address pools and node agents (so Programmed is never predicted).
 */
import type { V1Namespace, V1Service } from "@kubernetes/client-node";
import { dataplaneConfigProblems } from "../dataplaneconfig-check";
import { isServiceRef } from "./compile/backends";
import { capMessage } from "./compile/conditions";
import type {
  Condition,
  DataplaneConfig,
  Gateway,
  GatewayClass,
  HTTPRoute,
  ReferenceGrant,
  RouteKind,
  SecretInfo,
  Snapshot,
  TCPRoute,
  UDPRoute,
} from "./compile/types";
import { processGatewayClasses } from "./compile/gatewayclasses";
import { processGateways } from "./compile/gateways";
import { isGatewayParentRef, processRoutes } from "./compile/routes";
import { jsonEqual } from "./compile/util";
import { gatewayView, readSnapshot, routeView, type ListenerView } from "./compile/views";

/** What admission answers: allowed with warnings, or denied with a status code and why. */
export type AdmissionDecision =
  | { allowed: true; warnings: string[] }
  | { allowed: false; code: number; message: string };

export interface AdmissionRequestView<T> {
  operation: string;
  userInfo: { username?: string };
  object?: T;
  oldObject?: T;
}

/**
 * DataplaneConfigs are blixt's compiled tables: only the controller writes their spec, and a
 * malformed one would be programmed into every node's kernel, with no status to report it.
 */
export function admitDataplaneConfig(
  request: AdmissionRequestView<DataplaneConfig>,
  controllerUsername: string,
): AdmissionDecision {
  const config = request.object;
  if (request.operation === "DELETE" || !config) return { allowed: true, warnings: [] };
  const name = `DataplaneConfig ${config.metadata?.namespace}/${config.metadata?.name}`;
  // Metadata-only updates (the garbage collector, finalizers, labels) leave the table alone.
  if (request.operation === "UPDATE" && jsonEqual(config.spec, request.oldObject?.spec)) {
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
  namespaces: V1Namespace[];
}

export type RouteLike = TCPRoute | UDPRoute | HTTPRoute;

/** A condition that is not as it should be (Conflicted should be False, every other True). */
function unwelcome(condition: Pick<Condition, "type" | "status">): boolean {
  return condition.type === "Conflicted"
    ? condition.status !== "False"
    : condition.status !== "True";
}

/** One warning for one condition the controller will write: "<where>: <Type> will be <Status> (<Reason>): <message>". */
export function conditionWarning(
  where: string,
  condition: Pick<Condition, "type" | "status" | "reason" | "message">,
): string {
  return `${where}: ${condition.type} will be ${condition.status} (${condition.reason}): ${capMessage(condition.message)}`;
}

function snapshotOf(view: AdmissionView, objects: Partial<Snapshot>): Snapshot {
  return {
    controllerName: view.controllerName,
    now: "1970-01-01T00:00:00Z",
    gatewayClasses: view.gatewayClasses,
    gateways: view.gateways,
    tcpRoutes: [],
    udpRoutes: [],
    httpRoutes: [],
    referenceGrants: view.referenceGrants,
    services: view.services,
    endpointSlices: [],
    namespaces: view.namespaces,
    // The webhook reads no Secrets: each certificateRef is taken to name a valid one.
    secrets: view.gateways.flatMap(g => assumedSecrets(gatewayView(g).listeners)),
    nodes: [],
    dataplaneConfigs: [],
    addressPools: [],
    allocations: {},
    ...objects,
  };
}

function assumedSecrets(listeners: ListenerView[]): SecretInfo[] {
  return listeners.flatMap(l =>
    l.certificateRefs.map(r => ({
      namespace: r.namespace,
      name: r.name,
      type: "kubernetes.io/tls",
      validTLS: true,
    })),
  );
}

const withNamespace = <T extends { metadata?: { namespace?: string } }>(object: T): T =>
  object.metadata?.namespace
    ? object
    : { ...object, metadata: { ...object.metadata, namespace: "default" } };

/** Warnings for a Gateway of blixt's class: each condition of it and its listeners that will not be as it should. */
export function gatewayWarnings(gateway: Gateway, view: AdmissionView): string[] {
  const object = withNamespace(gateway);
  const self = gatewayView(object);
  const others = view.gateways.filter(g => gatewayView(g).key !== self.key);
  const input = readSnapshot(snapshotOf({ ...view, gateways: [object, ...others] }, {}));
  const context = processGateways(input, processGatewayClasses(input)).find(
    g => g.key === self.key,
  );
  if (!context) return [];
  const name = `Gateway ${context.key}`;
  const warnings = unwelcome(context.accepted) ? [conditionWarning(name, context.accepted)] : [];
  for (const listener of context.listeners) {
    for (const condition of [listener.accepted, listener.conflicted, listener.resolvedRefs]) {
      if (unwelcome(condition))
        warnings.push(conditionWarning(`${name}: listener "${listener.name}"`, condition));
    }
  }
  return warnings;
}

/** The objects a route's warnings depend on, for the webhook to look up. */
export function routeLookups(
  routeKind: RouteKind,
  route: RouteLike,
): {
  gateways: { namespace: string; name: string }[];
  services: { namespace: string; name: string }[];
  grantNamespaces: string[];
  namespace: string;
} {
  const view = routeView(routeKind, withNamespace(route));
  const namespace = view.meta.namespace;
  const gateways = view.parentRefs
    .filter(isGatewayParentRef)
    .map(r => ({ namespace: r.namespace ?? namespace, name: r.name }));
  const services = view.backendRefs
    .filter(r => isServiceRef(r) && r.name)
    .map(r => ({ namespace: r.namespace, name: r.name }));
  const grantNamespaces = [
    ...new Set(services.map(s => s.namespace).filter(n => n !== namespace)),
  ].sort();
  return { gateways, services, grantNamespaces, namespace };
}

/**
 * Warnings for a route with at least one parentRef naming a blixt Gateway: Accepted of each
 * such parentRef, and ResolvedRefs (one verdict for the whole route). A parentRef whose
 * Gateway does not exist yet is not warned about: it may belong to any controller. Neither is
 * one naming a ListenerSet: whether its listeners take the route depends on every ListenerSet
 * of its Gateway (precedence, conflicts), which the webhook does not look up; the route's
 * status says.
 */
export function routeWarnings(
  routeKind: RouteKind,
  route: RouteLike,
  view: AdmissionView,
): string[] {
  const object = withNamespace(route);
  const list = { TCPRoute: "tcpRoutes", UDPRoute: "udpRoutes", HTTPRoute: "httpRoutes" }[routeKind];
  const input = readSnapshot(snapshotOf(view, { [list]: [object] }));
  const gateways = processGateways(input, processGatewayClasses(input));
  const status = processRoutes(input, gateways)[0];
  if (!status) return [];
  const name = `${routeKind} ${status.namespace}/${status.name}`;
  const warnings: string[] = [];
  let resolvedRefs: Condition | undefined;
  for (const parent of status.status.parents) {
    if (parent.controllerName !== view.controllerName) continue;
    const ref = parent.parentRef;
    const where = `${name}: parentRef ${ref.namespace}/${ref.name}${ref.sectionName !== undefined ? ` sectionName "${ref.sectionName}"` : ""}${ref.port !== undefined ? ` port ${ref.port}` : ""}`;
    for (const condition of parent.conditions) {
      if (!unwelcome(condition)) continue;
      if (condition.type === "ResolvedRefs") resolvedRefs ??= condition;
      else warnings.push(conditionWarning(where, condition));
    }
  }
  if (resolvedRefs) warnings.push(conditionWarning(name, resolvedRefs));
  return warnings;
}
