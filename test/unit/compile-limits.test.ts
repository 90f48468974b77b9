// SPDX-License-Identifier: Apache-2.0
// Condition messages stay within the CRDs' limit (maxLength 32768 on every condition message)
// however many things an object gets wrong: a message names the first few and counts the rest,
// so the status patch is never refused with 422 and retried forever.
import t from "tap";
import { mergeConditions } from "../../capabilities/gateway/compile/conditions.js";
import { emptySnapshot } from "../../capabilities/gateway/compile/documents.js";
import {
  compile,
  type CompileOutput,
  type Snapshot,
} from "../../capabilities/gateway/compile/index.js";

const MESSAGE_LIMIT = 32768;
const gw = "gateway.networking.k8s.io";
const long = (prefix: string, i: number) =>
  `${prefix}-${String(i).padStart(3, "0")}-${"x".repeat(240)}`.slice(0, 253);

function base(): Snapshot {
  const snapshot = emptySnapshot("2026-01-01T00:00:00Z");
  snapshot.gatewayClasses.push({
    apiVersion: `${gw}/v1`,
    kind: "GatewayClass",
    metadata: { name: "blixt", generation: 1 },
    spec: { controllerName: snapshot.controllerName },
  });
  snapshot.addressPools.push({ name: "lab", cidrs: ["198.18.100.0/24"] });
  return snapshot;
}

function messages(output: CompileOutput): { where: string; length: number; message: string }[] {
  // Every condition of every status: ours and what we pass through.
  const out: { where: string; length: number; message: string }[] = [];
  const add = (where: string, conditions: { type: string; message: string }[]) => {
    for (const c of conditions)
      out.push({ where: `${where} ${c.type}`, length: c.message.length, message: c.message });
  };
  for (const c of output.gatewayClasses) add(`GatewayClass ${c.name}`, c.status.conditions);
  for (const g of output.gateways) {
    add(`Gateway ${g.namespace}/${g.name}`, g.status.conditions);
    for (const l of g.status.listeners)
      add(`Gateway ${g.namespace}/${g.name} listener ${l.name}`, l.conditions);
  }
  for (const r of output.routes)
    for (const p of r.status.parents) add(`${r.kind} ${r.namespace}/${r.name}`, p.conditions);
  return out;
}

t.test(
  "an HTTPRoute of 16 rules × 16 long bad backendRefs: ResolvedRefs names the first few and counts the rest",
  async t => {
    const snapshot = base();
    snapshot.gateways.push({
      apiVersion: `${gw}/v1`,
      kind: "Gateway",
      metadata: { namespace: "infra", name: "web", generation: 1 },
      spec: {
        gatewayClassName: "blixt",
        listeners: [{ name: "http", protocol: "HTTP", port: 80 }],
      },
    } as never);
    const rules = Array.from({ length: 16 }, (_, r) => ({
      backendRefs: Array.from({ length: 16 }, (_, b) => ({
        name: long("missing", r * 16 + b),
        namespace: long("elsewhere", b).slice(0, 63),
        port: 8080,
      })),
    }));
    snapshot.httpRoutes.push({
      apiVersion: `${gw}/v1`,
      kind: "HTTPRoute",
      metadata: { namespace: "infra", name: "many", generation: 1 },
      spec: { parentRefs: [{ name: "web" }], rules },
    } as never);

    const all = messages(compile(snapshot));
    t.same(
      all.filter(m => m.length > MESSAGE_LIMIT).map(m => `${m.where}: ${m.length} characters`),
      [],
      "no message passes the limit",
    );
    const resolved = all.find(m => m.where === "HTTPRoute infra/many ResolvedRefs");
    t.ok(resolved, "the route has a ResolvedRefs condition");
    t.match(
      resolved?.message,
      /^backendRefs\[0\] "missing-000-x+": Service elsewhere-000-x+\/missing-000-x+ is in another namespace/,
    );
    t.match(resolved?.message, /; and 248 more$/, "256 problems: 8 named, 248 counted");
  },
);

t.test(
  "many nodes lagging, many invalid listeners, many refusing listeners: every message within the limit",
  async t => {
    const snapshot = base();
    const listeners = Array.from({ length: 64 }, (_, i) => ({
      name: long("l", i),
      protocol: "TCP",
      port: 1000 + i,
      allowedRoutes: { namespaces: { from: "Same" } },
    }));
    // Half of them invalid (a kind no TCP listener takes), so the Gateway's Accepted lists them.
    for (const l of listeners.slice(32))
      Object.assign(l, {
        allowedRoutes: { kinds: [{ kind: "UDPRoute" }], namespaces: { from: "Same" } },
      });
    snapshot.gateways.push({
      apiVersion: `${gw}/v1`,
      kind: "Gateway",
      metadata: { namespace: "infra", name: "wide", generation: 1 },
      spec: { gatewayClassName: "blixt", listeners },
    } as never);
    // A route from another namespace: every listener refuses it (NotAllowedByListeners lists them).
    snapshot.tcpRoutes.push({
      apiVersion: `${gw}/v1`,
      kind: "TCPRoute",
      metadata: { namespace: "apps", name: "far", generation: 1 },
      spec: { parentRefs: [{ name: "wide", namespace: "infra" }], rules: [{ backendRefs: [] }] },
    } as never);
    // 3000 ready agents with long names, none of which has acknowledged the table yet.
    for (let i = 0; i < 3000; i++)
      snapshot.nodes.push({ name: long(`node-${i}`, i), ready: true, agentReady: true });
    const first = compile(snapshot);
    snapshot.dataplaneConfigs.push(
      ...first.dataplaneConfigs.map(dc => ({ ...dc, metadata: { ...dc.metadata, generation: 1 } })),
    );
    snapshot.allocations = first.allocations;

    const all = messages(compile(snapshot));
    t.same(
      all.filter(m => m.length > MESSAGE_LIMIT).map(m => `${m.where}: ${m.length} characters`),
      [],
      "no message passes the limit",
    );
    const programmed = all.find(m => m.where === "Gateway infra/wide Programmed");
    t.match(
      programmed?.message,
      /^waiting for node agents to apply DataplaneConfig infra\/wide generation 1: node-0-000-x+, .*, and 2992 more$/,
    );
    const accepted = all.find(m => m.where === "TCPRoute apps/far Accepted");
    t.match(accepted?.message, /; and 56 more$/, "64 listeners refuse the route: 8 named");
    const gatewayAccepted = all.find(m => m.where === "Gateway infra/wide Accepted");
    t.match(
      gatewayAccepted?.message,
      /^Gateway is accepted, but listeners l-032-x+, .*, and 24 more are not valid; see status.listeners$/,
    );
  },
);

t.test("a message too long for the CRD however it came about is cut, saying how much", async t => {
  const [condition] = mergeConditions(
    [],
    [{ type: "Accepted", status: "False", reason: "Invalid", message: "y".repeat(100_000) }],
    1,
    "2026-01-01T00:00:00Z",
  );
  t.ok(
    condition.message.length <= MESSAGE_LIMIT && condition.message.length > MESSAGE_LIMIT - 8,
    `${condition.message.length} characters`,
  );
  t.match(condition.message, /^y+… \(67\d\d\d more characters\)$/);
});
