// SPDX-License-Identifier: Apache-2.0
/**
 * The controller role: one watch per kind, each feeding the reconciler's store, and the
 * reconciler. The reconcile itself (debounce, compile, writes, backoff, resync) lives in
 * reconciler.ts; what to write is decided in plan.ts.
 *
 * The watches are kubernetes-fluent-client's Watcher, the one Pepr's Watch bindings use, opened
 * here rather than through bindings: Pepr 1.1.4 opens one watch per binding, so a kind bound for
 * create/update and again for delete was watched twice, and every event was sent, parsed and
 * cached (the Watcher keeps every object it saw) twice. With a thousand Services whose
 * EndpointSlices all change when one Deployment scales, that is most of the controller's work.
 * The capability has no bindings.
 */
import { readFileSync } from "node:fs";
import { Capability, Log } from "pepr";
import { K8s, WatchEvent, type KubernetesObject } from "kubernetes-fluent-client";
import { WatchPhase } from "kubernetes-fluent-client/dist/fluent/shared-types.js";
import { errorMessage } from "../error-message";
import { compile } from "./compile/index";
import { CONTROLLER_NAME } from "./compile/types";
import { controllerSettings, type ControllerSettings } from "./config";
import { kubeClusterClient } from "./kube";
import { KINDS } from "./kinds";
import { Reconciler } from "./reconciler";
import { LiveNodes, LivenessNotifier } from "../agent/leases";
import { AGENT_WATCH_CFG, WATCH_FAILURES, followLeases } from "../agent/kube";
import { WATCHED_KINDS, type WatchedKind } from "./store";
import { webhookCertificateSettings } from "./webhook-certificate";
import { WebhookCertificateRotation } from "./webhook-rotation";

function readOptionalFile(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** What one of the controller's watches covers. */
export interface KindWatch {
  kind: WatchedKind;
  /** a label selector, sent to the API server */
  labels: Record<string, string>;
  /** the one namespace watched; every namespace when absent */
  namespace?: string;
}

/**
 * One watch per kind. The agent Pods are selected by their labels, server-side, and watched in
 * the agents' namespace when the chart names it: the chart grants Pods only there (a Role).
 */
export function controllerWatches(
  settings: Pick<ControllerSettings, "agentPodSelector" | "agentNamespace">,
): KindWatch[] {
  return WATCHED_KINDS.map(kind =>
    kind === "AgentPod"
      ? {
          kind,
          labels: { ...settings.agentPodSelector },
          ...(settings.agentNamespace ? { namespace: settings.agentNamespace } : {}),
        }
      : { kind, labels: {} },
  );
}

/** Hands one watch event to the reconciler: a deletion forgets, anything else is observed. */
export function observeWatchEvent(
  reconciler: Pick<Reconciler, "observe" | "forget">,
  kind: WatchedKind,
  object: KubernetesObject,
  phase: WatchPhase,
): void {
  if (phase === WatchPhase.Deleted) reconciler.forget(kind, object);
  else if (phase === WatchPhase.Added || phase === WatchPhase.Modified)
    reconciler.observe(kind, object);
}

/** A kubernetes-fluent-client query for one of the controller's watches. */
function watchQuery(watch: KindWatch) {
  const { model, gvk } = KINDS[watch.kind];
  let query = K8s(model, { kindOverride: gvk });
  if (watch.namespace) query = query.InNamespace(watch.namespace) as typeof query;
  for (const [label, value] of Object.entries(watch.labels))
    query = query.WithLabel(label, value) as typeof query;
  return query;
}

/**
 * Starts one kind's watch, feeding `reconciler`. A failure is logged once until the watch lists
 * again; the Watcher reconnects by itself, and the reconciler's own relist catches what a broken
 * watch missed.
 */
export function startKindWatch(
  watch: KindWatch,
  reconciler: Pick<Reconciler, "observe" | "forget">,
  log: { info(message: string): void; warn(message: string): void },
): { close(): void } {
  const watcher = watchQuery(watch).Watch(
    (object, phase) => observeWatchEvent(reconciler, watch.kind, object as KubernetesObject, phase),
    // The Watcher fills in defaults on the object it is given.
    { ...AGENT_WATCH_CFG },
  );
  let failing = false;
  watcher.events.on(WatchEvent.LIST, (list: { metadata?: { continue?: string } }) => {
    if (list.metadata?.continue || !failing) return;
    failing = false;
    log.info(`the ${watch.kind} watch lists again`);
  });
  for (const event of WATCH_FAILURES)
    watcher.events.on(event, (detail: unknown) => {
      if (failing) return;
      failing = true;
      log.warn(
        `the ${watch.kind} watch failed (${event}: ${errorMessage(detail)}); reconnecting, and the controller's relist catches what it missed`,
      );
    });
  watcher
    .start()
    .catch(error =>
      log.warn(`the ${watch.kind} watch did not start: ${errorMessage(error)}; retrying`),
    );
  return watcher;
}

export interface GatewayControllerRole {
  capability: Capability;
  reconciler: Reconciler;
  start: () => void;
}

export function gatewayController({ env }: { env: NodeJS.ProcessEnv }): GatewayControllerRole {
  const settings = controllerSettings(env, readOptionalFile);
  // The agents' node Leases (agent/leases.ts), seen as the agents see them: a node whose Lease
  // lapsed loses its addresses here too, one Lease duration after it stopped, not when
  // Kubernetes marks it NotReady (40 s and more).
  const leaseView = settings.agentNamespace
    ? new LiveNodes(
        undefined,
        undefined,
        (silenceMs, nodes) =>
          Log.info(
            `agent Leases: the watch was silent ${silenceMs} ms, a stall: ${nodes.join(",")} count as renewed now, so the renewals it held back lapse nobody`,
          ),
        (awayMs, graceMs) =>
          Log.info(
            `agent Leases: in view again after ${awayMs} ms without a renewal; no Lease lapses for ${graceMs} ms, while the nodes reach the API server again`,
          ),
      )
    : undefined;
  const reconciler = new Reconciler({
    client: kubeClusterClient(settings.agentPodSelector, CONTROLLER_NAME, settings.agentNamespace),
    compile,
    settings,
    controllerName: CONTROLLER_NAME,
    log: {
      info: message => Log.info(message),
      warn: message => Log.warn(message),
      error: message => Log.error(message),
    },
    lapsed: () => leaseView?.liveness()?.lapsed,
  });

  // The admission webhook's certificate, renewed before it expires (off when the chart's env is absent).
  const certificate = webhookCertificateSettings(env);
  const rotation = certificate
    ? new WebhookCertificateRotation(certificate, {
        info: m => Log.info(m),
        warn: m => Log.warn(m),
        error: m => Log.error(m),
      })
    : undefined;

  const capability = new Capability({
    name: "gateway-controller",
    description: "Reconciles Gateway API objects into statuses and one DataplaneConfig per Gateway",
  });

  const watchAgentLeases = (namespace: string, view: LiveNodes) =>
    followLeases(
      namespace,
      view,
      (liveness, before) => {
        Log.info(
          `agent Leases: ${LivenessNotifier.describe(liveness)} (before: ${before}); reconciling the announcing nodes`,
        );
        reconciler.schedule();
      },
      detail =>
        Log.warn(
          `watching the agent Leases in namespace ${namespace} failed (${detail}); reconnecting`,
        ),
    );

  const start = () => {
    if (settings.agentNamespace && leaseView) {
      watchAgentLeases(settings.agentNamespace, leaseView)
        .start()
        .catch(error =>
          Log.error(
            `watching the agent Leases in namespace ${settings.agentNamespace} failed: ${error}`,
          ),
        );
    }
    const log = { info: (m: string) => Log.info(m), warn: (m: string) => Log.warn(m) };
    for (const watch of controllerWatches(settings)) startKindWatch(watch, reconciler, log);
    reconciler.start();
    rotation?.start();
  };
  return { capability, reconciler, start };
}
