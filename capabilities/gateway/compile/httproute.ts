// SPDX-License-Identifier: Apache-2.0
/**
 * Which HTTPRoutes the L4 dataplane can carry exactly: it forwards whole connections, so a
 * route may only say "everything to these weighted backends".
 */
import { arr, obj, str } from "./util.js";

/** The first field that L4 cannot honour, as "spec.rules[0].filters", or undefined when none. */
export function unsupportedHTTPRouteField(spec: Record<string, unknown>): string | undefined {
  if (arr(spec.hostnames).length > 0)
    return "spec.hostnames is set (L4 cannot tell hostnames apart)";
  const rules = arr(spec.rules);
  if (rules.length > 1) return `spec.rules has ${rules.length} rules`;
  for (const [i, raw] of rules.entries()) {
    const rule = obj(raw);
    const at = `spec.rules[${i}]`;
    for (const field of ["filters", "timeouts", "retry", "sessionPersistence"]) {
      const value = rule[field];
      if (value !== undefined && !(Array.isArray(value) && value.length === 0))
        return `${at}.${field} is set`;
    }
    for (const [j, m] of arr(rule.matches).entries()) {
      const match = obj(m);
      const where = `${at}.matches[${j}]`;
      for (const field of ["headers", "queryParams"])
        if (arr(match[field]).length > 0) return `${where}.${field} is set`;
      if (match.method !== undefined) return `${where}.method is set`;
      const path = obj(match.path);
      const type = str(path.type) ?? "PathPrefix";
      const value = str(path.value) ?? "/";
      if (type !== "PathPrefix" || value !== "/")
        return `${where}.path is ${type} ${JSON.stringify(value)}, not PathPrefix "/"`;
    }
    for (const [j, b] of arr(rule.backendRefs).entries()) {
      if (arr(obj(b).filters).length > 0) return `${at}.backendRefs[${j}].filters is set`;
    }
  }
  return undefined;
}
