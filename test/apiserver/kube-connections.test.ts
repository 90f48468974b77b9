// SPDX-License-Identifier: Apache-2.0
// The controller's keep-alive API clients (capabilities/kube-connections.ts) against a real
// kube-apiserver: requests reuse one connection, where the library's own client opens one per
// request, and the answers are the same.
import t from "tap";
import https from "node:https";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { customObjectsApi, keepAliveClient } from "../../capabilities/kube-connections";
import { findBinaries, startApiServer } from "../lib/apiserver";

const binaries = findBinaries();
if ("missing" in binaries) {
  t.fail(`the real kube-apiserver is needed: ${binaries.missing}`);
} else {
  t.test("requests share keep-alive connections; the library's client opens one each", async t => {
    await startApiServer(t, binaries);
    // Every TLS connection an agent opens, whichever agent it is.
    let connections = 0;
    const createConnection = https.Agent.prototype.createConnection;
    https.Agent.prototype.createConnection = function (this: https.Agent, ...args: unknown[]) {
      connections++;
      return (createConnection as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof createConnection;
    t.teardown(() => {
      https.Agent.prototype.createConnection = createConnection;
    });

    const config = new KubeConfig();
    config.loadFromDefault();
    const reads = 20;

    const { client, authentication } = keepAliveClient(config, CoreV1Api);
    connections = 0;
    const names: (string | undefined)[] = [];
    for (let i = 0; i < reads; i++)
      names.push((await client.readNamespace({ name: "default" })).metadata?.name);
    t.same(names, Array(reads).fill("default"), "every read answered");
    t.equal(connections, 1, `${reads} reads one after another: one connection`);
    connections = 0;
    await Promise.all(
      Array.from({ length: 8 }, () => client.readNamespace({ name: "kube-system" })),
    );
    t.ok(connections <= 8, `8 reads at once: at most 8 connections (${connections})`);
    t.equal(authentication.agentsMade, 1, "one agent for one set of TLS options");

    const perRequest = config.makeApiClient(CoreV1Api);
    connections = 0;
    for (let i = 0; i < reads; i++) await perRequest.readNamespace({ name: "default" });
    t.equal(connections, reads, `the library's client: ${reads} reads, ${reads} connections`);

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
}
