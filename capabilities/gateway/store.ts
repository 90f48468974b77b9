// SPDX-License-Identifier: Apache-2.0
/**
 * The controller's in-memory view of the cluster: the latest object of every watched kind,
 * turned into a compile Snapshot on demand. No I/O; watch callbacks and relists feed it.
 */
import { secretDigest } from "./certificate-copies";
import { createPrivateKey, X509Certificate } from "node:crypto";
import type { KubernetesObject } from "kubernetes-fluent-client";
import type { V1Node, V1Pod, V1Secret } from "@kubernetes/client-node";
import type { AddressPool, NodeInfo, SecretInfo, Snapshot } from "./compile/types";

/**
 * Every kind the controller watches, by the name the store files it under. Secrets are not
 * watched: a watch (and its client-side cache) would hold every Secret's key bytes for the
 * life of the process. The reconcile reads only the Secrets listeners name, reduces each to
 * SecretInfo at once, and rereads them on every reconcile and resync.
 */
export const WATCHED_KINDS = [
  "GatewayClass",
  "Gateway",
  "ListenerSet",
  "TCPRoute",
  "UDPRoute",
  "HTTPRoute",
  "ReferenceGrant",
  "Service",
  "EndpointSlice",
  "Namespace",
  "Node",
  "DataplaneConfig",
  "AgentPod",
] as const;
export type WatchedKind = (typeof WATCHED_KINDS)[number];

/**
 * What is kept of a Secret: never its data. Parsing happens here, once, and the key bytes go
 * out of scope with the watch event that carried them.
 */
export function secretInfo(secret: V1Secret): SecretInfo {
  return {
    namespace: secret.metadata?.namespace ?? "",
    name: secret.metadata?.name ?? "",
    type: secret.type ?? "",
    validTLS: tlsPairParses(secret.data?.["tls.crt"], secret.data?.["tls.key"]),
    digest: secretDigest(secret.type, secret.data),
    ...(secret.metadata?.creationTimestamp
      ? {
          creationTimestamp: new Date(secret.metadata.creationTimestamp)
            .toISOString()
            .replace(".000Z", "Z"),
        }
      : {}),
  };
}

/** tls.crt and tls.key (base64, as the API serves them) parse, and the key belongs to the certificate. */
export function tlsPairParses(
  certBase64: string | undefined,
  keyBase64: string | undefined,
): boolean {
  if (!certBase64 || !keyBase64) return false;
  try {
    const certificate = new X509Certificate(Buffer.from(certBase64, "base64"));
    const key = createPrivateKey(Buffer.from(keyBase64, "base64"));
    return certificate.checkPrivateKey(key);
  } catch {
    return false;
  }
}

function nodeReady(node: V1Node): boolean {
  return node.status?.conditions?.some(c => c.type === "Ready" && c.status === "True") ?? false;
}

function podReady(pod: V1Pod): boolean {
  return (
    !pod.metadata?.deletionTimestamp &&
    (pod.status?.conditions?.some(c => c.type === "Ready" && c.status === "True") ?? false)
  );
}

/**
 * A node's agent is ready when a ready agent Pod runs on it (its readiness probe says the
 * programs are attached) and its node Lease has not lapsed (`lapsed`, as the controller sees
 * the agent Leases).
 */
export function nodeInfos(
  nodes: V1Node[],
  agentPods: V1Pod[],
  lapsed: ReadonlySet<string> = new Set(),
): NodeInfo[] {
  const agentNodes = new Set(agentPods.filter(podReady).map(p => p.spec?.nodeName));
  return nodes
    .map(node => ({
      name: node.metadata?.name ?? "",
      ready: nodeReady(node),
      // An agent whose node Lease lapsed is not ready, though its Pod still says so: the agents
      // have moved its addresses already (agent/leases.ts), and the controller follows them.
      agentReady: agentNodes.has(node.metadata?.name) && !lapsed.has(node.metadata?.name ?? ""),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Orders two resourceVersions of one object's kind: negative when `a` is older, positive when
 * newer, 0 when equal. Kubernetes 1.35 made them comparable (KEP-5504, stable): decimal
 * integers without leading zeros, longer is newer. undefined when either is not of that form
 * (an aggregated API server may use another), so a caller knows nothing about their order.
 */
export function compareResourceVersions(a?: string, b?: string): number | undefined {
  const comparable = (v?: string): v is string => !!v && /^[1-9][0-9]*$/.test(v);
  if (!comparable(a) || !comparable(b)) return undefined;
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Whether `held` is a newer copy of the same object (same uid) than `incoming`. */
function heldIsNewer(held: KubernetesObject | undefined, incoming: KubernetesObject): boolean {
  if (!held?.metadata?.uid || held.metadata.uid !== incoming.metadata?.uid) return false;
  return (
    (compareResourceVersions(held.metadata.resourceVersion, incoming.metadata?.resourceVersion) ??
      0) > 0
  );
}

/** The same object at the same resourceVersion: the API server's content is the same too. */
function sameVersion(held: KubernetesObject | undefined, incoming: KubernetesObject): boolean {
  const version = held?.metadata?.resourceVersion;
  return (
    !!held?.metadata?.uid &&
    held.metadata.uid === incoming.metadata?.uid &&
    version !== undefined &&
    version === incoming.metadata?.resourceVersion
  );
}

const objectKey = (o: KubernetesObject): string =>
  o.metadata?.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : (o.metadata?.name ?? "");

export interface SecretRef {
  namespace: string;
  name: string;
}

type ListenersSpec = {
  listeners?: {
    tls?: {
      certificateRefs?: { group?: string; kind?: string; namespace?: string; name: string }[];
    };
  }[];
};

/**
 * The Secrets the listeners of blixt's Gateways, and of the ListenerSets whose parent is one of
 * them, name in tls.certificateRefs, each once, sorted. Gateways of another controller's class
 * are not blixt's to serve: their refs (and their ListenerSets') are never read.
 */
export function certificateSecretRefs(
  gateways: KubernetesObject[],
  gatewayClasses: KubernetesObject[],
  controllerName: string,
  listenerSets: KubernetesObject[] = [],
): SecretRef[] {
  const ours = new Set(
    gatewayClasses
      .filter(
        c => (c as { spec?: { controllerName?: string } }).spec?.controllerName === controllerName,
      )
      .map(c => c.metadata?.name),
  );
  const refs = new Map<string, SecretRef>();
  const add = (object: KubernetesObject, spec: ListenersSpec | undefined) => {
    for (const ref of (spec?.listeners ?? []).flatMap(l => l.tls?.certificateRefs ?? [])) {
      if (((ref.group ?? "") !== "" && ref.group !== "core") || (ref.kind ?? "Secret") !== "Secret")
        continue;
      const namespace = ref.namespace || object.metadata?.namespace || "";
      refs.set(`${namespace}/${ref.name}`, { namespace, name: String(ref.name ?? "") });
    }
  };
  const servedGateways = new Set<string>();
  for (const gateway of gateways) {
    const spec = (
      gateway as {
        spec?: {
          gatewayClassName?: string;
          listeners?: {
            tls?: {
              certificateRefs?: {
                group?: string;
                kind?: string;
                namespace?: string;
                name: string;
              }[];
            };
          }[];
        };
      }
    ).spec;
    if (!ours.has(spec?.gatewayClassName) || gateway.metadata?.deletionTimestamp) continue;
    servedGateways.add(objectKey(gateway));
    add(gateway, spec);
  }
  for (const listenerSet of listenerSets) {
    const spec = (
      listenerSet as {
        spec?: ListenersSpec & {
          parentRef?: { group?: string; kind?: string; namespace?: string; name?: string };
        };
      }
    ).spec;
    const parent = spec?.parentRef;
    if ((parent?.kind ?? "Gateway") !== "Gateway") continue;
    const parentNamespace = parent?.namespace || listenerSet.metadata?.namespace;
    if (!servedGateways.has(`${parentNamespace}/${parent?.name}`)) continue;
    add(listenerSet, spec);
  }
  return [...refs.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, ref]) => ref);
}

export class SnapshotStore {
  #objects = new Map<WatchedKind, Map<string, KubernetesObject>>(
    WATCHED_KINDS.map(k => [k, new Map()]),
  );
  /**
   * uids seen deleted, per kind. Creates and deletes arrive on separate watch streams (and a
   * relist can be older than the last event), so an object's ADDED can land after its DELETED;
   * a uid never comes back once deleted, so such a late arrival is dropped, not resurrected.
   */
  #deleted = new Map<WatchedKind, Set<string>>(WATCHED_KINDS.map(k => [k, new Set()]));
  #secrets: SecretInfo[] = [];
  /**
   * When each object was last seen by a watch (or a write), as a sequence number. A relist
   * can take seconds, and a list is a picture of its start: whatever a watch reported after a
   * list began is newer than what that list says about it.
   */
  #seq = 0;
  #touched = new Map<string, number>();
  #listing = new Set<number>();

  #touch(kind: WatchedKind, key: string): void {
    this.#touched.set(`${kind}\0${key}`, ++this.#seq);
  }

  #touchedSince(kind: WatchedKind, key: string, since: number): boolean {
    return (this.#touched.get(`${kind}\0${key}`) ?? 0) > since;
  }

  /**
   * Records the latest state of an object, unless that object (by uid) was already deleted or
   * a newer copy of it is held. A write's answer can arrive after the watch reported a change
   * made since (a spec update right after blixt's status write): that answer is older and must
   * not hide the change, or its new generation would wait for the next resync. Returns whether
   * the store holds something it did not before: false for the version it already held (the
   * watch bringing back a write whose answer the store took), an older one, or a deleted object.
   */
  upsert(kind: WatchedKind, object: KubernetesObject): boolean {
    const uid = object.metadata?.uid;
    if (uid && this.#deleted.get(kind)!.has(uid)) return false;
    const key = objectKey(object);
    const held = this.#objects.get(kind)!.get(key);
    if (heldIsNewer(held, object)) return false;
    this.#objects.get(kind)!.set(key, object);
    this.#touch(kind, key);
    return !sameVersion(held, object);
  }

  /** The referenced Secrets as last read, already reduced to SecretInfo. */
  setSecrets(secrets: SecretInfo[]): void {
    this.#secrets = [...secrets].sort((a, b) =>
      `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`),
    );
  }

  remove(kind: WatchedKind, object: KubernetesObject): void {
    const key = objectKey(object);
    const uid = object.metadata?.uid;
    if (uid) this.#deleted.get(kind)!.add(uid);
    // Only the object that was deleted: a newer one of the same name stays.
    const held = this.#objects.get(kind)!.get(key);
    if (!uid || !held?.metadata?.uid || held.metadata.uid === uid) {
      this.#objects.get(kind)!.delete(key);
      this.#touch(kind, key);
    }
  }

  /** A relist is about to start: its token for replace() and listDone(). */
  listStarted(): number {
    this.#listing.add(this.#seq);
    return this.#seq;
  }

  /** The relist that listStarted() returned `since` for is over (applied or failed). */
  listDone(since: number): void {
    this.#listing.delete(since);
    // Only a relist still running needs to know what changed after it began.
    const oldest = Math.min(...this.#listing);
    for (const [key, seq] of this.#touched) if (seq <= oldest) this.#touched.delete(key);
  }

  /**
   * Replaces everything of one kind with a relist begun at `since` (listStarted()): what a
   * watch reported after that, an object or its deletion, is kept over the list's older view.
   */
  replace(kind: WatchedKind, objects: KubernetesObject[], since = this.#seq): void {
    const held = this.#objects.get(kind)!;
    const fresh = new Map<string, KubernetesObject>();
    const deleted = this.#deleted.get(kind)!;
    for (const object of objects) {
      const key = objectKey(object);
      const uid = object.metadata?.uid;
      if (this.#touchedSince(kind, key, since) || (uid && deleted.has(uid))) continue;
      const current = held.get(key);
      fresh.set(key, current && heldIsNewer(current, object) ? current : object);
    }
    for (const [key, object] of held)
      if (this.#touchedSince(kind, key, since)) fresh.set(key, object);
    this.#objects.set(kind, fresh);
    // A tombstone is needed only while a stale list could still carry its uid.
    const listed = new Set(objects.map(o => o.metadata?.uid).filter((u): u is string => !!u));
    for (const uid of deleted) if (!listed.has(uid)) deleted.delete(uid);
  }

  get<T>(kind: WatchedKind, namespace: string | undefined, name: string): T | undefined {
    return this.#objects.get(kind)!.get(namespace ? `${namespace}/${name}` : name) as T | undefined;
  }

  /**
   * Every object of a kind, ordered by "namespace/name" as code points: for Kubernetes names
   * (lower case) the order localeCompare gives, at a fraction of its cost; every pass lists
   * every kind, a thousand routes and their Services and EndpointSlices included.
   */
  list<T>(kind: WatchedKind): T[] {
    return [...this.#objects.get(kind)!.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => o as T);
  }

  snapshot(input: {
    controllerName: string;
    now: string;
    addressPools: AddressPool[];
    allocations: Record<string, string>;
    certificateCopyNamespace?: string;
    /** nodes whose agent Lease lapsed, as the controller sees them */
    lapsed?: ReadonlySet<string>;
  }): Snapshot {
    return {
      controllerName: input.controllerName,
      now: input.now,
      gatewayClasses: this.list("GatewayClass"),
      gateways: this.list("Gateway"),
      listenerSets: this.list("ListenerSet"),
      tcpRoutes: this.list("TCPRoute"),
      udpRoutes: this.list("UDPRoute"),
      httpRoutes: this.list("HTTPRoute"),
      referenceGrants: this.list("ReferenceGrant"),
      services: this.list("Service"),
      endpointSlices: this.list("EndpointSlice"),
      namespaces: this.list("Namespace"),
      secrets: this.#secrets,
      nodes: nodeInfos(this.list("Node"), this.list("AgentPod"), input.lapsed),
      dataplaneConfigs: this.list("DataplaneConfig"),
      addressPools: input.addressPools,
      allocations: input.allocations,
      ...(input.certificateCopyNamespace
        ? { certificateCopyNamespace: input.certificateCopyNamespace }
        : {}),
    };
  }
}
