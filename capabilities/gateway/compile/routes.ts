// SPDX-License-Identifier: Apache-2.0
/**
 * ProcessRoutes: each TCPRoute, UDPRoute and HTTPRoute attached to the listeners its parentRefs
 * select, its backends resolved once, and its status: one entry per parentRef naming a Gateway
 * of ours, then other controllers' entries as they were.
 */
import type { ResolvedBackends } from "./backends.js";
import { resolveBackends } from "./backends.js";
import type { Verdict } from "./conditions.js";
import { bad, mergeConditions, ok } from "./conditions.js";
import type { GatewayContext } from "./gateways.js";
import type { ListenerContext } from "./listeners.js";
import type { ListenerSetContext } from "./listenersets.js";
import type { CompileOutput, ParentReference, RouteKind, RouteParentStatus } from "./types.js";
import { GATEWAY_GROUP } from "./types.js";
import { cmp, firstFew, jsonEqual, nsName, selectorMatches } from "./util.js";
import type { CompileInput, RouteView } from "./views.js";

export interface RouteContext {
  view: RouteView;
  backends?: ResolvedBackends;
}

/** A parentRef blixt may answer: one naming a Gateway (other kinds are other controllers' business). */
export function isGatewayParentRef(ref: ParentReference): boolean {
  return ref.group === GATEWAY_GROUP && ref.kind === "Gateway";
}

/** A parentRef naming a ListenerSet: blixt's when the ListenerSet's Gateway is. */
export function isListenerSetParentRef(ref: ParentReference): boolean {
  return ref.group === GATEWAY_GROUP && ref.kind === "ListenerSet";
}

type RouteInput = Pick<
  CompileInput,
  | "controllerName"
  | "now"
  | "routes"
  | "namespaceLabels"
  | "services"
  | "endpointSlices"
  | "referenceGrants"
>;

/** Attaches every route to the Gateways' listeners (filling GatewayContext.attached) and returns the routes' statuses. */
export function processRoutes(
  input: RouteInput,
  gateways: GatewayContext[],
  listenerSets: Map<string, ListenerSetContext> = new Map(),
): CompileOutput["routes"] {
  const { controllerName } = input;
  const gatewayByKey = new Map(gateways.map(g => [g.key, g]));
  const labelsOf = (ns: string) =>
    input.namespaceLabels.get(ns) ?? { "kubernetes.io/metadata.name": ns };
  const routes = input.routes
    .map((view): RouteContext => ({ view }))
    .sort(
      (a, b) =>
        cmp(a.view.kind, b.view.kind) ||
        cmp(a.view.meta.namespace, b.view.meta.namespace) ||
        cmp(a.view.meta.name, b.view.meta.name),
    );

  const out: CompileOutput["routes"] = [];
  for (const route of routes) {
    const { view } = route;
    const ours: RouteParentStatus[] = [];
    const seen = new Set<string>();
    for (const parentRef of view.parentRefs) {
      const key = nsName(parentRef.namespace as string, parentRef.name);
      const listenerSet = isListenerSetParentRef(parentRef) ? listenerSets.get(key) : undefined;
      const gateway = isGatewayParentRef(parentRef) ? gatewayByKey.get(key) : listenerSet?.gateway;
      if (!gateway) continue;
      const refKey = `${parentRef.kind}/${parentRef.namespace}/${parentRef.name}/${parentRef.sectionName ?? ""}/${parentRef.port ?? ""}`;
      if (seen.has(refKey)) continue;
      seen.add(refKey);

      const accepted = attachRoute(route, parentRef, gateway, labelsOf, listenerSet);
      route.backends ??= resolveBackends(
        input,
        { kind: view.kind, namespace: view.meta.namespace, name: view.meta.name },
        view.backendRefs,
      );
      const previous = view.previousParents.find(
        p => p.controllerName === controllerName && jsonEqual(p.parentRef, parentRef),
      );
      ours.push({
        parentRef,
        controllerName,
        conditions: mergeConditions(
          previous?.conditions,
          [accepted, route.backends.resolvedRefs],
          view.meta.generation,
          input.now,
        ),
      });
    }
    const hadOurs = view.previousParents.some(p => p.controllerName === controllerName);
    if (ours.length === 0 && !hadOurs) continue;
    // Other controllers' entries are theirs: passed through as they were.
    const foreign = view.previousParents
      .filter(p => p.controllerName !== controllerName)
      .map(p => p.raw) as unknown as RouteParentStatus[];
    out.push({
      kind: view.kind,
      namespace: view.meta.namespace,
      name: view.meta.name,
      status: { parents: [...ours, ...foreign] },
    });
  }
  return out;
}

const PROTOCOL_KIND: Record<string, RouteKind> = {
  TCP: "TCPRoute",
  UDP: "UDPRoute",
  HTTP: "HTTPRoute",
  HTTPS: "HTTPRoute",
};

/** Attaches a route to the listeners its parentRef selects; returns the parent's Accepted verdict. */
function attachRoute(
  route: RouteContext,
  parentRef: ParentReference,
  gateway: GatewayContext,
  labelsOf: (ns: string) => Record<string, string>,
  listenerSet?: ListenerSetContext,
): Verdict {
  const { view } = route;
  const what = listenerSet ? `ListenerSet ${listenerSet.key}` : `Gateway ${gateway.key}`;
  // A Gateway whose listeners are all invalid still tells routes which listener refused them.
  if (gateway.accepted.status !== "True" && gateway.accepted.reason !== "ListenersNotValid") {
    return bad(
      "Accepted",
      "NoMatchingParent",
      `Gateway ${gateway.key} is not accepted: ${gateway.accepted.message}`,
    );
  }
  if (listenerSet && listenerSet.listeners.length === 0) {
    return bad(
      "Accepted",
      "NoMatchingParent",
      `${what} is not accepted: ${listenerSet.accepted.message}`,
    );
  }
  // A parentRef attaches to the listeners of the object it names, never its relatives'.
  const candidates = gateway.listeners
    .map((listener, i) => ({ listener, i }))
    .filter(
      ({ listener }) =>
        listener.listenerSet === listenerSet?.key &&
        (parentRef.sectionName === undefined || listener.name === parentRef.sectionName) &&
        (parentRef.port === undefined || listener.port === parentRef.port),
    );
  if (candidates.length === 0) {
    const by = [
      parentRef.sectionName !== undefined ? `named "${parentRef.sectionName}"` : "",
      parentRef.port !== undefined ? `on port ${parentRef.port}` : "",
    ]
      .filter(Boolean)
      .join(" ");
    return bad("Accepted", "NoMatchingParent", `${what} has no listener ${by || "at all"}`);
  }
  const reasons: string[] = [];
  const matched: number[] = [];
  for (const { listener, i } of candidates) {
    if (!listener.attachable) {
      if (parentRef.sectionName !== undefined || PROTOCOL_KIND[listener.protocol] === view.kind)
        reasons.push(`listener "${listener.name}" is not valid`);
      continue;
    }
    if (!listener.supportedKinds.some(k => k.kind === view.kind)) {
      reasons.push(
        `listener "${listener.name}" (${listener.protocol}) does not allow ${view.kind}`,
      );
      continue;
    }
    if (!namespaceAllowed(listener, listener.owner.namespace, view.meta.namespace, labelsOf)) {
      reasons.push(
        `listener "${listener.name}" does not allow routes from namespace "${view.meta.namespace}" (allowedRoutes.namespaces.from: ${listener.allowedFrom})`,
      );
      continue;
    }
    matched.push(i);
  }
  if (matched.length === 0) {
    return bad(
      "Accepted",
      "NotAllowedByListeners",
      reasons.length > 0 ? firstFew(reasons, "; ") : `no listener of ${what} allows ${view.kind}`,
    );
  }
  if (view.unsupportedField) {
    return bad(
      "Accepted",
      "UnsupportedValue",
      `${view.unsupportedField}; blixt forwards HTTP per connection at L4, so it carries only HTTPRoutes with one rule, no matches beyond PathPrefix /, no filters, timeouts, retries or session persistence`,
    );
  }
  for (const i of matched) {
    const list = gateway.attached.get(i) ?? [];
    if (!list.includes(route)) list.push(route);
    gateway.attached.set(i, list);
  }
  return ok("Accepted", "Accepted", `Route is accepted by ${what}`);
}

function namespaceAllowed(
  listener: ListenerContext,
  gatewayNamespace: string,
  routeNamespace: string,
  labelsOf: (ns: string) => Record<string, string>,
): boolean {
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
