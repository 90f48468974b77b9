// SPDX-License-Identifier: Apache-2.0
// The DataplaneConfig check the controller runs before every write and every node agent on every
// table (the chart's CRD leaves listener items without a schema), and the generated files it
// rests on: the chart's CRD and the listener schema module are what hack/gen-crd.ts writes from
// the full schema, api/dataplaneconfig.yaml.
import t from "tap";
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import {
  CHART_CRD,
  chartCrd,
  FULL_CRD,
  LISTENER_SCHEMA_MODULE,
  listenerSchemaModule,
} from "../../hack/gen-crd";
import { dataplaneConfigProblems } from "../../capabilities/dataplaneconfig-check";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1";

const full = readFileSync(FULL_CRD, "utf8");

t.test(
  "the chart's CRD and the listener schema module are generated from the full schema",
  async t => {
    t.equal(
      readFileSync(CHART_CRD, "utf8"),
      chartCrd(full),
      `${CHART_CRD} is what api/dataplaneconfig.yaml gives: run hack/gen-types.sh after editing it`,
    );
    t.equal(
      readFileSync(LISTENER_SCHEMA_MODULE, "utf8"),
      listenerSchemaModule(full),
      `${LISTENER_SCHEMA_MODULE} is what api/dataplaneconfig.yaml gives: run hack/gen-types.sh`,
    );
    // Everything but the listener items is the full schema's.
    const chart = parse(readFileSync(CHART_CRD, "utf8"));
    const source = parse(full);
    const listeners = (crd: typeof chart) =>
      crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.listeners;
    t.same(listeners(chart).items, {
      type: "object",
      "x-kubernetes-preserve-unknown-fields": true,
    });
    t.ok(listeners(source).items.properties.backends, "the full schema describes the items");
    delete listeners(chart).items;
    delete listeners(source).items;
    delete listeners(chart).description;
    delete listeners(source).description;
    t.same(chart, source, "the rest of the CRD is the full schema's");
  },
);

const config = (listeners: unknown[]): DataplaneConfig =>
  ({
    apiVersion: "blixt.dev/v1alpha1",
    kind: "DataplaneConfig",
    metadata: { namespace: "infra", name: "web" },
    spec: { gatewayName: "web", gatewayGeneration: 1, address: "198.18.5.1", listeners },
  }) as DataplaneConfig;

const listener = (extra: Record<string, unknown> = {}) => ({
  name: "tcp",
  port: 80,
  protocol: "TCP",
  rejectWeight: 0,
  route: { kind: "TCPRoute", namespace: "infra", name: "web" },
  backends: [
    {
      name: "infra/web:80",
      weight: 1,
      endpoints: [{ address: "198.19.0.5", port: 8080, nodeName: "a" }],
    },
  ],
  ...extra,
});

t.test("what the controller compiles passes", async t => {
  t.same(dataplaneConfigProblems(config([listener(), listener({ port: 81 })])), []);
  t.same(dataplaneConfigProblems(config([])), []);
  t.same(
    dataplaneConfigProblems({ ...config([]), spec: { ...config([]).spec!, listeners: undefined } }),
    [],
  );
});

t.test("the full schema's rules, each named with its field", async t => {
  t.same(dataplaneConfigProblems(config([listener({ colour: "blue" })])), [
    "spec.listeners[0]: must NOT have additional properties",
  ]);
  t.same(
    dataplaneConfigProblems(
      config([
        listener({
          route: { kind: "GRPCRoute", namespace: "infra", name: "web" },
          tls: {},
          backends: [
            { weight: 1, endpoints: [{ address: "198.19.0.5", port: 8080, nodeName: 7 }] },
          ],
        }),
      ]),
    ),
    [
      "spec.listeners[0].tls: must have required property 'certificateRefs'",
      "spec.listeners[0].route.kind: must be equal to one of the allowed values: TCPRoute, UDPRoute, HTTPRoute",
      "spec.listeners[0].backends[0].endpoints[0].nodeName: must be string",
    ],
  );
  t.same(
    dataplaneConfigProblems(config([{ port: 80, protocol: "TCP", rejectWeight: 0, backends: [] }])),
    ["spec.listeners[0]: must have required property 'name'"],
  );
});

t.test(
  "what a person reads best first; the schema's errors only after those are fixed",
  async t => {
    t.same(dataplaneConfigProblems(config([listener({ port: 70000, colour: "blue" })])), [
      "spec.listeners[0].port: 70000 is not a port (1-65535)",
    ]);
  },
);

t.test("input of any shape gets a message, never an exception", async t => {
  const shapes: unknown[] = [
    [listener({ backends: "infra/web:80" })],
    [listener({ backends: [null, 7, { weight: 1, endpoints: "x" }] })],
    [
      listener({
        backends: [{ weight: 1, endpoints: [null, "198.19.0.5", { address: 5, port: "80" }] }],
      }),
    ],
    [null, 5, "tcp", []],
  ];
  for (const listeners of shapes) {
    const problems = dataplaneConfigProblems(config(listeners as unknown[]));
    t.ok(problems.length > 0, `${JSON.stringify(listeners)}: ${problems.join("; ")}`);
    t.ok(
      problems.every(p => p.startsWith("spec.listeners[")),
      "each names its listener",
    );
  }
  const spec = { ...config([]).spec!, listeners: "tcp" as never };
  t.same(dataplaneConfigProblems({ ...config([]), spec }), ["spec.listeners: must be a list"]);
});

t.test("many schema errors in one listener: five named, the rest counted", async t => {
  const endpoints = Array.from({ length: 8 }, () => ({
    address: "198.19.0.5",
    port: 8080,
    nodeName: 1,
  }));
  const problems = dataplaneConfigProblems(
    config([listener({ backends: [{ weight: 1, endpoints }] })]),
  );
  t.equal(problems.length, 6);
  t.equal(problems[5], "spec.listeners[0]: and 3 more");
});
