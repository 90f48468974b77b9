// SPDX-License-Identifier: Apache-2.0
/**
 * The controller's thin I/O adapter: lists and most writes through kubernetes-fluent-client; a
 * route's status through @kubernetes/client-node, whose status replace carries the
 * resourceVersion (kubernetes-fluent-client's PatchStatus sends the status alone); route statuses
 * and DataplaneConfig applies, a thousand and twenty requests at a time, on the keep-alive
 * connections of kube-connections.ts.
 */
import { CoreV1Api, KubeConfig, type V1Secret } from "@kubernetes/client-node";
import { applyCustomObject, asResponse, customObjectsApi } from "../kube-connections";
import { K8s, kind, type GenericClass, type KubernetesObject } from "kubernetes-fluent-client";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1";
import { dataplaneConfigProblems } from "../dataplaneconfig-check";
import { Gateway } from "../generated/gateway-v1";
import { COPY_LABEL, secretDigest } from "./certificate-copies";
import { KINDS } from "./kinds";
import { sameJSON, type StatusKind, type Write } from "./plan";
import { getSecretByName } from "../secret-read";
import { errorMessage, type ClusterClient, type SecretRead } from "./reconciler";
import { secretInfo, type SecretRef } from "./store";

const STATUS_MODELS: Record<StatusKind, GenericClass> = {
  GatewayClass: KINDS.GatewayClass.model,
  Gateway: KINDS.Gateway.model,
  ListenerSet: KINDS.ListenerSet.model,
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
  try {
    const read = await getSecretByName(ref.namespace, ref.name);
    if ("problem" in read) return { ...ref, problem: read.problem };
    return read.secret ? { ...ref, secret: secretInfo(read.secret) } : { ...ref };
  } catch (error) {
    if ((error as { status?: number }).status === 404) return { ...ref };
    return { ...ref, problem: `reading it failed: ${errorMessage(error)}`, retry: true };
  }
}

/**
 * Writes one certificate copy: reads its source (by name, as readSecret does), refuses it if it
 * changed since the plan saw it (the next pass copies the new one), then creates the copy or
 * replaces it over the version it read. Type and data are the source's; nothing else is.
 */
async function applyCertificateCopy(
  write: Extract<Write, { op: "applyCertificateCopy" }>,
): Promise<KubernetesObject> {
  const { source } = write.copy;
  const read = await getSecretByName(source.namespace, source.name);
  if ("problem" in read)
    throw new Error(`Secret ${source.namespace}/${source.name}: ${read.problem}`);
  if (!read.secret)
    throw Object.assign(new Error(`Secret ${source.namespace}/${source.name} no longer exists`), {
      status: 404,
    });
  if (secretDigest(read.secret.type, read.secret.data) !== write.digest) {
    throw new Error(
      `Secret ${source.namespace}/${source.name} changed since this pass read it; the next pass copies it`,
    );
  }
  const body: V1Secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      namespace: write.namespace,
      name: write.name,
      labels: write.labels,
      annotations: write.annotations,
    },
    type: read.secret.type,
    data: read.secret.data,
  };
  const config = new KubeConfig();
  config.loadFromDefault();
  const api = config.makeApiClient(CoreV1Api);
  try {
    const current = await api
      .readNamespacedSecret({ namespace: write.namespace, name: write.name })
      .catch((error: unknown) => {
        if ((asResponse(error) as { status?: number }).status === 404) return undefined;
        throw error;
      });
    const written = current
      ? await api.replaceNamespacedSecret({
          namespace: write.namespace,
          name: write.name,
          body: {
            ...body,
            metadata: { ...body.metadata, resourceVersion: current.metadata?.resourceVersion },
          },
        })
      : await api.createNamespacedSecret({ namespace: write.namespace, body });
    // Only metadata goes back to the reconciler: it keeps no key bytes.
    return { apiVersion: "v1", kind: "Secret", metadata: written.metadata } as KubernetesObject;
  } catch (error) {
    throw asResponse(error);
  }
}

/** The certificate copies in `namespace`, metadata only (the controller keeps no key bytes). */
export async function listCertificateCopies(namespace: string): Promise<KubernetesObject[]> {
  const list = await K8s(kind.Secret).InNamespace(namespace).WithLabel(COPY_LABEL, "true").Get();
  return list.items.map(
    s => ({ apiVersion: "v1", kind: "Secret", metadata: s.metadata }) as KubernetesObject,
  );
}

type RouteKind = "TCPRoute" | "UDPRoute" | "HTTPRoute";
const isRouteKind = (k: StatusKind): k is RouteKind =>
  k === "TCPRoute" || k === "UDPRoute" || k === "HTTPRoute";

/** One entry of a route's status.parents: whose it is says controllerName. */
export interface RouteParentStatus {
  controllerName: string;
  [field: string]: unknown;
}

export interface RouteObject extends KubernetesObject {
  status?: { parents?: RouteParentStatus[] } & Record<string, unknown>;
}

/**
 * The parents a route's status should hold: blixt's entries as `ours` gives them (first, as
 * compile orders them), then every other controller's entry as `current` has it. Pure.
 */
export function routeParents(
  current: RouteParentStatus[] | undefined,
  ours: RouteParentStatus[],
  controllerName: string,
): RouteParentStatus[] {
  return [
    ...ours.filter(p => p.controllerName === controllerName),
    ...(current ?? []).filter(p => p.controllerName !== controllerName),
  ];
}

/** The two calls a route status write makes; a test may wrap them. */
export interface RouteStatusIO {
  read(kind: RouteKind, namespace: string, name: string): Promise<RouteObject>;
  /** Replaces the status of exactly the version read (its metadata.resourceVersion), or fails with 409. */
  replaceStatus(kind: RouteKind, route: RouteObject): Promise<RouteObject>;
}

/** Reads and writes on the process's keep-alive connections (kube-connections.ts): a thousand route statuses are two thousand requests. */
export const kubeRouteStatusIO: RouteStatusIO = {
  async read(routeKind, namespace, name) {
    const { group, version, plural } = KINDS[routeKind].gvk;
    try {
      return (await customObjectsApi().getNamespacedCustomObject({
        group,
        version: version ?? "",
        namespace,
        plural: plural ?? "",
        name,
      })) as RouteObject;
    } catch (error) {
      throw asResponse(error);
    }
  },
  async replaceStatus(routeKind, route) {
    const { group, version, plural } = KINDS[routeKind].gvk;
    try {
      return (await customObjectsApi().replaceNamespacedCustomObjectStatus({
        group,
        version: version ?? "",
        namespace: route.metadata?.namespace ?? "",
        plural: plural ?? "",
        name: route.metadata?.name ?? "",
        body: route,
      })) as RouteObject;
    } catch (error) {
      throw asResponse(error);
    }
  },
};

/**
 * Writes blixt's entries of a route's status.parents and leaves every other controller's as
 * the API server has them: read, replace only blixt's entries, write with the resourceVersion
 * read; on a conflict (someone wrote in between) read again and redo, up to `attempts` times.
 * `stored`, the route as the watch last gave it, stands in for the first read: the write
 * carries its resourceVersion, so a stale copy costs one conflict, never another
 * controller's entry. Returns the route as stored (as read, when nothing needed writing).
 */
export async function writeRouteParents(
  route: { kind: RouteKind; namespace: string; name: string },
  ours: RouteParentStatus[],
  controllerName: string,
  io: RouteStatusIO = kubeRouteStatusIO,
  attempts = 5,
  stored?: RouteObject,
): Promise<RouteObject> {
  for (let attempt = 1; ; attempt++) {
    const current =
      attempt === 1 && stored?.metadata?.resourceVersion
        ? stored
        : await io.read(route.kind, route.namespace, route.name);
    const parents = routeParents(current.status?.parents, ours, controllerName);
    if (sameJSON(parents, current.status?.parents ?? [])) return current;
    try {
      return await io.replaceStatus(route.kind, {
        ...current,
        status: { ...current.status, parents },
      });
    } catch (error) {
      if ((error as { status?: number }).status !== 409 || attempt >= attempts) throw error;
    }
  }
}

export function kubeClusterClient(
  agentPodSelector: Record<string, string>,
  controllerName: string,
  agentNamespace?: string,
): ClusterClient {
  return {
    async list(watched) {
      const { model, apiVersion, kind: kindName } = KINDS[watched];
      let query = K8s(model);
      if (watched === "AgentPod") {
        if (agentNamespace) query = query.InNamespace(agentNamespace) as typeof query;
        for (const [label, value] of Object.entries(agentPodSelector))
          query = query.WithLabel(label, value) as typeof query;
      }
      const list = await query.Get();
      return list.items.map(item => ({
        apiVersion,
        kind: kindName,
        ...(item as KubernetesObject),
      }));
    },

    async secrets(refs) {
      return Promise.all(refs.map(readSecret));
    },

    ...(agentNamespace ? { certificateCopies: () => listCertificateCopies(agentNamespace) } : {}),

    async execute(write, stored) {
      switch (write.op) {
        case "applyDataplaneConfig": {
          // The webhook does not see the controller's own writes (its matchConditions, so a
          // webhook pod on a failed node cannot hold up failover): its rules are checked here.
          const problems = dataplaneConfigProblems(write.object);
          if (problems.length)
            throw new Error(
              `DataplaneConfig ${write.object.metadata?.namespace}/${write.object.metadata?.name} not written, it breaks the admission rules (a blixt bug; please report it): ${problems.join("; ")}`,
            );
          // force: blixt's controller is the only writer of spec (admission denies others). The
          // field manager is the one kubernetes-fluent-client's Apply used, which wrote every
          // DataplaneConfig before: a manager of another name would leave the fields it owned
          // behind when a later apply drops them.
          return applyCustomObject(KINDS.DataplaneConfig.gvk, write.object, {
            fieldManager: "pepr",
            force: true,
          });
        }
        case "deleteDataplaneConfig":
          await K8s(DataplaneConfig).InNamespace(write.namespace).Delete(write.name);
          return undefined;
        case "applyCertificateCopy":
          return applyCertificateCopy(write);
        case "deleteCertificateCopy":
          await K8s(kind.Secret).InNamespace(write.namespace).Delete(write.name);
          return undefined;
        case "applyGatewayService":
          // force: the fields blixt sets are blixt's; what others add to the Service stays.
          return K8s(kind.Service).Apply(write.object as never, { force: true });
        case "applyGatewayEndpointSlice":
          return K8s(kind.EndpointSlice).Apply(write.object as never, { force: true });
        case "deleteGatewayService":
          await K8s(kind.Service).InNamespace(write.namespace).Delete(write.name);
          return undefined;
        case "deleteGatewayEndpointSlice":
          await K8s(kind.EndpointSlice).InNamespace(write.namespace).Delete(write.name);
          return undefined;
        case "patchStatus":
          // Other controllers write their own entries of a route's status.parents.
          if (isRouteKind(write.kind)) {
            const ours = (write.status.parents ?? []) as RouteParentStatus[];
            return writeRouteParents(
              { kind: write.kind, namespace: write.namespace ?? "", name: write.name },
              ours,
              controllerName,
              kubeRouteStatusIO,
              5,
              stored as RouteObject | undefined,
            );
          }
          // A Gateway's and a GatewayClass's status is wholly their controller's: a merge patch.
          return K8s(STATUS_MODELS[write.kind]).PatchStatus({
            metadata: {
              name: write.name,
              ...(write.namespace ? { namespace: write.namespace } : {}),
            },
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
