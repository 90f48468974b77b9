// SPDX-License-Identifier: Apache-2.0
// The controller's write plan: which writes a compile output turns into, and in which order.
import t from "tap";
import {
  canonicalJSON,
  compileInput,
  finalizerPatch,
  GATEWAY_FINALIZER,
  planWrites,
  recordedAllocations,
  sameJSON,
  statusPatch,
  type ClusterState,
} from "../../capabilities/gateway/plan";
import type {
  CompileOutput,
  DataplaneConfig,
  Gateway,
  GatewayStatus,
  Snapshot,
} from "../../capabilities/gateway/compile/types";

const ME = "blixt.dev/gateway-controller";
const T0 = "2026-11-27T10:00:00Z";

const accepted = (generation = 1) => ({
  type: "Accepted",
  status: "True" as const,
  reason: "Accepted",
  message: "ok",
  observedGeneration: generation,
  lastTransitionTime: T0,
});

function gateway(
  name: string,
  extra: { finalizers?: string[]; deletionTimestamp?: string; status?: unknown } = {},
): Gateway {
  return {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "Gateway",
    metadata: {
      namespace: "default",
      name,
      uid: `uid-${name}`,
      generation: 1,
      ...(extra.finalizers ? { finalizers: extra.finalizers } : {}),
      ...(extra.deletionTimestamp ? { deletionTimestamp: extra.deletionTimestamp } : {}),
    },
    spec: { gatewayClassName: "blixt", listeners: [{ name: "tcp", port: 80, protocol: "TCP" }] },
    ...(extra.status ? { status: extra.status } : {}),
  } as Gateway;
}

function dataplaneConfig(
  name: string,
  address: string,
  extra: { deletionTimestamp?: string } = {},
): DataplaneConfig {
  return {
    apiVersion: "blixt.dev/v1alpha1",
    kind: "DataplaneConfig",
    metadata: {
      namespace: "default",
      name,
      ownerReferences: [
        {
          apiVersion: "gateway.networking.k8s.io/v1",
          kind: "Gateway",
          name,
          uid: `uid-${name}`,
          controller: true,
        },
      ],
      ...(extra.deletionTimestamp ? { deletionTimestamp: extra.deletionTimestamp } : {}),
    },
    spec: { gatewayName: name, gatewayGeneration: 1, address, listeners: [] },
  } as DataplaneConfig;
}

const gatewayStatus = (address: string): GatewayStatus => ({
  addresses: [{ type: "IPAddress", value: address }],
  attachedListenerSets: 0,
  conditions: [accepted()],
  listeners: [
    {
      name: "tcp",
      supportedKinds: [{ group: "gateway.networking.k8s.io", kind: "TCPRoute" }],
      attachedRoutes: 0,
      conditions: [accepted()],
    },
  ],
});

const state = (part: Partial<ClusterState>): ClusterState => ({
  controllerName: ME,
  gatewayClasses: [],
  gateways: [],
  tcpRoutes: [],
  udpRoutes: [],
  httpRoutes: [],
  dataplaneConfigs: [],
  ...part,
});

const output = (part: Partial<CompileOutput>): CompileOutput => ({
  gatewayClasses: [],
  gateways: [],
  routes: [],
  dataplaneConfigs: [],
  gatewayServices: [],
  listenerSets: [],
  allocations: {},
  warnings: [],
  ...part,
});

t.test(
  "a new Gateway gets its finalizer, then its DataplaneConfig, then its status, in that order",
  async t => {
    const writes = planWrites(
      state({ gateways: [gateway("gw")] }),
      output({
        gateways: [{ namespace: "default", name: "gw", status: gatewayStatus("198.18.100.1") }],
        dataplaneConfigs: [dataplaneConfig("gw", "198.18.100.1")],
      }),
    );
    t.same(
      writes.map(w => w.op),
      ["addFinalizer", "applyDataplaneConfig", "patchStatus"],
    );
  },
);

t.test("nothing is written when the cluster already holds what compile wants", async t => {
  const status = gatewayStatus("198.18.100.1");
  // The API server serves keys in its own order; only content counts.
  const reordered = JSON.parse(
    JSON.stringify({
      listeners: status.listeners,
      conditions: status.conditions,
      attachedListenerSets: status.attachedListenerSets,
      addresses: status.addresses,
    }),
  );
  const writes = planWrites(
    state({
      gateways: [gateway("gw", { finalizers: [GATEWAY_FINALIZER], status: reordered })],
      dataplaneConfigs: [dataplaneConfig("gw", "198.18.100.1")],
    }),
    output({
      gateways: [{ namespace: "default", name: "gw", status }],
      dataplaneConfigs: [dataplaneConfig("gw", "198.18.100.1")],
    }),
  );
  t.same(writes, []);
});

t.test(
  "a DataplaneConfig whose spec changed is re-applied; one no Gateway needs is deleted",
  async t => {
    const writes = planWrites(
      state({
        gateways: [gateway("a", { finalizers: [GATEWAY_FINALIZER] })],
        dataplaneConfigs: [
          dataplaneConfig("a", "198.18.100.1"),
          dataplaneConfig("orphan", "198.18.100.9"),
        ],
      }),
      output({ dataplaneConfigs: [dataplaneConfig("a", "198.18.100.2")] }),
    );
    t.same(
      writes.map(w => `${w.op} ${w.name}`),
      ["applyDataplaneConfig a", "deleteDataplaneConfig orphan"],
    );
  },
);

t.test("a DataplaneConfig already being deleted is not deleted again", async t => {
  const writes = planWrites(
    state({ dataplaneConfigs: [dataplaneConfig("x", "198.18.100.9", { deletionTimestamp: T0 })] }),
    output({}),
  );
  t.same(writes, []);
});

t.test(
  "agents' acknowledgements and server-added metadata do not make the controller re-apply",
  async t => {
    const current = dataplaneConfig("gw", "198.18.100.1");
    current.metadata = {
      ...current.metadata,
      resourceVersion: "42",
      generation: 3,
      labels: { "added-by": "someone" },
    };
    current.status = { nodes: [{ name: "node-1", observedGeneration: 3 }] };
    const writes = planWrites(
      state({
        gateways: [gateway("gw", { finalizers: [GATEWAY_FINALIZER] })],
        dataplaneConfigs: [current],
      }),
      output({ dataplaneConfigs: [dataplaneConfig("gw", "198.18.100.1")] }),
    );
    t.same(writes, []);
  },
);

t.test("a Gateway being deleted keeps its finalizer until its DataplaneConfig is gone", async t => {
  const deleting = gateway("gw", { finalizers: [GATEWAY_FINALIZER], deletionTimestamp: T0 });
  const whileConfigExists = planWrites(
    state({ gateways: [deleting], dataplaneConfigs: [dataplaneConfig("gw", "198.18.100.1")] }),
    output({}),
  );
  t.same(
    whileConfigExists.map(w => w.op),
    ["deleteDataplaneConfig"],
    "first the table goes (releasing the address)",
  );
  const afterwards = planWrites(state({ gateways: [deleting] }), output({}));
  t.same(afterwards, [
    {
      op: "removeFinalizer",
      kind: "Gateway",
      namespace: "default",
      name: "gw",
      patch: [
        { op: "test", path: "/metadata/finalizers/0", value: GATEWAY_FINALIZER },
        { op: "remove", path: "/metadata/finalizers/0" },
      ],
    },
  ]);
});

t.test("finalizer patches touch only the finalizer, guarded against a stale view", async t => {
  const fresh = gateway("gw");
  fresh.metadata!.resourceVersion = "7";
  t.same(finalizerPatch(fresh, "add"), [
    { op: "test", path: "/metadata/resourceVersion", value: "7" },
    { op: "add", path: "/metadata/finalizers", value: [GATEWAY_FINALIZER] },
  ]);
  const withOthers = gateway("gw", { finalizers: ["example.com/keep"] });
  t.same(
    finalizerPatch(withOthers, "add"),
    [{ op: "add", path: "/metadata/finalizers/-", value: GATEWAY_FINALIZER }],
    "others' finalizers stay",
  );
  const ours = gateway("gw", { finalizers: ["example.com/keep", GATEWAY_FINALIZER] });
  t.same(finalizerPatch(ours, "remove"), [
    { op: "test", path: "/metadata/finalizers/1", value: GATEWAY_FINALIZER },
    { op: "remove", path: "/metadata/finalizers/1" },
  ]);
});

t.test("compile does not see Gateways being deleted, so it releases their address", async t => {
  const snapshot = {
    gateways: [gateway("stays"), gateway("goes", { deletionTimestamp: T0 })],
  } as Snapshot;
  t.same(
    compileInput(snapshot).gateways.map(g => g.metadata?.name),
    ["stays"],
  );
});

t.test("a status field blixt stops reporting is removed by the merge patch", async t => {
  const patch = statusPatch(
    { addresses: [{ type: "IPAddress", value: "198.18.100.1" }], conditions: [accepted()] },
    { conditions: [accepted()], listeners: [] },
  );
  t.same(patch, { conditions: [accepted()], listeners: [], addresses: null });
  t.equal(statusPatch({ conditions: [accepted()] }, { conditions: [accepted()] }), undefined);
});

t.test(
  "routes: compile's parents are written; a route that left blixt keeps only other controllers' entries",
  async t => {
    const theirs = {
      parentRef: { name: "other-gw" },
      controllerName: "example.com/other",
      conditions: [accepted()],
    };
    const mine = { parentRef: { name: "gw" }, controllerName: ME, conditions: [accepted()] };
    const stillOurs = {
      metadata: { namespace: "default", name: "kept" },
      spec: {},
      status: { parents: [] },
    };
    const leftUs = {
      metadata: { namespace: "default", name: "left" },
      spec: {},
      status: { parents: [mine, theirs] },
    };
    const notOurs = {
      metadata: { namespace: "default", name: "never" },
      spec: {},
      status: { parents: [theirs] },
    };
    const writes = planWrites(
      state({ tcpRoutes: [stillOurs, leftUs, notOurs] as never }),
      output({
        routes: [
          { kind: "TCPRoute", namespace: "default", name: "kept", status: { parents: [mine] } },
        ],
      }),
    );
    t.same(writes, [
      {
        op: "patchStatus",
        kind: "TCPRoute",
        namespace: "default",
        name: "kept",
        status: { parents: [mine] },
      },
      {
        op: "patchStatus",
        kind: "TCPRoute",
        namespace: "default",
        name: "left",
        status: { parents: [theirs] },
      },
    ]);
  },
);

t.test("GatewayClass status is patched only for classes that exist", async t => {
  const status = { conditions: [accepted()] };
  const writes = planWrites(
    state({
      gatewayClasses: [{ metadata: { name: "blixt" }, spec: { controllerName: ME } }] as never,
    }),
    output({
      gatewayClasses: [
        { name: "blixt", status },
        { name: "vanished", status },
      ],
    }),
  );
  t.same(writes, [{ op: "patchStatus", kind: "GatewayClass", name: "blixt", status }]);
});

t.test(
  "allocations: a restarted controller rebuilds the table from DataplaneConfigs; afterwards its own table wins",
  async t => {
    const configs = [
      dataplaneConfig("b", "198.18.100.2"),
      dataplaneConfig("a", "198.18.100.1"),
      dataplaneConfig("gone", "198.18.100.3", { deletionTimestamp: T0 }),
    ];
    const noAddress = dataplaneConfig("c", "");
    delete noAddress.spec!.address;
    t.same(recordedAllocations([...configs, noAddress]), {
      "default/a": "198.18.100.1",
      "default/b": "198.18.100.2",
    });
    t.same(recordedAllocations(configs, { "default/a": "198.18.100.7" }), {
      "default/a": "198.18.100.7",
    });
  },
);

t.test("canonical JSON ignores key order and treats Dates as the API's strings", async t => {
  t.equal(canonicalJSON({ b: 1, a: { d: 2, c: 3 } }), canonicalJSON({ a: { c: 3, d: 2 }, b: 1 }));
  t.equal(
    canonicalJSON({ at: new Date("2026-11-27T10:00:00.000Z") }),
    canonicalJSON({ at: "2026-11-27T10:00:00.000Z" }),
  );
});

t.test("sameJSON says what comparing canonical JSON says, without building it", async t => {
  const at = "2026-11-27T10:00:00.000Z";
  const cases: [string, unknown, unknown][] = [
    ["key order", { b: 1, a: { d: 2, c: 3 } }, { a: { c: 3, d: 2 }, b: 1 }],
    ["a Date and the API's string", { at: new Date(at) }, { at }],
    ["two Dates of different times", { at: new Date(at) }, { at: new Date(0) }],
    ["a Date and another string", { at: new Date(at) }, { at: "yesterday" }],
    ["an undefined member and none", { a: 1, b: undefined }, { a: 1 }],
    ["an undefined array element and null", [1, undefined], [1, null]],
    ["array order", { a: [1, 2] }, { a: [2, 1] }],
    ["a missing member", { a: 1, b: 2 }, { a: 1 }],
    ["an empty object and an empty array", {}, []],
    ["null and an empty object", null, {}],
    ["undefined and null", undefined, null],
    ["a number and its string", { a: 1 }, { a: "1" }],
    ["NaN and null", [Number.NaN], [null]],
    ["nested difference", { a: [{ b: { c: [1, 2, 3] } }] }, { a: [{ b: { c: [1, 2, 4] } }] }],
  ];
  for (const [name, a, b] of cases) {
    const expected = canonicalJSON(a) === canonicalJSON(b);
    t.equal(sameJSON(a, b), expected, `${name}: ${expected ? "same" : "different"}`);
    t.equal(sameJSON(b, a), expected, `${name}, the other way round`);
  }
  t.equal(
    statusPatch(
      { conditions: [{ type: "A", lastTransitionTime: at }] },
      {
        conditions: [{ lastTransitionTime: new Date(at), type: "A" }],
      },
    ),
    undefined,
    "a status the API holds as strings, wanted with a Date, needs no patch",
  );
});
