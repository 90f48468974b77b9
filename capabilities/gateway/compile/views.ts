// SPDX-License-Identifier: Apache-2.0
/**
 * The boundary of the compile step: the snapshot's raw objects, as the API server or a YAML
 * file gave them (either may be malformed), read once into typed views. Every phase works on
 * these views; no phase touches an untyped object. What is not of the expected type reads as
 * absent (or keeps its text for a message), so a malformed object gets a condition naming the
 * field, never an exception. Rules (what is valid, what conflicts) live in the phases.
 */
import { unsupportedHTTPRouteField } from "./httproute.js";
import type { NodeInfo, ParentReference, RouteKind, SecretInfo, Snapshot } from "./types.js";
import { GATEWAY_GROUP } from "./types.js";
import type { Meta, Obj } from "./util.js";
import { arr, int, meta, nsName, obj, str } from "./util.js";

export interface GatewayClassView {
  meta: Meta;
  controllerName?: string;
  /** spec.parametersRef as "group/Kind namespace/name", when set. */
  parametersRef?: string;
  previousConditions: unknown;
}

export interface CertificateRefView {
  group: string;
  kind: string;
  /** The Gateway's namespace when the ref names none. */
  namespace: string;
  name: string;
}

export interface ListenerView {
  /** Absent when missing or not a string. */
  name?: string;
  /** "" when missing. */
  protocol: string;
  /** 0 when missing or not an integer. */
  port: number;
  /** The port as written (JSON), for messages. */
  portText: string;
  hostname: string;
  /** tls.mode; Terminate when unset. */
  tlsMode: string;
  certificateRefs: CertificateRefView[];
  /** allowedRoutes.kinds as written; empty = the protocol's default kinds. */
  allowedKinds: { group: string; kind: string }[];
  /** allowedRoutes.namespaces.from; Same when unset. */
  allowedFrom: string;
  selector?: unknown;
}

export interface GatewayView {
  meta: Meta;
  key: string;
  className: string;
  deleting: boolean;
  listeners: ListenerView[];
  /** spec.addresses; type IPAddress when unset. */
  addresses: { type: string; value?: string }[];
  /** spec.infrastructure.parametersRef as "group/Kind namespace/name", when set. */
  infrastructureParametersRef?: string;
  /** spec.infrastructure.labels and .annotations (string values only). */
  infrastructureLabels: Record<string, string>;
  infrastructureAnnotations: Record<string, string>;
  /** spec.allowedListeners.namespaces: from (None when unset) and its selector. */
  allowedListeners: { from: string; selector?: unknown };
  previousConditions: unknown;
  /** status.listeners[].conditions by listener name (the first entry of a name). */
  previousListenerConditions: Map<string, unknown>;
}

export interface ListenerSetView {
  meta: Meta;
  key: string;
  /** spec.parentRef with its defaults (group, kind Gateway, the ListenerSet's namespace). */
  parentRef: { group: string; kind: string; namespace: string; name: string };
  listeners: ListenerView[];
  previousConditions: unknown;
  /** status.listeners[].conditions by listener name. */
  previousListenerConditions: Map<string, unknown>;
}

export interface BackendRefView {
  group: string;
  kind: string;
  /** The route's namespace when the ref names none. */
  namespace: string;
  name: string;
  /** 1 when unset; absent when not an integer. */
  weight?: number;
  weightText: string;
  /** Absent when missing or not an integer. */
  port?: number;
  /** The port as written (JSON); absent when missing. */
  portText?: string;
}

export interface PreviousParentView {
  controllerName?: string;
  /** With the defaults filled in, to compare with the parentRefs of the spec. */
  parentRef: ParentReference;
  conditions: unknown;
  /** The entry as it was, passed through when it is another controller's. */
  raw: Obj;
}

export interface RouteView {
  kind: RouteKind;
  meta: Meta;
  /** spec.parentRefs with the defaults filled in (group, kind Gateway, the route's namespace). */
  parentRefs: ParentReference[];
  /** The backendRefs of every rule, in order. */
  backendRefs: BackendRefView[];
  /** HTTPRoute only: the first field per-connection forwarding cannot honour. */
  unsupportedField?: string;
  previousParents: PreviousParentView[];
}

export interface ServiceView {
  meta: Meta;
  type?: string;
  ports: { port?: number; protocol?: string; name: string }[];
}

export interface EndpointSliceView {
  addressType?: string;
  ports: { name: string; protocol: string; port?: number }[];
  /** nodeName: the node the endpoint runs on, when the slice says */
  endpoints: { address?: string; ready: boolean; nodeName?: string }[];
}

export interface ReferenceGrantView {
  from: { group: string; kind?: string; namespace?: string }[];
  to: { group: string; kind?: string; name?: string }[];
}

export interface DataplaneConfigView {
  spec: Obj;
  generation: number;
  announcingNode?: string;
  /** status.nodes: node name → observedGeneration (-1 when not a number). */
  acknowledged: Map<string, number>;
  /** status.nodes: node name → its message, where it has one (why a generation did not apply) */
  messages: Map<string, string>;
}

/** Everything the phases read, each object once, indexed where a phase looks things up. */
export interface CompileInput {
  controllerName: string;
  now: string;
  gatewayClasses: GatewayClassView[];
  gateways: GatewayView[];
  listenerSets: ListenerSetView[];
  routes: RouteView[];
  /** "ns/name" → Service. */
  services: Map<string, ServiceView>;
  /** "ns/service-name" → its EndpointSlices. */
  endpointSlices: Map<string, EndpointSliceView[]>;
  /** namespace → the ReferenceGrants in it. */
  referenceGrants: Map<string, ReferenceGrantView[]>;
  /** namespace → its labels, with kubernetes.io/metadata.name. */
  namespaceLabels: Map<string, Record<string, string>>;
  /** "ns/name" → Secret summary. */
  secrets: Map<string, SecretInfo>;
  /** Nodes with a name; ready and agentReady only when exactly true. */
  nodes: NodeInfo[];
  /** "ns/name" → the DataplaneConfig in the cluster. */
  dataplaneConfigs: Map<string, DataplaneConfigView>;
  addressPools: Snapshot["addressPools"];
  allocations: Record<string, string>;
  certificateCopyNamespace?: string;
}

/** Reads the snapshot into views; the only place the compile step reads raw objects. */
export function readSnapshot(snapshot: Snapshot): CompileInput {
  const s = obj(snapshot) as Partial<Snapshot>;
  const input: CompileInput = {
    controllerName: str(s.controllerName) ?? "",
    now: str(s.now) ?? "1970-01-01T00:00:00Z",
    gatewayClasses: [],
    gateways: [],
    listenerSets: [],
    routes: [],
    services: new Map(),
    endpointSlices: new Map(),
    referenceGrants: new Map(),
    namespaceLabels: new Map(),
    secrets: new Map(),
    nodes: [],
    dataplaneConfigs: new Map(),
    addressPools: arr(s.addressPools) as Snapshot["addressPools"],
    allocations: obj(s.allocations) as Record<string, string>,
    ...(str(s.certificateCopyNamespace)
      ? { certificateCopyNamespace: str(s.certificateCopyNamespace) }
      : {}),
  };
  for (const raw of arr(s.gatewayClasses)) {
    const view = gatewayClassView(raw);
    if (view.meta.name) input.gatewayClasses.push(view);
  }
  for (const raw of arr(s.gateways)) {
    const view = gatewayView(raw);
    if (view.meta.name) input.gateways.push(view);
  }
  for (const raw of arr(s.listenerSets)) {
    const view = listenerSetView(raw);
    if (view.meta.name) input.listenerSets.push(view);
  }
  for (const [kind, list] of [
    ["TCPRoute", s.tcpRoutes],
    ["UDPRoute", s.udpRoutes],
    ["HTTPRoute", s.httpRoutes],
  ] as const) {
    for (const raw of arr(list)) {
      const view = routeView(kind, raw);
      if (view.meta.name) input.routes.push(view);
    }
  }
  for (const raw of arr(s.services)) {
    const view = serviceView(raw);
    if (view.meta.name) input.services.set(nsName(view.meta.namespace, view.meta.name), view);
  }
  for (const raw of arr(s.endpointSlices)) {
    const m = meta(raw);
    const service = m.labels["kubernetes.io/service-name"];
    if (!service) continue;
    append(input.endpointSlices, nsName(m.namespace, service), endpointSliceView(raw));
  }
  for (const raw of arr(s.referenceGrants))
    append(input.referenceGrants, meta(raw).namespace, referenceGrantView(raw));
  for (const raw of arr(s.namespaces)) {
    const m = meta(raw);
    input.namespaceLabels.set(m.name, { "kubernetes.io/metadata.name": m.name, ...m.labels });
  }
  for (const secret of arr(s.secrets) as SecretInfo[]) {
    if (typeof secret?.namespace === "string" && typeof secret?.name === "string")
      input.secrets.set(`${secret.namespace}/${secret.name}`, secret);
  }
  for (const raw of arr(s.nodes)) {
    const n = obj(raw);
    if (typeof n.name === "string")
      input.nodes.push({
        name: n.name,
        ready: n.ready === true,
        agentReady: n.agentReady === true,
      });
  }
  for (const raw of arr(s.dataplaneConfigs)) {
    const m = meta(raw);
    input.dataplaneConfigs.set(nsName(m.namespace, m.name), dataplaneConfigView(raw));
  }
  return input;
}

function append<T>(map: Map<string, T[]>, key: string, value: T): void {
  const list = map.get(key) ?? [];
  list.push(value);
  map.set(key, list);
}

/** The string-valued entries of a map (labels, annotations). */
function strings(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(value))) if (typeof v === "string") out[k] = v;
  return out;
}

/** A reference for a message: "group/Kind namespace/name". */
function describeRef(ref: unknown): string {
  const r = obj(ref);
  return `${str(r.group) || "core"}/${str(r.kind) ?? "?"} ${str(r.namespace) ? `${str(r.namespace)}/` : ""}${str(r.name) ?? "?"}`;
}

export function gatewayClassView(raw: unknown): GatewayClassView {
  const spec = obj(obj(raw).spec);
  return {
    meta: meta(raw),
    controllerName: str(spec.controllerName),
    parametersRef: spec.parametersRef !== undefined ? describeRef(spec.parametersRef) : undefined,
    previousConditions: obj(obj(raw).status).conditions,
  };
}

export function gatewayView(raw: unknown): GatewayView {
  const m = meta(raw);
  const spec = obj(obj(raw).spec);
  const status = obj(obj(raw).status);
  const infrastructure = obj(spec.infrastructure);
  const previousListenerConditions = listenerConditions(status);
  const allowedListeners = obj(obj(spec.allowedListeners).namespaces);
  return {
    meta: m,
    key: nsName(m.namespace, m.name),
    className: str(spec.gatewayClassName) ?? "",
    deleting: Boolean(obj(obj(raw).metadata).deletionTimestamp),
    listeners: arr(spec.listeners).map(l => listenerView(obj(l), m.namespace)),
    addresses: arr(spec.addresses)
      .map(obj)
      .map(a => ({
        type: str(a.type) ?? "IPAddress",
        ...(str(a.value) ? { value: str(a.value) } : {}),
      })),
    infrastructureParametersRef:
      infrastructure.parametersRef !== undefined
        ? describeRef(infrastructure.parametersRef)
        : undefined,
    allowedListeners: {
      from: str(allowedListeners.from) ?? "None",
      ...(allowedListeners.selector !== undefined ? { selector: allowedListeners.selector } : {}),
    },
    infrastructureLabels: strings(infrastructure.labels),
    infrastructureAnnotations: strings(infrastructure.annotations),
    previousConditions: status.conditions,
    previousListenerConditions,
  };
}

function listenerConditions(status: Obj): Map<string, unknown> {
  const conditions = new Map<string, unknown>();
  for (const l of arr(status.listeners).map(obj)) {
    if (typeof l.name === "string" && !conditions.has(l.name)) conditions.set(l.name, l.conditions);
  }
  return conditions;
}

export function listenerSetView(raw: unknown): ListenerSetView {
  const m = meta(raw);
  const spec = obj(obj(raw).spec);
  const status = obj(obj(raw).status);
  const parent = obj(spec.parentRef);
  return {
    meta: m,
    key: nsName(m.namespace, m.name),
    parentRef: {
      group: str(parent.group) ?? GATEWAY_GROUP,
      kind: str(parent.kind) ?? "Gateway",
      namespace: str(parent.namespace) || m.namespace,
      name: str(parent.name) ?? "",
    },
    listeners: arr(spec.listeners).map(l => listenerView(obj(l), m.namespace)),
    previousConditions: status.conditions,
    previousListenerConditions: listenerConditions(status),
  };
}

function listenerView(l: Obj, gatewayNamespace: string): ListenerView {
  const tls = obj(l.tls);
  const allowed = obj(l.allowedRoutes);
  const namespaces = obj(allowed.namespaces);
  return {
    name: str(l.name) || undefined,
    protocol: str(l.protocol) ?? "",
    port: int(l.port) ?? 0,
    portText: String(JSON.stringify(l.port)),
    hostname: str(l.hostname) ?? "",
    tlsMode: str(tls.mode) ?? "Terminate",
    certificateRefs: arr(tls.certificateRefs).map(raw => {
      const r = obj(raw);
      return {
        group: str(r.group) ?? "",
        kind: str(r.kind) ?? "Secret",
        namespace: str(r.namespace) || gatewayNamespace,
        name: str(r.name) ?? "",
      };
    }),
    allowedKinds: arr(allowed.kinds)
      .map(obj)
      .map(k => ({ group: str(k.group) ?? GATEWAY_GROUP, kind: str(k.kind) ?? "" })),
    allowedFrom: str(namespaces.from) ?? "Same",
    selector: namespaces.selector,
  };
}

/** A parentRef with its defaults; a port that is not an integer is kept as written. */
function parentReference(
  raw: unknown,
  routeNamespace: string,
  port: (value: unknown) => number,
): ParentReference {
  const r = obj(raw);
  const ref: ParentReference = {
    group: str(r.group) ?? GATEWAY_GROUP,
    kind: str(r.kind) ?? "Gateway",
    namespace: str(r.namespace) || routeNamespace,
    name: str(r.name) ?? "",
  };
  if (str(r.sectionName)) ref.sectionName = str(r.sectionName);
  if (r.port !== undefined) ref.port = port(r.port);
  return ref;
}

export function routeView(kind: RouteKind, raw: unknown): RouteView {
  const m = meta(raw);
  const spec = obj(obj(raw).spec);
  // TCPRoute and UDPRoute v1 have one rule; an HTTPRoute with more is refused before its backends count.
  const backendRefs = arr(spec.rules).flatMap(rule => arr(obj(rule).backendRefs));
  return {
    kind,
    meta: m,
    parentRefs: arr(spec.parentRefs).map(r =>
      parentReference(r, m.namespace, p => int(p) ?? (p as number)),
    ),
    backendRefs: backendRefs.map(raw => backendRefView(obj(raw), m.namespace)),
    ...(kind === "HTTPRoute" ? { unsupportedField: unsupportedHTTPRouteField(spec) } : {}),
    previousParents: arr(obj(obj(raw).status).parents)
      .map(obj)
      .map(p => ({
        controllerName: str(p.controllerName),
        parentRef: parentReference(p.parentRef, m.namespace, port => port as number),
        conditions: p.conditions,
        raw: p,
      })),
  };
}

function backendRefView(ref: Obj, routeNamespace: string): BackendRefView {
  const view: BackendRefView = {
    group: str(ref.group) ?? "",
    kind: str(ref.kind) ?? "Service",
    namespace: str(ref.namespace) || routeNamespace,
    name: str(ref.name) ?? "",
    weight: ref.weight === undefined ? 1 : int(ref.weight),
    weightText: String(JSON.stringify(ref.weight)),
    port: int(ref.port),
  };
  if (ref.port !== undefined) view.portText = String(JSON.stringify(ref.port));
  return view;
}

export function serviceView(raw: unknown): ServiceView {
  const spec = obj(obj(raw).spec);
  return {
    meta: meta(raw),
    type: str(spec.type),
    ports: arr(spec.ports)
      .map(obj)
      .map(p => ({ port: int(p.port), protocol: str(p.protocol), name: str(p.name) ?? "" })),
  };
}

function endpointSliceView(raw: unknown): EndpointSliceView {
  const s = obj(raw);
  return {
    addressType: str(s.addressType),
    ports: arr(s.ports)
      .map(obj)
      .map(p => ({
        name: str(p.name) ?? "",
        protocol: str(p.protocol) ?? "TCP",
        port: int(p.port),
      })),
    endpoints: arr(s.endpoints)
      .map(obj)
      .map(e => {
        const endpoint: EndpointSliceView["endpoints"][number] = {
          address: str(arr(e.addresses)[0]),
          // The API says a missing ready means ready.
          ready: obj(e.conditions).ready !== false,
        };
        // A node name is at most 253 characters; a longer one could not be written to the CRD.
        const nodeName = str(e.nodeName);
        if (nodeName && nodeName.length <= 253) endpoint.nodeName = nodeName;
        return endpoint;
      }),
  };
}

export function referenceGrantView(raw: unknown): ReferenceGrantView {
  const spec = obj(obj(raw).spec);
  return {
    from: arr(spec.from)
      .map(obj)
      .map(f => ({ group: str(f.group) ?? "", kind: str(f.kind), namespace: str(f.namespace) })),
    to: arr(spec.to)
      .map(obj)
      .map(t => ({ group: str(t.group) ?? "", kind: str(t.kind), name: str(t.name) })),
  };
}

function dataplaneConfigView(raw: unknown): DataplaneConfigView {
  const spec = obj(obj(raw).spec);
  const acknowledged = new Map<string, number>();
  const messages = new Map<string, string>();
  for (const n of arr(obj(obj(raw).status).nodes)) {
    const entry = obj(n);
    if (typeof entry.name !== "string") continue;
    acknowledged.set(entry.name, int(entry.observedGeneration) ?? -1);
    const message = str(entry.message);
    if (message) messages.set(entry.name, message);
  }
  return {
    spec,
    generation: int(obj(obj(raw).metadata).generation) ?? 0,
    announcingNode: str(spec.announcingNode),
    acknowledged,
    messages,
  };
}
