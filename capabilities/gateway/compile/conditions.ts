// SPDX-License-Identifier: Apache-2.0
import type { Condition, ConditionStatus } from "./types.js";
import { arr, obj, str } from "./util.js";

/** The CRDs' maxLength of a condition message; a longer one makes the whole status patch fail. */
export const MESSAGE_LIMIT = 32768;

/**
 * A message cut to MESSAGE_LIMIT, saying how much was cut. Lists in messages already name only
 * their first few items (firstFew); this holds whatever else a message carries (long names).
 * UTF-16 units count at least as many as the API server's characters, so the cut is safe.
 */
export function capMessage(message: string): string {
  if (message.length <= MESSAGE_LIMIT) return message;
  const tail = (cut: number) => `… (${cut} more characters)`;
  let keep = MESSAGE_LIMIT - tail(message.length).length;
  // Never split a surrogate pair.
  if (/[\uD800-\uDBFF]/.test(message[keep - 1])) keep--;
  return `${message.slice(0, keep)}${tail(message.length - keep)}`;
}

/** A condition as the compile step decides it, before timestamps and generations. */
export interface Verdict {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
}

export const ok = (type: string, reason: string, message: string): Verdict => ({
  type,
  status: "True",
  reason,
  message,
});
export const bad = (type: string, reason: string, message: string): Verdict => ({
  type,
  status: "False",
  reason,
  message,
});

/**
 * The conditions to write: ours (in the order given), each stamped with observedGeneration and
 * keeping the previous lastTransitionTime while its status is unchanged (the Kubernetes
 * convention); then every previous condition of a type we do not manage, untouched, since
 * another controller may own it.
 */
export function mergeConditions(
  previous: unknown,
  verdicts: Verdict[],
  observedGeneration: number,
  now: string,
): Condition[] {
  const before = new Map<string, { status?: string; lastTransitionTime?: string }>();
  for (const raw of arr(previous)) {
    const c = obj(raw);
    const type = str(c.type);
    if (type !== undefined && !before.has(type)) {
      // A timestamp may arrive as a Date if the caller parsed it; keep the API's string form.
      const t =
        c.lastTransitionTime instanceof Date
          ? c.lastTransitionTime.toISOString()
          : str(c.lastTransitionTime);
      before.set(type, { status: str(c.status), lastTransitionTime: t });
    }
  }
  const managed = new Set(verdicts.map(v => v.type));
  const ours = verdicts.map((v): Condition => {
    const prev = before.get(v.type);
    const keep = prev?.status === v.status && prev.lastTransitionTime;
    return {
      type: v.type,
      status: v.status,
      reason: v.reason,
      message: capMessage(v.message),
      observedGeneration,
      lastTransitionTime: keep ? (prev.lastTransitionTime as string) : now,
    };
  });
  const foreign: Condition[] = [];
  for (const raw of arr(previous)) {
    const c = obj(raw);
    const type = str(c.type);
    if (type === undefined || managed.has(type)) continue;
    foreign.push(raw as Condition);
  }
  return [...ours, ...foreign];
}
