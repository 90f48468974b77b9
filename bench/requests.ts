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
 * server-side apply (to the chart's CRD as it was, listener items described field by field;
 * to the CRD before that, its listeners a list map; and to the chart's CRD now, listener items
 * without a schema) and JSON patch, and the same bytes as one string of a ConfigMap (what the
 * API server's share costs without the custom resource's structure); then a node agent's
 * acknowledgement of such a write (its status entry) under both schemas; a quarter as many
 * writes a round as reads. It prints the block and writes it into bench/REPORT.md (between the
 * api-requests markers).
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
import { ackRequest } from "../capabilities/agent/kube.js";
import type { DataplaneConfig } from "../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { fanoutDataplaneConfigs, LISTENERS_PER_GATEWAY } from "./fanout-shape.js";
import { API_REQUESTS_BEGIN, API_REQUESTS_END, withCarriedBlock } from "./report.js";
import { findBinaries, startApiServer } from "../test/lib/apiserver.js";

const requests = Number(process.argv[2] ?? 200);
const rounds = Number(process.argv[3] ?? 5);
const reportFile = process.argv[4] ?? "bench/REPORT.md";
const writeCount = Math.max(1, Math.round(requests / 4));
const LIST_MAP_KIND = "ListMapDataplaneConfig";
const LIST_MAP_PLURAL = "listmapdataplaneconfigs";
const DESCRIBED_KIND = "DescribedDataplaneConfig";
const DESCRIBED_PLURAL = "describeddataplaneconfigs";
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
    /** A server-side apply of the next table to the kind `kindName` (its `plural`), kept alive. */
    const applyTo = (plural: string, kindName: string) => () =>
      keepAlive.patchNamespacedCustomObject(
        {
          ...customObject("apply"),
          plural,
          body: { ...named("apply", written++), kind: kindName },
          fieldManager: "pepr",
          force: true,
        },
        setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
      );
    const writers: [string, () => Promise<unknown>][] = [
      [
        "kubernetes-fluent-client K8s().Apply (server-side apply, force)",
        () =>
          K8s(KINDS.DataplaneConfig.model).Apply(named("fluent", written++) as never, {
            force: true,
          }),
      ],
      [
        "keep-alive client, server-side apply (force), the chart's CRD (listener items without a schema)",
        applyTo(dpPlural ?? "", "DataplaneConfig"),
      ],
      [
        "keep-alive client, server-side apply (force), listeners a list map (the CRD two steps before)",
        applyTo(LIST_MAP_PLURAL, LIST_MAP_KIND),
      ],
      [
        "keep-alive client, server-side apply (force), listener items described field by field (the CRD before)",
        applyTo(DESCRIBED_PLURAL, DESCRIBED_KIND),
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
    // Two CRDs the chart had before, each a kind of its own, from the full schema
    // (api/dataplaneconfig.yaml): as it was until the listeners' items were left without a
    // schema (they are described field by field), and before spec.listeners became atomic (a
    // list map).
    const variantCrd = async (
      kindName: string,
      plural: string,
      change: (listeners: Record<string, unknown>) => void,
    ) => {
      const crd = parse(readFileSync("api/dataplaneconfig.yaml", "utf8"));
      crd.metadata.name = `${plural}.${dpGroup}`;
      crd.spec.names = {
        kind: kindName,
        listKind: `${kindName}List`,
        plural,
        singular: kindName.toLowerCase(),
      };
      change(crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.listeners);
      await K8s(kind.CustomResourceDefinition).Apply(crd, { force: true });
    };
    await variantCrd(LIST_MAP_KIND, LIST_MAP_PLURAL, listeners => {
      listeners["x-kubernetes-list-type"] = "map";
      listeners["x-kubernetes-list-map-keys"] = ["port", "protocol"];
    });
    await variantCrd(DESCRIBED_KIND, DESCRIBED_PLURAL, () => {});
    for (let tries = 0; ; tries++) {
      try {
        await writers[2][1](); // served once the new kinds' storage is ready
        await writers[3][1]();
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

    // What each node agent writes back for every one of those: its status entry, server-side
    // applied to the status subresource (capabilities/agent/kube.ts ackRequest), the generation
    // alternating so every write changes it.
    let acked = 0;
    const ack = (plural: string, kindName: string) => () => {
      const generation = 1 + (acked++ % 2);
      const { fieldManager, body } = ackRequest(named("apply", 0) as DataplaneConfig, {
        name: "bench-node",
        observedGeneration: generation,
        mode: "tc",
        lastTransitionTime: `2026-01-01T00:00:0${generation}Z`,
      });
      return keepAlive.patchNamespacedCustomObjectStatus(
        {
          ...customObject("apply"),
          plural,
          body: { ...body, kind: kindName },
          fieldManager,
          force: true,
        },
        setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
      );
    };
    const ackers: [string, () => Promise<unknown>][] = [
      [
        "status server-side apply of one node's entry, the chart's CRD",
        ack(dpPlural ?? "", "DataplaneConfig"),
      ],
      [
        "the same, listener items described field by field (the CRD before)",
        ack(DESCRIBED_PLURAL, DESCRIBED_KIND),
      ],
    ];
    for (const [, write] of ackers) await write();
    const acks = await measureRounds(ackers, writeCount, rounds, serverCpu, "acknowledgements");

    const row = (results: Results, name: string) => {
      const r = results.get(name)!;
      return { wall: median(r.wall), cpu: median(r.cpu), server: median(r.server) };
    };
    const [fluent, , kept] = clients.map(([name]) => row(reads, name));
    const [fluentWrite, applyWrite, listMapWrite, describedWrite, patchWrite, configMapWrite] =
      writers.map(([name]) => row(writes, name));
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
      "agent its acknowledgements and its Lease renewals, through the keep-alive client.",
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
      `- Server-side apply kept alive, to the chart's CRD: ${(applyWrite.wall / fluentWrite.wall).toFixed(2)}× the time of kubernetes-fluent-client's Apply, ${(applyWrite.cpu / fluentWrite.cpu).toFixed(2)}× its client CPU, ${(applyWrite.server / fluentWrite.server).toFixed(2)}× its API server CPU. To the CRD before, its listener items described field by field, the same apply cost the API server ${(describedWrite.server / applyWrite.server).toFixed(2)}× the CPU, and to the one before that, listeners a list map, ${(listMapWrite.server / applyWrite.server).toFixed(2)}×. A JSON patch of the spec kept alive cost it ${(patchWrite.server / applyWrite.server).toFixed(2)}× the CPU of the apply; the same bytes as a ConfigMap's string ${(configMapWrite.server / applyWrite.server).toFixed(2)}× (medians of this run).`,
      "",
      "What a node agent writes back for each of those writes (its acknowledgement), kept alive:",
      "",
      "| acknowledgement | ms per write | client CPU ms per write | API server CPU ms per write |",
      "| --- | --- | --- | --- |",
      ...ackers.map(([name]) => line(acks, name)),
      "",
      `- To the CRD before, an acknowledgement cost the API server ${(row(acks, ackers[1][0]).server / row(acks, ackers[0][0]).server).toFixed(2)}× the CPU of one to the chart's (medians of this run).`,
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
