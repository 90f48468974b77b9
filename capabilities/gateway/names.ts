// SPDX-License-Identifier: Apache-2.0
/**
 * Names the controller puts into an API server URL. kubernetes-fluent-client joins a name into
 * the path as it is, and the URL parser then resolves "..": a certificateRefs name of
 * "../../../../../apis/rbac.authorization.k8s.io/v1/clusterroles" would read that instead of
 * a Secret. Only what the API server could hold as a name (the compile step's own rule, which
 * also makes such a listener InvalidCertificateRef) is ever requested.
 */
import { isDns1123Label, isDns1123Subdomain } from "./compile/util.js";

/** Why `value` cannot be an object's name (a DNS-1123 subdomain), or undefined when it can. */
export function dns1123SubdomainProblem(value: string): string | undefined {
  if (value.length === 0) return "is empty";
  if (value.length > 253) return `is ${value.length} characters long; at most 253 are allowed`;
  if (!isDns1123Subdomain(value)) {
    return "is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)";
  }
  return undefined;
}

/** Why `value` cannot be a namespace's name (a DNS-1123 label), or undefined when it can. */
export function dns1123LabelProblem(value: string): string | undefined {
  if (value.length === 0) return "is empty";
  if (value.length > 63) return `is ${value.length} characters long; at most 63 are allowed`;
  if (!isDns1123Label(value)) {
    return "is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)";
  }
  return undefined;
}
