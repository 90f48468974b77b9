// SPDX-License-Identifier: Apache-2.0
// DataplaneConfigs as the controller writes them, for the agent tests.
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";

export interface ListenerIn {
  name: string;
  port: number;
  protocol: "TCP" | "UDP";
  rejectWeight?: number;
  /** per backendRef: weight and endpoints as [address, port, nodeName?] */
  backends?: { weight: number; endpoints: [string, number, string?][] }[];
}

export function dataplaneConfig(
  name: string,
  address: string | undefined,
  listeners: ListenerIn[],
  extra: { node?: string; generation?: number; namespace?: string } = {},
): DataplaneConfig {
  return {
    apiVersion: "blixt.dev/v1alpha1",
    kind: "DataplaneConfig",
    metadata: { namespace: extra.namespace ?? "default", name, generation: extra.generation ?? 1 },
    spec: {
      gatewayName: name,
      gatewayGeneration: 1,
      address,
      announcingNode: extra.node,
      listeners: listeners.map(l => ({
        name: l.name,
        port: l.port,
        protocol: l.protocol,
        rejectWeight: l.rejectWeight ?? 0,
        backends: (l.backends ?? []).map(b => ({
          weight: b.weight,
          endpoints: b.endpoints.map(([address, port, nodeName]) =>
            nodeName === undefined ? { address, port } : { address, port, nodeName },
          ),
        })),
      })),
    },
  } as DataplaneConfig;
}
