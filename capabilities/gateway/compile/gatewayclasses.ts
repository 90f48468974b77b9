// SPDX-License-Identifier: Apache-2.0
/** ProcessGatewayClasses: the GatewayClasses naming blixt's controller, and whether each is accepted. */
import type { Verdict } from "./conditions.js";
import { bad, mergeConditions, ok } from "./conditions.js";
import type { CompileOutput } from "./types.js";
import { cmp } from "./util.js";
import type { CompileInput, GatewayClassView } from "./views.js";

/**
 * Features blixt passes in the upstream suite (GATEWAY-TCP and GATEWAY-UDP profiles): the
 * core ones, and the extended ones listed in conformance/extended-features.txt.
 */
export const SUPPORTED_FEATURES = [
  "Gateway",
  "GatewayAddressEmpty",
  "GatewayInfrastructure",
  "GatewayStaticAddresses",
  "ListenerSet",
  "ReferenceGrant",
  "TCPRoute",
  "UDPRoute",
];

export interface GatewayClassContext {
  view: GatewayClassView;
  accepted: Verdict;
}

export interface GatewayClasses {
  /** Ours, by name. */
  byName: Map<string, GatewayClassContext>;
  statuses: CompileOutput["gatewayClasses"];
}

export function processGatewayClasses(
  input: Pick<CompileInput, "controllerName" | "now" | "gatewayClasses">,
): GatewayClasses {
  const byName = new Map<string, GatewayClassContext>();
  const statuses: CompileOutput["gatewayClasses"] = [];
  for (const view of input.gatewayClasses) {
    if (view.controllerName !== input.controllerName) continue;
    const accepted =
      view.parametersRef !== undefined
        ? bad(
            "Accepted",
            "InvalidParameters",
            `spec.parametersRef: blixt defines no parameters kind, so ${view.parametersRef} cannot be used; remove spec.parametersRef`,
          )
        : ok("Accepted", "Accepted", "GatewayClass is accepted by blixt");
    byName.set(view.meta.name, { view, accepted });
    statuses.push({
      name: view.meta.name,
      status: {
        conditions: mergeConditions(
          view.previousConditions,
          [accepted],
          view.meta.generation,
          input.now,
        ),
        supportedFeatures: [...SUPPORTED_FEATURES].sort(cmp).map(name => ({ name })),
      },
    });
  }
  statuses.sort((a, b) => cmp(a.name, b.name));
  return { byName, statuses };
}
