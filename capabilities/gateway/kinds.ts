// SPDX-License-Identifier: Apache-2.0
/**
 * The kinds blixt reads and writes: model class, group/version/kind. The GVK is passed to Pepr
 * explicitly rather than looked up by class name, because Pepr's copy of
 * kubernetes-fluent-client (its CommonJS build) does not see RegisterKind calls made through
 * ours when the two are loaded as separate instances (as under tsx in tests).
 */
import { RegisterKind as registerWithPepr } from "pepr";
import { kind, type GenericClass, type GroupVersionKind } from "kubernetes-fluent-client";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1";
import { Gateway } from "../generated/gateway-v1";
import { GatewayClass } from "../generated/gatewayclass-v1";
import { HTTPRoute } from "../generated/httproute-v1";
import { ListenerSet } from "../generated/listenerset-v1";
import { ReferenceGrant } from "../generated/referencegrant-v1beta1";
import { TCPRoute } from "../generated/tcproute-v1";
import { UDPRoute } from "../generated/udproute-v1";
import type { WatchedKind } from "./store";

export interface KindInfo {
  model: GenericClass;
  apiVersion: string;
  kind: string;
  gvk: GroupVersionKind;
}

function info(model: GenericClass, apiVersion: string, kindName: string, plural: string): KindInfo {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  return { model, apiVersion, kind: kindName, gvk: { group, version, kind: kindName, plural } };
}

export const KINDS = {
  GatewayClass: info(
    GatewayClass,
    "gateway.networking.k8s.io/v1",
    "GatewayClass",
    "gatewayclasses",
  ),
  Gateway: info(Gateway, "gateway.networking.k8s.io/v1", "Gateway", "gateways"),
  ListenerSet: info(ListenerSet, "gateway.networking.k8s.io/v1", "ListenerSet", "listenersets"),
  TCPRoute: info(TCPRoute, "gateway.networking.k8s.io/v1", "TCPRoute", "tcproutes"),
  UDPRoute: info(UDPRoute, "gateway.networking.k8s.io/v1", "UDPRoute", "udproutes"),
  HTTPRoute: info(HTTPRoute, "gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
  ReferenceGrant: info(
    ReferenceGrant,
    "gateway.networking.k8s.io/v1beta1",
    "ReferenceGrant",
    "referencegrants",
  ),
  Service: info(kind.Service, "v1", "Service", "services"),
  EndpointSlice: info(kind.EndpointSlice, "discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
  Namespace: info(kind.Namespace, "v1", "Namespace", "namespaces"),
  Node: info(kind.Node, "v1", "Node", "nodes"),
  DataplaneConfig: info(
    DataplaneConfig,
    "blixt.dev/v1alpha1",
    "DataplaneConfig",
    "dataplaneconfigs",
  ),
  AgentPod: info(kind.Pod, "v1", "Pod", "pods"),
} satisfies Record<WatchedKind, KindInfo>;

/**
 * Also register the generated kinds with Pepr's copy of kubernetes-fluent-client, so a
 * `When(Model)` without an explicit GVK (as other capabilities write it) resolves too. When
 * both copies are one instance (the bundled module in production) it already knows them and
 * says so; nothing else can go wrong here.
 */
for (const name of [
  "GatewayClass",
  "Gateway",
  "ListenerSet",
  "TCPRoute",
  "UDPRoute",
  "HTTPRoute",
  "ReferenceGrant",
  "DataplaneConfig",
] as const) {
  try {
    registerWithPepr(KINDS[name].model, KINDS[name].gvk);
  } catch {
    // "GVK <name> already registered": the same instance.
  }
}
