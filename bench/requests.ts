// SPDX-License-Identifier: Apache-2.0
/**
 * What one request to the API server costs through each client the controller can use, side by
 * side against a real kube-apiserver (and etcd) started here (test/lib/apiserver.ts):
 * kubernetes-fluent-client's `K8s()`, @kubernetes/client-node's `makeApiClient` (both give
 * every request a new agent, so a new TCP connection and TLS handshake) and the keep-alive
 * client of capabilities/kube-connections.ts. Each round reads a TCPRoute N times, one after
 * another, with each client in turn; the table gives the median of the rounds: wall time per
 * request, this process's CPU time per request and the API server's. Then the same for the
 * write an EndpointSlice change makes per Gateway of the fanout shape (bench/fanout-shape.ts):
 * its DataplaneConfig, through kubernetes-fluent-client's Apply, the keep-alive client's
 * server-side apply (what blixt sends now; and to the CRD as it was, its listeners a list map)
 * and JSON patch, and the same bytes as one string of a
 * ConfigMap (what the API server's share costs without the custom resource's structure), a
 * quarter as many writes a round as reads. It prints the block and writes it into
 * bench/REPORT.md (between the api-requests markers).
 *
 *   node --import=tsx bench/requests.ts [requests per round] [rounds] [report file]
 */
import { cpus } from "node:os";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { K8s, kind, type KubernetesObject } from "kubernetes-fluent-client";
import { parse } from "yaml";
import { KINDS } from "../capabilities/gateway/kinds.js";
import { keepAliveClient } from "../capabilities/kube-connections.js";
import { fanoutDataplaneConfigs, LISTENERS_PER_GATEWAY } from "./fanout-shape.js";
import { API_REQUESTS_BEGIN, API_REQUESTS_END, withCarriedBlock } from "./report.js";
import { findBinaries, startApiServer } from "../test/lib/apiserver.js";

const requests = Number(process.argv[2] ?? 200);
const rounds = Number(process.argv[3] ?? 5);
const reportFile = process.argv[4] ?? "bench/REPORT.md";
const writeCount = Math.max(1, Math.round(requests / 4));
const LIST_MAP_KIND = "ListMapDataplaneConfig";
const LIST_MAP_PLURAL = "listmapdataplaneconfigs";
const BEGIN = API_REQUESTS_BEGIN;
const END = API_REQUESTS_END;

/** CPU seconds (user + system) of the process listening as the API server on `port`. */
function apiServerCpu(port: number): () => number {
  const pid = readdirSync("/proc").find(p => {
    if (!/^\d+$/.test(p)) return false;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8");
      const args = cmd.split("\0");
      const at = args.indexOf("--secure-port");
      return args[0].endsWith("kube-apiserver") && at >= 0 && args[at + 1] === String(port);
    } catch {
      return false;
    }
  });
  if (!pid) throw new Error(`no kube-apiserver with --secure-port ${port}`);
  const ticks = 100; // USER_HZ on Linux
  return () => {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticks;
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

type Results = Map<string, { wall: number[]; cpu: number[]; server: number[] }>;

/** `perRound` calls of each client in turn, `rounds` times: per call, wall ms, this process's CPU ms, the API server's. */
async function measureRounds(
  clients: [string, () => Promise<unknown>][],
  perRound: number,
  rounds: number,
  serverCpu: () => number,
  what: string,
): Promise<Results> {
  const results: Results = new Map(
    clients.map(([name]) => [name, { wall: [], cpu: [], server: [] }]),
  );
  for (let round = 0; round < rounds; round++) {
    for (const [name, call] of clients) {
      const cpu = process.cpuUsage();
      const server0 = serverCpu();
      const started = performance.now();
      for (let i = 0; i < perRound; i++) await call();
      const wall = performance.now() - started;
      const used = process.cpuUsage(cpu);
      const r = results.get(name)!;
      r.wall.push(wall / perRound);
      r.cpu.push((used.user + used.system) / 1000 / perRound);
      r.server.push(((serverCpu() - server0) * 1000) / perRound);
    }
    process.stderr.write(`${what}: round ${round + 1} of ${rounds} done\n`);
  }
  return results;
}

async function main() {
  const binaries = findBinaries();
  if ("missing" in binaries)
    throw new Error(`the real kube-apiserver is needed: ${binaries.missing}`);
  const teardowns: (() => unknown)[] = [];
  try {
    const server = await startApiServer({ teardown: fn => teardowns.unshift(fn) }, binaries);
    const serverCpu = apiServerCpu(server.port);
    const { group, version, plural } = KINDS.TCPRoute.gvk;
    const route = {
      apiVersion: `${group}/${version}`,
      kind: "TCPRoute",
      metadata: { namespace: "default", name: "bench" },
      spec: { parentRefs: [{ name: "g" }], rules: [{ backendRefs: [{ name: "s", port: 80 }] }] },
    };
    await K8s(KINDS.TCPRoute.model).Apply(route as never);

    const config = new KubeConfig();
    config.loadFromDefault();
    const perRequest = config.makeApiClient(CustomObjectsApi);
    const keepAlive = keepAliveClient(config, CustomObjectsApi).client;
    const core = keepAliveClient(config, CoreV1Api).client;
    const read = {
      group,
      version: version ?? "",
      namespace: "default",
      plural: plural ?? "",
      name: "bench",
    };
    const clients: [string, () => Promise<unknown>][] = [
      [
        "kubernetes-fluent-client K8s().Get",
        () => K8s(KINDS.TCPRoute.model).InNamespace("default").Get("bench"),
      ],
      ["client-node makeApiClient", () => perRequest.getNamespacedCustomObject(read)],
      ["keep-alive client (kube-connections.ts)", () => keepAlive.getNamespacedCustomObject(read)],
    ];
    for (const [, get] of clients) await get(); // warm: discovery, JIT
    const reads = await measureRounds(clients, requests, rounds, serverCpu, "reads");

    // What an EndpointSlice change behind the fanout shape writes: one Gateway's
    // DataplaneConfig (50 listeners), its backends alternating between two pods and three.
    const configs = await fanoutDataplaneConfigs(LISTENERS_PER_GATEWAY);
    const configBytes = JSON.stringify(configs[1]).length;
    const { group: dpGroup, version: dpVersion, plural: dpPlural } = KINDS.DataplaneConfig.gvk;
    const named = (name: string, i: number) => {
      const config = structuredClone(configs[i % 2]) as KubernetesObject & { spec?: unknown };
      config.metadata = { name, namespace: "default", labels: config.metadata?.labels };
      return config as KubernetesObject & { spec: unknown };
    };
    const customObject = (name: string) => ({
      group: dpGroup,
      version: dpVersion ?? "",
      namespace: "default",
      plural: dpPlural ?? "",
      name,
    });
    let written = 0;
    const writers: [string, () => Promise<unknown>][] = [
      [
        "kubernetes-fluent-client K8s().Apply (server-side apply, force)",
        () =>
          K8s(KINDS.DataplaneConfig.model).Apply(named("fluent", written++) as never, {
            force: true,
          }),
      ],
      [
        "keep-alive client, server-side apply (force)",
        () =>
          keepAlive.patchNamespacedCustomObject(
            {
              ...customObject("apply"),
              body: named("apply", written++),
              fieldManager: "pepr",
              force: true,
            },
            setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
          ),
      ],
      [
        "keep-alive client, server-side apply (force), listeners a list map (the CRD before)",
        () =>
          keepAlive.patchNamespacedCustomObject(
            {
              ...customObject("apply"),
              plural: LIST_MAP_PLURAL,
              body: { ...named("apply", written++), kind: LIST_MAP_KIND },
              fieldManager: "pepr",
              force: true,
            },
            setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
          ),
      ],
      [
        "keep-alive client, JSON patch replacing spec",
        () =>
          keepAlive.patchNamespacedCustomObject(
            {
              ...customObject("replace"),
              body: [{ op: "replace", path: "/spec", value: named("replace", written++).spec }],
              fieldManager: "pepr",
            },
            setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
          ),
      ],
      [
        "keep-alive client, the same spec as one string of a ConfigMap, JSON patch",
        () =>
          core.patchNamespacedConfigMap(
            {
              name: "bench",
              namespace: "default",
              body: [
                {
                  op: "replace",
                  path: "/data/spec",
                  value: JSON.stringify(named("bench", written++).spec),
                },
              ],
              fieldManager: "pepr",
            },
            setHeaderOptions("Content-Type", PatchStrategy.JsonPatch),
          ),
      ],
    ];
    await core.createNamespacedConfigMap({
      namespace: "default",
      body: { metadata: { name: "bench" }, data: { spec: JSON.stringify(named("bench", 0).spec) } },
    });
    // The chart's CRD as it was before spec.listeners became atomic, as a kind of its own.
    const listMapCrd = parse(readFileSync("charts/blixt/crds/dataplaneconfig.yaml", "utf8"));
    listMapCrd.metadata.name = `${LIST_MAP_PLURAL}.${dpGroup}`;
    listMapCrd.spec.names = {
      kind: LIST_MAP_KIND,
      listKind: `${LIST_MAP_KIND}List`,
      plural: LIST_MAP_PLURAL,
      singular: LIST_MAP_KIND.toLowerCase(),
    };
    delete listMapCrd.spec.names.shortNames;
    const listeners =
      listMapCrd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.listeners;
    listeners["x-kubernetes-list-type"] = "map";
    listeners["x-kubernetes-list-map-keys"] = ["port", "protocol"];
    await K8s(kind.CustomResourceDefinition).Apply(listMapCrd, { force: true });
    for (let tries = 0; ; tries++) {
      try {
        await writers[2][1](); // served once the new kind's storage is ready
        break;
      } catch (error) {
        if (tries >= 120) throw error;
        await new Promise(resolve => setTimeout(resolve, 250));
      }
    }
    // Each writer's object exists before the rounds: every write is an update.
    await K8s(KINDS.DataplaneConfig.model).Apply(named("fluent", 0) as never, { force: true });
    await K8s(KINDS.DataplaneConfig.model).Apply(named("apply", 0) as never, { force: true });
    await K8s(KINDS.DataplaneConfig.model).Apply(named("replace", 0) as never, { force: true });
    for (const [, write] of writers) await write();
    const writes = await measureRounds(writers, writeCount, rounds, serverCpu, "writes");

    const row = (results: Results, name: string) => {
      const r = results.get(name)!;
      return { wall: median(r.wall), cpu: median(r.cpu), server: median(r.server) };
    };
    const [fluent, , kept] = clients.map(([name]) => row(reads, name));
    const [fluentWrite, applyWrite, listMapWrite, patchWrite, configMapWrite] = writers.map(
      ([name]) => row(writes, name),
    );
    const line = (results: Results, name: string) => {
      const r = row(results, name);
      return `| ${name} | ${r.wall.toFixed(2)} | ${r.cpu.toFixed(2)} | ${r.server.toFixed(2)} |`;
    };
    const block = [
      BEGIN,
      "### API requests: a new connection each, or kept alive",
      "",
      `Written by \`bench/requests.ts\` (${new Date().toISOString()}; ${cpus().length} CPUs). A real`,
      "kube-apiserver and etcd started for the run; the same TCPRoute read one request after another",
      `through each client in turn, ${requests} reads a round, ${rounds} rounds; median of the rounds.`,
      "kubernetes-fluent-client (which Pepr's watches and most of blixt's writes use) and",
      "client-node's `makeApiClient` give every request an agent of its own: a TCP connection and a",
      "TLS handshake each. The controller writes route statuses and DataplaneConfigs, and each node",
      "agent its acknowledgements, through the keep-alive client.",
      "",
      "| client | ms per request | client CPU ms per request | API server CPU ms per request |",
      "| --- | --- | --- | --- |",
      ...clients.map(([name]) => line(reads, name)),
      "",
      `- Kept alive, a request takes ${(kept.wall / fluent.wall).toFixed(2)}× the time of kubernetes-fluent-client's, ${(kept.cpu / fluent.cpu).toFixed(2)}× its client CPU and ${(kept.server / fluent.server).toFixed(2)}× its API server CPU (medians of this run).`,
      "",
      `The write an EndpointSlice change behind the fanout shape makes (bench/fanout-shape.ts): one`,
      `Gateway's DataplaneConfig, ${LISTENERS_PER_GATEWAY} listeners, ${configBytes} bytes of JSON, its backends alternating`,
      `between two pods and three, ${writeCount} writes a round one after another, each client its own object.`,
      "",
      "| client, write | ms per write | client CPU ms per write | API server CPU ms per write |",
      "| --- | --- | --- | --- |",
      ...writers.map(([name]) => line(writes, name)),
      "",
      `- Server-side apply kept alive: ${(applyWrite.wall / fluentWrite.wall).toFixed(2)}× the time of kubernetes-fluent-client's, ${(applyWrite.cpu / fluentWrite.cpu).toFixed(2)}× its client CPU, ${(applyWrite.server / fluentWrite.server).toFixed(2)}× its API server CPU; a JSON patch of the spec kept alive: ${(patchWrite.wall / fluentWrite.wall).toFixed(2)}×, ${(patchWrite.cpu / fluentWrite.cpu).toFixed(2)}×, ${(patchWrite.server / fluentWrite.server).toFixed(2)}×; with listeners a list map (the CRD before) a server-side apply cost the API server ${(listMapWrite.server / applyWrite.server).toFixed(2)}× the CPU of one to the atomic list; the same bytes as a ConfigMap's string cost it ${(configMapWrite.server / patchWrite.server).toFixed(2)}× the CPU of the DataplaneConfig's JSON patch (medians of this run).`,
      END,
    ].join("\n");
    console.log(block);
    const report = existsSync(reportFile) ? readFileSync(reportFile, "utf8") : "";
    writeFileSync(reportFile, withCarriedBlock(report, [BEGIN, END], block));
    process.stderr.write(`requests: wrote ${reportFile}\n`);
  } finally {
    for (const fn of teardowns) await fn();
  }
}

await main();
