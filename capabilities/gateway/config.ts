// SPDX-License-Identifier: Apache-2.0
/**
 * The controller's and the admission webhook's settings, from the environment the chart sets.
 * Parsing is pure (text in, settings or an error out); reading the file is the caller's.
 *
 * Address pools, YAML or JSON, inline in BLIXT_ADDRESS_POOLS or in the file named by
 * BLIXT_ADDRESS_POOLS_FILE (default /etc/blixt/address-pools.yaml):
 *
 *   addressPools:
 *     - name: default
 *       cidrs: ["198.18.100.0/24", "198.18.101.10-198.18.101.20"]
 *       namespaces: [team-a]        # optional: only Gateways of these namespaces
 */
import { isIP } from "node:net";
import { parse } from "yaml";
import type { AddressPool } from "./compile/types";

export const DEFAULT_ADDRESS_POOLS_FILE = "/etc/blixt/address-pools.yaml";
export const DEFAULT_AGENT_POD_SELECTOR = {
  "app.kubernetes.io/name": "blixt",
  "app.kubernetes.io/component": "agent",
};
export const DEFAULT_CONTROLLER_USERNAME = "system:serviceaccount:blixt-system:blixt-controller";

export interface ControllerSettings {
  addressPools: AddressPool[];
  /** Full relist and recompile period; heals whatever a watch missed. */
  resyncSeconds: number;
  /** Changes within this window are coalesced into one compile. */
  debounceMs: number;
  /** The longest pause between passes while changes keep arriving (reconciler.ts, #nextDelay); unset: debounceMs. */
  maxDebounceMs?: number;
  /** Longest wait between retries of a failed write. */
  maxBackoffSeconds: number;
  /** Writes of one pass in flight at once, within each of its ordered stages (reconciler.ts). */
  writeConcurrency: number;
  /** Labels of the node agent's Pods; a ready one on a node means that node's agent is ready. */
  agentPodSelector: Record<string, string>;
  /** The namespace the agent Pods run in (the release's); the controller reads Pods only there. Unset: every namespace. */
  agentNamespace?: string;
}

export interface AdmissionSettings {
  /** The only user allowed to write DataplaneConfig specs (the controller's service account). */
  controllerUsername: string;
}

function isAddressRange(value: string): boolean {
  const slash = value.split("/");
  if (slash.length === 2) {
    const family = isIP(slash[0]);
    const bits = /^\d{1,3}$/.test(slash[1]) ? Number(slash[1]) : NaN;
    return family !== 0 && bits >= 0 && bits <= (family === 4 ? 32 : 128);
  }
  const dash = value.split("-");
  return (
    dash.length === 2 && isIP(dash[0].trim()) !== 0 && isIP(dash[0].trim()) === isIP(dash[1].trim())
  );
}

/** Parses and checks address pools; `source` names where they came from in errors. */
export function parseAddressPools(text: string, source: string): AddressPool[] {
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new Error(`${source}: address pools are not valid YAML: ${(error as Error).message}`);
  }
  if (document === null || document === undefined) return [];
  const list = Array.isArray(document)
    ? document
    : (document as { addressPools?: unknown }).addressPools;
  if (!Array.isArray(list)) {
    throw new Error(
      `${source}: expected "addressPools:" with a list of pools (name, cidrs, optional namespaces)`,
    );
  }
  const seen = new Set<string>();
  return list.map((entry, index) => {
    const where = `${source}: addressPools[${index}]`;
    const pool = entry as Partial<AddressPool>;
    if (typeof pool?.name !== "string" || pool.name === "")
      throw new Error(`${where}.name: must be a non-empty string`);
    if (seen.has(pool.name))
      throw new Error(
        `${where}.name: "${pool.name}" is used by an earlier pool; names must be unique`,
      );
    seen.add(pool.name);
    if (!Array.isArray(pool.cidrs) || pool.cidrs.length === 0) {
      throw new Error(
        `${where}.cidrs (pool "${pool.name}"): must list at least one "a.b.c.d/n" or "a.b.c.d-e.f.g.h"`,
      );
    }
    pool.cidrs.forEach((cidr, i) => {
      if (typeof cidr !== "string" || !isAddressRange(cidr)) {
        throw new Error(
          `${where}.cidrs[${i}] (pool "${pool.name}"): "${String(cidr)}" is neither a prefix like 198.18.100.0/24 nor a range like 198.18.100.10-198.18.100.20`,
        );
      }
    });
    if (
      pool.namespaces !== undefined &&
      (!Array.isArray(pool.namespaces) || pool.namespaces.some(n => typeof n !== "string"))
    ) {
      throw new Error(
        `${where}.namespaces (pool "${pool.name}"): must be a list of namespace names, or absent for all namespaces`,
      );
    }
    return {
      name: pool.name,
      cidrs: [...pool.cidrs],
      ...(pool.namespaces ? { namespaces: [...pool.namespaces] } : {}),
    };
  });
}

function positiveNumber(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0)
    throw new Error(`${name}="${raw}": must be a positive number`);
  return value;
}

function positiveInteger(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const value = positiveNumber(env, name, fallback);
  if (!Number.isInteger(value))
    throw new Error(`${name}="${env[name]}": must be a whole number, 1 or more`);
  return value;
}

/** "k=v,k2=v2" → { k: "v", k2: "v2" } */
export function parseLabelSelector(text: string, source: string): Record<string, string> {
  const selector: Record<string, string> = {};
  for (const term of text
    .split(",")
    .map(t => t.trim())
    .filter(Boolean)) {
    const [k, v, ...rest] = term.split("=");
    if (!k || v === undefined || rest.length)
      throw new Error(`${source}: "${term}" is not key=value`);
    selector[k.trim()] = v.trim();
  }
  return selector;
}

/**
 * Controller settings from the environment. `readFile` returns a file's text or undefined
 * when it does not exist (pools are then empty: Gateways get AddressNotAssigned, truthfully).
 */
export function controllerSettings(
  env: NodeJS.ProcessEnv,
  readFile: (path: string) => string | undefined,
): ControllerSettings {
  let addressPools: AddressPool[] = [];
  if (env.BLIXT_ADDRESS_POOLS) {
    addressPools = parseAddressPools(env.BLIXT_ADDRESS_POOLS, "BLIXT_ADDRESS_POOLS");
  } else {
    const file = env.BLIXT_ADDRESS_POOLS_FILE || DEFAULT_ADDRESS_POOLS_FILE;
    const text = readFile(file);
    if (text !== undefined) addressPools = parseAddressPools(text, file);
  }
  return {
    addressPools,
    resyncSeconds: positiveNumber(env, "BLIXT_RESYNC_SECONDS", 300),
    debounceMs: positiveNumber(env, "BLIXT_DEBOUNCE_MS", 250),
    maxDebounceMs: positiveNumber(env, "BLIXT_MAX_DEBOUNCE_MS", 5000),
    maxBackoffSeconds: positiveNumber(env, "BLIXT_MAX_BACKOFF_SECONDS", 300),
    writeConcurrency: positiveInteger(env, "BLIXT_WRITE_CONCURRENCY", 8),
    agentPodSelector: env.BLIXT_AGENT_POD_SELECTOR
      ? parseLabelSelector(env.BLIXT_AGENT_POD_SELECTOR, "BLIXT_AGENT_POD_SELECTOR")
      : DEFAULT_AGENT_POD_SELECTOR,
    ...(env.BLIXT_AGENT_NAMESPACE ? { agentNamespace: env.BLIXT_AGENT_NAMESPACE } : {}),
  };
}

export function admissionSettings(env: NodeJS.ProcessEnv): AdmissionSettings {
  return { controllerUsername: env.BLIXT_CONTROLLER_USERNAME || DEFAULT_CONTROLLER_USERNAME };
}
