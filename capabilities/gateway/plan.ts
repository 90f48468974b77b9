// SPDX-License-Identifier: Apache-2.0
/**
 * The controller's write plan: given what the cluster holds (the snapshot) and what the
 * compile step wants, decide which writes bring the cluster there. Pure: no I/O, no clock,
 * so the decisions (what differs, what to delete, when a finalizer may go) are unit-tested.
 */
import type { KubernetesObject, Operation } from "kubernetes-fluent-client";
import type { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1";
import { copyMetadata, COPY_LABEL, type CertificateCopy } from "./certificate-copies";
import {
  DIGEST_ANNOTATION,
  GATEWAY_SERVICE_LABEL,
  type GatewayService,
} from "./compile/gateway-services";
import type { CompileOutput, Snapshot, V1EndpointSlice, V1Service } from "./compile/types";
import { canonicalJSON as sortedJSON, cmp, jsonEqual } from "./compile/util";

/** Put on every Gateway blixt accepts, so its address and DataplaneConfig are released first. */
export const GATEWAY_FINALIZER = "blixt.dev/gateway-finalizer";

export type StatusKind =
  | "GatewayClass"
  | "Gateway"
  | "ListenerSet"
  | "TCPRoute"
  | "UDPRoute"
  | "HTTPRoute";

export type Write =
  /** `patch` is a JSON patch guarded by `test` ops, so a stale view fails instead of clobbering. */
  | { op: "addFinalizer"; kind: "Gateway"; namespace: string; name: string; patch: Operation[] }
  | { op: "applyDataplaneConfig"; namespace: string; name: string; object: DataplaneConfig }
  | { op: "deleteDataplaneConfig"; namespace: string; name: string }
  /** `status` is a merge patch: keys set to null remove fields blixt no longer reports. */
  | {
      op: "patchStatus";
      kind: StatusKind;
      namespace?: string;
      name: string;
      status: Record<string, unknown>;
    }
  | { op: "removeFinalizer"; kind: "Gateway"; namespace: string; name: string; patch: Operation[] }
  /**
   * Create or replace the copy of a certificate in the release namespace. The plan holds no key
   * bytes: the write reads `copy.source` and stores its data, if its digest is still `digest`.
   */
  | {
      op: "applyCertificateCopy";
      namespace: string;
      name: string;
      copy: CertificateCopy;
      digest: string;
      labels: Record<string, string>;
      annotations: Record<string, string>;
    }
  | { op: "deleteCertificateCopy"; namespace: string; name: string }
  /** Server-side apply of a Gateway's Service or EndpointSlice (gateway-services.ts). */
  | { op: "applyGatewayService"; namespace: string; name: string; object: V1Service }
  | { op: "applyGatewayEndpointSlice"; namespace: string; name: string; object: V1EndpointSlice }
  | { op: "deleteGatewayService"; namespace: string; name: string }
  | { op: "deleteGatewayEndpointSlice"; namespace: string; name: string };

/** The snapshot parts the plan compares against (the same objects compile saw). */
export type ClusterState = Pick<
  Snapshot,
  | "controllerName"
  | "gatewayClasses"
  | "gateways"
  | "tcpRoutes"
  | "udpRoutes"
  | "httpRoutes"
  | "dataplaneConfigs"
> &
  Partial<Pick<Snapshot, "secrets" | "services" | "endpointSlices" | "listenerSets">> & {
    /** The copies now in the release namespace (labelled COPY_LABEL), metadata enough. */
    certificateCopies?: KubernetesObject[];
  };

export function describeWrite(write: Write): string {
  const where =
    "namespace" in write && write.namespace ? `${write.namespace}/${write.name}` : write.name;
  switch (write.op) {
    case "applyDataplaneConfig":
    case "deleteDataplaneConfig":
      return `${write.op} DataplaneConfig ${where}`;
    case "applyCertificateCopy":
      return `${write.op} Secret ${where} (of Secret ${write.copy.source.namespace}/${write.copy.source.name})`;
    case "deleteCertificateCopy":
      return `${write.op} Secret ${where}`;
    case "applyGatewayService":
    case "deleteGatewayService":
      return `${write.op} Service ${where}`;
    case "applyGatewayEndpointSlice":
    case "deleteGatewayEndpointSlice":
      return `${write.op} EndpointSlice ${where}`;
    default:
      return `${write.op} ${write.kind} ${where}`;
  }
}

/** A value as JSON carries it: Dates become strings, undefined members vanish. */
const plainJSON = (value: unknown): unknown => JSON.parse(JSON.stringify(value ?? null));

/** JSON with sorted keys, after a JSON round trip (Dates become strings, undefined vanishes). */
export function canonicalJSON(value: unknown): string {
  return sortedJSON(plainJSON(value));
}

/**
 * Whether two values carry the same JSON, whatever the order of their keys: what comparing
 * their canonicalJSON says, without building and sorting the strings, and without a JSON round
 * trip when they are equal as they are (the API server's objects and the compile's output are
 * plain JSON; a Date, or an undefined array element, is compared after the round trip).
 * The plan compares every route's status and every DataplaneConfig's spec on every pass; with
 * a thousand routes, canonical strings were half the controller's time per pass.
 */
export const sameJSON = (a: unknown, b: unknown): boolean =>
  jsonEqual(a ?? null, b ?? null) || jsonEqual(plainJSON(a), plainJSON(b));

const key = (namespace: string | undefined, name: string): string =>
  namespace ? `${namespace}/${name}` : name;
const keyOf = (o: KubernetesObject): string => key(o.metadata?.namespace, o.metadata?.name ?? "");

/**
 * A merge patch turning `current` into `desired`, or undefined when they already agree.
 * Top-level fields blixt stopped reporting are nulled, since a merge patch keeps what it omits.
 */
export function statusPatch(
  current: Record<string, unknown> | undefined,
  desired: Record<string, unknown>,
): Record<string, unknown> | undefined {
  if (sameJSON(current ?? {}, desired)) return undefined;
  const have = plainJSON(current ?? {}) as Record<string, unknown>;
  const want = plainJSON(desired) as Record<string, unknown>;
  const patch: Record<string, unknown> = { ...want };
  for (const field of Object.keys(have)) if (!(field in want)) patch[field] = null;
  return patch;
}

interface RouteLike extends KubernetesObject {
  status?: { parents?: { controllerName: string }[] } & Record<string, unknown>;
}

function dataplaneConfigDiffers(
  current: DataplaneConfig | undefined,
  desired: DataplaneConfig,
): boolean {
  if (!current) return true;
  const owned = (o: DataplaneConfig) => ({
    spec: o.spec,
    labels: o.metadata?.labels ?? {},
    annotations: o.metadata?.annotations ?? {},
    ownerReferences: (o.metadata?.ownerReferences ?? []).map((r: Record<string, unknown>) => ({
      apiVersion: r.apiVersion,
      kind: r.kind,
      name: r.name,
      uid: r.uid,
      controller: r.controller,
      blockOwnerDeletion: r.blockOwnerDeletion,
    })),
  });
  // Only fields blixt sets count: the API server adds labels/annotations of its own rarely, but
  // it must not make blixt re-apply forever, so compare only the keys blixt wants.
  const want = owned(desired);
  const have = owned(current);
  const pick = (all: Record<string, string>, keys: Record<string, string>) =>
    Object.fromEntries(Object.keys(keys).map(k => [k, all[k]]));
  return (
    !sameJSON(want.spec, have.spec) ||
    !sameJSON(want.labels, pick(have.labels, want.labels)) ||
    !sameJSON(want.annotations, pick(have.annotations, want.annotations)) ||
    !sameJSON(want.ownerReferences, have.ownerReferences)
  );
}

/**
 * A JSON patch adding or removing blixt's finalizer on exactly the object seen. A server-side
 * apply would take ownership of every field sent; a merge patch would replace the list and
 * drop a finalizer another controller added meanwhile. The `test` ops make a stale view fail
 * (and be retried from a fresh one) instead.
 */
export function finalizerPatch(object: KubernetesObject, op: "add" | "remove"): Operation[] {
  const finalizers = object.metadata?.finalizers;
  if (op === "add") {
    if (!finalizers) {
      return [
        { op: "test", path: "/metadata/resourceVersion", value: object.metadata?.resourceVersion },
        { op: "add", path: "/metadata/finalizers", value: [GATEWAY_FINALIZER] },
      ];
    }
    return [{ op: "add", path: "/metadata/finalizers/-", value: GATEWAY_FINALIZER }];
  }
  const index = (finalizers ?? []).indexOf(GATEWAY_FINALIZER);
  return [
    { op: "test", path: `/metadata/finalizers/${index}`, value: GATEWAY_FINALIZER },
    { op: "remove", path: `/metadata/finalizers/${index}` },
  ];
}

/**
 * The writes that bring the cluster to `output`, in the order they must run:
 * finalizers first (so an address is never handed out without a way to release it), then
 * DataplaneConfigs (which record the address), then statuses (which publish it), then
 * finalizer removal for Gateways whose DataplaneConfig is already gone.
 */
export function planWrites(state: ClusterState, output: CompileOutput): Write[] {
  const writes: Write[] = [];
  const controllerName = state.controllerName;

  const gateways = new Map(state.gateways.map(g => [keyOf(g), g]));
  const currentConfigs = new Map(state.dataplaneConfigs.map(c => [keyOf(c), c]));
  const desiredConfigs = new Map(output.dataplaneConfigs.map(c => [keyOf(c), c]));

  for (const desired of output.gateways) {
    const gateway = gateways.get(key(desired.namespace, desired.name));
    if (
      gateway &&
      !gateway.metadata?.deletionTimestamp &&
      !gateway.metadata?.finalizers?.includes(GATEWAY_FINALIZER)
    ) {
      writes.push({
        op: "addFinalizer",
        kind: "Gateway",
        namespace: desired.namespace,
        name: desired.name,
        patch: finalizerPatch(gateway, "add"),
      });
    }
  }

  // Copies before the DataplaneConfigs that name them, so an agent never looks for one in vain.
  const copies = certificateCopyWrites(state, output);
  writes.push(...copies.apply);

  for (const [k, desired] of [...desiredConfigs].sort(([a], [b]) => a.localeCompare(b))) {
    if (dataplaneConfigDiffers(currentConfigs.get(k), desired)) {
      writes.push({
        op: "applyDataplaneConfig",
        namespace: desired.metadata?.namespace,
        name: desired.metadata?.name,
        object: desired,
      });
    }
  }
  for (const [k, current] of [...currentConfigs].sort(([a], [b]) => a.localeCompare(b))) {
    if (!desiredConfigs.has(k) && !current.metadata?.deletionTimestamp) {
      writes.push({
        op: "deleteDataplaneConfig",
        namespace: current.metadata?.namespace,
        name: current.metadata?.name,
      });
    }
  }

  // ... and deleted after the DataplaneConfigs stop naming them.
  writes.push(...copies.remove);

  writes.push(...gatewayServiceWrites(state, output.gatewayServices ?? []));

  const classes = new Map(state.gatewayClasses.map(c => [keyOf(c), c]));
  for (const desired of output.gatewayClasses) {
    const current = classes.get(desired.name);
    if (!current) continue;
    const patch = statusPatch(
      current.status as Record<string, unknown>,
      desired.status as unknown as Record<string, unknown>,
    );
    if (patch)
      writes.push({ op: "patchStatus", kind: "GatewayClass", name: desired.name, status: patch });
  }

  // A Gateway's status, and a ListenerSet's, is wholly its (parent's) controller's: a merge patch.
  const wholeStatuses: [
    "Gateway" | "ListenerSet",
    Map<string, KubernetesObject & { status?: unknown }>,
    { namespace: string; name: string; status: unknown }[],
  ][] = [
    ["Gateway", gateways, output.gateways],
    [
      "ListenerSet",
      new Map((state.listenerSets ?? []).map(l => [keyOf(l), l])),
      output.listenerSets ?? [],
    ],
  ];
  for (const [kind, currentByKey, wanted] of wholeStatuses) {
    for (const desired of wanted) {
      const current = currentByKey.get(key(desired.namespace, desired.name));
      if (!current || current.metadata?.deletionTimestamp) continue;
      const patch = statusPatch(
        current.status as Record<string, unknown>,
        desired.status as Record<string, unknown>,
      );
      if (patch)
        writes.push({
          op: "patchStatus",
          kind,
          namespace: desired.namespace,
          name: desired.name,
          status: patch,
        });
    }
  }

  const routesByKind: Record<"TCPRoute" | "UDPRoute" | "HTTPRoute", RouteLike[]> = {
    TCPRoute: state.tcpRoutes as RouteLike[],
    UDPRoute: state.udpRoutes as RouteLike[],
    HTTPRoute: state.httpRoutes as RouteLike[],
  };
  const desiredRoutes = new Map(
    output.routes.map(r => [`${r.kind}/${key(r.namespace, r.name)}`, r]),
  );
  for (const kind of ["TCPRoute", "UDPRoute", "HTTPRoute"] as const) {
    // Sorted by key as code points (Kubernetes names are lower case: the order localeCompare
    // gives, without its cost on a thousand routes).
    const keyed = routesByKind[kind].map(route => [keyOf(route), route] as const);
    for (const [routeKey, current] of keyed.sort(([a], [b]) => cmp(a, b))) {
      const desired = desiredRoutes.get(`${kind}/${routeKey}`);
      const currentParents = current.status?.parents ?? [];
      // A route that no longer names a blixt Gateway keeps only other controllers' entries.
      if (!desired && !currentParents.some(p => p.controllerName === controllerName)) continue;
      // compile carries other controllers' entries through as they were; a route it no longer
      // reports keeps only those.
      const want = desired
        ? (desired.status as unknown as Record<string, unknown>)
        : {
            ...current.status,
            parents: currentParents.filter(p => p.controllerName !== controllerName),
          };
      const patch = statusPatch(current.status, want);
      if (patch) {
        writes.push({
          op: "patchStatus",
          kind,
          namespace: current.metadata?.namespace,
          name: current.metadata?.name ?? "",
          status: patch,
        });
      }
    }
  }

  for (const gateway of [...state.gateways].sort((a, b) => keyOf(a).localeCompare(keyOf(b)))) {
    if (
      !gateway.metadata?.deletionTimestamp ||
      !gateway.metadata.finalizers?.includes(GATEWAY_FINALIZER)
    )
      continue;
    // The DataplaneConfig shares the Gateway's name; the finalizer goes only once it is gone,
    // so the next reconcile (triggered by its deletion) releases the Gateway.
    if (!currentConfigs.has(keyOf(gateway)) && !desiredConfigs.has(keyOf(gateway))) {
      writes.push({
        op: "removeFinalizer",
        kind: "Gateway",
        namespace: gateway.metadata.namespace,
        name: gateway.metadata.name,
        patch: finalizerPatch(gateway, "remove"),
      });
    }
  }
  return writes;
}

/**
 * The certificate copies to write: each one the compile output asks for that is missing, or
 * whose source changed (digest), or whose labels/annotations differ; and each labelled copy no
 * DataplaneConfig names any more, to delete. A source blixt could not read this pass (no
 * digest) keeps the copy it has.
 */
export function certificateCopyWrites(
  state: ClusterState,
  output: CompileOutput,
): { apply: Write[]; remove: Write[] } {
  const apply: Write[] = [];
  const remove: Write[] = [];
  const digests = new Map((state.secrets ?? []).map(s => [key(s.namespace, s.name), s.digest]));
  const current = new Map(
    (state.certificateCopies ?? [])
      .filter(c => c.metadata?.labels?.[COPY_LABEL] === "true")
      .map(c => [keyOf(c), c]),
  );
  const desired = new Map((output.certificateCopies ?? []).map(c => [key(c.namespace, c.name), c]));
  for (const [k, copy] of [...desired].sort(([a], [b]) => a.localeCompare(b))) {
    const have = current.get(k);
    const digest = digests.get(key(copy.source.namespace, copy.source.name));
    if (!digest) continue;
    const { labels, annotations } = copyMetadata(copy, digest);
    const same = (want: Record<string, string>, got: Record<string, string> | undefined) =>
      Object.entries(want).every(([name, value]) => got?.[name] === value);
    if (
      have &&
      same(labels, have.metadata?.labels) &&
      same(annotations, have.metadata?.annotations)
    )
      continue;
    apply.push({
      op: "applyCertificateCopy",
      namespace: copy.namespace,
      name: copy.name,
      copy,
      digest,
      labels,
      annotations,
    });
  }
  for (const [k, copy] of [...current].sort(([a], [b]) => a.localeCompare(b))) {
    if (!desired.has(k) && !copy.metadata?.deletionTimestamp) {
      remove.push({
        op: "deleteCertificateCopy",
        namespace: copy.metadata?.namespace ?? "",
        name: copy.metadata?.name ?? "",
      });
    }
  }
  return { apply, remove };
}

/**
 * The snapshot compile sees: Gateways being deleted are left out, so compile releases their
 * address and drops their DataplaneConfig while the finalizer holds the Gateway.
 */
export function compileInput(snapshot: Snapshot): Snapshot {
  return { ...snapshot, gateways: snapshot.gateways.filter(g => !g.metadata?.deletionTimestamp) };
}

/**
 * The allocation table compile starts from. DataplaneConfigs are the durable record (each is
 * written before any status publishes its address), so a restarted controller rebuilds the
 * table from them; once this process has compiled, its own last table is the newer truth.
 */
export function recordedAllocations(
  dataplaneConfigs: DataplaneConfig[],
  lastDecided?: Record<string, string>,
): Record<string, string> {
  if (lastDecided) return { ...lastDecided };
  const table: Record<string, string> = {};
  for (const config of [...dataplaneConfigs].sort((a, b) => keyOf(a).localeCompare(keyOf(b)))) {
    const address = config.spec?.address;
    if (address && !config.metadata?.deletionTimestamp) {
      table[key(config.metadata?.namespace, config.spec?.gatewayName ?? config.metadata?.name)] =
        address;
    }
  }
  return table;
}

/**
 * Whether `want` holds nothing `have` lacks: objects compared key by key (fields the API
 * server defaulted are extra in `have` and do not count), arrays element by element, an
 * empty list the same as none.
 */
export function containedIn(want: unknown, have: unknown): boolean {
  if (Array.isArray(want)) {
    // The API server stores an empty list as no field at all.
    if (want.length === 0 && (have === undefined || have === null)) return true;
    return (
      Array.isArray(have) &&
      want.length === have.length &&
      want.every((w, i) => containedIn(w, have[i]))
    );
  }
  if (want && typeof want === "object") {
    if (!have || typeof have !== "object" || Array.isArray(have)) return false;
    return Object.entries(want).every(([k, w]) =>
      containedIn(w, (have as Record<string, unknown>)[k]),
    );
  }
  return want === have;
}

/**
 * The Gateways' Services and EndpointSlices to apply (missing, or differing from what blixt
 * sets: a field, a label or annotation, or the digest of what it applied last, which tells a
 * label removed from spec.infrastructure), and those labelled GATEWAY_SERVICE_LABEL that no
 * accepted Gateway wants any more, to delete. What others add to them is left alone.
 */
export function gatewayServiceWrites(state: ClusterState, desired: GatewayService[]): Write[] {
  const writes: Write[] = [];
  const ours = (o: KubernetesObject) =>
    o.metadata?.labels?.[GATEWAY_SERVICE_LABEL] === "true" && !o.metadata?.deletionTimestamp;
  const differs = (want: KubernetesObject, have: KubernetesObject | undefined) => {
    if (!have) return true;
    const { metadata: wantMeta, ...wantBody } = want as KubernetesObject & Record<string, unknown>;
    const { metadata: haveMeta, ...haveBody } = have as KubernetesObject & Record<string, unknown>;
    return (
      haveMeta?.annotations?.[DIGEST_ANNOTATION] !== wantMeta?.annotations?.[DIGEST_ANNOTATION] ||
      !containedIn(wantMeta?.labels ?? {}, haveMeta?.labels ?? {}) ||
      !containedIn(wantMeta?.annotations ?? {}, haveMeta?.annotations ?? {}) ||
      !containedIn(wantMeta?.ownerReferences ?? [], haveMeta?.ownerReferences ?? []) ||
      !containedIn(wantBody, haveBody)
    );
  };
  const services = new Map((state.services ?? []).map(s => [keyOf(s), s as KubernetesObject]));
  const slices = new Map((state.endpointSlices ?? []).map(s => [keyOf(s), s as KubernetesObject]));
  const wanted = new Set<string>();
  for (const { service, endpointSlice } of desired) {
    const namespace = service.metadata?.namespace ?? "";
    const name = service.metadata?.name ?? "";
    wanted.add(key(namespace, name));
    if (differs(service as KubernetesObject, services.get(key(namespace, name))))
      writes.push({ op: "applyGatewayService", namespace, name, object: service });
    if (differs(endpointSlice as KubernetesObject, slices.get(key(namespace, name))))
      writes.push({ op: "applyGatewayEndpointSlice", namespace, name, object: endpointSlice });
  }
  for (const [k, s] of [...services].sort(([a], [b]) => a.localeCompare(b)))
    if (ours(s) && !wanted.has(k))
      writes.push({
        op: "deleteGatewayService",
        namespace: s.metadata?.namespace ?? "",
        name: s.metadata?.name ?? "",
      });
  for (const [k, s] of [...slices].sort(([a], [b]) => a.localeCompare(b)))
    if (ours(s) && !wanted.has(k))
      writes.push({
        op: "deleteGatewayEndpointSlice",
        namespace: s.metadata?.namespace ?? "",
        name: s.metadata?.name ?? "",
      });
  return writes;
}
