// SPDX-License-Identifier: Apache-2.0
/**
 * Reading settings from a process's environment, shared by the agent's settings, its Lease
 * settings and its TLS limits, so every bad value is refused in the same words.
 */

/**
 * The integer in `env[name]`, or `fallback` when it is unset or blank. Throws, naming the
 * variable, the value and the range (and `hint`: where the value comes from), when it is not an
 * integer in min..max. Pure.
 */
export function envInt(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  min: number,
  max: number,
  hint?: string,
): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(
      `${name}="${raw}" must be an integer in ${min}..${max}${hint ? ` (${hint})` : ""}`,
    );
  return n;
}
