// SPDX-License-Identifier: Apache-2.0
// Each accepted Gateway's headless Service and EndpointSlice: their names and label values
// within Kubernetes' limits, and the writes that create, repair and prune them.
import t from "tap";
import { emptySnapshot } from "../../capabilities/gateway/compile/documents";
import { compile } from "../../capabilities/gateway/compile/index";
import {
  DIGEST_ANNOTATION,
  gatewayServiceName,
  labelValue,
} from "../../capabilities/gateway/compile/gateway-services";
import type { Snapshot } from "../../capabilities/gateway/compile/types";
import {
  containedIn,
  gatewayServiceWrites,
  type ClusterState,
} from "../../capabilities/gateway/plan";

const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

t.test("Service names are DNS-1035 labels and label values fit, whatever the Gateway's name", t => {
  t.equal(gatewayServiceName("infra", "gw", "blixt"), "gw-blixt", "the plain name when it fits");
  const names = [
    "1-starts-with-a-digit",
    "has.dots.in.it",
    "0.1.2",
    "x".repeat(253),
    `${"a".repeat(58)}`,
    "a-".repeat(100) + "b",
  ];
  const seen = new Set<string>();
  for (const name of names) {
    const service = gatewayServiceName("infra", name, "blixt");
    t.ok(service.length <= 63 && DNS1035_LABEL.test(service), `${name.slice(0, 20)}… → ${service}`);
    seen.add(service);
    const value = labelValue(name);
    t.ok(value.length <= 63 && LABEL_VALUE.test(value), `label value ${value}`);
  }
  t.equal(seen.size, names.length, "no two names share a Service");
  t.not(
    gatewayServiceName("a", "x".repeat(100), "blixt"),
    gatewayServiceName("b", "x".repeat(100), "blixt"),
    "the hash covers the namespace",
  );
  t.not(labelValue("y".repeat(64)), labelValue(`${"y".repeat(63)}z`), "long values keep apart");
  t.equal(labelValue("short"), "short");
  t.end();
});

const snapshot = (infrastructure?: Record<string, unknown>): Snapshot => ({
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
      metadata: { name: "gw", namespace: "infra", uid: "u1", generation: 1 },
      spec: {
        gatewayClassName: "blixt",
        ...(infrastructure ? { infrastructure } : {}),
        listeners: [{ name: "tcp", protocol: "TCP", port: 80 }],
      },
    },
  ] as never,
  nodes: [{ name: "node-1", ready: true, agentReady: true }],
  addressPools: [{ name: "lab", cidrs: ["198.18.100.0/24"] }],
});

const state = (part: Partial<ClusterState>): ClusterState => ({
  ...emptySnapshot("2026-01-01T00:00:00Z"),
  ...part,
});

/** The object as the API server returns it after an apply: with fields it defaults. */
const asStored = <T>(object: T): T => {
  const o = structuredClone(object) as Record<string, unknown> & {
    metadata: Record<string, unknown>;
    spec?: Record<string, unknown>;
  };
  o.metadata.uid = "server-uid";
  o.metadata.resourceVersion = "7";
  o.metadata.labels = { ...(o.metadata.labels as object), "added-by-someone": "x" };
  if (o.spec) {
    o.spec.sessionAffinity = "None";
    o.spec.ipFamilies = ["IPv4"];
  }
  return o as T;
};

t.test("the writes create what is missing and leave what the API server added alone", t => {
  const [wanted] = compile(snapshot({ labels: { team: "a" } })).gatewayServices;
  t.same(
    gatewayServiceWrites(state({}), [wanted]).map(w => `${w.op} ${w.namespace}/${w.name}`),
    ["applyGatewayService infra/gw-blixt", "applyGatewayEndpointSlice infra/gw-blixt"],
  );
  const stored = state({
    services: [asStored(wanted.service)],
    endpointSlices: [asStored(wanted.endpointSlice)],
  });
  t.same(gatewayServiceWrites(stored, [wanted]), [], "as applied (plus defaults): nothing to do");

  const edited = structuredClone(stored);
  edited.services![0].spec!.ports![0].port = 81;
  t.same(
    gatewayServiceWrites(edited, [wanted]).map(w => w.op),
    ["applyGatewayService"],
    "a port someone changed is put back",
  );

  // The label leaves spec.infrastructure: what is stored still has it, so only the digest
  // of what was applied tells.
  const [without] = compile(snapshot()).gatewayServices;
  t.ok(containedIn(without.service.metadata?.labels, stored.services![0].metadata?.labels));
  t.not(
    without.service.metadata?.annotations?.[DIGEST_ANNOTATION],
    wanted.service.metadata?.annotations?.[DIGEST_ANNOTATION],
  );
  t.same(
    gatewayServiceWrites(stored, [without]).map(w => w.op),
    ["applyGatewayService"],
    "a label removed from the Gateway is applied away",
  );
  t.end();
});

t.test("only blixt's Services and EndpointSlices that no Gateway wants are deleted", t => {
  const [wanted] = compile(snapshot()).gatewayServices;
  const ours = (name: string, deleting = false) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      namespace: "infra",
      name,
      labels: { "blixt.dev/gateway-service": "true" },
      ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" as never } : {}),
    },
  });
  const writes = gatewayServiceWrites(
    state({
      services: [
        asStored(wanted.service),
        ours("old-blixt"),
        ours("going-blixt", true),
        { apiVersion: "v1", kind: "Service", metadata: { namespace: "infra", name: "users" } },
      ],
      endpointSlices: [
        asStored(wanted.endpointSlice),
        { ...ours("old-blixt"), apiVersion: "discovery.k8s.io/v1", kind: "EndpointSlice" } as never,
        {
          apiVersion: "discovery.k8s.io/v1",
          kind: "EndpointSlice",
          metadata: { namespace: "infra", name: "users-abcde" },
        } as never,
      ],
    }),
    [wanted],
  );
  t.same(
    writes.map(w => `${w.op} ${w.namespace}/${w.name}`),
    ["deleteGatewayService infra/old-blixt", "deleteGatewayEndpointSlice infra/old-blixt"],
  );
  t.end();
});

t.test("containedIn compares what is wanted, arrays element by element", t => {
  t.ok(containedIn({ a: 1 }, { a: 1, b: 2 }));
  t.notOk(containedIn({ a: 1, b: 2 }, { a: 1 }));
  t.ok(containedIn([{ a: 1 }], [{ a: 1, c: 3 }]));
  t.notOk(containedIn([{ a: 1 }], [{ a: 1 }, { a: 2 }]), "an extra element differs");
  t.ok(containedIn([], undefined), "the API server drops an empty list");
  t.notOk(containedIn([1], undefined));
  t.notOk(containedIn({ a: [1] }, { a: { 0: 1 } }));
  t.end();
});
