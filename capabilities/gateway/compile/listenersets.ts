// SPDX-License-Identifier: Apache-2.0
/**
 * ProcessListenerSets (GEP-1713): listeners attached to a Gateway of ours from ListenerSets.
 * The Gateway's spec.allowedListeners says which ListenerSets it takes (none when unset); those
 * it takes are merged after its own listeners, oldest ListenerSet first (then by
 * namespace/name), and the first listener on that list keeps a port and hostname. The merged
 * listeners share the Gateway's address, DataplaneConfig and Service; a route attaches to a
 * ListenerSet's listeners by naming the ListenerSet as its parent.
 *
 * The Gateway's own conditions and status.listeners do not change with its ListenerSets; its
 * status.attachedListenerSets counts those Accepted.
 */
import type { Verdict } from "./conditions.js";
import { bad, mergeConditions, ok } from "./conditions.js";
import type { GatewayContext } from "./gateways.js";
import type { ListenerContext } from "./listeners.js";
import { listenerStatus, processListenerSetListeners } from "./listeners.js";
import type { CompileOutput } from "./types.js";
import { GATEWAY_GROUP } from "./types.js";
import { byAge, cmp, firstFew, nsName, selectorMatches } from "./util.js";
import type { CompileInput, ListenerSetView } from "./views.js";

export interface ListenerSetContext {
  view: ListenerSetView;
  key: string;
  gateway: GatewayContext;
  accepted: Verdict;
  /** Its listeners (empty when the Gateway does not take it); in the Gateway's list too. */
  listeners: ListenerContext[];
}

/**
 * Judges every ListenerSet whose parent is a Gateway of ours, appends the listeners of those
 * the Gateway takes to the Gateway's listeners (marked with `listenerSet`), and returns them
 * all, by key. ListenerSets of other implementations' Gateways are left alone.
 */
export function processListenerSets(
  input: Pick<CompileInput, "listenerSets" | "namespaceLabels" | "secrets" | "referenceGrants">,
  gateways: GatewayContext[],
): Map<string, ListenerSetContext> {
  const byGateway = new Map(gateways.map(g => [g.key, g]));
  const out = new Map<string, ListenerSetContext>();
  const sorted = [...input.listenerSets].sort((a, b) => byAge(a.meta, b.meta) || cmp(a.key, b.key));
  // Per Gateway, the listeners that keep their port: its own, then those of older ListenerSets.
  const kept = new Map<string, ListenerContext[]>();
  for (const view of sorted) {
    const ref = view.parentRef;
    if (ref.group !== GATEWAY_GROUP || ref.kind !== "Gateway") continue;
    const gateway = byGateway.get(nsName(ref.namespace, ref.name));
    if (!gateway) continue;
    const context: ListenerSetContext = {
      view,
      key: view.key,
      gateway,
      accepted: ok("Accepted", "Accepted", "ListenerSet is accepted"),
      listeners: [],
    };
    out.set(view.key, context);
    const what = `Gateway ${gateway.key}`;
    const allowed = gateway.view.allowedListeners;
    const labels = input.namespaceLabels.get(view.meta.namespace) ?? {
      "kubernetes.io/metadata.name": view.meta.namespace,
    };
    const takes =
      allowed.from === "All" ||
      (allowed.from === "Same" && view.meta.namespace === gateway.view.meta.namespace) ||
      (allowed.from === "Selector" && selectorMatches(allowed.selector, labels));
    if (!takes) {
      context.accepted = bad(
        "Accepted",
        "NotAllowed",
        allowed.from === "None"
          ? `${what} takes no ListenerSets (spec.allowedListeners.namespaces.from is None or unset)`
          : `${what} takes ListenerSets only from ${allowed.from === "Same" ? `its own namespace "${gateway.view.meta.namespace}"` : allowed.from === "Selector" ? "namespaces its spec.allowedListeners.namespaces.selector matches" : `namespaces selected by "${allowed.from}", which is not All, Same, Selector or None`}`,
      );
      continue;
    }
    if (gateway.accepted.status !== "True") {
      context.accepted = bad(
        "Accepted",
        "ParentNotAccepted",
        `${what} is not accepted: ${gateway.accepted.message}`,
      );
      continue;
    }
    let list = kept.get(gateway.key);
    if (!list) {
      list = gateway.listeners.filter(
        l => l.accepted.status === "True" && l.conflicted.status === "False" && l.transport,
      );
      kept.set(gateway.key, list);
    }
    context.listeners = processListenerSetListeners(view, list, input);
    gateway.listeners.push(...context.listeners);
    const invalid = context.listeners.filter(l => !l.healthy).map(l => l.name);
    if (!context.listeners.some(l => l.valid)) {
      context.accepted = bad(
        "Accepted",
        "ListenersNotValid",
        `no listener is valid (${firstFew(invalid)}); see status.listeners`,
      );
    } else if (invalid.length > 0) {
      context.accepted = ok(
        "Accepted",
        "ListenersNotValid",
        `ListenerSet is accepted, but ${invalid.length === 1 ? `listener ${invalid[0]} is` : `listeners ${firstFew(invalid)} are`} not valid; see status.listeners`,
      );
    }
  }
  return out;
}

/** The status of each ListenerSet of ours; Programmed follows its Gateway's. */
export function listenerSetStatuses(
  listenerSets: Map<string, ListenerSetContext>,
  programmed: Map<string, Verdict>,
  now: string,
): CompileOutput["listenerSets"] {
  const out: CompileOutput["listenerSets"] = [];
  for (const ls of listenerSets.values()) {
    const { gateway, view } = ls;
    const parentProgrammed = programmed.get(gateway.key);
    const setProgrammed =
      ls.accepted.status !== "True"
        ? bad("Programmed", ls.accepted.reason, ls.accepted.message)
        : parentProgrammed?.status === "True"
          ? ok("Programmed", "Programmed", "ListenerSet is programmed on every ready node")
          : bad(
              "Programmed",
              "Pending",
              `Gateway ${gateway.key} is not programmed yet: ${parentProgrammed?.message ?? "no table"}`,
            );
    const generation = view.meta.generation;
    out.push({
      namespace: view.meta.namespace,
      name: view.meta.name,
      status: {
        conditions: mergeConditions(
          view.previousConditions,
          [ls.accepted, setProgrammed],
          generation,
          now,
        ),
        listeners: ls.listeners.map(l =>
          listenerStatus(
            l,
            gateway.attached.get(gateway.listeners.indexOf(l))?.length ?? 0,
            setProgrammed.status === "True" ? parentProgrammed : setProgrammed,
            view.previousListenerConditions.get(l.name),
            generation,
            now,
          ),
        ),
      },
    });
  }
  return out.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
}

/** Accepted ListenerSets per Gateway, for status.attachedListenerSets. */
export function attachedListenerSets(
  listenerSets: Map<string, ListenerSetContext>,
): Map<string, number> {
  const counts = new Map<string, number>();
  for (const ls of listenerSets.values())
    if (ls.accepted.status === "True")
      counts.set(ls.gateway.key, (counts.get(ls.gateway.key) ?? 0) + 1);
  return counts;
}
