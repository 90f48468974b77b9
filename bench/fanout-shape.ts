// SPDX-License-Identifier: Apache-2.0
/**
 * The fanout shape of test/e2e/fanout.test.ts as an in-memory cluster (test/lib/memory-cluster.ts):
 * N TCPRoutes on N / 50 Gateways (50 listeners each), every route sending to one Service
 * (tcp-echo), and as many more Services with an EndpointSlice each that no route names (the
 * ClusterIP Services the e2e test gives kube-proxy). bench/reconcile.ts runs the controller's
 * pass on it; bench/requests.ts writes the DataplaneConfigs its compile gives.
 */
import type { KubernetesObject } from "kubernetes-fluent-client";
import { compile, CONTROLLER_NAME } from "../capabilities/gateway/compile/index.js";
import { Reconciler } from "../capabilities/gateway/reconciler.js";
import { MemoryCluster } from "../test/lib/memory-cluster.js";

export const LISTENERS_PER_GATEWAY = 50;
export const NAMESPACE = "bench";

export type Stored = KubernetesObject & { status?: Record<string, unknown> };

let version = 1;
/** Metadata as the API server gives it: each object its own uid and resourceVersion. */
function metadata(name: string, namespace?: string) {
  const v = version++;
  return {
    name,
    ...(namespace ? { namespace } : {}),
    uid: `uid-${v}`,
    resourceVersion: String(v),
    generation: 1,
    // the API's JSON carries a string, whatever the client's type says
    creationTimestamp: "2026-01-01T00:00:00Z" as unknown as Date,
  };
}

export function fanoutCluster(routes: number): {
  cluster: MemoryCluster;
  slice: (pods: number) => Stored;
} {
  const cluster = new MemoryCluster();
  cluster.add("GatewayClass", {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "GatewayClass",
    metadata: metadata("blixt"),
    spec: { controllerName: CONTROLLER_NAME },
  } as Stored);
  cluster.add("Namespace", { metadata: metadata(NAMESPACE) });
  cluster.add("Node", {
    metadata: metadata("node-1"),
    status: { conditions: [{ type: "Ready", status: "True" }] },
  } as Stored);
  cluster.add("AgentPod", {
    metadata: metadata("blixt-agent-x", "blixt-system"),
    spec: { nodeName: "node-1" },
    status: { conditions: [{ type: "Ready", status: "True" }] },
  } as Stored);
  for (let g = 0; g < Math.ceil(routes / LISTENERS_PER_GATEWAY); g++) {
    cluster.add("Gateway", {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: metadata(`gw-${g}`, NAMESPACE),
      spec: {
        gatewayClassName: "blixt",
        listeners: Array.from({ length: LISTENERS_PER_GATEWAY }, (_, l) => ({
          name: `l${l}`,
          protocol: "TCP",
          port: 10000 + l,
        })),
      },
    } as Stored);
  }
  for (let r = 0; r < routes; r++) {
    cluster.add("TCPRoute", {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "TCPRoute",
      metadata: metadata(`route-${r}`, NAMESPACE),
      spec: {
        parentRefs: [
          {
            name: `gw-${Math.floor(r / LISTENERS_PER_GATEWAY)}`,
            sectionName: `l${r % LISTENERS_PER_GATEWAY}`,
          },
        ],
        rules: [{ backendRefs: [{ name: "tcp-echo", port: 80 }] }],
      },
    } as Stored);
  }
  const service = (name: string) =>
    cluster.add("Service", {
      metadata: metadata(name, NAMESPACE),
      spec: { ports: [{ name: "p", port: 80, protocol: "TCP" }] },
    } as Stored);
  const slice = (name: string, pods: number): Stored =>
    ({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: {
        ...metadata(`${name}-x`, NAMESPACE),
        labels: { "kubernetes.io/service-name": name },
      },
      addressType: "IPv4",
      ports: [{ name: "p", port: 8080, protocol: "TCP" }],
      endpoints: Array.from({ length: pods }, (_, e) => ({
        addresses: [`198.19.0.${e + 1}`],
        conditions: { ready: true },
        nodeName: "node-1",
      })),
    }) as Stored;
  service("tcp-echo");
  cluster.add("EndpointSlice", slice("tcp-echo", 2));
  // kube-proxy's side of the e2e test: Services of the same pods that no route names.
  for (let r = 0; r < routes; r++) {
    service(`clusterip-${r}`);
    cluster.add("EndpointSlice", slice(`clusterip-${r}`, 2));
  }
  return { cluster, slice: pods => slice("tcp-echo", pods) };
}

/**
 * The controller's settings for a pass the caller runs: no timer ever starts one, and the
 * address pool is one of this project's test ranges.
 */
const BENCH_SETTINGS = {
  addressPools: [{ name: "bench", cidrs: ["198.18.100.0/24"] }],
  resyncSeconds: 3600,
  debounceMs: 3_600_000, // passes run when the bench calls them, never on a timer
  maxBackoffSeconds: 1,
  writeConcurrency: 8,
  agentPodSelector: {},
};

/** The controller's real loop on `cluster`, its passes run by the caller; it logs only errors. */
export function benchReconciler(cluster: MemoryCluster): Reconciler {
  return new Reconciler({
    client: cluster,
    compile,
    controllerName: CONTROLLER_NAME,
    settings: BENCH_SETTINGS,
    log: { info: () => {}, warn: () => {}, error: (m: string) => console.error(m) },
  });
}

/**
 * The DataplaneConfig the controller writes for the first Gateway of the fanout shape of
 * `routes` routes, with tcp-echo at 2 ready pods and at 3: the write an EndpointSlice change
 * makes, each way.
 */
export async function fanoutDataplaneConfigs(
  routes: number,
): Promise<[KubernetesObject, KubernetesObject]> {
  const { cluster, slice } = fanoutCluster(routes);
  const reconciler = benchReconciler(cluster);
  const config = () => {
    const found = cluster.objects
      .get("DataplaneConfig")!
      .find(o => (o as { spec?: { gatewayName?: string } }).spec?.gatewayName === "gw-0");
    if (!found) throw new Error("bench: no DataplaneConfig for Gateway gw-0");
    return structuredClone(found);
  };
  try {
    await reconciler.resync();
    for (let i = 0; i < 3; i++) await reconciler.reconcile();
    const two = config();
    reconciler.observe("EndpointSlice", slice(3));
    await reconciler.reconcile();
    return [two, config()];
  } finally {
    reconciler.stop();
  }
}
