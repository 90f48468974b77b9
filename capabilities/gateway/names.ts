// SPDX-License-Identifier: Apache-2.0
/**
 * Names the controller puts into an API server URL. kubernetes-fluent-client joins a name into
 * the path as it is, and the URL parser then resolves "..": a certificateRefs name of
 * "../../../../../apis/rbac.authorization.k8s.io/v1/clusterroles" would read that instead of
 * a Secret. Every object name the API server can hold is a DNS-1123 subdomain, so anything
 * else is refused before a request is made.
 */

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why `value` cannot be an object's name (a DNS-1123 subdomain), or undefined when it can. */
export function dns1123SubdomainProblem(value: string): string | undefined {
  if (value.length === 0) return "is empty";
  if (value.length > 253) return `is ${value.length} characters long; at most 253 are allowed`;
  if (!DNS1123_SUBDOMAIN.test(value)) {
    return "is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)";
  }
  return undefined;
}
