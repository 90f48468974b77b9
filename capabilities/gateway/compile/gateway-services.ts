// SPDX-License-Identifier: Apache-2.0
/**
 * ProcessGatewayServices: for each accepted Gateway, a headless Service in its namespace and
 * the EndpointSlice that gives it the Gateway's address. Clients in the cluster resolve the
 * Gateway by DNS name (`<service>.<namespace>.svc`) straight to its address, so their
 * connections take the same L4 path as any other (no ClusterIP, kube-proxy leaves headless
 * Services alone). The Service is also the Gateway's "generated infrastructure" of GEP-1867:
 * it carries spec.infrastructure.labels and .annotations and the gateway-name label.
 *
 * Names and label values stay within Kubernetes' limits whatever the Gateway's name (up to 253
 * characters): a Service name is a DNS-1035 label of at most 63, a label value at most 63.
 */
import { createHash } from "node:crypto";
import type { GatewayContext } from "./gateways.js";
import type { V1EndpointSlice, V1Service } from "./types.js";
import { GATEWAY_GROUP } from "./types.js";
import { canonicalJSON, cmp, nsName } from "./util.js";
import type { CompileInput } from "./views.js";

/** On each Service and EndpointSlice made here ("true"): what the controller owns and prunes. */
export const GATEWAY_SERVICE_LABEL = "blixt.dev/gateway-service";
/** The label GEP-1762 puts on what an implementation generates for a Gateway. */
export const GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name";
export const GATEWAY_CLASS_LABEL = "gateway.networking.k8s.io/gateway-class-name";
/** The Gateway's full name, which a label value may not hold. */
export const GATEWAY_NAME_ANNOTATION = "blixt.dev/gateway-name";
/** sha256 of what blixt sets on the object: a different one means it must be applied again. */
export const DIGEST_ANNOTATION = "blixt.dev/applied-digest";
/** endpointslice.kubernetes.io/managed-by of the slices, so kube's own controllers leave them be. */
export const ENDPOINT_SLICE_MANAGER = "gateway-controller.blixt.dev";

const MAX_LABEL = 63;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

export interface GatewayService {
  gateway: { namespace: string; name: string };
  service: V1Service;
  endpointSlice: V1EndpointSlice;
}

export interface GatewayServices {
  services: GatewayService[];
  warnings: string[];
}

const hash = (...parts: string[]): string =>
  createHash("sha256").update(JSON.stringify(parts)).digest("hex").slice(0, 10);

/**
 * A label value for `value`: itself when it fits (at most 63 characters; Gateway and class
 * names are DNS-1123 subdomains, so their characters are allowed), else its first 52
 * characters and a hash of the whole, so two long names never share one.
 */
export function labelValue(value: string): string {
  if (value.length <= MAX_LABEL) return value;
  const prefix = value.slice(0, 52).replace(/[^a-z0-9]+$/, "");
  return `${prefix}-${hash(value)}`;
}

/**
 * The Service's name: `<gateway>-<class>` (the convention of Istio and NGINX Gateway Fabric)
 * when that is a DNS-1035 label; otherwise a readable prefix of the Gateway's name (letters,
 * digits and "-", starting with a letter) and a hash of namespace, name and class.
 */
export function gatewayServiceName(namespace: string, name: string, className: string): string {
  const plain = `${name}-${className}`;
  if (plain.length <= MAX_LABEL && DNS1035_LABEL.test(plain)) return plain;
  const prefix = name
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^[^a-z]+/, "")
    .slice(0, 40)
    .replace(/-+$/, "");
  return `${prefix || "gateway"}-${hash(namespace, name, className)}`;
}

export function processGatewayServices(
  input: Pick<CompileInput, "services">,
  gateways: GatewayContext[],
): GatewayServices {
  const services: GatewayService[] = [];
  const warnings: string[] = [];
  for (const g of gateways) {
    if (g.accepted.status !== "True") continue;
    const { meta } = g.view;
    const name = gatewayServiceName(meta.namespace, meta.name, g.view.className);
    const existing = input.services.get(nsName(meta.namespace, name));
    // A Service blixt made for an earlier Gateway of this name is taken over (the apply
    // replaces its ownerReference); anyone else's is left alone.
    if (existing && existing.meta.labels[GATEWAY_SERVICE_LABEL] !== "true") {
      warnings.push(
        `Gateway ${g.key}: Service ${meta.namespace}/${name} exists and is not blixt's, so the Gateway gets no Service (its DNS name); rename or delete that Service`,
      );
      continue;
    }
    services.push(gatewayService(g, name));
  }
  services.sort((a, b) =>
    cmp(
      nsName(a.gateway.namespace, a.service.metadata?.name ?? ""),
      nsName(b.gateway.namespace, b.service.metadata?.name ?? ""),
    ),
  );
  return { services, warnings };
}

function gatewayService(g: GatewayContext, name: string): GatewayService {
  const { meta } = g.view;
  // One port per (port, transport): listeners that share one (HTTP/HTTPS by hostname) share it.
  const ports = new Map<string, { name: string; port: number; protocol: string }>();
  for (const l of g.listeners) {
    if (!l.valid || !l.transport) continue;
    const portName = `${l.transport.toLowerCase()}-${l.port}`;
    ports.set(portName, { name: portName, port: l.port, protocol: l.transport });
  }
  const sorted = [...ports.values()].sort((a, b) => a.port - b.port || cmp(a.protocol, b.protocol));
  const labels: Record<string, string> = {
    ...g.view.infrastructureLabels,
    "app.kubernetes.io/managed-by": "blixt",
    [GATEWAY_SERVICE_LABEL]: "true",
    [GATEWAY_NAME_LABEL]: labelValue(meta.name),
    [GATEWAY_CLASS_LABEL]: labelValue(g.view.className),
  };
  const annotations: Record<string, string> = {
    ...g.view.infrastructureAnnotations,
    [GATEWAY_NAME_ANNOTATION]: meta.name,
  };
  const ownerReferences = meta.uid
    ? [
        {
          apiVersion: `${GATEWAY_GROUP}/v1`,
          kind: "Gateway",
          name: meta.name,
          uid: meta.uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ]
    : undefined;
  const spec = {
    type: "ClusterIP",
    clusterIP: "None",
    ports: sorted.map(p => ({ ...p, targetPort: p.port })),
  };
  const service: V1Service = {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name,
      namespace: meta.namespace,
      labels,
      annotations: {
        ...annotations,
        [DIGEST_ANNOTATION]: digest({ labels, annotations, ownerReferences, spec }),
      },
      ...(ownerReferences ? { ownerReferences } : {}),
    },
    spec,
  };

  const address = g.address?.kind === "assigned" ? g.address.address : undefined;
  const sliceLabels: Record<string, string> = {
    "kubernetes.io/service-name": name,
    "endpointslice.kubernetes.io/managed-by": ENDPOINT_SLICE_MANAGER,
    "app.kubernetes.io/managed-by": "blixt",
    [GATEWAY_SERVICE_LABEL]: "true",
    [GATEWAY_NAME_LABEL]: labelValue(meta.name),
  };
  const slice = {
    addressType: "IPv4",
    endpoints: address
      ? [{ addresses: [address], conditions: { ready: true, serving: true, terminating: false } }]
      : [],
    ports: sorted,
  };
  const endpointSlice: V1EndpointSlice = {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name,
      namespace: meta.namespace,
      labels: sliceLabels,
      annotations: {
        [GATEWAY_NAME_ANNOTATION]: meta.name,
        [DIGEST_ANNOTATION]: digest({ labels: sliceLabels, ownerReferences, slice }),
      },
      ...(ownerReferences ? { ownerReferences } : {}),
    },
    ...slice,
  };
  return { gateway: { namespace: meta.namespace, name: meta.name }, service, endpointSlice };
}

function digest(value: unknown): string {
  return createHash("sha256").update(canonicalJSON(value)).digest("hex").slice(0, 32);
}
