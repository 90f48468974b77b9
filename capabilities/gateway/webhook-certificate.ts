// SPDX-License-Identifier: Apache-2.0
/**
 * The admission webhook's serving certificate, without I/O: the rotation's settings, whether
 * the certificate in the Secret is due for renewal, a new CA and serving certificate, and the
 * caBundle that trusts both the new CA and the previous one while the admission pods restart.
 * webhook-rotation.ts reads and writes the objects.
 *
 * Node's crypto cannot create X.509 certificates, so node-forge (the version Pepr itself pins)
 * builds and signs them; the RSA keys come from node's crypto, and node's X509Certificate
 * reads certificates back.
 */
import {
  X509Certificate,
  createHash,
  createPrivateKey,
  generateKeyPair,
  randomBytes,
} from "node:crypto";
import { promisify } from "node:util";
import forge from "node-forge";

const DAY_MS = 86_400_000;
/** New certificates start this far in the past, so a node whose clock lags still accepts them. */
const BACKDATE_MS = 5 * 60_000;
/** A certificate whose start is further ahead than this is treated as broken (clock skew tolerated below it). */
const FUTURE_TOLERANCE_MS = 60 * 60_000;

export const CERTIFICATE_CHECKSUM_ANNOTATION = "blixt.dev/certificate-checksum";

export interface WebhookCertificateSettings {
  /** The release namespace: the Secret, the Service and the admission Deployment live here. */
  namespace: string;
  /** The Service the webhook is reached through; the certificate's names derive from it. */
  service: string;
  /** The kubernetes.io/tls Secret the admission pods mount (tls.crt, tls.key, ca.crt). */
  secret: string;
  /** The ValidatingWebhookConfiguration whose webhooks all point at the Service. */
  webhookConfiguration: string;
  /** The admission Deployment, restarted onto a new certificate. */
  deployment: string;
  /** Lifetime of a new CA and certificate. */
  validityDays: number;
  /** Renew when fewer days than this are left; 0 = when a third of the lifetime is left. */
  renewBeforeDays: number;
  /** How often the Secret is checked. */
  checkIntervalSeconds: number;
  /** Where the controller serves /metrics (the certificate's expiry among them); port 0 = nowhere. */
  metricsAddress: string;
  metricsPort: number;
}

function number(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min)
    throw new Error(`${name}="${raw}": must be a number of at least ${min}`);
  return value;
}

/**
 * The rotation's settings from the controller's environment (the chart sets them), or
 * undefined when BLIXT_WEBHOOK_SECRET is unset (e.g. `pepr dev`): then nothing is rotated.
 */
export function webhookCertificateSettings(
  env: NodeJS.ProcessEnv,
): WebhookCertificateSettings | undefined {
  const secret = env.BLIXT_WEBHOOK_SECRET?.trim();
  if (!secret) return undefined;
  const required = (name: string): string => {
    const value = env[name]?.trim();
    if (!value)
      throw new Error(
        `${name} is not set: the webhook certificate rotation needs it with BLIXT_WEBHOOK_SECRET (the chart sets both)`,
      );
    return value;
  };
  const settings: WebhookCertificateSettings = {
    namespace: required("BLIXT_WEBHOOK_NAMESPACE"),
    service: required("BLIXT_WEBHOOK_SERVICE"),
    secret,
    webhookConfiguration: required("BLIXT_WEBHOOK_CONFIGURATION"),
    deployment: required("BLIXT_WEBHOOK_DEPLOYMENT"),
    validityDays: number(env, "BLIXT_WEBHOOK_CERT_VALIDITY_DAYS", 365, 1),
    renewBeforeDays: number(env, "BLIXT_WEBHOOK_CERT_RENEW_BEFORE_DAYS", 0, 0),
    checkIntervalSeconds: number(env, "BLIXT_WEBHOOK_CERT_CHECK_SECONDS", 3600, 10),
    metricsAddress: env.BLIXT_CONTROLLER_METRICS_ADDRESS?.trim() || "0.0.0.0",
    metricsPort: number(env, "BLIXT_CONTROLLER_METRICS_PORT", 9090, 0),
  };
  if (!Number.isInteger(settings.metricsPort) || settings.metricsPort > 65535) {
    throw new Error(
      `BLIXT_CONTROLLER_METRICS_PORT="${env.BLIXT_CONTROLLER_METRICS_PORT}": must be a port, 0 to 65535 (0: no metrics endpoint)`,
    );
  }
  // Otherwise every new certificate would be due at once, and renewed at every check.
  if (settings.renewBeforeDays >= settings.validityDays) {
    throw new Error(
      `BLIXT_WEBHOOK_CERT_RENEW_BEFORE_DAYS=${settings.renewBeforeDays} must be less than BLIXT_WEBHOOK_CERT_VALIDITY_DAYS=${settings.validityDays} (chart: admission.certificate.renewBeforeDays < validityDays)`,
    );
  }
  return settings;
}

/** The names the API server may use to reach the Service, as the chart's own certificate has them. */
export function serviceDnsNames(service: string, namespace: string): string[] {
  return [
    service,
    `${service}.${namespace}`,
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.cluster.local`,
  ];
}

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

export interface RenewalDecision {
  renew: boolean;
  /** Why, in words for the log. */
  reason: string;
  /** When the certificate becomes due (absent when there is no usable certificate). */
  renewAt?: Date;
  /** Whole days until it expires (negative once expired; absent without a certificate). */
  daysLeft?: number;
}

/**
 * Whether to renew a certificate valid over `validity` at `now`. It is due once fewer than
 * `renewBeforeDays` days are left, or (with 0) once less than a third of its lifetime is left;
 * a missing, expired or not-yet-valid certificate is due at once.
 */
export function renewalDecision(
  validity: Validity | undefined,
  now: Date,
  renewBeforeDays: number,
): RenewalDecision {
  if (!validity) return { renew: true, reason: "no usable certificate" };
  const { notBefore, notAfter } = validity;
  const daysLeft = Math.floor((notAfter.getTime() - now.getTime()) / DAY_MS);
  const lifetime = notAfter.getTime() - notBefore.getTime();
  const renewBefore = renewBeforeDays > 0 ? renewBeforeDays * DAY_MS : lifetime / 3;
  const renewAt = new Date(notAfter.getTime() - renewBefore);
  const common = { renewAt, daysLeft };
  if (now.getTime() >= notAfter.getTime())
    return { renew: true, reason: `expired on ${notAfter.toISOString()}`, ...common };
  if (notBefore.getTime() - now.getTime() > FUTURE_TOLERANCE_MS) {
    return {
      renew: true,
      reason: `not valid before ${notBefore.toISOString()}, later than now`,
      ...common,
    };
  }
  if (now.getTime() >= renewAt.getTime()) {
    return {
      renew: true,
      reason: `expires on ${notAfter.toISOString()}, ${daysLeft} days left; due since ${renewAt.toISOString()}`,
      ...common,
    };
  }
  return {
    renew: false,
    reason: `expires on ${notAfter.toISOString()}, ${daysLeft} days left; renews on ${renewAt.toISOString()}`,
    ...common,
  };
}

export interface ServingCertificate {
  /** PEM of the serving certificate (tls.crt). */
  cert: string;
  /** PEM of its private key (tls.key). */
  key: string;
  /** PEM of the CA that signed it (ca.crt). */
  ca: string;
}

/** The Secret's data, base64 as the API returns it, decoded. */
export function decodeSecretData(
  data: Record<string, string> | undefined,
): Partial<ServingCertificate> {
  const decode = (key: string) =>
    data?.[key] ? Buffer.from(data[key], "base64").toString("utf8") : undefined;
  return { cert: decode("tls.crt"), key: decode("tls.key"), ca: decode("ca.crt") };
}

/**
 * Checks what a Secret holds: a certificate signed by its CA, matching its key, naming every
 * one of `dnsNames`. Returns the span over which both the certificate and the CA are valid,
 * or what is wrong.
 */
export function inspectServingCertificate(
  found: Partial<ServingCertificate>,
  dnsNames: string[],
): { validity: Validity } | { problem: string } {
  const missing = (["cert", "key", "ca"] as const).filter(field => !found[field]);
  if (missing.length)
    return {
      problem: `missing ${missing.map(f => ({ cert: "tls.crt", key: "tls.key", ca: "ca.crt" })[f]).join(", ")}`,
    };
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(found.cert!);
    ca = new X509Certificate(found.ca!);
  } catch (error) {
    return { problem: `tls.crt or ca.crt is not a PEM certificate (${(error as Error).message})` };
  }
  if (!cert.verify(ca.publicKey)) return { problem: "tls.crt is not signed by ca.crt" };
  try {
    if (!cert.checkPrivateKey(createPrivateKey(found.key!)))
      return { problem: "tls.key does not belong to tls.crt" };
  } catch (error) {
    return { problem: `tls.key is not a PEM private key (${(error as Error).message})` };
  }
  const names = (cert.subjectAltName ?? "").split(",").map(name => name.trim());
  const absent = dnsNames.filter(name => !names.includes(`DNS:${name}`));
  if (absent.length) return { problem: `tls.crt does not name ${absent.join(", ")}` };
  const notBefore = new Date(Math.max(Date.parse(cert.validFrom), Date.parse(ca.validFrom)));
  const notAfter = new Date(Math.min(Date.parse(cert.validTo), Date.parse(ca.validTo)));
  return { validity: { notBefore, notAfter } };
}

/** The first 16 hex digits of the certificate PEM's SHA-256: the chart's `sha256sum | trunc 16`. */
export function certificateChecksum(certPem: string): string {
  return createHash("sha256").update(certPem).digest("hex").slice(0, 16);
}

/** Every PEM certificate in a bundle, in order, normalised to "\n" line ends. */
export function pemCertificates(bundle: string): string[] {
  return (bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map(
    pem => `${pem.replace(/\r\n/g, "\n")}\n`,
  );
}

function fingerprint(pem: string): string | undefined {
  try {
    return new X509Certificate(pem).fingerprint256;
  } catch {
    return undefined;
  }
}

/** Whether `bundle` holds the certificate `caPem`. */
export function bundleTrusts(bundle: string, caPem: string): boolean {
  const wanted = fingerprint(caPem);
  return wanted !== undefined && pemCertificates(bundle).some(pem => fingerprint(pem) === wanted);
}

/**
 * The caBundle while the admission pods move from the previous certificate to the new one:
 * the new CA first, then the previous one (when there is one and it differs), nothing else.
 */
export function rolloverBundle(newCa: string, previousCa: string | undefined): string {
  const previous = previousCa ? pemCertificates(previousCa)[0] : undefined;
  const parts = [pemCertificates(newCa)[0] ?? newCa];
  if (previous && fingerprint(previous) !== fingerprint(parts[0])) parts.push(previous);
  return parts.join("");
}

/**
 * A caBundle that adds `caPem` to `bundle` (first), keeping the bundle's other CAs that are
 * still valid at `now`: repairs a bundle that lost the CA the pods' certificate needs.
 */
export function bundleWith(bundle: string, caPem: string, now: Date): string {
  const wanted = fingerprint(caPem);
  const kept = pemCertificates(bundle).filter(pem => {
    const fp = fingerprint(pem);
    if (fp === undefined || fp === wanted) return false;
    return Date.parse(new X509Certificate(pem).validTo) > now.getTime();
  });
  return [pemCertificates(caPem)[0] ?? caPem, ...kept].join("");
}

/** An RSA key pair from node's crypto (off the event loop), in node-forge's form for signing. */
async function rsaKeyPair(): Promise<{
  forgePrivate: forge.pki.rsa.PrivateKey;
  forgePublic: forge.pki.rsa.PublicKey;
  pem: string;
}> {
  const { privateKey, publicKey } = await promisify(generateKeyPair)("rsa", {
    modulusLength: 2048,
  });
  const pem = privateKey.export({ type: "pkcs1", format: "pem" }).toString();
  return {
    forgePrivate: forge.pki.privateKeyFromPem(pem),
    forgePublic: forge.pki.publicKeyFromPem(
      publicKey.export({ type: "spki", format: "pem" }).toString(),
    ),
    pem,
  };
}

/** A random positive serial number, 16 bytes, as hex. */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f;
  bytes[0] |= 0x01;
  return bytes.toString("hex");
}

function toPem(cert: forge.pki.Certificate): string {
  return forge.pki.certificateToPem(cert).replace(/\r\n/g, "\n");
}

/**
 * A new CA and a serving certificate it signs for the Service `service` in `namespace`, both
 * valid for `validityDays` from `now` (backdated 5 minutes), RSA 2048 and SHA-256, like the
 * certificate the chart makes at install.
 */
export async function issueServingCertificate({
  service,
  namespace,
  validityDays,
  now,
}: {
  service: string;
  namespace: string;
  validityDays: number;
  now: Date;
}): Promise<ServingCertificate> {
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  const notAfter = new Date(now.getTime() + validityDays * DAY_MS);

  const [caKeys, keys] = await Promise.all([rsaKeyPair(), rsaKeyPair()]);
  const ca = forge.pki.createCertificate();
  ca.publicKey = caKeys.forgePublic;
  ca.serialNumber = serialNumber();
  ca.validity.notBefore = notBefore;
  ca.validity.notAfter = notAfter;
  const caName = [{ name: "commonName", value: `${service}-ca` }];
  ca.setSubject(caName);
  ca.setIssuer(caName);
  ca.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  ca.sign(caKeys.forgePrivate, forge.md.sha256.create());

  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.forgePublic;
  cert.serialNumber = serialNumber();
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  cert.setSubject([{ name: "commonName", value: `${service}.${namespace}.svc` }]);
  cert.setIssuer(caName);
  cert.setExtensions([
    { name: "basicConstraints", cA: false, critical: true },
    { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
    { name: "extKeyUsage", serverAuth: true },
    {
      name: "subjectAltName",
      altNames: serviceDnsNames(service, namespace).map(value => ({ type: 2, value })),
    },
    { name: "subjectKeyIdentifier" },
    { name: "authorityKeyIdentifier", keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKeys.forgePrivate, forge.md.sha256.create());

  return { cert: toPem(cert), key: keys.pem, ca: toPem(ca) };
}
