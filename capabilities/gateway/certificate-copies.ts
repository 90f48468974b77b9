// SPDX-License-Identifier: Apache-2.0
/**
 * Copies of the certificates HTTPS listeners serve. The node agent (privileged, on every node)
 * may read Secrets only in the release namespace, so the controller copies each certificateRef
 * the compile step resolved (same namespace, or permitted by a ReferenceGrant) there, and the
 * DataplaneConfig names the copy. Pure: names, labels and annotations only.
 *
 * An ownerReference cannot cross namespaces, so a copy is found by its label and deleted once
 * no DataplaneConfig names it. Label values hold at most 63 characters, Gateway and Secret
 * names up to 253: the names go into annotations, the labels hold what fits.
 */
import { createHash } from "node:crypto";

/** On every copy ("true"); the controller lists the release namespace by it. */
export const COPY_LABEL = "blixt.dev/certificate-copy";
export const GATEWAY_NAMESPACE_LABEL = "blixt.dev/gateway-namespace";
export const SOURCE_NAMESPACE_LABEL = "blixt.dev/source-namespace";
/** "namespace/name" of the Gateway, "namespace/name" of the Secret copied, the listeners served. */
export const GATEWAY_ANNOTATION = "blixt.dev/gateway";
export const SOURCE_ANNOTATION = "blixt.dev/source";
export const LISTENERS_ANNOTATION = "blixt.dev/listeners";
/** sha256 of the source's type and data when copied: a different one means the source changed. */
export const DIGEST_ANNOTATION = "blixt.dev/source-digest";

/** One copy the compile step asks for. */
export interface CertificateCopy {
  /** Where the copy lives (the release namespace) and its name. */
  namespace: string;
  name: string;
  gateway: { namespace: string; name: string };
  source: { namespace: string; name: string };
  /** Names of the Gateway's listeners it serves, sorted. */
  listeners: string[];
}

/**
 * The copy's name: deterministic, a DNS-1123 subdomain of at most 65 characters whatever the
 * lengths of the names it stands for (a readable prefix of the Gateway's name, then a hash of
 * all four names, so two Gateways whose names share the first 40 characters never collide).
 */
export function certificateCopyName(
  gateway: { namespace: string; name: string },
  source: { namespace: string; name: string },
): string {
  const hash = createHash("sha256")
    .update(JSON.stringify([gateway.namespace, gateway.name, source.namespace, source.name]))
    .digest("hex")
    .slice(0, 20);
  const prefix = gateway.name.slice(0, 40).replace(/[^a-z0-9]+$/, "");
  return `tls-${prefix ? `${prefix}-` : ""}${hash}`;
}

/** The digest DIGEST_ANNOTATION records: of the type and data (base64, as the API serves them). */
export function secretDigest(
  type: string | undefined,
  data: Record<string, string> | undefined,
): string {
  const entries = Object.keys(data ?? {})
    .sort()
    .map(k => [k, (data ?? {})[k]]);
  return createHash("sha256")
    .update(JSON.stringify([type ?? "", entries]))
    .digest("hex");
}

/** Labels and annotations of a copy (the data is added where the source is read). */
export function copyMetadata(
  copy: CertificateCopy,
  digest: string,
): { labels: Record<string, string>; annotations: Record<string, string> } {
  return {
    labels: {
      "app.kubernetes.io/managed-by": "blixt",
      [COPY_LABEL]: "true",
      [GATEWAY_NAMESPACE_LABEL]: copy.gateway.namespace,
      [SOURCE_NAMESPACE_LABEL]: copy.source.namespace,
    },
    annotations: {
      [GATEWAY_ANNOTATION]: `${copy.gateway.namespace}/${copy.gateway.name}`,
      [SOURCE_ANNOTATION]: `${copy.source.namespace}/${copy.source.name}`,
      [LISTENERS_ANNOTATION]: copy.listeners.join(","),
      [DIGEST_ANNOTATION]: digest,
    },
  };
}
