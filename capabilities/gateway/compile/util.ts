// SPDX-License-Identifier: Apache-2.0
/**
 * Small pure helpers of the compile step. Every object it reads may be malformed (a missing
 * spec, a string where a number belongs): these accessors turn what is not of the expected
 * type into "absent", so the compile step reports a condition instead of throwing.
 */

export type Obj = Record<string, unknown>;

export function obj(value: unknown): Obj {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Obj) : {};
}

export function arr(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

export function str(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

export function int(value: unknown): number | undefined {
  return typeof value === "number" && Number.isInteger(value) ? value : undefined;
}

export interface Meta {
  name: string;
  namespace: string;
  generation: number;
  uid?: string;
  creationTimestamp: string;
  labels: Record<string, string>;
}

/** metadata of any object, with "" / 0 for what is missing. */
export function meta(object: unknown): Meta {
  const m = obj(obj(object).metadata);
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(m.labels))) if (typeof v === "string") labels[k] = v;
  return {
    name: str(m.name) ?? "",
    namespace: str(m.namespace) ?? "",
    generation: int(m.generation) ?? 0,
    uid: str(m.uid) || undefined,
    creationTimestamp: str(m.creationTimestamp) ?? "",
    labels,
  };
}

const DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN = new RegExp(`^${DNS1123_LABEL}(\\.${DNS1123_LABEL})*$`);
const DNS1123_LABEL_ONLY = new RegExp(`^${DNS1123_LABEL}$`);

/**
 * A DNS-1123 subdomain, what Kubernetes requires of most object names (Secrets among them):
 * lowercase letters, digits, "-" and ".", starting and ending with a letter or digit, at most
 * 253 characters. A name that passes holds no "/" or "..", so it is safe in an API URL.
 */
export function isDns1123Subdomain(name: string): boolean {
  return name.length <= 253 && DNS1123_SUBDOMAIN.test(name);
}

/** A DNS-1123 label, what Kubernetes requires of a namespace name: a subdomain without dots, at most 63 characters. */
export function isDns1123Label(name: string): boolean {
  return name.length <= 63 && DNS1123_LABEL_ONLY.test(name);
}

/** How many items of a list a condition message names before counting the rest. */
export const NAMED_IN_A_MESSAGE = 8;

/** "a, b, c" for a short list; the first NAMED_IN_A_MESSAGE and "and N more" for a long one. */
export function firstFew(items: string[], separator = ", "): string {
  if (items.length <= NAMED_IN_A_MESSAGE) return items.join(separator);
  return `${items.slice(0, NAMED_IN_A_MESSAGE).join(separator)}${separator}and ${items.length - NAMED_IN_A_MESSAGE} more`;
}

export function nsName(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** Plain code-unit order: locale-independent, so output is the same on every machine. */
export function cmp(a: string | number, b: string | number): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Oldest first, then namespace/name: the spec's tie-break for conflicting routes. */
export function byAge(a: Meta, b: Meta): number {
  const ta = Date.parse(a.creationTimestamp);
  const tb = Date.parse(b.creationTimestamp);
  const na = Number.isNaN(ta) ? Infinity : ta;
  const nb = Number.isNaN(tb) ? Infinity : tb;
  if (na !== nb) return na < nb ? -1 : 1;
  return cmp(a.namespace, b.namespace) || cmp(a.name, b.name);
}

/** JSON with object keys sorted, for comparing specs whatever order the API server returns. */
export function canonicalJSON(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJSON).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Obj)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => cmp(a, b));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJSON(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function isPlainObject(o: object): boolean {
  const prototype = Object.getPrototypeOf(o);
  return prototype === Object.prototype || prototype === Array.prototype || prototype === null;
}

/**
 * Deep equality of JSON-like values, ignoring object key order and undefined members: what
 * canonicalJSON(a) === canonicalJSON(b) says, without building strings (this runs on every
 * DataplaneConfig spec at every compile). An object JSON.parse does not make (a Date) is equal
 * only to itself: compare JSON round trips where such values may occur (plan.ts sameJSON).
 */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (!isPlainObject(a) || !isPlainObject(b)) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    if (a.length !== bb.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], bb[i])) return false;
    return true;
  }
  const ao = a as Obj;
  const bo = b as Obj;
  let count = 0;
  for (const k in ao) {
    if (ao[k] === undefined) continue;
    count++;
    if (!jsonEqual(ao[k], bo[k])) return false;
  }
  for (const k in bo) if (bo[k] !== undefined) count--;
  return count === 0;
}

/** Label selector (matchLabels + matchExpressions) against a label set; a malformed selector matches nothing. */
export function selectorMatches(selector: unknown, labels: Record<string, string>): boolean {
  const s = obj(selector);
  for (const [k, v] of Object.entries(obj(s.matchLabels))) {
    if (labels[k] !== v) return false;
  }
  for (const raw of arr(s.matchExpressions)) {
    const e = obj(raw);
    const key = str(e.key);
    const values = arr(e.values).filter((v): v is string => typeof v === "string");
    if (key === undefined) return false;
    const has = Object.hasOwn(labels, key);
    switch (e.operator) {
      case "In":
        if (!has || !values.includes(labels[key])) return false;
        break;
      case "NotIn":
        if (has && values.includes(labels[key])) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}
