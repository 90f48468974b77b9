// SPDX-License-Identifier: Apache-2.0
/**
 * ProcessDataplaneConfigs: one table per accepted Gateway, and whether it is Programmed (every
 * ready node agent has applied it as compiled now).
 */
import { certificateCopyName, type CertificateCopy } from "../certificate-copies.js";
import { NO_ROOM } from "../../agent/capacity.js";
import { announcingNode } from "./addresses.js";
import type { Verdict } from "./conditions.js";
import { bad, ok } from "./conditions.js";
import type { GatewayContext } from "./gateways.js";
import type { ListenerContext } from "./listeners.js";
import type { RouteContext } from "./routes.js";
import type { DataplaneConfig, NodeInfo } from "./types.js";
import { DATAPLANE_API_VERSION, GATEWAY_GROUP } from "./types.js";
import { arr, byAge, cmp, firstFew, int, jsonEqual, obj } from "./util.js";
import type { CompileInput, DataplaneConfigView } from "./views.js";

/** The longest label value Kubernetes accepts. */
const MAX_LABEL_VALUE = 63;

export interface DataplaneConfigs {
  configs: DataplaneConfig[];
  /** Programmed of each accepted Gateway, by "namespace/name". */
  programmed: Map<string, Verdict>;
  /** The copies the configs name, when the input sets certificateCopyNamespace; sorted by name. */
  certificateCopies: CertificateCopy[];
}

export function processDataplaneConfigs(
  input: Pick<CompileInput, "dataplaneConfigs" | "nodes" | "certificateCopyNamespace">,
  gateways: GatewayContext[],
): DataplaneConfigs {
  const configs: DataplaneConfig[] = [];
  const copies = new Map<string, CertificateCopy>();
  const programmed = new Map<string, Verdict>();
  for (const g of gateways) {
    for (const list of g.attached.values()) list.sort((a, b) => byAge(a.view.meta, b.view.meta));
    if (g.accepted.status !== "True") continue;
    const existing = input.dataplaneConfigs.get(g.key);
    const config = dataplaneConfig(
      g,
      existing,
      input.nodes,
      input.certificateCopyNamespace,
      copies,
    );
    configs.push(config);
    programmed.set(g.key, gatewayProgrammed(g, config, existing, input.nodes));
  }
  configs.sort(
    (a, b) =>
      cmp(a.metadata?.namespace ?? "", b.metadata?.namespace ?? "") ||
      cmp(a.metadata?.name ?? "", b.metadata?.name ?? ""),
  );
  const certificateCopies = [...copies.values()].sort((a, b) => cmp(a.name, b.name));
  return { configs, programmed, certificateCopies };
}

/** The compiled table of one accepted Gateway. */
function dataplaneConfig(
  g: GatewayContext,
  existing: DataplaneConfigView | undefined,
  nodes: NodeInfo[],
  copyNamespace: string | undefined,
  copies: Map<string, CertificateCopy>,
): DataplaneConfig {
  const address = g.address?.kind === "assigned" ? g.address.address : undefined;
  const node = address ? announcingNode(address, nodes, existing?.announcingNode) : undefined;
  const { meta } = g.view;

  // One table entry per (port, transport): listeners sharing one (HTTP/HTTPS by hostname) share
  // it, and the oldest route attached to any of them carries the traffic.
  const groups = new Map<string, { listeners: ListenerContext[]; routes: RouteContext[] }>();
  g.listeners.forEach((l, i) => {
    if (!l.valid || !l.transport) return;
    const key = `${l.port}/${l.transport}`;
    const group = groups.get(key) ?? { listeners: [], routes: [] };
    group.listeners.push(l);
    group.routes.push(...(g.attached.get(i) ?? []));
    groups.set(key, group);
  });
  const listeners = [...groups.values()].map(({ listeners: ls, routes }) => {
    const first = ls[0];
    const carrier = [...new Set(routes)].sort((a, b) => byAge(a.view.meta, b.view.meta))[0];
    const entry: NonNullable<NonNullable<DataplaneConfig["spec"]>["listeners"]>[number] = {
      name: first.name,
      port: first.port,
      protocol: first.transport as never,
      rejectWeight: carrier?.backends?.rejectWeight ?? 0,
      backends: (carrier?.backends?.backends ?? []).map(b => ({
        name: b.name,
        weight: b.weight,
        endpoints: b.endpoints,
      })),
    };
    if (carrier)
      entry.route = {
        kind: carrier.view.kind as never,
        namespace: carrier.view.meta.namespace,
        name: carrier.view.meta.name,
      };
    // Only refs this phase resolved reach here (ReferenceGrants were checked in listeners.ts);
    // with a copy namespace the agent is sent to each one's copy, which it may read.
    const certificateRefs = ls.flatMap(l =>
      l.certificateRefs.map(source => {
        if (copyNamespace === undefined) return source;
        const gateway = { namespace: meta.namespace, name: meta.name };
        const name = certificateCopyName(gateway, source);
        const copy = copies.get(name) ?? {
          namespace: copyNamespace,
          name,
          gateway,
          source: { namespace: source.namespace, name: source.name },
          listeners: [],
        };
        if (!copy.listeners.includes(l.name))
          copy.listeners = [...copy.listeners, l.name].sort(cmp);
        copies.set(name, copy);
        return { namespace: copyNamespace, name };
      }),
    );
    if (first.protocol === "HTTPS") entry.tls = { certificateRefs };
    return entry;
  });
  listeners.sort((a, b) => a.port - b.port || cmp(a.protocol, b.protocol));

  const spec: NonNullable<DataplaneConfig["spec"]> = {
    gatewayName: meta.name,
    gatewayGeneration: meta.generation,
    ...(address ? { address } : {}),
    ...(node ? { announcingNode: node } : {}),
    // Omitted, not [], when empty: server-side apply drops an empty list, so the spec read
    // back would never equal one written with `listeners: []`.
    ...(listeners.length > 0 ? { listeners } : {}),
  };
  // The API server moves a spec's generation on by one per change, and only the controller
  // writes specs (admission): a change to the listeners is generation `existing + 1`. A table
  // without the field (written before it existed, or by a CRD that prunes it) gets none until
  // its listeners change, so a stale CRD never makes the controller rewrite it in a loop.
  if (!existing || !jsonEqual(listenersOf(existing.spec), listenersOf(spec)))
    spec.listenersSince = (existing?.generation ?? 0) + 1;
  else if (int(existing.spec.listenersSince) !== undefined)
    spec.listenersSince = int(existing.spec.listenersSince);
  // The label (for `kubectl get dataplaneconfigs -l blixt.dev/gateway=NAME`) only where the
  // name fits a label value: a Gateway name may have 253 characters, a label value 63, and a
  // DataplaneConfig the API server refuses would leave the Gateway unprogrammed. The object's
  // own name and spec.gatewayName always carry the whole name.
  const metadata: Record<string, unknown> = {
    name: meta.name,
    namespace: meta.namespace,
    ...(meta.name.length <= MAX_LABEL_VALUE ? { labels: { "blixt.dev/gateway": meta.name } } : {}),
  };
  if (meta.uid) {
    metadata.ownerReferences = [
      {
        apiVersion: `${GATEWAY_GROUP}/v1`,
        kind: "Gateway",
        name: meta.name,
        uid: meta.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ];
  }
  return {
    apiVersion: DATAPLANE_API_VERSION,
    kind: "DataplaneConfig",
    metadata,
    spec,
  } as DataplaneConfig;
}

/**
 * What a table is apart from its backends: the address, the announcing node, the Gateway
 * generation and the listeners, each without its backends and rejectWeight.
 */
function listenersOf(spec: unknown): unknown {
  // A spec read from the cluster may hold anything: obj() and arr() take what is there.
  const { listenersSince: _since, listeners, ...rest } = obj(spec);
  return {
    ...rest,
    listeners: arr(listeners).map(entry => {
      const { backends: _backends, rejectWeight: _rejectWeight, ...listener } = obj(entry);
      return listener;
    }),
  };
}

/**
 * Programmed tells the truth about traffic: an address is assigned, and every ready node agent
 * serves the Gateway's listeners as compiled now. The DataplaneConfig in the cluster must
 * already hold these listeners, and each agent must have acknowledged a generation from
 * `listenersSince` on (a change of backends alone leaves the Gateway Programmed while the
 * agents apply it), with no problem reported for a later one.
 */
function gatewayProgrammed(
  g: GatewayContext,
  config: DataplaneConfig,
  existing: DataplaneConfigView | undefined,
  nodes: NodeInfo[],
): Verdict {
  if (g.address?.kind === "notUsable")
    return bad("Programmed", "AddressNotUsable", g.address.message);
  if (g.address?.kind !== "assigned")
    return bad("Programmed", "AddressNotAssigned", g.address?.message ?? "no address assigned");
  const agents = nodes
    .filter(n => n.ready && n.agentReady)
    .map(n => n.name)
    .sort(cmp);
  if (agents.length === 0)
    return bad("Programmed", "Pending", "no node has a ready blixt agent to program the address");
  const name = `DataplaneConfig ${g.key}`;
  if (!existing) return bad("Programmed", "Pending", `${name} is not written yet`);
  if (!jsonEqual(listenersOf(existing.spec), listenersOf(config.spec)))
    return bad("Programmed", "Pending", `${name} is being updated`);
  // Backends alone changing keep the Gateway Programmed: every node serves its listeners, and
  // moves to the new backends as it applies them. A node that reports a problem does not.
  const { generation } = existing;
  const since = config.spec?.listenersSince ?? generation;
  const lagging = agents.filter(node => {
    const acknowledged = existing.acknowledged.get(node) ?? -1;
    return acknowledged < since || (acknowledged < generation && existing.messages.has(node));
  });
  if (lagging.length > 0) {
    // A node that could not apply it says why in its status entry: the first such reason is
    // named here. One whose maps are full (agent/capacity.ts) makes it NoResources.
    const refused = lagging.find(node => existing.messages.has(node));
    const why = refused ? `; ${refused}: ${existing.messages.get(refused)}` : "";
    const noRoom = lagging.some(node => existing.messages.get(node)?.includes(NO_ROOM));
    return bad(
      "Programmed",
      noRoom ? "NoResources" : "Pending",
      `waiting for node agents to apply ${name} generation ${generation}: ${firstFew(lagging)}${why}`,
    );
  }
  return ok(
    "Programmed",
    "Programmed",
    `Address ${g.address.address} is programmed on ${agents.length} node${agents.length === 1 ? "" : "s"}, announced by ${config.spec?.announcingNode}`,
  );
}
