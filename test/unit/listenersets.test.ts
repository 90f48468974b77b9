// SPDX-License-Identifier: Apache-2.0
// ListenerSets past what a Gateway's table holds: its DataplaneConfig has one entry per port and
// transport, at most 64 (its CRD's maxItems), so a ListenerSet's listener that would be the
// 65th is not accepted (TooManyListeners), and the table the API server would refuse is never
// compiled. The rules the conformance tests check are golden cases (listenersets-*.in.yaml).
import t from "tap";
import { emptySnapshot } from "../../capabilities/gateway/compile/documents";
import { compile } from "../../capabilities/gateway/compile/index";
import { MAX_PORTS } from "../../capabilities/gateway/compile/listeners";
import type { Snapshot } from "../../capabilities/gateway/compile/types";

const tcp = (name: string, port: number) => ({ name, protocol: "TCP", port });

function snapshot(gatewayPorts: number, setPorts: number[]): Snapshot {
  return {
    ...emptySnapshot("2026-01-01T00:00:00Z"),
    gatewayClasses: [
      {
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "GatewayClass",
        metadata: { name: "blixt", generation: 1 },
        spec: { controllerName: "blixt.dev/gateway-controller" },
      },
    ] as never,
    gateways: [
      {
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "Gateway",
        metadata: { name: "gw", namespace: "infra", generation: 1 },
        spec: {
          gatewayClassName: "blixt",
          allowedListeners: { namespaces: { from: "Same" } },
          listeners: Array.from({ length: gatewayPorts }, (_, i) => tcp(`p${i}`, 1000 + i)),
        },
      },
    ] as never,
    listenerSets: [
      {
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "ListenerSet",
        metadata: { name: "more", namespace: "infra", generation: 1 },
        spec: {
          parentRef: { name: "gw" },
          listeners: setPorts.map(port => tcp(`s${port}`, port)),
        },
      },
    ] as never,
    nodes: [{ name: "node-1", ready: true, agentReady: true }],
    addressPools: [{ name: "lab", cidrs: ["198.18.100.0/24"] }],
  };
}

t.test("a ListenerSet's listener that would be the table's 65th port is TooManyListeners", t => {
  const out = compile(snapshot(MAX_PORTS - 2, [2000, 2001, 2002, 1000, 2003]));
  const set = out.listenerSets.find(s => s.name === "more")!;
  const accepted = (name: string) =>
    set.status.listeners.find(l => l.name === name)!.conditions.find(c => c.type === "Accepted")!;
  t.match(accepted("s2000"), { status: "True" });
  t.match(accepted("s2001"), { status: "True" }, "the 64th port still fits");
  t.match(accepted("s2002"), { status: "False", reason: "TooManyListeners" });
  t.match(
    accepted("s1000"),
    { status: "False", reason: "ProtocolConflict" },
    "a port already taken is a conflict, not one more port",
  );
  t.match(accepted("s2003"), { status: "False", reason: "TooManyListeners" });
  t.match(
    set.status.conditions.find(c => c.type === "Accepted"),
    { status: "True", reason: "ListenersNotValid" },
    "the ListenerSet is accepted with the listeners that fit",
  );
  const listeners = out.dataplaneConfigs[0].spec?.listeners ?? [];
  t.equal(listeners.length, MAX_PORTS, "the table holds exactly as many ports as its CRD allows");
  t.notOk(
    listeners.some(l => l.port === 2002 || l.port === 2003),
    "and not the ones refused",
  );
  t.end();
});
