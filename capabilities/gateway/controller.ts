// SPDX-License-Identifier: Apache-2.0
/**
 * The controller role's capability: one Watch binding per kind and event, each feeding the
 * reconciler's store. The reconcile itself (debounce, compile, writes, backoff, resync) lives
 * in reconciler.ts; what to write is decided in plan.ts.
 */
import { readFileSync } from "node:fs";
import { Capability, Log } from "pepr";
import { K8s, kind, type KubernetesObject } from "kubernetes-fluent-client";
import { compile } from "./compile/index";
import { CONTROLLER_NAME } from "./compile/types";
import { controllerSettings } from "./config";
import { kubeClusterClient } from "./kube";
import { KINDS } from "./kinds";
import { Reconciler } from "./reconciler";
import { LiveNodes, LivenessNotifier } from "../agent/leases";
import { followLeases } from "../agent/kube";
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
    ? new LiveNodes(undefined, undefined, (silenceMs, nodes) =>
        Log.info(
          `agent Leases: the watch was silent ${silenceMs} ms, a stall: ${nodes.join(",")} count as renewed now, so the renewals it held back lapse nobody`,
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
  const { When } = capability;

  const bind = (kind: WatchedKind): void => {
    const { model, gvk } = KINDS[kind];
    const selector = kind === "AgentPod" ? settings.agentPodSelector : {};
    let upserts = When(model, gvk).IsCreatedOrUpdated();
    let deletes = When(model, gvk).IsDeleted();
    for (const [label, value] of Object.entries(selector)) {
      upserts = upserts.WithLabel(label, value) as typeof upserts;
      deletes = deletes.WithLabel(label, value) as typeof deletes;
    }
    upserts.Watch(object => reconciler.observe(kind, object as KubernetesObject));
    deletes.Watch(object => reconciler.forget(kind, object as KubernetesObject));
  };
  // The agent Pods live in one namespace, and the chart grants Pods only there (a Role). Pepr
  // 1.1.4's InNamespace filters a binding's events client-side and still watches every
  // namespace, which that Role forbids; so this one watch is kubernetes-fluent-client's own,
  // on the namespace's path.
  const podWatch = (namespace: string) => {
    let query = K8s(kind.Pod).InNamespace(namespace);
    for (const [label, value] of Object.entries(settings.agentPodSelector))
      query = query.WithLabel(label, value) as typeof query;
    return query.Watch((pod, phase) => {
      if (phase === "DELETED") reconciler.forget("AgentPod", pod as KubernetesObject);
      else if (phase === "ADDED" || phase === "MODIFIED")
        reconciler.observe("AgentPod", pod as KubernetesObject);
    });
  };
  for (const kind of WATCHED_KINDS)
    if (!(kind === "AgentPod" && settings.agentNamespace)) bind(kind);

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
    if (settings.agentNamespace) {
      podWatch(settings.agentNamespace)
        .start()
        .catch(error =>
          Log.error(
            `watching the agent Pods in namespace ${settings.agentNamespace} failed: ${error}`,
          ),
        );
    }
    reconciler.start();
    rotation?.start();
  };
  return { capability, reconciler, start };
}
