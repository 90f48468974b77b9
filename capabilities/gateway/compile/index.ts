// SPDX-License-Identifier: Apache-2.0
/**
 * The compile step: a snapshot of the cluster → the status of every object blixt owns and one
 * DataplaneConfig per accepted Gateway. Pure and deterministic: the same snapshot gives the
 * same output, byte for byte once serialised, so status writes are no-ops when nothing changed.
 *
 * A list of named phases, each in its own file, on typed views read once from the snapshot
 * (views.ts). Admission calls the same phases, so its warnings predict this status.
 */
import { processAddresses } from "./addresses.js";
import { processDataplaneConfigs } from "./dataplaneconfigs.js";
import { processGatewayClasses } from "./gatewayclasses.js";
import { processGatewayServices } from "./gateway-services.js";
import { gatewayStatuses, processGateways } from "./gateways.js";
import { attachedListenerSets, listenerSetStatuses, processListenerSets } from "./listenersets.js";
import { processRoutes } from "./routes.js";
import type { CompileOutput, Snapshot } from "./types.js";
import { readSnapshot } from "./views.js";

export * from "./types.js";
export { SUPPORTED_FEATURES } from "./gatewayclasses.js";

export function compile(snapshot: Snapshot): CompileOutput {
  const input = readSnapshot(snapshot);
  const classes = processGatewayClasses(input);
  const gateways = processGateways(input, classes); // with their listeners
  const listenerSets = processListenerSets(input, gateways); // adds their listeners
  const addresses = processAddresses(input, gateways);
  const routes = processRoutes(input, gateways, listenerSets); // attaches them to the listeners
  const tables = processDataplaneConfigs(input, gateways);
  const services = processGatewayServices(input, gateways);
  return {
    gatewayClasses: classes.statuses,
    gateways: gatewayStatuses(
      gateways,
      tables.programmed,
      input.now,
      attachedListenerSets(listenerSets),
    ),
    listenerSets: listenerSetStatuses(listenerSets, tables.programmed, input.now),
    routes,
    dataplaneConfigs: tables.configs,
    gatewayServices: services.services,
    ...(input.certificateCopyNamespace !== undefined
      ? { certificateCopies: tables.certificateCopies }
      : {}),
    allocations: addresses.allocations,
    warnings: [...addresses.warnings, ...services.warnings],
  };
}
