// SPDX-License-Identifier: Apache-2.0
/**
 * The reconcile loop: watch events update the store, a burst of them schedules one compile,
 * and the writes that differ are made in order. Level-triggered: every run starts from the
 * whole store, and a periodic relist heals what a watch missed. A failed write is logged and
 * retried with exponential backoff of its own object (the Gateway it is for, or the route or
 * GatewayClass whose status it is): until then later passes leave that object's writes alone,
 * and never wait for it, so one broken object does not slow any other. A new generation of
 * the object is tried at once. Pepr's own retries are not relied on. The writes of a pass go in
 * ordered stages (`writeStages`), each stage's a few at a time (`writeConcurrency`): one at a
 * time, a thousand route statuses took over a minute.
 *
 * The cluster is reached only through `ClusterClient`, so this loop runs against a real API
 * server (kube.ts) or, where one cannot run, against whatever the caller provides.
 */
import type { KubernetesObject } from "kubernetes-fluent-client";
import pMap from "p-map";
import type { CompileOutput, Snapshot } from "./compile/types";
import type { ControllerSettings } from "./config";
import { compileInput, describeWrite, planWrites, recordedAllocations, type Write } from "./plan";
import type { RouteKind, SecretInfo } from "./compile/types";
import { routeView } from "./compile/views";
import { isServiceRef } from "./compile/backends";
import { GATEWAY_SERVICE_LABEL } from "./compile/gateway-services";
import {
  certificateSecretRefs,
  SnapshotStore,
  WATCHED_KINDS,
  type SecretRef,
  type WatchedKind,
} from "./store";
import { errorMessage } from "../error-message.js";

export interface ClusterClient {
  /** Every object of a kind, as a relist sees it. */
  list(kind: WatchedKind): Promise<KubernetesObject[]>;
  /**
   * What reading each named Secret gave, reduced to SecretInfo (no key bytes kept). One ref's
   * failure is that ref's result, never a rejection of the whole call.
   */
  secrets(refs: SecretRef[]): Promise<SecretRead[]>;
  /** The certificate copies in the release namespace (metadata only), when blixt makes them. */
  certificateCopies?(): Promise<KubernetesObject[]>;
  /**
   * Makes one write; returns the object as the API server left it, when it says. `stored` is
   * the written object as the store holds it (for a status write): a client may start from it
   * instead of reading it again.
   */
  execute(write: Write, stored?: KubernetesObject): Promise<KubernetesObject | undefined>;
}

/** One certificateRef's read: the Secret, or nothing (it does not exist), or why it was not read. */
export interface SecretRead extends SecretRef {
  secret?: SecretInfo;
  /** A name that cannot be a Secret's (never sent to the API server), or the API server's error. */
  problem?: string;
  /** The read failed for a reason a later read can cure (not a 404, not an invalid name). */
  retry?: boolean;
}

export interface ReconcileLog {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface ReconcilerDeps {
  client: ClusterClient;
  compile: (snapshot: Snapshot) => CompileOutput;
  settings: ControllerSettings;
  controllerName: string;
  log: ReconcileLog;
  /** The clock, for conditions' lastTransitionTime. */
  now?: () => Date;
  /**
   * The nodes whose agent Lease lapsed, as the controller sees the Leases (agent/leases.ts):
   * their addresses go to other nodes, as the agents themselves already did.
   */
  lapsed?: () => ReadonlySet<string> | undefined;
}

export interface ReconcileResult {
  writes: Write[];
  failed: { write: Write; error: string }[];
  skipped: Write[];
  /** writes whose object was deleted meanwhile (or whose namespace is being deleted): nothing to retry */
  gone: Write[];
  /** writes of an object whose last write failed, left for its own retry (its generation has not changed since) */
  deferred: Write[];
}

const noResult = (): ReconcileResult => ({
  writes: [],
  failed: [],
  skipped: [],
  gone: [],
  deferred: [],
});

/** One object's retry: how often its writes failed in a row, and when to try again. */
interface RetryState {
  failures: number;
  retryAt: number;
  /** The object's metadata.generation when its write failed: a newer one is tried at once. */
  generation: number | undefined;
}

/**
 * The object whose retry a write belongs to: the Gateway for its DataplaneConfig (same name)
 * and finalizer writes, else the object whose status it writes.
 */
export function writeTarget(write: Write): { kind: WatchedKind; namespace?: string; name: string } {
  if (write.op === "patchStatus")
    return { kind: write.kind, namespace: write.namespace, name: write.name };
  // A copy's retry is its own (keyed by the copy), never its Gateway's.
  if (write.op === "applyCertificateCopy" || write.op === "deleteCertificateCopy")
    return { kind: "Gateway", namespace: write.namespace, name: `certificate-copy/${write.name}` };
  if (write.op === "applyGatewayService" || write.op === "deleteGatewayService")
    return { kind: "Service", namespace: write.namespace, name: write.name };
  if (write.op === "applyGatewayEndpointSlice" || write.op === "deleteGatewayEndpointSlice")
    return { kind: "EndpointSlice", namespace: write.namespace, name: write.name };
  return { kind: "Gateway", namespace: write.namespace, name: write.name };
}

const targetKey = (target: { kind: string; namespace?: string; name: string }): string =>
  `${target.kind}/${target.namespace ? `${target.namespace}/` : ""}${target.name}`;

/** 1 s, 2 s, 4 s … up to the cap. */
export function backoffMs(failures: number, maxBackoffSeconds: number): number {
  return Math.min(1000 * 2 ** Math.max(0, failures - 1), maxBackoffSeconds * 1000);
}

const inSeconds = (ms: number): string =>
  ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;

/**
 * Why a failed write needs no retry, if it does not: its object is already gone (404 on a
 * status patch, a finalizer patch or a delete), or its namespace is being deleted, which lets
 * nothing new be created there. The watch brings the deletion; retrying with backoff would
 * only delay every other write of the next passes (a thousand deleted routes, a thousand 404s).
 */
export function goneReason(write: Write, error: unknown): string | undefined {
  const status = (error as { status?: number } | undefined)?.status;
  const creates =
    write.op === "applyDataplaneConfig" ||
    write.op === "applyGatewayService" ||
    write.op === "applyGatewayEndpointSlice";
  if (status === 404 && !creates) return "already deleted";
  if (creates && status === 403 && /being terminated/.test(errorMessage(error)))
    return "its namespace is being deleted";
  return undefined;
}

/** "976 TCPRoute status patches of deleted objects, ..." for the pass's summary line. */
function goneSummary(gone: Write[]): string {
  const counts = new Map<string, number>();
  for (const w of gone) {
    const what =
      w.op === "patchStatus"
        ? `${w.kind} status patches of deleted objects`
        : w.op === "applyDataplaneConfig"
          ? "DataplaneConfigs in namespaces being deleted"
          : w.op === "deleteDataplaneConfig"
            ? "DataplaneConfigs already deleted"
            : w.op === "applyCertificateCopy"
              ? "certificate copies of deleted Secrets"
              : w.op === "deleteCertificateCopy"
                ? "certificate copies already deleted"
                : w.op === "applyGatewayService" || w.op === "applyGatewayEndpointSlice"
                  ? "Gateway Services in namespaces being deleted"
                  : w.op === "deleteGatewayService" || w.op === "deleteGatewayEndpointSlice"
                    ? "Gateway Services already deleted"
                    : "finalizer patches of deleted Gateways";
    counts.set(what, (counts.get(what) ?? 0) + 1);
  }
  return [...counts].map(([what, n]) => `${n} ${what}`).join(", ");
}

export { errorMessage };

const rfc3339 = (date: Date): string => date.toISOString().replace(/\.\d{3}Z$/, "Z");

/**
 * The Gateway a write publishes or releases something for, when an earlier write for that
 * Gateway must have landed first: its status (the address it publishes is recorded only in
 * its DataplaneConfig) and its finalizer's removal (only once its DataplaneConfig is gone).
 */
function dependentGateway(write: Write): string | undefined {
  if (write.op === "removeFinalizer" || (write.op === "patchStatus" && write.kind === "Gateway"))
    return `${write.namespace}/${write.name}`;
  return undefined;
}

/**
 * A pass's writes in the order they must land, each stage's writes independent of one another:
 * finalizers and certificate copies before the DataplaneConfigs that need them; then the
 * DataplaneConfigs; then statuses (a Gateway's waits on its DataplaneConfig, see
 * `prerequisiteOf`), removed finalizers, and the copies no DataplaneConfig names any more.
 * Within a stage the plan's order is the order writes start.
 */
export function writeStages(writes: Write[]): Write[][] {
  const stageOf = (write: Write): number => {
    switch (write.op) {
      case "addFinalizer":
      case "applyCertificateCopy":
        return 0;
      case "applyDataplaneConfig":
      case "deleteDataplaneConfig":
        return 1;
      default:
        return 2;
    }
  };
  const stages: Write[][] = [[], [], []];
  for (const write of writes) stages[stageOf(write)].push(write);
  return stages.filter(stage => stage.length > 0);
}

/** The Gateway whose later status and finalizer writes wait on this one, if it fails. */
function prerequisiteOf(write: Write): string | undefined {
  if (
    write.op === "patchStatus" ||
    write.op === "removeFinalizer" ||
    write.op === "applyCertificateCopy" ||
    write.op === "deleteCertificateCopy" ||
    write.op === "applyGatewayService" ||
    write.op === "applyGatewayEndpointSlice" ||
    write.op === "deleteGatewayService" ||
    write.op === "deleteGatewayEndpointSlice"
  )
    return undefined;
  return `${write.namespace}/${write.name}`;
}

/** "namespace/name" of every Service some route's backendRefs name (whether it exists or not). */
export function backendServices(routes: Record<RouteKind, unknown[]>): Set<string> {
  const named = new Set<string>();
  for (const kind of Object.keys(routes) as RouteKind[])
    for (const raw of routes[kind])
      for (const ref of routeView(kind, raw).backendRefs)
        if (isServiceRef(ref) && ref.name) named.add(`${ref.namespace}/${ref.name}`);
  return named;
}

/** Kinds whose change moves traffic: its pass never waits out a burst's pause. */
const URGENT_KINDS: ReadonlySet<WatchedKind> = new Set([
  "Service",
  "EndpointSlice",
  "Node",
  "AgentPod",
]);
/**
 * Configuration (every other watched kind but DataplaneConfig, whose change is an agent
 * acknowledging the controller's own write), which users apply by the hundred: BURST_CHANGES
 * of them or more while each of two passes in a row ran make a burst.
 */
const BURST_KINDS: ReadonlySet<WatchedKind> = new Set(
  WATCHED_KINDS.filter(kind => !URGENT_KINDS.has(kind) && kind !== "DataplaneConfig"),
);
const BURST_CHANGES = 10;

export class Reconciler {
  readonly store = new SnapshotStore();
  #deps: ReconcilerDeps;
  #synced = false;
  #lastAllocations?: Record<string, string>;
  /** The certificate copies as listed at the start of the pass. */
  #certificateCopies: KubernetesObject[] = [];
  #lastWarnings = "";
  #timer?: NodeJS.Timeout;
  #resyncTimer?: NodeJS.Timeout;
  #resyncEvery?: NodeJS.Timeout;
  #retryTimer?: NodeJS.Timeout;
  #running?: Promise<ReconcileResult>;
  /** When the pending timer fires (epoch ms): an urgent schedule() may bring it forward. */
  #timerDue = 0;
  /** A burst's pause is pending: it ends early once configuration has been quiet for a while. */
  #pausing = false;
  #quietTimer?: NodeJS.Timeout;
  /** Something asked for a pass while one ran (a retry, a relist, agent liveness): the next one comes soon. */
  #rerun = false;
  /** The pass that ran wrote tables: the next one reports on them. */
  #followUp = false;
  /** Watch events changed the store while a pass ran: the next pass compiles them. */
  #changedDuringPass = false;
  /** Among them, a change that moves traffic (URGENT_KINDS): the next pass comes soon. */
  #urgentDuringPass = false;
  /** Changes of configuration (BURST_KINDS) while the pass ran. */
  #burstChanges = 0;
  /** Passes in a row during which configuration kept changing (BURST_CHANGES or more each). */
  #busyPasses = 0;
  /** Relists that failed in a row. */
  #relistFailures = 0;
  /** Secrets as last read successfully, so an API server that fails to answer does not drop a listener. */
  #lastSecrets = new Map<string, SecretInfo>();
  #lastSecretProblems = "";
  /** Passes in a row in which some Secret could not be read, and when to read again. */
  #secretFailures = 0;
  #secretRetryAt?: number;
  /** Passes whose compile failed in a row, and when to try one again. */
  #compileFailures = 0;
  #compileRetryAt?: number;
  /** Per object ("Gateway/ns/name"), while its writes fail. */
  #retries = new Map<string, RetryState>();
  #stopped = false;
  /** "namespace/name" of every Service a route's backendRefs name; undefined until needed again. */
  #backendServices?: Set<string>;

  constructor(deps: ReconcilerDeps) {
    this.#deps = deps;
  }

  /**
   * A watch saw an object created or changed. The version the store already holds (this
   * controller's own write coming back, its answer already taken) compiles nothing: with a
   * thousand routes on twenty Gateways an EndpointSlice change is twenty DataplaneConfig writes,
   * and each echo compiled the whole cluster again.
   */
  observe(kind: WatchedKind, object: KubernetesObject): void {
    if (this.store.upsert(kind, object) && this.#matters(kind, object)) this.#changed(kind);
  }

  /** A watch saw an object deleted. */
  forget(kind: WatchedKind, object: KubernetesObject): void {
    this.store.remove(kind, object);
    if (this.#matters(kind, object)) this.#changed(kind);
  }

  /**
   * A watch event changed what compile sees. Changes that arrive while a pass runs wait for it
   * to end (the pass after it compiles them). Others join the pass already scheduled, or
   * schedule one after the debounce window; a change that moves traffic brings a pass that
   * waits out a burst's pause forward.
   */
  #changed(kind: WatchedKind): void {
    const urgent = URGENT_KINDS.has(kind);
    if (this.#running) {
      this.#changedDuringPass = true;
      if (urgent) this.#urgentDuringPass = true;
      if (BURST_KINDS.has(kind)) this.#burstChanges++;
    } else {
      if (this.#pausing && BURST_KINDS.has(kind)) this.#armQuiet();
      if (urgent || !this.#timer) this.schedule();
    }
  }

  /**
   * The burst's pause ends once no configuration has changed for four debounce windows (at
   * least 250 ms): the last pass after a `kubectl apply` does not wait out the whole pause.
   */
  #armQuiet(): void {
    clearTimeout(this.#quietTimer);
    if (this.#stopped) return;
    this.#quietTimer = setTimeout(
      () => {
        this.#quietTimer = undefined;
        if (this.#pausing) this.schedule(0);
      },
      Math.max(4 * this.#deps.settings.debounceMs, 250),
    );
  }

  /**
   * How long the pass after one that took `passMs` waits. While configuration keeps changing
   * pass after pass (a `kubectl apply` of a thousand routes), it waits twice as long as the
   * last pass took, up to maxDebounceMs: the controller then spends at most a third of its
   * time in passes, on the API server the burst is also loading, and each pass carries a
   * bigger batch (a Gateway's status, rewritten whenever its attached routes change, costs
   * the API server far more than a route's). What moves traffic (an EndpointSlice, a Service,
   * a node, an agent) never waits for that: the debounce window, as when all is quiet.
   */
  #nextDelay(passMs: number, urgent: boolean): number {
    const { debounceMs, maxDebounceMs } = this.#deps.settings;
    if (urgent || this.#busyPasses < 2) return debounceMs;
    return Math.max(debounceMs, Math.min(maxDebounceMs ?? debounceMs, 2 * passMs));
  }

  /**
   * Whether a change can change the compile's output. A Service, or an EndpointSlice of a
   * Service, that no route's backendRefs name cannot: it is kept in the store (a route may
   * name it later, and that route's own event compiles) but compiles nothing. In a cluster
   * where many Services' endpoints change and few are backends, those events are most of
   * them. The set of named Services is rebuilt after any route changes.
   */
  #matters(kind: WatchedKind, object: KubernetesObject): boolean {
    if (kind === "TCPRoute" || kind === "UDPRoute" || kind === "HTTPRoute") {
      this.#backendServices = undefined;
      return true;
    }
    if (kind !== "Service" && kind !== "EndpointSlice") return true;
    // A Gateway's own Service or EndpointSlice: an edit or deletion by someone else is undone.
    if (object.metadata?.labels?.[GATEWAY_SERVICE_LABEL] === "true") return true;
    const service =
      kind === "Service"
        ? object.metadata?.name
        : object.metadata?.labels?.["kubernetes.io/service-name"];
    // An EndpointSlice without the label belongs to no Service: the compile skips it too.
    if (!service) return false;
    this.#backendServices ??= backendServices({
      TCPRoute: this.store.list("TCPRoute"),
      UDPRoute: this.store.list("UDPRoute"),
      HTTPRoute: this.store.list("HTTPRoute"),
    });
    return this.#backendServices.has(`${object.metadata?.namespace ?? ""}/${service}`);
  }

  /**
   * Asks for one compile within `delayMs` (the debounce window unless told): a request joins
   * the pass already scheduled, or brings it forward when that one is due later (agent
   * liveness does not wait out the longer pause of a burst). Nothing compiles before the
   * first full relist, so a half-seen cluster never drives writes.
   */
  schedule(delayMs = this.#deps.settings.debounceMs): void {
    if (!this.#synced || this.#stopped) return;
    const due = Date.now() + delayMs;
    if (this.#timer) {
      if (due >= this.#timerDue) return;
      clearTimeout(this.#timer);
    }
    this.#timerDue = due;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#pausing = false;
      clearTimeout(this.#quietTimer);
      void this.reconcile();
    }, delayMs);
  }

  /** Relists every watched kind, then reconciles. Retried with backoff on failure. */
  async resync(): Promise<ReconcileResult | undefined> {
    // Events that land while the lists are in flight are newer than the lists: the store keeps them.
    const since = this.store.listStarted();
    try {
      const lists = await Promise.all(
        WATCHED_KINDS.map(async kind => [kind, await this.#deps.client.list(kind)] as const),
      );
      for (const [kind, objects] of lists) this.store.replace(kind, objects, since);
    } catch (error) {
      this.#relistFailures++;
      const delay = backoffMs(this.#relistFailures, this.#deps.settings.maxBackoffSeconds);
      this.#deps.log.error(`relist failed (${errorMessage(error)}); retrying in ${delay} ms`);
      if (!this.#stopped) {
        clearTimeout(this.#resyncTimer);
        this.#resyncTimer = setTimeout(() => void this.resync(), delay);
      }
      return undefined;
    } finally {
      this.store.listDone(since);
    }
    this.#relistFailures = 0;
    this.#synced = true;
    return this.reconcile();
  }

  /** Starts the loop: a relist now, and one every resyncSeconds. */
  start(): void {
    this.#stopped = false;
    void this.resync();
    clearInterval(this.#resyncEvery);
    this.#resyncEvery = setInterval(
      () => void this.resync(),
      this.#deps.settings.resyncSeconds * 1000,
    );
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#resyncEvery);
    clearTimeout(this.#timer);
    clearTimeout(this.#quietTimer);
    clearTimeout(this.#resyncTimer);
    clearTimeout(this.#retryTimer);
    this.#timer = undefined;
  }

  /** One compile-and-write pass; concurrent calls run one after another, never together. */
  async reconcile(): Promise<ReconcileResult> {
    if (this.#running) {
      this.#rerun = true;
      return this.#running;
    }
    const started = performance.now();
    this.#changedDuringPass = false;
    this.#urgentDuringPass = false;
    this.#burstChanges = 0;
    this.#followUp = false;
    this.#running = this.#reconcileOnce().finally(() => {
      this.#running = undefined;
      const changed = this.#changedDuringPass;
      const urgent = this.#rerun || this.#urgentDuringPass;
      this.#busyPasses = this.#burstChanges >= BURST_CHANGES ? this.#busyPasses + 1 : 0;
      if (changed || urgent || this.#followUp) {
        this.#rerun = false;
        this.#followUp = false;
        this.#changedDuringPass = false;
        this.#urgentDuringPass = false;
        const delay = this.#nextDelay(performance.now() - started, urgent);
        this.schedule(delay);
        if (delay > this.#deps.settings.debounceMs) {
          this.#pausing = true;
          this.#armQuiet();
        }
      }
    });
    return this.#running;
  }

  /**
   * Arms the one timer that brings the earliest retry due (an object's, or a failed compile's).
   * It runs beside the debounce timer: events never wait for it, nor it for them.
   */
  #armRetry(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    if (this.#stopped) return;
    const due = [...this.#retries.values()].map(r => r.retryAt);
    if (this.#compileRetryAt !== undefined) due.push(this.#compileRetryAt);
    if (this.#secretRetryAt !== undefined) due.push(this.#secretRetryAt);
    if (due.length === 0) return;
    this.#retryTimer = setTimeout(
      () => {
        this.#retryTimer = undefined;
        void this.reconcile();
      },
      Math.max(0, Math.min(...due) - Date.now()),
    );
  }

  #generationOf(target: {
    kind: WatchedKind;
    namespace?: string;
    name: string;
  }): number | undefined {
    return this.store.get<KubernetesObject>(target.kind, target.namespace, target.name)?.metadata
      ?.generation;
  }

  /** Whether this write's object waits for its retry: it failed before, and its generation is the same. */
  #waiting(write: Write, now: number): boolean {
    const target = writeTarget(write);
    const retry = this.#retries.get(targetKey(target));
    if (!retry) return false;
    if (retry.generation !== this.#generationOf(target)) {
      this.#retries.delete(targetKey(target));
      return false;
    }
    return now < retry.retryAt;
  }

  async #reconcileOnce(): Promise<ReconcileResult> {
    const { client, compile, settings, controllerName, log } = this.#deps;
    try {
      const refs = certificateSecretRefs(
        this.store.list("Gateway"),
        this.store.list("GatewayClass"),
        controllerName,
        this.store.list("ListenerSet"),
      );
      this.store.setSecrets(this.#secretInfos(await client.secrets(refs)));
      if (client.certificateCopies) this.#certificateCopies = await client.certificateCopies();
    } catch (error) {
      // Only a broken client gets here: a ref's own failure is its result.
      log.error(
        `reading the Secrets listeners reference failed: ${errorMessage(error)}; retrying with backoff`,
      );
      this.#compileFailed();
      return noResult();
    }
    const snapshot = this.store.snapshot({
      controllerName,
      now: rfc3339((this.#deps.now ?? (() => new Date()))()),
      addressPools: settings.addressPools,
      allocations: recordedAllocations(this.store.list("DataplaneConfig"), this.#lastAllocations),
      ...(settings.agentNamespace && client.certificateCopies
        ? { certificateCopyNamespace: settings.agentNamespace }
        : {}),
      lapsed: this.#deps.lapsed?.(),
    });

    let output: CompileOutput;
    const compileStarted = performance.now();
    try {
      output = compile(compileInput(snapshot));
    } catch (error) {
      log.error(`compile failed: ${errorMessage(error)}; retrying with backoff`);
      this.#compileFailed();
      return noResult();
    }
    this.#compileFailures = 0;
    this.#compileRetryAt = undefined;
    const warnings = (output.warnings ?? []).join("\n");
    if (warnings && warnings !== this.#lastWarnings) log.warn(warnings);
    this.#lastWarnings = warnings;

    const writes = planWrites({ ...snapshot, certificateCopies: this.#certificateCopies }, output);
    const compileMs = performance.now() - compileStarted;
    const result: ReconcileResult = { writes, failed: [], skipped: [], gone: [], deferred: [] };
    const started = Date.now();
    // Objects with nothing left to write need no retry (done, or gone).
    const planned = new Set(writes.map(w => targetKey(writeTarget(w))));
    for (const key of this.#retries.keys()) if (!planned.has(key)) this.#retries.delete(key);
    // A Gateway's status must not publish an address its DataplaneConfig did not record; a
    // failure holds back only that Gateway's writes, never another Gateway's or a route's.
    const blocked = new Set<string>();
    const failedTargets = new Set<string>();
    const succeededTargets = new Set<string>();
    // Stages run one after another; the writes of a stage run side by side, a few at a time.
    for (const stage of writeStages(writes)) {
      await pMap(
        stage,
        async write => {
          if (this.#waiting(write, started)) {
            result.deferred.push(write);
            return;
          }
          const dependent = dependentGateway(write);
          if (dependent && blocked.has(dependent)) {
            result.skipped.push(write);
            return;
          }
          const target = targetKey(writeTarget(write));
          try {
            const stored =
              write.op === "patchStatus"
                ? this.store.get<KubernetesObject>(write.kind, write.namespace, write.name)
                : undefined;
            const updated = await client.execute(write, stored);
            this.#record(write, updated);
            succeededTargets.add(target);
          } catch (error) {
            const prerequisite = prerequisiteOf(write);
            if (prerequisite) blocked.add(prerequisite);
            if (goneReason(write, error)) {
              result.gone.push(write);
              this.#forget(write);
              succeededTargets.add(target);
              return;
            }
            result.failed.push({ write, error: errorMessage(error) });
            failedTargets.add(target);
          }
        },
        { concurrency: settings.writeConcurrency },
      );
    }
    for (const key of succeededTargets) if (!failedTargets.has(key)) this.#retries.delete(key);
    for (const { write } of result.failed) {
      const target = writeTarget(write);
      const key = targetKey(target);
      if (!failedTargets.delete(key)) continue;
      const failures = (this.#retries.get(key)?.failures ?? 0) + 1;
      this.#retries.set(key, {
        failures,
        retryAt: Date.now() + backoffMs(failures, settings.maxBackoffSeconds),
        generation: this.#generationOf(target),
      });
    }
    for (const { write, error } of result.failed) {
      const retry = this.#retries.get(targetKey(writeTarget(write)))!;
      log.error(
        `${describeWrite(write)} failed: ${error}; retrying it in ${inSeconds(backoffMs(retry.failures, settings.maxBackoffSeconds))}`,
      );
    }
    this.#lastAllocations = this.#durableAllocations(
      snapshot.allocations,
      output.allocations,
      result,
    );
    this.#armRetry();
    // Statuses were computed against the tables as they were before this pass (Programmed
    // says "being updated"); one more pass reports on the tables just written.
    const madeTables = writes.some(
      w =>
        (w.op === "applyDataplaneConfig" || w.op === "deleteDataplaneConfig") &&
        !result.deferred.includes(w) &&
        !result.failed.some(f => f.write === w),
    );
    if (madeTables) this.#followUp = true;
    if (writes.length > 0) {
      const made =
        writes.length -
        result.failed.length -
        result.skipped.length -
        result.gone.length -
        result.deferred.length;
      const gone =
        result.gone.length > 0
          ? `, ${result.gone.length} dropped (${goneSummary(result.gone)})`
          : "";
      const waiting =
        result.deferred.length > 0
          ? `, ${result.deferred.length} waiting for their object's retry`
          : "";
      // Where a pass's time goes: compiling and planning, then the writes.
      const byOp = new Map<string, number>();
      for (const w of writes) byOp.set(w.op, (byOp.get(w.op) ?? 0) + 1);
      const ops = [...byOp].map(([op, n]) => `${n} ${op}`).join(", ");
      log.info(
        `reconciled: ${made} writes made, ${result.failed.length} failed, ${result.skipped.length} deferred${waiting}${gone}; compile and plan ${Math.round(compileMs)} ms, writes ${inSeconds(Date.now() - started)} (${ops})`,
      );
    }
    return result;
  }

  /**
   * The SecretInfos compile sees. A Secret that exists is as read; a ref not read (an invalid
   * name, or no answer) is left out, and compile reports it on its listener, except that a
   * failed read keeps the copy last read, so a passing API server error does not take a
   * serving listener down. Failed reads are read again with backoff.
   */
  #secretInfos(reads: SecretRead[]): SecretInfo[] {
    const { log, settings } = this.#deps;
    const infos: SecretInfo[] = [];
    const seen = new Map<string, SecretInfo>();
    const problems: string[] = [];
    let retry = false;
    for (const read of reads) {
      const key = `${read.namespace}/${read.name}`;
      const info = read.secret ?? (read.retry ? this.#lastSecrets.get(key) : undefined);
      if (info) {
        infos.push(info);
        seen.set(key, info);
      }
      if (read.problem) {
        problems.push(
          `Secret ${JSON.stringify(key)}: ${read.problem}${read.retry ? (info ? "; keeping the copy last read" : "") : "; not read"}`,
        );
      }
      retry ||= read.retry === true;
    }
    this.#lastSecrets = seen;
    if (retry) {
      this.#secretFailures++;
      const delay = backoffMs(this.#secretFailures, settings.maxBackoffSeconds);
      this.#secretRetryAt = Date.now() + delay;
      problems.push(`reading again in ${inSeconds(delay)}`);
    } else {
      this.#secretFailures = 0;
      this.#secretRetryAt = undefined;
    }
    const text = problems.join("\n");
    if (text && text !== this.#lastSecretProblems) log.warn(text);
    this.#lastSecretProblems = text;
    return infos;
  }

  /** A pass could not compile (or read what compile needs): the whole pass is retried with backoff. */
  #compileFailed(): void {
    this.#compileFailures++;
    this.#compileRetryAt =
      Date.now() + backoffMs(this.#compileFailures, this.#deps.settings.maxBackoffSeconds);
    this.#armRetry();
  }

  /**
   * The allocation table the next pass starts from. A Gateway's address is durable once its
   * DataplaneConfig records it; where that write failed or waits, the Gateway keeps the
   * address it had before this pass (none, if it had none), so the next pass decides again.
   */
  #durableAllocations(
    before: Record<string, string>,
    decided: Record<string, string>,
    result: ReconcileResult,
  ): Record<string, string> {
    const table = { ...decided };
    const unwritten = [
      ...result.failed.map(f => f.write),
      ...result.deferred,
      ...result.skipped,
    ].filter(w => w.op === "applyDataplaneConfig" || w.op === "deleteDataplaneConfig");
    for (const write of unwritten) {
      const key = `${write.namespace}/${write.name}`;
      const previous = before[key];
      const takenByAnother = Object.entries(table).some(
        ([other, address]) => other !== key && address === previous,
      );
      if (previous !== undefined && !takenByAnother) table[key] = previous;
      else delete table[key];
    }
    return table;
  }

  /** Drops what a gone write was about from the store, so the next plan does not try it again before the watch says so. */
  #forget(write: Write): void {
    if (write.op === "deleteDataplaneConfig")
      this.store.remove("DataplaneConfig", {
        metadata: { namespace: write.namespace, name: write.name },
      });
    else if (write.op === "patchStatus")
      this.store.remove(write.kind, { metadata: { namespace: write.namespace, name: write.name } });
    else if (write.op === "addFinalizer" || write.op === "removeFinalizer")
      this.store.remove("Gateway", { metadata: { namespace: write.namespace, name: write.name } });
  }

  /** Keeps the store ahead of the watch, so the next plan does not repeat a write just made. */
  #record(write: Write, updated: KubernetesObject | undefined): void {
    if (write.op === "deleteDataplaneConfig") {
      this.store.remove("DataplaneConfig", {
        metadata: { namespace: write.namespace, name: write.name },
      });
      return;
    }
    if (write.op === "deleteGatewayService" || write.op === "deleteGatewayEndpointSlice") {
      this.store.remove(write.op === "deleteGatewayService" ? "Service" : "EndpointSlice", {
        metadata: { namespace: write.namespace, name: write.name },
      });
      return;
    }
    if (!updated?.metadata) return;
    if (write.op === "applyDataplaneConfig") this.store.upsert("DataplaneConfig", updated);
    if (write.op === "applyGatewayService") this.store.upsert("Service", updated);
    if (write.op === "applyGatewayEndpointSlice") this.store.upsert("EndpointSlice", updated);
    if (write.op === "addFinalizer") this.store.upsert("Gateway", updated);
    if (write.op === "removeFinalizer") {
      // Without finalizers a deleting Gateway is gone; keeping its last copy would leave a ghost.
      if (updated.metadata.deletionTimestamp && !updated.metadata.finalizers?.length)
        this.store.remove("Gateway", updated);
      else this.store.upsert("Gateway", updated);
    }
    if (write.op === "patchStatus") {
      const kind = write.kind;
      const current = this.store.get<KubernetesObject>(kind, write.namespace, write.name);
      if (current) this.store.upsert(kind, updated);
    }
  }
}
