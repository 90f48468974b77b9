// SPDX-License-Identifier: Apache-2.0
/**
 * The controller's thin I/O adapter: lists and writes through kubernetes-fluent-client.
 */
import { K8s, kind, type GenericClass, type KubernetesObject } from "kubernetes-fluent-client";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1";
import { Gateway } from "../generated/gateway-v1";
import { KINDS } from "./kinds";
import type { StatusKind, Write } from "./plan";
import { dns1123SubdomainProblem } from "./names";
import { errorMessage, type ClusterClient, type SecretRead } from "./reconciler";
import { secretInfo, type SecretRef } from "./store";

const STATUS_MODELS: Record<StatusKind, GenericClass> = {
  GatewayClass: KINDS.GatewayClass.model,
  Gateway: KINDS.Gateway.model,
  TCPRoute: KINDS.TCPRoute.model,
  UDPRoute: KINDS.UDPRoute.model,
  HTTPRoute: KINDS.HTTPRoute.model,
};

/**
 * Reads one certificateRef's Secret. A name or namespace that no object can have is refused
 * before any request (kubernetes-fluent-client puts names into the path as they are), what is
 * sent is encoded all the same, and an answer that is not that Secret is not taken for it.
 */
export async function readSecret(ref: SecretRef): Promise<SecretRead> {
  const namespaceProblem = dns1123SubdomainProblem(ref.namespace);
  const nameProblem = dns1123SubdomainProblem(ref.name);
  if (namespaceProblem || nameProblem) return { ...ref, problem: namespaceProblem ? `namespace ${namespaceProblem}` : `name ${nameProblem}` };
  try {
    const secret = await K8s(kind.Secret).InNamespace(encodeURIComponent(ref.namespace)).Get(encodeURIComponent(ref.name));
    if (secret?.metadata?.namespace !== ref.namespace || secret.metadata.name !== ref.name) {
      return { ...ref, problem: `the API server answered with ${secret?.kind ?? "an object"} ${secret?.metadata?.namespace ?? ""}/${secret?.metadata?.name ?? ""}, not this Secret` };
    }
    return { ...ref, secret: secretInfo(secret) };
  } catch (error) {
    if ((error as { status?: number }).status === 404) return { ...ref };
    return { ...ref, problem: `reading it failed: ${errorMessage(error)}`, retry: true };
  }
}

export function kubeClusterClient(agentPodSelector: Record<string, string>): ClusterClient {
  return {
    async list(watched) {
      const { model, apiVersion, kind: kindName } = KINDS[watched];
      let query = K8s(model);
      if (watched === "AgentPod") {
        for (const [label, value] of Object.entries(agentPodSelector)) query = query.WithLabel(label, value) as typeof query;
      }
      const list = await query.Get();
      return list.items.map(item => ({ apiVersion, kind: kindName, ...(item as KubernetesObject) }));
    },

    async secrets(refs) {
      return Promise.all(refs.map(readSecret));
    },

    async execute(write) {
      switch (write.op) {
        case "applyDataplaneConfig":
          // force: blixt's controller is the only writer of spec (admission denies others).
          return K8s(DataplaneConfig).Apply(write.object, { force: true });
        case "deleteDataplaneConfig":
          await K8s(DataplaneConfig).InNamespace(write.namespace).Delete(write.name);
          return undefined;
        case "patchStatus":
          return K8s(STATUS_MODELS[write.kind]).PatchStatus({
            metadata: { name: write.name, ...(write.namespace ? { namespace: write.namespace } : {}) },
            status: write.status,
          } as never);
        case "addFinalizer":
        case "removeFinalizer":
          // Not K8s().Finalize: it server-side-applies the whole object, taking over its spec.
          return K8s(Gateway, { namespace: write.namespace, name: write.name }).Patch(write.patch);
      }
    },
  };
}
