// SPDX-License-Identifier: Apache-2.0
/**
 * The controller's thin I/O adapter: lists and writes through kubernetes-fluent-client.
 */
import { K8s, kind, type GenericClass, type KubernetesObject } from "kubernetes-fluent-client";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1";
import { Gateway } from "../generated/gateway-v1";
import { KINDS } from "./kinds";
import type { StatusKind, Write } from "./plan";
import type { ClusterClient } from "./reconciler";
import { secretInfo } from "./store";

const STATUS_MODELS: Record<StatusKind, GenericClass> = {
  GatewayClass: KINDS.GatewayClass.model,
  Gateway: KINDS.Gateway.model,
  TCPRoute: KINDS.TCPRoute.model,
  UDPRoute: KINDS.UDPRoute.model,
  HTTPRoute: KINDS.HTTPRoute.model,
};

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
      const found = await Promise.all(
        refs.map(async ({ namespace, name }) => {
          try {
            return secretInfo(await K8s(kind.Secret).InNamespace(namespace).Get(name));
          } catch (error) {
            if ((error as { status?: number }).status === 404) return undefined;
            throw error;
          }
        }),
      );
      return found.filter(info => info !== undefined);
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
