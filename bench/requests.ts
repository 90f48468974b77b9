// SPDX-License-Identifier: Apache-2.0
/**
 * What one request to the API server costs through each client the controller can use, side by
 * side against a real kube-apiserver (and etcd) started here (test/lib/apiserver.ts):
 * kubernetes-fluent-client's `K8s()`, @kubernetes/client-node's `makeApiClient` (both give
 * every request a new agent, so a new TCP connection and TLS handshake) and the keep-alive
 * client of capabilities/kube-connections.ts. Each round reads a TCPRoute N times, one after
 * another, with each client in turn; the table gives the median of the rounds: wall time per
 * request, this process's CPU time per request and the API server's. It prints the block and
 * writes it into bench/REPORT.md (between the api-requests markers).
 *
 *   node --import=tsx bench/requests.ts [requests per round] [rounds] [report file]
 */
import { cpus } from "node:os";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import { K8s } from "kubernetes-fluent-client";
import { KINDS } from "../capabilities/gateway/kinds.js";
import { keepAliveClient } from "../capabilities/kube-connections.js";
import { API_REQUESTS_BEGIN, API_REQUESTS_END, withCarriedBlock } from "./report.js";
import { findBinaries, startApiServer } from "../test/lib/apiserver.js";

const requests = Number(process.argv[2] ?? 200);
const rounds = Number(process.argv[3] ?? 5);
const reportFile = process.argv[4] ?? "bench/REPORT.md";
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
    const results = new Map<string, { wall: number[]; cpu: number[]; server: number[] }>(
      clients.map(([name]) => [name, { wall: [], cpu: [], server: [] }]),
    );
    for (const [, get] of clients) await get(); // warm: discovery, JIT
    for (let round = 0; round < rounds; round++) {
      for (const [name, get] of clients) {
        const cpu = process.cpuUsage();
        const server0 = serverCpu();
        const started = performance.now();
        for (let i = 0; i < requests; i++) await get();
        const wall = performance.now() - started;
        const used = process.cpuUsage(cpu);
        const r = results.get(name)!;
        r.wall.push(wall / requests);
        r.cpu.push((used.user + used.system) / 1000 / requests);
        r.server.push(((serverCpu() - server0) * 1000) / requests);
      }
      process.stderr.write(`round ${round + 1} of ${rounds} done\n`);
    }
    const row = (name: string) => {
      const r = results.get(name)!;
      return { wall: median(r.wall), cpu: median(r.cpu), server: median(r.server) };
    };
    const [fluent, , kept] = clients.map(([name]) => row(name));
    const block = [
      BEGIN,
      "### API requests: a new connection each, or kept alive",
      "",
      `Written by \`bench/requests.ts\` (${new Date().toISOString()}; ${cpus().length} CPUs). A real`,
      "kube-apiserver and etcd started for the run; the same TCPRoute read one request after another",
      `through each client in turn, ${requests} reads a round, ${rounds} rounds; median of the rounds.`,
      "kubernetes-fluent-client (which Pepr's watches and most of blixt's writes use) and",
      "client-node's `makeApiClient` give every request an agent of its own: a TCP connection and a",
      "TLS handshake each. The controller writes route statuses through the keep-alive client.",
      "",
      "| client | ms per request | client CPU ms per request | API server CPU ms per request |",
      "| --- | --- | --- | --- |",
      ...clients.map(([name]) => {
        const r = row(name);
        return `| ${name} | ${r.wall.toFixed(2)} | ${r.cpu.toFixed(2)} | ${r.server.toFixed(2)} |`;
      }),
      "",
      `- Kept alive, a request takes ${(kept.wall / fluent.wall).toFixed(2)}× the time of kubernetes-fluent-client's, ${(kept.cpu / fluent.cpu).toFixed(2)}× its client CPU and ${(kept.server / fluent.server).toFixed(2)}× its API server CPU (medians of this run).`,
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
