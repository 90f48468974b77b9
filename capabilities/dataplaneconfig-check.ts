// SPDX-License-Identifier: Apache-2.0
/**
 * What makes a DataplaneConfig's spec unusable, field by field. The chart's CRD leaves the
 * listeners' items without a schema (with it the API server spent half as much CPU again on
 * each write of a table), so this is where they are checked: against their full schema
 * (api/dataplaneconfig.yaml, generated into LISTENER_SCHEMA), and for what no schema says
 * (addresses that are IPs, one listener per port and protocol). The controller runs it before
 * every write (and the admission webhook on a write of the controller's that reaches it; it
 * denies everyone else's), and every node agent on every table before it programs it. Pure.
 */
import { isIP } from "node:net";
import Ajv from "ajv";
import type { DataplaneConfig } from "./generated/dataplaneconfig-v1alpha1.js";
import { LISTENER_SCHEMA } from "./generated/dataplaneconfig-listener-schema.js";

/** At most this many schema errors are named per listener (a message stays readable). */
const ERRORS_PER_LISTENER = 5;

// Kubernetes' own keywords (x-kubernetes-*) mean nothing to a JSON Schema validator, and the
// formats it names (int64) are the API server's: strict mode and format checks would refuse them.
const validateListener = new Ajv({
  allErrors: true,
  strict: false,
  validateFormats: false,
}).compile(LISTENER_SCHEMA as object);

/** "/backends/0/endpoints/1/port" → ".backends[0].endpoints[1].port" */
function fieldPath(pointer: string): string {
  return pointer
    .split("/")
    .slice(1)
    .map(part =>
      /^\d+$/.test(part) ? `[${part}]` : `.${part.replace(/~1/g, "/").replace(/~0/g, "~")}`,
    )
    .join("");
}

/** Every schema error of one listener entry, as "spec.listeners[i].field: what is wrong". */
function schemaProblems(listener: unknown, at: string): string[] {
  if (validateListener(listener)) return [];
  const errors = validateListener.errors ?? [];
  const named = errors.slice(0, ERRORS_PER_LISTENER).map(error => {
    const field = `${at}${fieldPath(error.instancePath)}`;
    const allowed =
      error.keyword === "enum"
        ? `: ${((error.params as { allowedValues?: unknown[] }).allowedValues ?? []).join(", ")}`
        : "";
    return `${field}: ${error.message}${allowed}`;
  });
  if (errors.length > ERRORS_PER_LISTENER)
    named.push(`${at}: and ${errors.length - ERRORS_PER_LISTENER} more`);
  return named;
}

const validPort = (port: unknown): boolean =>
  Number.isInteger(port) && (port as number) >= 1 && (port as number) <= 65535;

/** Every field problem of a DataplaneConfig spec, as "field: what is wrong"; none: usable. */
export function dataplaneConfigProblems(config: DataplaneConfig): string[] {
  const problems: string[] = [];
  const spec = config.spec;
  if (!spec) return ["spec: missing"];
  if (spec.gatewayName !== config.metadata?.name) {
    problems.push(
      `spec.gatewayName: "${spec.gatewayName}" must equal metadata.name "${config.metadata?.name}" (one DataplaneConfig per Gateway, named after it)`,
    );
  }
  if (spec.address !== undefined && isIP(spec.address) === 0) {
    problems.push(`spec.address: "${spec.address}" is not an IPv4 or IPv6 address`);
  }
  if (spec.listeners !== undefined && !Array.isArray(spec.listeners)) {
    problems.push("spec.listeners: must be a list");
    return problems;
  }
  const seen = new Set<string>();
  (spec.listeners ?? []).forEach((listener, i) => {
    const at = `spec.listeners[${i}]`;
    if (typeof listener !== "object" || listener === null) {
      problems.push(`${at}: must be an object`);
      return;
    }
    // What a person reads best first; the schema then names whatever else is wrong.
    const own: string[] = [];
    if (!validPort(listener.port)) own.push(`${at}.port: ${listener.port} is not a port (1-65535)`);
    if (listener.protocol !== "TCP" && listener.protocol !== "UDP")
      own.push(`${at}.protocol: "${listener.protocol}" must be TCP or UDP`);
    const portKey = `${listener.port}/${listener.protocol}`;
    if (seen.has(portKey)) own.push(`${at}: a second listener on ${portKey}`);
    seen.add(portKey);
    if (!Number.isInteger(listener.rejectWeight) || listener.rejectWeight < 0) {
      own.push(`${at}.rejectWeight: ${listener.rejectWeight} must be a non-negative integer`);
    }
    (Array.isArray(listener.backends) ? listener.backends : []).forEach((backend, j) => {
      if (typeof backend !== "object" || backend === null) return; // the schema names it
      if (!Number.isInteger(backend.weight) || backend.weight < 1)
        own.push(`${at}.backends[${j}].weight: ${backend.weight} must be a positive integer`);
      if (!Array.isArray(backend.endpoints) || backend.endpoints.length === 0)
        own.push(`${at}.backends[${j}].endpoints: a backend needs at least one endpoint`);
      (Array.isArray(backend.endpoints) ? backend.endpoints : []).forEach((endpoint, k) => {
        if (typeof endpoint !== "object" || endpoint === null) return;
        if (typeof endpoint.address !== "string" || isIP(endpoint.address) === 0)
          own.push(
            `${at}.backends[${j}].endpoints[${k}].address: "${endpoint.address}" is not an IP address`,
          );
        if (!validPort(endpoint.port))
          own.push(
            `${at}.backends[${j}].endpoints[${k}].port: ${endpoint.port} is not a port (1-65535)`,
          );
      });
    });
    problems.push(...own);
    if (own.length === 0) problems.push(...schemaProblems(listener, at));
  });
  return problems;
}
