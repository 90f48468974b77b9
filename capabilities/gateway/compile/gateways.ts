// SPDX-License-Identifier: Apache-2.0
/**
 * ProcessGateways: the Gateways of blixt's classes, their listeners, and whether each is
 * accepted; and, once routes are attached and tables compiled, each Gateway's status.
 */
import type { AddressResult } from "./addresses.js";
import type { Verdict } from "./conditions.js";
import { bad, mergeConditions, ok } from "./conditions.js";
import type { GatewayClasses } from "./gatewayclasses.js";
import type { ListenerContext } from "./listeners.js";
import { listenerStatus, processListeners } from "./listeners.js";
import type { RouteContext } from "./routes.js";
import type { CompileOutput, GatewayStatus } from "./types.js";
import { byAge, cmp, firstFew } from "./util.js";
import type { CompileInput, GatewayView } from "./views.js";

export interface GatewayContext {
  view: GatewayView;
  key: string;
  listeners: ListenerContext[];
  accepted: Verdict;
  address?: AddressResult;
  /** Accepted routes per listener index, oldest first once sorted. */
  attached: Map<number, RouteContext[]>;
}

/** Gateways of our classes, oldest first so older Gateways win address clashes. */
export function processGateways(
  input: Pick<CompileInput, "gateways" | "secrets" | "referenceGrants">,
  classes: GatewayClasses,
): GatewayContext[] {
  const gateways: GatewayContext[] = [];
  for (const view of input.gateways) {
    const gatewayClass = classes.byName.get(view.className);
    // A Gateway being deleted gives up its address and table now, not when it is gone.
    if (!gatewayClass || view.deleting) continue;
    const listeners = processListeners(view, input);
    gateways.push({
      view,
      key: view.key,
      listeners,
      accepted: gatewayAccepted(view, listeners, gatewayClass.accepted),
      attached: new Map(),
    });
  }
  return gateways.sort((a, b) => byAge(a.view.meta, b.view.meta));
}

function gatewayAccepted(
  gateway: GatewayView,
  listeners: ListenerContext[],
  classAccepted: Verdict,
): Verdict {
  if (classAccepted.status !== "True") {
    return bad(
      "Accepted",
      "Invalid",
      `GatewayClass "${gateway.className}" is not accepted: ${classAccepted.message}`,
    );
  }
  if (gateway.infrastructureParametersRef !== undefined) {
    return bad(
      "Accepted",
      "InvalidParameters",
      `spec.infrastructure.parametersRef: blixt defines no parameters kind, so ${gateway.infrastructureParametersRef} cannot be used; remove it`,
    );
  }
  const unsupported = gateway.addresses.filter(a => a.type !== "IPAddress");
  if (unsupported.length > 0) {
    return bad(
      "Accepted",
      "UnsupportedAddress",
      `spec.addresses: type ${JSON.stringify(unsupported[0].type)} is not supported; blixt assigns one address of type IPAddress`,
    );
  }
  if (listeners.length === 0)
    return bad("Accepted", "ListenersNotValid", "spec.listeners is empty");
  const invalid = listeners.filter(l => !l.healthy).map(l => l.name);
  // A listener that is accepted and unconflicted keeps the Gateway accepted even while its
  // references do not resolve: routes still attach to it, and Programmed says it carries nothing.
  if (!listeners.some(l => l.attachable))
    return bad(
      "Accepted",
      "ListenersNotValid",
      `no listener is valid (${firstFew(invalid)}); see status.listeners`,
    );
  if (invalid.length > 0) {
    const which =
      invalid.length === 1 ? `listener ${invalid[0]} is` : `listeners ${firstFew(invalid)} are`;
    return ok(
      "Accepted",
      "ListenersNotValid",
      `Gateway is accepted, but ${which} not valid; see status.listeners`,
    );
  }
  return ok("Accepted", "Accepted", "Gateway is accepted");
}

/** Each Gateway's status: its conditions, its listeners' (Programmed follows the Gateway's) and its address. */
export function gatewayStatuses(
  gateways: GatewayContext[],
  programmed: Map<string, Verdict>,
  now: string,
  attachedListenerSets: Map<string, number> = new Map(),
): CompileOutput["gateways"] {
  const out: CompileOutput["gateways"] = gateways.map(g => {
    const gatewayProgrammed =
      g.accepted.status !== "True"
        ? bad("Programmed", "Invalid", `Gateway is not accepted: ${g.accepted.message}`)
        : (programmed.get(g.key) as Verdict);
    const generation = g.view.meta.generation;
    const status: GatewayStatus = {
      conditions: mergeConditions(
        g.view.previousConditions,
        [g.accepted, gatewayProgrammed],
        generation,
        now,
      ),
      // Its own listeners only: those of its ListenerSets are in theirs.
      listeners: g.listeners.flatMap((l, i) =>
        l.listenerSet !== undefined
          ? []
          : [
              listenerStatus(
                l,
                g.attached.get(i)?.length ?? 0,
                gatewayProgrammed,
                g.view.previousListenerConditions.get(l.name),
                generation,
                now,
              ),
            ],
      ),
      attachedListenerSets: attachedListenerSets.get(g.key) ?? 0,
    };
    if (g.address?.kind === "assigned")
      status.addresses = [{ type: "IPAddress", value: g.address.address }];
    return { namespace: g.view.meta.namespace, name: g.view.meta.name, status };
  });
  return out.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
}
