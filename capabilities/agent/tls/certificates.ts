// SPDX-License-Identifier: Apache-2.0
// TLS termination for HTTPS listeners, the pure part: which listeners this node terminates,
// what a referenced kubernetes.io/tls Secret holds (or why it cannot be used), which
// certificate answers a requested server name, and which backend takes a connection. No I/O:
// terminator.ts and listeners.ts act on the answers.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { isIPv4 } from "node:net";
import type { DataplaneConfig } from "../../generated/dataplaneconfig-v1alpha1.js";
import type { Backend } from "../../dataplane/tables.js";
import { configKey, listenerKey, listenerWeights, type ListenerRef } from "../desired.js";

/** One HTTPS listener this node terminates: where its certificates come from and where the plaintext goes. */
export interface TlsListenerSpec {
  /** "namespace/gateway#listener": stable while the listener exists, whatever its address */
  key: string;
  ref: ListenerRef;
  address: string;
  certificateRefs: { namespace: string; name: string }[];
  /** per-endpoint weights (weight 0 never chosen); the invalid backendRefs' share is refused in the kernel */
  backends: Backend[];
  rejectWeight: number;
}

/** Every listener with a `tls` block in configs that have an IPv4 address, sorted by key. */
export function tlsListenerSpecs(configs: DataplaneConfig[]): TlsListenerSpec[] {
  const specs: TlsListenerSpec[] = [];
  for (const config of configs) {
    const spec = config.spec;
    if (!spec?.address || !isIPv4(spec.address)) continue;
    for (const listener of spec.listeners ?? []) {
      if (!listener.tls || listener.protocol !== "TCP") continue;
      const weights = listenerWeights(listener);
      specs.push({
        key: listenerKey(config, listener.name),
        ref: {
          config: configKey(config),
          namespace: config.metadata?.namespace ?? "",
          gateway: spec.gatewayName,
          listener: listener.name,
          port: listener.port,
          protocol: "TCP",
        },
        address: spec.address,
        certificateRefs: listener.tls.certificateRefs.map(r => ({
          namespace: r.namespace,
          name: r.name,
        })),
        backends: weights.backends,
        rejectWeight: weights.rejectWeight,
      });
    }
  }
  return specs.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

// ---- certificates --------------------------------------------------------------------------

/** A certificate and key ready to serve, with the names it answers for. */
export interface TlsCertificate {
  /** "namespace/name" of the Secret it came from */
  secret: string;
  cert: string;
  key: string;
  /** DNS subjectAltNames, or the subject CN when the certificate has none, lower case */
  names: string[];
  /** SHA-256 fingerprint of the leaf certificate */
  fingerprint: string;
}

/** The parts of a core/v1 Secret this reads. */
export interface SecretLike {
  type?: string;
  data?: Record<string, string>;
}

export type ParsedSecret = { ok: true; certificate: TlsCertificate } | { ok: false; error: string };

/** The DNS names a certificate answers for: its DNS SANs, else its subject CN (RFC 6125 6.4.4). */
export function certificateNames(x509: X509Certificate): string[] {
  const sans = (x509.subjectAltName ?? "")
    .split(/,\s*/)
    .filter(s => s.startsWith("DNS:"))
    .map(s => s.slice(4).trim().toLowerCase())
    .filter(Boolean);
  if (sans.length > 0) return sans;
  const cn = x509.subject
    .split("\n")
    .find(line => line.startsWith("CN="))
    ?.slice(3)
    .trim()
    .toLowerCase();
  return cn ? [cn] : [];
}

/**
 * A kubernetes.io/tls Secret's certificate and key, checked the way a handshake would need
 * them: both present, both parse, and the key belongs to the certificate. `secret` is the
 * Secret's "namespace/name", `undefined` when it does not exist.
 */
export function parseTlsSecret(ref: string, secret: SecretLike | undefined): ParsedSecret {
  const fix =
    "; put a PEM certificate chain in tls.crt and its private key in tls.key (kubectl create secret tls)";
  if (!secret)
    return {
      ok: false,
      error: `Secret ${ref} not found; create it${fix.replace(/^; put/, ", with")}`,
    };
  if (secret.type !== undefined && secret.type !== "kubernetes.io/tls") {
    return {
      ok: false,
      error: `Secret ${ref} has type "${secret.type}", not "kubernetes.io/tls"${fix}`,
    };
  }
  const field = (name: string) => {
    const value = secret.data?.[name];
    return value ? Buffer.from(value, "base64").toString("utf8") : undefined;
  };
  const cert = field("tls.crt");
  const key = field("tls.key");
  if (!cert || !key)
    return { ok: false, error: `Secret ${ref} has no ${!cert ? "tls.crt" : "tls.key"}${fix}` };
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (error) {
    return {
      ok: false,
      error: `Secret ${ref}: tls.crt does not parse as a PEM certificate (${(error as Error).message})${fix}`,
    };
  }
  try {
    if (!x509.checkPrivateKey(createPrivateKey(key))) {
      return {
        ok: false,
        error: `Secret ${ref}: tls.key is not the private key of the certificate in tls.crt${fix}`,
      };
    }
  } catch (error) {
    return {
      ok: false,
      error: `Secret ${ref}: tls.key does not parse as a PEM private key (${(error as Error).message})${fix}`,
    };
  }
  return {
    ok: true,
    certificate: {
      secret: ref,
      cert,
      key,
      names: certificateNames(x509),
      fingerprint: x509.fingerprint256,
    },
  };
}

// ---- SNI -----------------------------------------------------------------------------------

/**
 * Whether a certificate name matches a requested server name (RFC 6125 6.4.3): equal ignoring
 * case, or a wildcard "*.example.com" standing for exactly one whole left-most label.
 */
export function nameMatches(certName: string, serverName: string): boolean {
  const name = certName.toLowerCase().replace(/\.$/, "");
  const host = serverName.toLowerCase().replace(/\.$/, "");
  if (!name || !host) return false;
  if (!name.startsWith("*.")) return name === host;
  const dot = host.indexOf(".");
  return dot > 0 && host.slice(dot + 1) === name.slice(2);
}

/**
 * The certificate that answers a handshake: an exact name match first (in listener order),
 * then a wildcard match, and the first certificate when there is no SNI or nothing matches
 * (the spec's listener certificates have no fallback of their own). Undefined only for none.
 */
export function pickCertificate<T extends { names: string[] }>(
  serverName: string | undefined,
  certificates: T[],
): T | undefined {
  if (serverName) {
    const exact = certificates.find(c =>
      c.names.some(n => !n.startsWith("*.") && nameMatches(n, serverName)),
    );
    if (exact) return exact;
    const wildcard = certificates.find(c =>
      c.names.some(n => n.startsWith("*.") && nameMatches(n, serverName)),
    );
    if (wildcard) return wildcard;
  }
  return certificates[0];
}

// ---- backend choice ------------------------------------------------------------------------

/**
 * A backend chosen at random in proportion to its weight, `random` in [0, 1). A backend of
 * weight 0 is never chosen; undefined when no backend has weight.
 */
export function pickBackend<T extends { weight: number }>(
  backends: T[],
  random: number,
): T | undefined {
  const total = backends.reduce((s, b) => s + Math.max(0, b.weight), 0);
  if (total <= 0) return undefined;
  let point = Math.min(Math.max(random, 0), 1 - Number.EPSILON) * total;
  for (const b of backends) {
    if (b.weight <= 0) continue;
    if (point < b.weight) return b;
    point -= b.weight;
  }
  // Rounding can leave `point` a hair above the last weight: the last weighted backend.
  return [...backends].reverse().find(b => b.weight > 0);
}
