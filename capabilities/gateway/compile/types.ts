// SPDX-License-Identifier: Apache-2.0
/**
 * The contract of the compile step: a snapshot of the cluster objects blixt reads in, the
 * status of every object blixt owns plus one DataplaneConfig per Gateway out.
 *
 * Only type imports here and in the compile step: the generated kinds register themselves with
 * kubernetes-fluent-client when loaded, which costs seconds and is I/O-side business.
 *
 * Status types are written here rather than taken from the generated kinds because the
 * generator types timestamps as Date and condition status as an enum, while the API (and this
 * step, for byte-identical output) carries RFC 3339 strings and "True"/"False"/"Unknown".
 * They are structurally what the API expects; the controller casts when it patches status.
 */
import type { CertificateCopy } from "../certificate-copies.js";
import type { GatewayService } from "./gateway-services.js";
import type { V1EndpointSlice, V1Namespace, V1Service } from "@kubernetes/client-node";
import type { DataplaneConfig } from "../../generated/dataplaneconfig-v1alpha1.js";
import type { Gateway } from "../../generated/gateway-v1.js";
import type { GatewayClass } from "../../generated/gatewayclass-v1.js";
import type { HTTPRoute } from "../../generated/httproute-v1.js";
import type { ListenerSet } from "../../generated/listenerset-v1.js";
import type { ReferenceGrant } from "../../generated/referencegrant-v1beta1.js";
import type { TCPRoute } from "../../generated/tcproute-v1.js";
import type { UDPRoute } from "../../generated/udproute-v1.js";

export type {
  DataplaneConfig,
  Gateway,
  GatewayClass,
  HTTPRoute,
  ListenerSet,
  ReferenceGrant,
  TCPRoute,
  UDPRoute,
  V1EndpointSlice,
  V1Namespace,
  V1Service,
};

export const CONTROLLER_NAME = "blixt.dev/gateway-controller";
export const GATEWAY_GROUP = "gateway.networking.k8s.io";
export const DATAPLANE_API_VERSION = "blixt.dev/v1alpha1";

/** Addresses the controller may hand to Gateways (like MetalLB's address pools). */
export interface AddressPool {
  name: string;
  /** "198.18.100.0/24" (without its network and broadcast addresses) or "198.18.100.10-198.18.100.20" (inclusive). */
  cidrs: string[];
  /** Only Gateways in these namespaces draw from this pool; absent = all namespaces. */
  namespaces?: string[];
}

/** What the compile step needs of a Secret; the I/O side parses the certificate, not us. */
export interface SecretInfo {
  namespace: string;
  name: string;
  type: string;
  /** tls.crt and tls.key are present and parse as a certificate and its private key. */
  validTLS: boolean;
  creationTimestamp?: string;
  /** secretDigest() of its type and data, so a copy can tell that its source changed. */
  digest?: string;
}

export interface NodeInfo {
  name: string;
  /** The Node's Ready condition is True. */
  ready: boolean;
  /** blixt's node agent on this node is running and has its programs attached. */
  agentReady: boolean;
}

export interface Snapshot {
  /** CONTROLLER_NAME in production. */
  controllerName: string;
  /** RFC 3339; used only as lastTransitionTime of a condition whose status changed. */
  now: string;
  gatewayClasses: GatewayClass[];
  gateways: Gateway[];
  /** ListenerSets (absent: none). */
  listenerSets?: ListenerSet[];
  tcpRoutes: TCPRoute[];
  udpRoutes: UDPRoute[];
  httpRoutes: HTTPRoute[];
  referenceGrants: ReferenceGrant[];
  services: V1Service[];
  endpointSlices: V1EndpointSlice[];
  namespaces: V1Namespace[];
  secrets: SecretInfo[];
  nodes: NodeInfo[];
  /** The DataplaneConfigs as they are in the cluster, for the agents' acknowledgements. */
  dataplaneConfigs: DataplaneConfig[];
  addressPools: AddressPool[];
  /** "namespace/name" of a Gateway → its address, as recorded by the controller before. */
  allocations: Record<string, string>;
  /**
   * Where the node agents read certificates (the release namespace). Set: each HTTPS
   * listener's resolved certificateRefs name a copy there, and the output lists the copies.
   */
  certificateCopyNamespace?: string;
}

export type ConditionStatus = "True" | "False" | "Unknown";

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  observedGeneration?: number;
  /** RFC 3339. */
  lastTransitionTime: string;
}

export interface GatewayClassStatus {
  conditions: Condition[];
  supportedFeatures?: { name: string }[];
}

export interface RouteGroupKind {
  group: string;
  kind: string;
}

export interface ListenerStatus {
  name: string;
  supportedKinds: RouteGroupKind[];
  attachedRoutes: number;
  conditions: Condition[];
}

export interface GatewayStatusAddress {
  type: string;
  value: string;
}

export interface GatewayStatus {
  addresses?: GatewayStatusAddress[];
  conditions: Condition[];
  listeners: ListenerStatus[];
  /** ListenerSets attached to the Gateway and Accepted. */
  attachedListenerSets: number;
}

export interface ListenerSetStatus {
  conditions: Condition[];
  listeners: ListenerStatus[];
}

export interface ParentReference {
  group?: string;
  kind?: string;
  namespace?: string;
  name: string;
  sectionName?: string;
  port?: number;
}

export interface RouteParentStatus {
  parentRef: ParentReference;
  controllerName: string;
  conditions: Condition[];
}

export interface RouteStatus {
  /** Ours, one per parentRef naming a Gateway of ours, then other controllers' entries as they were. */
  parents: RouteParentStatus[];
}

export type RouteKind = "TCPRoute" | "UDPRoute" | "HTTPRoute";

export interface CompileOutput {
  gatewayClasses: { name: string; status: GatewayClassStatus }[];
  gateways: { namespace: string; name: string; status: GatewayStatus }[];
  /** ListenerSets whose parent is a Gateway of ours. */
  listenerSets: { namespace: string; name: string; status: ListenerSetStatus }[];
  routes: { kind: RouteKind; namespace: string; name: string; status: RouteStatus }[];
  /**
   * One per Gateway blixt accepts: metadata.name = the Gateway's name, same namespace, an
   * ownerReference to the Gateway (when its uid is known). Spec only; status is the agents'.
   */
  dataplaneConfigs: DataplaneConfig[];
  /**
   * One per accepted Gateway: a headless Service in its namespace (its DNS name, its
   * infrastructure labels and annotations) and the EndpointSlice holding its address.
   */
  gatewayServices: GatewayService[];
  /** The certificate copies the DataplaneConfigs name (only with certificateCopyNamespace). */
  certificateCopies?: CertificateCopy[];
  /** The new allocation table, for the controller to record. */
  allocations: Record<string, string>;
  /** Things a person should know that no status can say (e.g. an address pool that does not parse). */
  warnings: string[];
}
