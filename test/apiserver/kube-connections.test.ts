// SPDX-License-Identifier: Apache-2.0
// The controller's keep-alive API clients (capabilities/kube-connections.ts) against a real
// kube-apiserver: requests reuse one connection, where the library's own client opens one per
// request, and the answers are the same.
import t from "tap";
import https from "node:https";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { acknowledge, applyLease } from "../../capabilities/agent/kube";
import { leaseObject } from "../../capabilities/agent/leases";
import { KINDS } from "../../capabilities/gateway/kinds";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1";
import {
  applyCustomObject,
  customObjectsApi,
  keepAliveClient,
} from "../../capabilities/kube-connections";
import { findBinaries, startApiServer } from "../lib/apiserver";

/** Counts every TLS connection an agent opens, whichever agent it is, until the test ends. */
function countConnections(t: { teardown(fn: () => void): void }): { count: number } {
  const opened = { count: 0 };
  const createConnection = https.Agent.prototype.createConnection;
  https.Agent.prototype.createConnection = function (this: https.Agent, ...args: unknown[]) {
    opened.count++;
    return (createConnection as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof createConnection;
  t.teardown(() => {
    https.Agent.prototype.createConnection = createConnection;
  });
  return opened;
}

const binaries = findBinaries();
if ("missing" in binaries) {
  t.fail(`the real kube-apiserver is needed: ${binaries.missing}`);
} else {
  t.test("requests share keep-alive connections; the library's client opens one each", async t => {
    await startApiServer(t, binaries);
    const opened = countConnections(t);

    const config = new KubeConfig();
    config.loadFromDefault();
    const reads = 20;

    const { client, authentication } = keepAliveClient(config, CoreV1Api);
    opened.count = 0;
    const names: (string | undefined)[] = [];
    for (let i = 0; i < reads; i++)
      names.push((await client.readNamespace({ name: "default" })).metadata?.name);
    t.same(names, Array(reads).fill("default"), "every read answered");
    t.equal(opened.count, 1, `${reads} reads one after another: one connection`);
    opened.count = 0;
    await Promise.all(
      Array.from({ length: 8 }, () => client.readNamespace({ name: "kube-system" })),
    );
    t.ok(opened.count <= 8, `8 reads at once: at most 8 connections (${opened.count})`);
    t.equal(authentication.agentsMade, 1, "one agent for one set of TLS options");

    const perRequest = config.makeApiClient(CoreV1Api);
    opened.count = 0;
    for (let i = 0; i < reads; i++) await perRequest.readNamespace({ name: "default" });
    t.equal(opened.count, reads, `the library's client: ${reads} reads, ${reads} connections`);

    // The process-wide CustomObjectsApi: made once for this KUBECONFIG, and made again for another.
    t.equal(customObjectsApi(), customObjectsApi(), "one client per KUBECONFIG");
    const before = customObjectsApi();
    const kubeconfig = process.env.KUBECONFIG!;
    const copy = join(t.testdirName, "kubeconfig");
    mkdirSync(t.testdirName, { recursive: true });
    copyFileSync(kubeconfig, copy);
    process.env.KUBECONFIG = copy;
    t.not(customObjectsApi(), before, "another KUBECONFIG: another client");
    process.env.KUBECONFIG = kubeconfig;
  });

  t.test(
    "DataplaneConfig applies and agent acknowledgements: server-side apply on kept-alive connections",
    async t => {
      await startApiServer(t, binaries);
      const opened = countConnections(t);
      const config = (generation: number, extra: Record<string, unknown> = {}) => ({
        apiVersion: "blixt.dev/v1alpha1",
        kind: "DataplaneConfig",
        metadata: { namespace: "default", name: "web" },
        spec: { gatewayName: "web", gatewayGeneration: generation, ...extra },
      });
      const kind = KINDS.DataplaneConfig.gvk;
      const apply = (object: object) =>
        applyCustomObject(kind, object, { fieldManager: "pepr", force: true });

      await apply(config(1)); // the first request of this API server's client: a connection
      opened.count = 0;
      let stored: DataplaneConfig | undefined;
      for (let g = 2; g <= 11; g++) stored = (await apply(config(g))) as DataplaneConfig;
      t.equal(opened.count, 0, "ten applies one after another: no new connection");
      t.equal(stored?.spec?.gatewayGeneration, 11, "the object as stored comes back");
      t.equal(stored?.metadata?.generation, 11, "each apply changed the spec");
      t.same(
        stored?.metadata?.managedFields?.map((f: { manager?: string; operation?: string }) => [
          f.manager,
          f.operation,
        ]),
        [["pepr", "Apply"]],
        "spec is the field manager's that wrote it before: pepr, by Apply",
      );

      // Two nodes' acknowledgements: each its own entry, neither removes the other's.
      for (const node of ["node-a", "node-b"])
        await acknowledge(stored!, {
          name: node,
          observedGeneration: 11,
          mode: "tc",
          lastTransitionTime: "2026-01-01T00:00:00.000Z",
        });
      t.equal(opened.count, 0, "the acknowledgements use the same connection");
      const acked = (await customObjectsApi().getNamespacedCustomObject({
        group: kind.group,
        version: kind.version ?? "",
        plural: kind.plural ?? "",
        namespace: "default",
        name: "web",
      })) as DataplaneConfig;
      t.same(
        acked.status?.nodes?.map(n => [n.name, n.observedGeneration]),
        [
          ["node-a", 11],
          ["node-b", 11],
        ],
        "both nodes' entries are there",
      );

      // A config deleted meanwhile: the agent's loop reads the 404 off the error and moves on.
      const missing = await acknowledge(
        { ...stored!, metadata: { namespace: "default", name: "gone" } } as DataplaneConfig,
        {
          name: "node-a",
          observedGeneration: 1,
          mode: "tc",
          lastTransitionTime: "2026-01-01T00:00:00.000Z",
        },
      ).then(
        () => undefined,
        (error: unknown) => error as Error & { status?: number },
      );
      t.equal(missing?.status, 404, "acknowledging a config that is gone: status 404");
      t.match(
        missing?.message,
        /^DataplaneConfig default\/gone: writing status\.nodes\[node-a\] failed: 404 /,
        "the error names the config and the node's entry",
      );

      // Strict field validation, as kubernetes-fluent-client's Apply asked for.
      const refused = await apply(config(12, { unknownField: true })).then(
        () => undefined,
        (error: unknown) => error as { status?: number; data?: { message?: string } },
      );
      // (The API server answers a server-side apply naming a field the schema lacks with a 500.)
      t.ok(
        (refused?.status ?? 0) >= 400,
        `an unknown field is refused, not dropped (${refused?.status})`,
      );
      t.match(refused?.data?.message, /unknownField/, "the API server's message names the field");
    },
  );

  t.test("node Lease renewals: server-side apply on a kept-alive connection", async t => {
    await startApiServer(t, binaries);
    const opened = countConnections(t);
    const renewals = 10;
    await applyLease(leaseObject("default", "node-a", 2, new Date()), 2_000); // creates it
    opened.count = 0;
    let last = new Date();
    for (let i = 0; i < renewals; i++) {
      last = new Date(Date.now() + (i + 1) * 1000);
      await applyLease(leaseObject("default", "node-a", 2, last), 2_000);
    }
    t.equal(opened.count, 0, `${renewals} renewals one after another: no new connection`);
    const stored = (await customObjectsApi().getNamespacedCustomObject({
      group: "coordination.k8s.io",
      version: "v1",
      plural: "leases",
      namespace: "default",
      name: "blixt-agent-node-a",
    })) as {
      spec?: { renewTime?: string; holderIdentity?: string; leaseDurationSeconds?: number };
      metadata?: { managedFields?: { manager?: string; operation?: string }[] };
    };
    t.equal(
      Date.parse(stored.spec?.renewTime ?? ""),
      last.getTime(),
      "the last renewal's time is stored",
    );
    t.equal(stored.spec?.leaseDurationSeconds, 2);
    t.same(
      stored.metadata?.managedFields?.map(f => [f.manager, f.operation]),
      [["pepr", "Apply"]],
      "one owner, the field manager kubernetes-fluent-client's Apply used",
    );
    t.not(
      customObjectsApi(2_000),
      customObjectsApi(),
      "renewals have a client of their own timeout",
    );
  });
}
