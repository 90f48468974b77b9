// SPDX-License-Identifier: Apache-2.0
/**
 * The admission webhook's reads, answered from watches instead of one live GET per request.
 *
 * Every TCPRoute the webhook admits needs its Gateway, that Gateway's GatewayClass and its
 * backend Services (admission.ts). Read live, that is two or three round trips per request;
 * while a thousand routes are being applied the API server is the busiest process on the
 * machine, and the webhook's wait for those reads was most of the time `kubectl apply` took
 * (some 45 ms in the webhook of the 100 ms each route took). Here each kind the lookups read
 * is watched once per admission pod (list, then watch; kubernetes-fluent-client's Watcher,
 * which relists on every reconnect) and a lookup is answered from what the watch holds.
 *
 * A watch is a moment behind the API server, and the webhook only ever warns (it never denies
 * a Gateway API object), so a cached answer is good enough where one exists. Where none does
 * (the kind's first list has not finished, the watch failed and has not relisted yet, or the
 * object is not in the cache: it may have been created a moment ago) the lookup reads live, as
 * before. ReferenceGrants are listed per namespace: with the kind in sync the cached list is
 * the answer, empty or not.
 */
import type { EventEmitter } from "node:events";
import {
  K8s,
  kind,
  WatchEvent,
  type KubernetesObject,
  type WatchCfg,
} from "kubernetes-fluent-client";
import { WatchPhase } from "kubernetes-fluent-client/dist/fluent/shared-types.js";
import type { V1Namespace, V1Service } from "@kubernetes/client-node";
import { Gateway } from "../generated/gateway-v1";
import { GatewayClass } from "../generated/gatewayclass-v1";
import { ReferenceGrant } from "../generated/referencegrant-v1beta1";
import { errorMessage } from "../error-message";
import { WATCH_FAILURES } from "../agent/kube";
import type { AdmissionLookup } from "./admission";

/**
 * Pepr 1.1.4's watch defaults (reconnect check every 5 s, rebuilt after 300 s of silence,
 * relist every 600 s), except that it never gives up reconnecting. A new object each time:
 * the Watcher fills in defaults on the one it is given.
 */
const watchCfg = (): WatchCfg => ({
  resyncDelaySec: 5,
  lastSeenLimitSeconds: 300,
  relistIntervalSec: 600,
});

/** What this file uses of kubernetes-fluent-client's Watcher. */
interface Watcher {
  events: EventEmitter;
  start(): Promise<unknown>;
  close(): void;
}

const keyOf = (namespace: string | undefined, name: string | undefined) =>
  `${namespace ?? ""}/${name ?? ""}`;

/** The objects of one kind as its watch delivered them, and whether that view is current. */
export class WatchedObjects<T extends KubernetesObject> {
  #objects = new Map<string, T>();
  #synced = false;

  constructor(readonly kind: string) {}

  /** true from the end of a complete list until the watch reports a failure */
  get synced(): boolean {
    return this.#synced;
  }

  get size(): number {
    return this.#objects.size;
  }

  /** a watch event (or a listed item): ADDED and MODIFIED replace, DELETED removes */
  observe(object: T, phase: WatchPhase): void {
    const key = keyOf(object.metadata?.namespace, object.metadata?.name);
    if (phase === WatchPhase.Deleted) this.#objects.delete(key);
    else if (phase === WatchPhase.Added || phase === WatchPhase.Modified)
      this.#objects.set(key, object);
  }

  /** the watcher finished a complete list, and every listed item has been observed */
  listed(): void {
    this.#synced = true;
  }

  /** the watch failed: until the next complete list the cache may be missing changes */
  stale(): void {
    this.#synced = false;
  }

  /** the object when the cache is current and holds it; undefined means "read it live" */
  get(namespace: string | undefined, name: string): T | undefined {
    return this.#synced ? this.#objects.get(keyOf(namespace, name)) : undefined;
  }

  /** every cached object in a namespace, or undefined when the cache is not current */
  inNamespace(namespace: string): T[] | undefined {
    if (!this.#synced) return undefined;
    return [...this.#objects.values()].filter(o => o.metadata?.namespace === namespace);
  }
}

/** An AdmissionLookup that answers from the caches where they can, and from `live` where not. */
export function cachedAdmissionLookup(
  caches: {
    gateways: WatchedObjects<Gateway>;
    gatewayClasses: WatchedObjects<GatewayClass>;
    services: WatchedObjects<V1Service>;
    referenceGrants: WatchedObjects<ReferenceGrant>;
    namespaces: WatchedObjects<V1Namespace>;
  },
  live: AdmissionLookup,
): AdmissionLookup {
  return {
    gateway: async (namespace, name) =>
      caches.gateways.get(namespace, name) ?? live.gateway(namespace, name),
    gatewayClass: async name =>
      caches.gatewayClasses.get(undefined, name) ?? live.gatewayClass(name),
    service: async (namespace, name) =>
      caches.services.get(namespace, name) ?? live.service(namespace, name),
    referenceGrants: async namespace =>
      caches.referenceGrants.inNamespace(namespace) ?? live.referenceGrants(namespace),
    namespace: async name => caches.namespaces.get(undefined, name) ?? live.namespace(name),
  };
}

export interface AdmissionWatchLog {
  info(message: string): void;
  warn(message: string): void;
}

/**
 * The admission role's watches and the lookup they serve. Creating it opens no connection;
 * start() begins the five watches, close() ends them. Until a kind's first list completes, its
 * lookups are live reads.
 */
export class AdmissionWatches {
  readonly gateways = new WatchedObjects<Gateway>("Gateway");
  readonly gatewayClasses = new WatchedObjects<GatewayClass>("GatewayClass");
  readonly services = new WatchedObjects<V1Service>("Service");
  readonly referenceGrants = new WatchedObjects<ReferenceGrant>("ReferenceGrant");
  readonly namespaces = new WatchedObjects<V1Namespace>("Namespace");
  readonly lookup: AdmissionLookup;
  #watchers: { close(): void }[] = [];

  constructor(
    live: AdmissionLookup,
    private readonly log: AdmissionWatchLog,
  ) {
    this.lookup = cachedAdmissionLookup(this, live);
  }

  start(): void {
    this.#watch(this.gateways, cb => K8s(Gateway).Watch(cb, watchCfg()));
    this.#watch(this.gatewayClasses, cb => K8s(GatewayClass).Watch(cb, watchCfg()));
    this.#watch(this.services, cb => K8s(kind.Service).Watch(cb, watchCfg()));
    this.#watch(this.referenceGrants, cb => K8s(ReferenceGrant).Watch(cb, watchCfg()));
    this.#watch(this.namespaces, cb => K8s(kind.Namespace).Watch(cb, watchCfg()));
  }

  close(): void {
    for (const watcher of this.#watchers.splice(0)) watcher.close();
  }

  #watch<T extends KubernetesObject>(
    cache: WatchedObjects<T>,
    watch: (callback: (object: T, phase: WatchPhase) => void) => Watcher,
  ): void {
    const watcher = watch((object, phase) => cache.observe(object, phase));
    let listedOnce = false;
    let warned = false;
    watcher.events.on(WatchEvent.LIST, (list: { metadata?: { continue?: string } }) => {
      if (list.metadata?.continue) return;
      // The Watcher emits LIST before it hands the items over, and hands them over in the same
      // turn: once this turn ends, every listed item is in the cache.
      setImmediate(() => {
        cache.listed();
        if (warned) this.log.info(`admission: the ${cache.kind} watch is current again`);
        else if (!listedOnce)
          this.log.info(`admission: ${cache.size} ${cache.kind} object(s) cached from the watch`);
        listedOnce = true;
        warned = false;
      });
    });
    // After any of these the cache may have missed a change, until the watcher's next list.
    for (const event of WATCH_FAILURES)
      watcher.events.on(event, (detail: unknown) => {
        cache.stale();
        if (!warned)
          this.log.warn(
            `admission: the ${cache.kind} watch failed (${event}: ${errorMessage(detail)}); ${cache.kind} lookups read the API server until it lists again`,
          );
        warned = true;
      });
    this.#watchers.push(watcher);
    watcher.start().catch(error => {
      cache.stale();
      this.log.warn(
        `admission: the ${cache.kind} watch did not start (${errorMessage(error)}); ${cache.kind} lookups read the API server`,
      );
    });
  }
}
