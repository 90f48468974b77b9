// SPDX-License-Identifier: Apache-2.0
// The chart's DataplaneConfig CRD makes spec.listeners an atomic list whose items carry no schema
// (it was a list map keyed by port and protocol, its items described field by field:
// api/dataplaneconfig.yaml): against a real kube-apiserver, a DataplaneConfig written under the
// old CRD keeps working after the new one is applied (hack/install.sh and the chart's README
// apply the CRDs before an upgrade): the controller's next apply replaces the whole list, and the
// agents' status entries, a list map of their own, stay one per node.
import t from "tap";
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { K8s, kind } from "kubernetes-fluent-client";
import { acknowledge } from "../../capabilities/agent/kube";
import { dataplaneConfigProblems } from "../../capabilities/dataplaneconfig-check";
import { KINDS } from "../../capabilities/gateway/kinds";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1";
import { applyCustomObject, customObjectsApi } from "../../capabilities/kube-connections";
import { findBinaries, startApiServer } from "../lib/apiserver";

const CRD_FILE = new URL("../../charts/blixt/crds/dataplaneconfig.yaml", import.meta.url);
const FULL_CRD_FILE = new URL("../../api/dataplaneconfig.yaml", import.meta.url);

type Listener = { port: number; protocol: string; backends: { endpoints: unknown[] }[] };

const listener = (port: number, protocol: string, address: string) => ({
  name: `l${port}`,
  port,
  protocol,
  rejectWeight: 0,
  backends: [{ name: "ns/s:80", weight: 1, endpoints: [{ address, port: 8080 }] }],
});

const config = (listeners: unknown[]) => ({
  apiVersion: "blixt.dev/v1alpha1",
  kind: "DataplaneConfig",
  metadata: { namespace: "default", name: "web" },
  spec: { gatewayName: "web", gatewayGeneration: 1, address: "198.18.5.1", listeners },
});

const kindOf = KINDS.DataplaneConfig.gvk;
const apply = (object: object) =>
  applyCustomObject(kindOf, object, {
    fieldManager: "pepr",
    force: true,
  }) as Promise<DataplaneConfig>;
const read = async () =>
  (await customObjectsApi().getNamespacedCustomObject({
    group: kindOf.group,
    version: kindOf.version ?? "",
    plural: kindOf.plural ?? "",
    namespace: "default",
    name: "web",
  })) as DataplaneConfig;

/** Until `fn` succeeds (a changed CRD takes the API server a moment to serve), at most 30 s. */
async function eventually<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${what}: ${JSON.stringify(error)}`);
      await new Promise(resolve => setTimeout(resolve, 250));
    }
  }
}

/** What the managedFields say the controller's field manager owns, as JSON. */
const peprFields = (stored: DataplaneConfig): string =>
  JSON.stringify(
    (stored.metadata?.managedFields as { manager?: string }[] | undefined)?.find(
      f => f.manager === "pepr",
    ),
  );

const ack = (stored: DataplaneConfig, node: string) =>
  acknowledge(stored, {
    name: node,
    observedGeneration: stored.metadata?.generation ?? 0,
    mode: "tc",
    lastTransitionTime: "2026-01-01T00:00:00.000Z",
  });

const binaries = findBinaries();
if ("missing" in binaries) {
  t.fail(`the real kube-apiserver is needed: ${binaries.missing}`);
} else {
  t.test("a DataplaneConfig written under the list-map CRD, then the chart's", async t => {
    await startApiServer(t, binaries);
    const crd = parse(readFileSync(CRD_FILE, "utf8"));
    const listenersSchema =
      crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.listeners;
    t.equal(listenersSchema["x-kubernetes-list-type"], "atomic", "the chart's CRD: atomic");
    t.same(
      listenersSchema.items,
      { type: "object", "x-kubernetes-preserve-unknown-fields": true },
      "the chart's CRD: listener items without a schema",
    );

    // The CRD as it was: the full schema, listeners a list map keyed by port and protocol.
    const before = parse(readFileSync(FULL_CRD_FILE, "utf8"));
    const old = before.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.listeners;
    old["x-kubernetes-list-type"] = "map";
    old["x-kubernetes-list-map-keys"] = ["port", "protocol"];
    await K8s(kind.CustomResourceDefinition).Apply(before, { force: true });
    const first = await eventually("the first apply under the list-map CRD", async () => {
      const stored = await apply(
        config([listener(53, "UDP", "198.18.6.1"), listener(80, "TCP", "198.18.6.2")]),
      );
      const pepr = peprFields(stored);
      // Served by the list-map CRD once the owner is kept per entry.
      if (!pepr.includes('k:{\\"port\\":80,\\"protocol\\":\\"TCP\\"}'))
        throw new Error(`not yet served by the list-map CRD: ${pepr}`);
      return stored;
    });
    await ack(first, "node-a");
    await ack(first, "node-b");

    // The chart's CRD: the same object, written again (a field it does not know in a listener
    // is kept as it came: blixt's own check, not the API server, refuses such a table).
    await K8s(kind.CustomResourceDefinition).Apply(crd, { force: true });
    const second = await eventually("an apply under the atomic CRD", async () => {
      const stored = await apply(
        config([
          { ...listener(80, "TCP", "198.18.6.3"), extra: "kept" },
          listener(443, "TCP", "198.18.6.4"),
        ]),
      );
      const pepr = peprFields(stored);
      if (pepr.includes("k:{")) throw new Error(`not yet served by the chart's CRD: ${pepr}`);
      return stored;
    });
    t.same(
      (second.spec?.listeners as Listener[] | undefined)?.map(l => [
        l.port,
        l.protocol,
        l.backends[0].endpoints,
      ]),
      [
        [80, "TCP", [{ address: "198.18.6.3", port: 8080 }]],
        [443, "TCP", [{ address: "198.18.6.4", port: 8080 }]],
      ],
      "the list is the one applied: the listener dropped is gone, the changed one changed",
    );
    t.equal(
      (second.spec?.listeners?.[0] as { extra?: string } | undefined)?.extra,
      "kept",
      "a field the schema does not name is kept, not pruned",
    );
    t.match(
      dataplaneConfigProblems(second),
      ["spec.listeners[0]: must NOT have additional properties"],
      "and blixt's check of the full schema names it",
    );
    await ack(second, "node-a");
    const acked = await read();
    t.same(
      acked.status?.nodes?.map(n => [n.name, n.observedGeneration]),
      [
        ["node-a", second.metadata?.generation],
        ["node-b", first.metadata?.generation],
      ],
      "each node's entry stays its own: node-a's moved on, node-b's is kept",
    );

    // And a third apply under the atomic CRD: the whole list replaced again.
    const third = await apply(config([listener(443, "TCP", "198.18.6.5")]));
    t.same(
      (third.spec?.listeners as Listener[] | undefined)?.map(l => l.port),
      [443],
      "one listener left",
    );
  });
}
