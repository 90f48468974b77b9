// SPDX-License-Identifier: Apache-2.0
/**
 * Offline input and output of the compile step: multi-document YAML (kubectl style) → Snapshot,
 * CompileOutput → YAML or JSON. No file access here; callers pass text and a source name.
 *
 * Besides Kubernetes objects, an input may hold one blixt-only document for what the cluster
 * does not say by itself (none of it is a Kubernetes object):
 *
 *   apiVersion: blixt.dev/v1alpha1
 *   kind: CompileEnvironment
 *   controllerName: blixt.dev/gateway-controller   # default
 *   now: "2026-01-01T00:00:00Z"                     # default: the caller's clock
 *   addressPools:                                   # AddressPool[]
 *     - { name: lab, cidrs: ["198.18.100.0/24", "198.18.101.10-198.18.101.20"], namespaces: [infra] }
 *   nodes:                                          # NodeInfo[]
 *     - { name: node-a, ready: true, agentReady: true }
 *   allocations: { "infra/gw": 198.18.100.7 }       # the controller's recorded allocations
 *   secrets:                                        # SecretInfo[], for Secrets given by summary
 *     - { namespace: infra, name: cert, type: kubernetes.io/tls, validTLS: true }
 *
 * Core Secrets may also be given as objects; validTLS is then worked out from tls.crt/tls.key.
 * DataplaneConfig objects (with status.nodes) stand for what the agents acknowledged.
 * Objects of other kinds (Deployments in conformance manifests, say) are ignored and listed.
 */
import { X509Certificate, createPrivateKey } from "node:crypto";
import { parseAllDocuments, stringify } from "yaml";
import type { CompileOutput, SecretInfo, Snapshot } from "./types.js";
import { CONTROLLER_NAME, GATEWAY_GROUP } from "./types.js";
import { arr, obj, str } from "./util.js";

export const ENVIRONMENT_KIND = "CompileEnvironment";

export interface Source {
  /** File name (or "-"), used in messages. */
  name: string;
  text: string;
}

export interface LoadResult {
  snapshot: Snapshot;
  /** One line per document that could not be read, naming the file and the object. */
  errors: string[];
  /** "file: apiVersion kind namespace/name" of objects that are no input of the compile step. */
  ignored: string[];
}

export function emptySnapshot(now: string): Snapshot {
  return {
    controllerName: CONTROLLER_NAME,
    now,
    gatewayClasses: [],
    gateways: [],
    listenerSets: [],
    tcpRoutes: [],
    udpRoutes: [],
    httpRoutes: [],
    referenceGrants: [],
    services: [],
    endpointSlices: [],
    namespaces: [],
    secrets: [],
    nodes: [],
    dataplaneConfigs: [],
    addressPools: [],
    allocations: {},
  };
}

/** Reads every document of every source into one Snapshot; `now` is used unless a CompileEnvironment sets it. */
export function loadSnapshot(sources: Source[], now: string): LoadResult {
  const snapshot = emptySnapshot(now);
  const errors: string[] = [];
  const ignored: string[] = [];
  for (const source of sources) {
    const docs = parseAllDocuments(source.text, { uniqueKeys: false });
    const list = Array.isArray(docs) ? docs : [docs];
    list.forEach((doc, i) => {
      const where = `${source.name}: document ${i + 1}`;
      if (doc.errors.length > 0) {
        const e = doc.errors[0];
        const line = e.linePos?.[0]?.line;
        errors.push(
          `${source.name}${line ? `:${line}` : ""}: malformed YAML in document ${i + 1}: ${e.message.split("\n")[0].replace(/:$/, "")}`,
        );
        return;
      }
      const value: unknown = doc.toJS();
      if (value === null || value === undefined) return; // an empty document, e.g. a trailing ---
      const problem = add(snapshot, value, ignored, source.name);
      if (problem) errors.push(`${where}${describe(value)}: ${problem}`);
    });
  }
  return { snapshot, errors, ignored };
}

function describe(value: unknown): string {
  const o = obj(value);
  const m = obj(o.metadata);
  const kind = str(o.kind);
  const name = str(m.name);
  if (!kind) return "";
  return ` (${kind}${name ? ` ${str(m.namespace) ? `${str(m.namespace)}/` : ""}${name}` : ""})`;
}

/** Adds one object to the snapshot; returns why it cannot be read, if it cannot. */
function add(
  snapshot: Snapshot,
  value: unknown,
  ignored: string[],
  source: string,
): string | undefined {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return "not a Kubernetes object (expected a mapping with apiVersion, kind and metadata)";
  }
  const o = value as Record<string, unknown>;
  const apiVersion = str(o.apiVersion);
  const kind = str(o.kind);
  if (!apiVersion || !kind) return "apiVersion and kind are required";
  const group = apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.indexOf("/")) : "";

  if (group === "blixt.dev" && kind === ENVIRONMENT_KIND) return addEnvironment(snapshot, o);

  const m = obj(o.metadata);
  if (!str(m.name)) return "metadata.name is required";
  const namespaced =
    !(group === GATEWAY_GROUP && kind === "GatewayClass") &&
    !(group === "" && kind === "Namespace");
  // kubectl's default namespace, as `kubectl apply -f` would use.
  if (namespaced && !str(m.namespace)) o.metadata = { ...m, namespace: "default" };

  const push = <T>(list: T[]) => {
    list.push(o as T);
    return undefined;
  };
  if (group === GATEWAY_GROUP) {
    switch (kind) {
      case "GatewayClass":
        return push(snapshot.gatewayClasses);
      case "Gateway":
        return push(snapshot.gateways);
      case "ListenerSet":
        return push((snapshot.listenerSets ??= []));
      case "TCPRoute":
        return push(snapshot.tcpRoutes);
      case "UDPRoute":
        return push(snapshot.udpRoutes);
      case "HTTPRoute":
        return push(snapshot.httpRoutes);
      case "ReferenceGrant":
        return push(snapshot.referenceGrants);
    }
  } else if (group === "" && kind === "Service") return push(snapshot.services);
  else if (group === "" && kind === "Namespace") return push(snapshot.namespaces);
  else if (group === "discovery.k8s.io" && kind === "EndpointSlice")
    return push(snapshot.endpointSlices);
  else if (group === "blixt.dev" && kind === "DataplaneConfig")
    return push(snapshot.dataplaneConfigs);
  else if (group === "" && kind === "Secret") {
    snapshot.secrets.push(secretInfo(o));
    return undefined;
  }
  ignored.push(
    `${source}: ${apiVersion} ${kind} ${str(obj(o.metadata).namespace) ? `${str(obj(o.metadata).namespace)}/` : ""}${str(m.name)}`,
  );
  return undefined;
}

function addEnvironment(snapshot: Snapshot, env: Record<string, unknown>): string | undefined {
  for (const [key, check] of [
    ["addressPools", Array.isArray],
    ["nodes", Array.isArray],
    ["secrets", Array.isArray],
  ] as const) {
    if (env[key] !== undefined && !check(env[key])) return `${key} must be a list`;
  }
  if (
    env.allocations !== undefined &&
    (typeof env.allocations !== "object" ||
      env.allocations === null ||
      Array.isArray(env.allocations))
  ) {
    return `allocations must be a mapping of "namespace/name" to an address`;
  }
  if (env.controllerName !== undefined) {
    if (typeof env.controllerName !== "string") return "controllerName must be a string";
    snapshot.controllerName = env.controllerName;
  }
  if (env.now !== undefined) {
    const now = env.now instanceof Date ? env.now.toISOString() : env.now;
    if (typeof now !== "string" || Number.isNaN(Date.parse(now)))
      return "now must be an RFC 3339 time";
    snapshot.now = now;
  }
  snapshot.addressPools.push(...(arr(env.addressPools) as Snapshot["addressPools"]));
  snapshot.nodes.push(...(arr(env.nodes) as Snapshot["nodes"]));
  snapshot.secrets.push(...(arr(env.secrets) as SecretInfo[]));
  Object.assign(snapshot.allocations, obj(env.allocations));
  return undefined;
}

function secretInfo(o: Record<string, unknown>): SecretInfo {
  const m = obj(o.metadata);
  const data = obj(o.data);
  const stringData = obj(o.stringData);
  const field = (k: string): string | undefined => {
    if (typeof stringData[k] === "string") return stringData[k] as string;
    return typeof data[k] === "string"
      ? Buffer.from(data[k] as string, "base64").toString("utf8")
      : undefined;
  };
  const info: SecretInfo = {
    namespace: str(m.namespace) ?? "default",
    name: str(m.name) ?? "",
    type: str(o.type) ?? "Opaque",
    validTLS: tlsPairParses(field("tls.crt"), field("tls.key")),
  };
  if (str(m.creationTimestamp)) info.creationTimestamp = str(m.creationTimestamp);
  return info;
}

/** Whether PEM text holds a certificate and a private key that Node can parse. */
export function tlsPairParses(certificate: string | undefined, key: string | undefined): boolean {
  if (!certificate || !key) return false;
  try {
    new X509Certificate(certificate);
    createPrivateKey(key);
    return true;
  } catch {
    return false;
  }
}

/** The output as YAML or JSON; stable for a given output, so golden files compare byte for byte. */
export function renderOutput(output: CompileOutput, format: "yaml" | "json"): string {
  if (format === "json") return `${JSON.stringify(output, null, 2)}\n`;
  return stringify(output, { lineWidth: 0, aliasDuplicateObjects: false });
}
