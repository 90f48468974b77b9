// SPDX-License-Identifier: Apache-2.0
/**
 * The controller role's capability: one Watch binding per kind and event, each feeding the
 * reconciler's store. The reconcile itself (debounce, compile, writes, backoff, resync) lives
 * in reconciler.ts; what to write is decided in plan.ts.
 */
import { readFileSync } from "node:fs";
import { Capability, Log } from "pepr";
import type { KubernetesObject } from "kubernetes-fluent-client";
import { compile } from "./compile/index";
import { CONTROLLER_NAME } from "./compile/types";
import { controllerSettings } from "./config";
import { kubeClusterClient } from "./kube";
import { KINDS } from "./kinds";
import { Reconciler } from "./reconciler";
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
  });

  // The admission webhook's certificate, renewed before it expires (off when the chart's env is absent).
  const certificate = webhookCertificateSettings(env);
  const rotation = certificate
    ? new WebhookCertificateRotation(certificate, { info: m => Log.info(m), warn: m => Log.warn(m), error: m => Log.error(m) })
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
    // The agent Pods live in one namespace: watch only there (the chart grants Pods by a Role).
    if (kind === "AgentPod" && settings.agentNamespace) {
      upserts = upserts.InNamespace(settings.agentNamespace) as typeof upserts;
      deletes = deletes.InNamespace(settings.agentNamespace) as typeof deletes;
    }
    for (const [label, value] of Object.entries(selector)) {
      upserts = upserts.WithLabel(label, value) as typeof upserts;
      deletes = deletes.WithLabel(label, value) as typeof deletes;
    }
    upserts.Watch(object => reconciler.observe(kind, object as KubernetesObject));
    deletes.Watch(object => reconciler.forget(kind, object as KubernetesObject));
  };
  for (const kind of WATCHED_KINDS) bind(kind);

  const start = () => {
    reconciler.start();
    rotation?.start();
  };
  return { capability, reconciler, start };
}
