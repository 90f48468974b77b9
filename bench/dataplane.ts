// SPDX-License-Identifier: Apache-2.0
// The dataplane benchmark: the same lab, the same client and the same backends, measured side by
// side through six paths (see PATHS in bench/report.ts), each measurement repeated; medians,
// spreads, goals and charts go into bench/REPORT.md and bench/*.svg (bench/report.ts).
//
// Per path: TCP throughput with one and four streams (iperf3), TCP connection rate (wrk against
// nginx on the backends), UDP packet rate (iperf3), round-trip latency p50/p99 over TCP and UDP
// (sockperf), and the CPU time the throughput runs cost. Plus
// ns/packet of the ingress programs (BPF_PROG_TEST_RUN) and the node agent's apply time.
//
//   npx tsx bench/dataplane.ts [--smoke] [--out FILE]
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { cpus, hostname, loadavg, tmpdir, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { execa } from "execa";
import { Dataplane } from "../capabilities/dataplane/dataplane.js";
import { progRunMany } from "../capabilities/dataplane/bpftool.js";
import { Lab } from "../test/lib/lab.js";
import { ETH_P_IPV6, TCP_ACK, TCP_SYN, nonIpFrame, tcpFrame } from "../test/lib/packet.js";
import { applyTimes } from "./apply.js";
import {
  PATHS,
  UDP_PATHS,
  e2eBlock,
  emptyResults,
  fmt,
  median,
  ONE_LOOKUP_PROTOCOL,
  oneLookupLabel,
  renderCharts,
  renderReport,
  type Path,
  type Results,
  type Series,
  type Settings,
} from "./report.js";

const started = Date.now();
const progress = (line: string) =>
  console.error(`bench [${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}`);

export async function machine(): Promise<string[]> {
  const kernel = (await execa("uname", ["-r"])).stdout.trim();
  const os = (await execa("sh", ["-c", ". /etc/os-release && echo $PRETTY_NAME"])).stdout.trim();
  const tool = async (cmd: string, args: string[]) => {
    const r = await execa(cmd, args, { reject: false });
    return (r.stdout || r.stderr).split("\n")[0].trim();
  };
  return [
    `${os}, kernel ${kernel}, host ${hostname()}`,
    `${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    `load average when the run started: ${loadavg()
      .map(l => l.toFixed(1))
      .join(", ")} (other work on the machine skews every figure)`,
    `${await tool("iperf3", ["--version"])}; ${await tool("wrk", ["--version"])}; ${await tool("sockperf", ["--version"])}; ${await tool("haproxy", ["-v"])}; ${await tool("nginx", ["-v"])}; ${await tool("nft", ["--version"])}; Node ${process.version}`,
    `run at ${new Date().toISOString()}`,
  ];
}

/** Runs `run` `times` times; each run gives the figures named in `keys`, each becomes a Series. */
async function repeat<K extends string>(
  times: number,
  what: string,
  keys: readonly K[],
  run: () => Promise<Record<K, number>>,
): Promise<Record<K, Series>> {
  const out = Object.fromEntries(keys.map(k => [k, { samples: [] as number[] }])) as Record<
    K,
    Series
  >;
  for (let i = 0; i < times; i++) {
    try {
      const figures = await run();
      for (const k of keys) out[k].samples.push(figures[k]);
    } catch (err) {
      const message = (err instanceof Error ? err.message : String(err))
        .split("\n")[0]
        .slice(0, 160);
      progress(`${what}: run ${i + 1} failed: ${message}`);
      for (const k of keys) out[k].failure = message;
      return out;
    }
  }
  progress(
    `${what}: ${keys.map(k => `${k} ${out[k].samples.map(x => fmt(x, 2)).join(", ")}`).join("; ")}`,
  );
  return out;
}

/**
 * Figures gathered a sample at a time, across rounds: `take(what, keys, run)` runs `run` once and
 * adds its figures to the series named `what`, which it returns. A figure that failed once is
 * not measured again (its series keeps the failure, which the report shows).
 */
export function sampler() {
  const all = new Map<string, Series>();
  return async function take<K extends string>(
    what: string,
    keys: readonly K[],
    run: () => Promise<Record<K, number>>,
  ): Promise<Record<K, Series>> {
    const series = Object.fromEntries(
      keys.map(k => {
        const key = `${what}\u0000${k}`;
        if (!all.has(key)) all.set(key, { samples: [] });
        return [k, all.get(key)!];
      }),
    ) as Record<K, Series>;
    if (keys.some(k => series[k].failure)) return series;
    try {
      const figures = await run();
      for (const k of keys) series[k].samples.push(figures[k]);
      progress(`${what}: ${keys.map(k => `${k} ${fmt(figures[k], 2)}`).join("; ")}`);
    } catch (err) {
      const message = (err instanceof Error ? err.message : String(err))
        .split("\n")[0]
        .slice(0, 160);
      progress(`${what}: failed: ${message}`);
      for (const k of keys) series[k].failure = message;
    }
    return series;
  };
}

async function repeatOne(times: number, what: string, run: () => Promise<number>): Promise<Series> {
  return (await repeat(times, what, ["value"], async () => ({ value: await run() }))).value;
}

async function nsPerPacket(settings: Settings): Promise<Record<string, Series>> {
  const dp = new Dataplane({ pinDir: `/sys/fs/bpf/blixt-bench-prog-${process.pid}` });
  try {
    await dp.load();
    const vip = "198.51.100.1";
    const client = "203.0.113.9";
    await dp.setService({
      vip,
      port: 80,
      proto: "tcp",
      backends: [1, 2, 3].map(i => ({ ip: `192.0.2.${i}`, port: 8080, weight: i })),
      rejectWeight: 0,
    });
    // BPF_PROG_TEST_RUN with repeat runs the program again on its own output, so after one DNAT
    // the packet no longer goes to the VIP. A service whose only backend is the VIP:port itself
    // rewrites the packet to the same bytes: every repetition is a full conntrack hit + DNAT.
    const selfVip = "198.51.100.2";
    await dp.setService({
      vip: selfVip,
      port: 80,
      proto: "tcp",
      backends: [{ ip: selfVip, port: 80, weight: 1 }],
      rejectWeight: 0,
    });
    const out: Record<string, Series> = {};
    let nextPort = 1024;
    for (const prog of ["xdp", "tc"] as const) {
      const pin = dp.progPin(prog === "xdp" ? "blixt_xdp_ingress" : "blixt_tc_ingress");
      const established = tcpFrame({
        src: client,
        dst: selfVip,
        sport: 999,
        dport: 80,
        flags: TCP_ACK,
      });
      await progRunMany(pin, [
        tcpFrame({ src: client, dst: selfVip, sport: 999, dport: 80, flags: TCP_SYN }),
      ]);
      // The floor: a frame the program gives up on first (not IPv4, not ARP), so what is left of
      // the figure is BPF_PROG_TEST_RUN's own per-repetition cost, measured the same way.
      out[`${prog} floor: an IPv6 frame, passed at once (repeat ${settings.progRuns * 50})`] =
        await repeatOne(settings.repeats, `${prog} floor ns/packet`, async () => {
          const [r] = await progRunMany(pin, [nonIpFrame(ETH_P_IPV6, 74)], {
            repeat: settings.progRuns * 50,
          });
          return r.duration;
        });
      // One hash lookup: an IPv4 frame of a protocol blixt does not handle, to no Gateway address,
      // costs the program its parse and one blixt_addrs lookup (a miss) before it is passed
      // (XDP_PASS 2, TC_ACT_OK 0); any other verdict means the decision changed, not the cost.
      const oneLookup = tcpFrame({
        src: client,
        dst: "192.0.2.200",
        sport: 999,
        dport: 80,
        protocol: ONE_LOOKUP_PROTOCOL,
      });
      out[oneLookupLabel(prog, settings.progRuns * 50)] = await repeatOne(
        settings.repeats,
        `${prog} one hash lookup ns/packet`,
        async () => {
          const [r] = await progRunMany(pin, [oneLookup], { repeat: settings.progRuns * 50 });
          if (r.retval !== (prog === "xdp" ? 2 : 0))
            throw new Error(
              `the one-hash-lookup frame got verdict ${r.retval}, not a pass: see bpf/README.md for what the program does with it now`,
            );
          return r.duration;
        },
      );
      out[`${prog} conntrack hit (repeat ${settings.progRuns * 50}, steady state)`] =
        await repeatOne(settings.repeats, `${prog} conntrack hit ns/packet`, async () => {
          const [r] = await progRunMany(pin, [established], { repeat: settings.progRuns * 50 });
          return r.duration;
        });
      // A new flow cannot repeat (the second run is a hit), so each run is its own syscall; the
      // same measure of a hit shows how much of that is per-run overhead.
      out[`${prog} new flow (one run per packet)`] = await repeatOne(
        settings.repeats,
        `${prog} new flow ns/packet`,
        async () => {
          const packets = Array.from({ length: settings.progRuns }, () =>
            tcpFrame({ src: client, dst: vip, sport: nextPort++, dport: 80, flags: TCP_SYN }),
          );
          return median((await progRunMany(pin, packets)).map(r => r.duration));
        },
      );
      out[`${prog} conntrack hit (one run per packet)`] = await repeatOne(
        settings.repeats,
        `${prog} conntrack hit, one run per packet`,
        async () =>
          median(
            (
              await progRunMany(
                pin,
                Array.from({ length: settings.progRuns }, () => established),
              )
            ).map(r => r.duration),
          ),
      );
    }
    return out;
  } finally {
    await dp.unpin();
  }
}

// ---- the paths' configurations ---------------------------------------------------------------------

/** Where each path takes the client's traffic: iperf3 (TCP and UDP), the HTTP servers, sockperf. */
interface Target {
  iperf: [string, number];
  /** one per wrk process (connectionRate) */
  http: [string, number][];
  /** sockperf, TCP and (on UDP paths) UDP on the same port */
  sockperf: [string, number];
}

export const IPERF = 5201;
/** nginx in each backend namespace answering every request with a few bytes and closing: wrk's target. */
export const HTTP = 8082;
/** sockperf servers (TCP and UDP, same port) in each backend namespace: the latency target. */
export const SOCKPERF = 11111;
const HAPROXY = { iperf: 15201, http: 18082, sockperf: 21111 };
const NGINX = { iperf: 25201, http: 28082, sockperf: 31111 };

/**
 * The backends' HTTP server for the connection rate: an nginx worker per CPU, no access
 * log, and `Connection: close` on every reply, so each request is a connection of its own and the
 * server side closes first (its TIME_WAIT stays on the backend, not on the client's ports).
 */
export function backendNginxConfig(ip: string, dir: string, name: string): string {
  return [
    "daemon off;",
    "worker_processes auto;",
    `pid ${dir}/${name}.pid;`,
    "error_log stderr warn;",
    "worker_rlimit_nofile 20000;",
    "events { worker_connections 8000; }",
    "http {",
    "  access_log off;",
    "  keepalive_timeout 0;",
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map(
      t => `  ${t}_temp_path ${dir}/${name}-${t};`,
    ),
    `  server { listen ${ip}:${HTTP} backlog=4096; location / { return 200 "ok\\n"; } }`,
    "}",
    "",
  ].join("\n");
}

function haproxyConfig(lab: Lab): string {
  return [
    "global",
    // haproxy needs about 2 fds a connection and may not raise the fd limit past 20000 here.
    "  maxconn 8000",
    "defaults",
    "  mode tcp",
    "  timeout connect 5s",
    "  timeout client 60s",
    "  timeout server 60s",
    "frontend iperf",
    `  bind ${lab.gatewayIp}:${HAPROXY.iperf}`,
    "  default_backend iperf",
    "backend iperf",
    `  server b0 ${lab.backendIps[0]}:${IPERF}`,
    "frontend sockperf",
    `  bind ${lab.gatewayIp}:${HAPROXY.sockperf}`,
    "  default_backend sockperf",
    "backend sockperf",
    "  balance roundrobin",
    ...lab.backendIps.map((ip, i) => `  server b${i} ${ip}:${SOCKPERF}`),
    "frontend http",
    `  bind ${lab.gatewayIp}:${HAPROXY.http}`,
    "  default_backend http",
    "backend http",
    "  balance roundrobin",
    ...lab.backendIps.map((ip, i) => `  server b${i} ${ip}:${HTTP}`),
    "",
  ].join("\n");
}

function nginxConfig(lab: Lab, modulesPath: string, dir: string): string {
  return [
    `load_module ${modulesPath}/ngx_stream_module.so;`,
    "daemon off;",
    "worker_processes auto;",
    `pid ${dir}/nginx.pid;`,
    "error_log stderr warn;",
    "worker_rlimit_nofile 20000;",
    "events { worker_connections 8000; }",
    "stream {",
    `  upstream http { ${lab.backendIps.map(ip => `server ${ip}:${HTTP};`).join(" ")} }`,
    `  server { listen ${lab.gatewayIp}:${NGINX.http} backlog=4096; proxy_pass http; }`,
    `  upstream sockperf { ${lab.backendIps.map(ip => `server ${ip}:${SOCKPERF};`).join(" ")} }`,
    `  server { listen ${lab.gatewayIp}:${NGINX.sockperf}; proxy_pass sockperf; }`,
    `  server { listen ${lab.gatewayIp}:${NGINX.sockperf} udp; proxy_pass sockperf; }`,
    `  server { listen ${lab.gatewayIp}:${NGINX.iperf}; proxy_pass ${lab.backendIps[0]}:${IPERF}; }`,
    `  server { listen ${lab.gatewayIp}:${NGINX.iperf} udp; proxy_pass ${lab.backendIps[0]}:${IPERF}; }`,
    "}",
    "",
  ].join("\n");
}

const NFT_TABLE = "blixt_bench";

/**
 * What kube-proxy's nftables mode writes for a ClusterIP service, cut to the lab: a prerouting
 * nat chain jumps per VIP:port to a service chain, which picks an endpoint chain through
 * `numgen random mod N` and a verdict map; the endpoint chain DNATs. conntrack does the rest.
 */
function nftRuleset(lab: Lab, vip: string): string {
  const services: {
    name: string;
    proto: "tcp" | "udp";
    port: number;
    endpoints: [string, number][];
  }[] = [
    { name: "iperf_tcp", proto: "tcp", port: IPERF, endpoints: [[lab.backendIps[0], IPERF]] },
    { name: "iperf_udp", proto: "udp", port: IPERF, endpoints: [[lab.backendIps[0], IPERF]] },
    { name: "http", proto: "tcp", port: 82, endpoints: lab.backendIps.map(ip => [ip, HTTP]) },
    {
      name: "sockperf_tcp",
      proto: "tcp",
      port: 83,
      endpoints: lab.backendIps.map(ip => [ip, SOCKPERF]),
    },
    {
      name: "sockperf_udp",
      proto: "udp",
      port: 83,
      endpoints: lab.backendIps.map(ip => [ip, SOCKPERF]),
    },
  ];
  const lines = [`table ip ${NFT_TABLE} {`];
  for (const s of services) {
    const vmap = s.endpoints.map((_, i) => `${i} : goto ep_${s.name}_${i}`).join(", ");
    lines.push(
      `  chain svc_${s.name} {`,
      `    numgen random mod ${s.endpoints.length} vmap { ${vmap} }`,
      "  }",
    );
    s.endpoints.forEach(([ip, port], i) =>
      lines.push(
        `  chain ep_${s.name}_${i} {`,
        `    meta l4proto ${s.proto} dnat to ${ip}:${port}`,
        "  }",
      ),
    );
  }
  lines.push(
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
  );
  for (const s of services)
    lines.push(`    ip daddr ${vip} ${s.proto} dport ${s.port} goto svc_${s.name}`);
  lines.push("  }", "}", "");
  return lines.join("\n");
}

async function nft(lab: Lab, args: string[], input?: string): Promise<void> {
  await execa("nsenter", [`--net=/var/run/netns/${lab.gatewayNs}`, "nft", ...args], { input });
}

// ---- CPU accounting ---------------------------------------------------------------------------------
//
// This kernel accounts CPU time by ticks and without IRQ time accounting: softirq work (veth
// receive, routing, conntrack, XDP and TC programs) is charged to the task it interrupts, which
// on veths is the sending task itself, or to ksoftirqd when it is deferred. So the path's cost is
// the CPU time of the tasks that carry the traffic: iperf3 at both ends (their own figures),
// every process in the gateway namespace (the proxies), and the ksoftirqd threads. Other work on
// the machine is not in it, unlike a /proc/stat total, which it would swamp on two shared cores.

const TICKS_PER_SECOND = 100; // USER_HZ: the unit of /proc/PID/stat

async function taskSeconds(pids: string[]): Promise<number> {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      // Fields after the command (which may hold spaces) start at field 3; utime, stime are 14, 15.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // exited in between
    }
  }
  return ticks / TICKS_PER_SECOND;
}

export async function netnsPids(netns: string): Promise<string[]> {
  return (await execa("ip", ["netns", "pids", netns], { reject: false })).stdout
    .split("\n")
    .filter(Boolean);
}

async function ksoftirqdPids(): Promise<string[]> {
  const pids: string[] = [];
  for (const pid of (await readdir("/proc")).filter(e => /^\d+$/.test(e))) {
    const comm = await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "");
    if (comm.startsWith("ksoftirqd/")) pids.push(pid);
  }
  return pids;
}

interface CpuMeter {
  gatewayNs: string;
  ksoftirqd: string[];
}

/** Runs an iperf3 test and adds to its own CPU figures those of the gateway's processes and ksoftirqd. */
async function metered(
  meter: CpuMeter,
  work: () => Promise<IperfResult>,
): Promise<{ result: IperfResult; cpu: number; gatewayCpu: number }> {
  const gwPids = await netnsPids(meter.gatewayNs);
  const [gw0, soft0] = [await taskSeconds(gwPids), await taskSeconds(meter.ksoftirqd)];
  const result = await work();
  const [gw1, soft1] = [await taskSeconds(gwPids), await taskSeconds(meter.ksoftirqd)];
  return { result, cpu: result.endpointCpu + (gw1 - gw0) + (soft1 - soft0), gatewayCpu: gw1 - gw0 };
}

// ---- traffic ----------------------------------------------------------------------------------------

export interface IperfResult {
  /** Gbit/s (TCP) or kpps (UDP) received */
  rate: number;
  /** bytes (TCP) or packets (UDP) received */
  amount: number;
  /** CPU seconds of the iperf3 client and server during the test, as iperf3 reports them */
  endpointCpu: number;
}

export async function iperf(
  lab: { clientNs: string },
  [host, port]: [string, number],
  seconds: number,
  mode: { udp?: boolean; streams?: number },
): Promise<IperfResult> {
  const args = [
    "-c",
    host,
    "-p",
    String(port),
    "-t",
    String(seconds),
    "-J",
    "--connect-timeout",
    "3000",
  ];
  if (mode.udp) args.push("-u", "-b", "0", "-l", "64");
  if (mode.streams && mode.streams > 1) args.push("-P", String(mode.streams));
  // iperf3 waits forever for a results exchange that never comes back: bound it.
  const r = await execa("nsenter", [`--net=/var/run/netns/${lab.clientNs}`, "iperf3", ...args], {
    reject: false,
    timeout: (seconds + 10) * 1000,
    forceKillAfterDelay: 1000,
  });
  if (r.timedOut)
    throw new Error(`iperf3 to ${host}:${port} did not finish within ${seconds + 10} s`);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- iperf3's JSON report, read field by field below
  let report: any;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(
      `iperf3 to ${host}:${port} printed no report (exit ${r.exitCode})${r.stderr ? `: ${r.stderr}` : ""}`,
    );
  }
  if (report.error) throw new Error(`iperf3 to ${host}:${port}: ${report.error}`);
  const cpu = report.end.cpu_utilization_percent ?? {};
  const endpointCpu =
    (((cpu.host_total ?? 0) + (cpu.remote_total ?? 0)) / 100) *
    (report.end.sum_sent?.seconds ?? report.end.sum?.seconds ?? seconds);
  if (mode.udp) {
    const sum = report.end.sum;
    const received = sum.packets - sum.lost_packets;
    if (!(received > 0)) throw new Error(`iperf3 -u to ${host}:${port}: no packet arrived`);
    return { rate: received / sum.seconds / 1000, amount: received, endpointCpu };
  }
  const sum = report.end.sum_received;
  if (!(sum.bytes > 0)) throw new Error(`iperf3 to ${host}:${port}: no byte arrived`);
  return { rate: sum.bits_per_second / 1e9, amount: sum.bytes, endpointCpu };
}

/**
 * Short connections per second: wrk, one process per backend (one thread each, `concurrency`
 * connections open at a time over all of them), each request with `Connection: close`, so every
 * request is a TCP handshake, one request and reply, and a close, against the backends' nginx for
 * `seconds`. Direct routing aims each process at a backend of its own, every other path aims them
 * all at its address, so every path spreads the same load over the same three servers. A path
 * that loses connections shows as socket errors, which fail the run rather than lower its rate.
 */
export async function connectionRate(
  lab: { clientNs: string },
  targets: [string, number][],
  seconds: number,
  concurrency: number,
): Promise<number> {
  const runs = targets.map(async ([host, port], i) => {
    const connections =
      Math.floor(concurrency / targets.length) + (i < concurrency % targets.length ? 1 : 0);
    const r = await execa(
      "nsenter",
      [
        `--net=/var/run/netns/${lab.clientNs}`,
        "wrk",
        "-t",
        "1",
        "-c",
        String(connections),
        "-d",
        `${seconds}s`,
        "--timeout",
        "3s",
        "-H",
        "Connection: close",
        `http://${host}:${port}/`,
      ],
      { reject: false, timeout: (seconds + 15) * 1000, forceKillAfterDelay: 1000 },
    );
    if (r.timedOut || r.exitCode !== 0)
      throw new Error(
        `wrk to ${host}:${port} failed (exit ${r.exitCode}${r.timedOut ? ", timed out" : ""}): ${(r.stderr || r.stdout).split("\n")[0]}`,
      );
    const rate = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1]);
    const requests = Number(/(\d+) requests in/.exec(r.stdout)?.[1]);
    if (!(rate > 0) || !(requests > 0))
      throw new Error(
        `wrk to ${host}:${port} completed no request: ${r.stdout.replace(/\s+/g, " ").slice(0, 200)}`,
      );
    const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(
      r.stdout,
    );
    const lost = errors ? errors.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0;
    const bad = Number(/Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)?.[1] ?? 0);
    if (lost + bad > requests / 1000)
      throw new Error(
        `wrk to ${host}:${port}: ${lost} socket errors and ${bad} bad replies in ${requests} requests`,
      );
    return rate;
  });
  return (await Promise.all(runs)).reduce((sum, rate) => sum + rate, 0);
}

/**
 * Round trips with sockperf (ping-pong, --full-rtt): one TCP connection or one UDP socket, one
 * message at a time at 1,000 a second (a low, fixed rate: nothing queues), after sockperf's own
 * warm-up, against a sockperf server on the backends. C at both ends, so what varies between
 * paths is the path and the scheduling of two shared cores, not an event loop.
 */
export async function latency(
  lab: { clientNs: string },
  proto: "tcp" | "udp",
  [host, port]: [string, number],
  count: number,
): Promise<{ p50: number; p99: number }> {
  const seconds = Math.max(2, Math.ceil(count / 1000) + 1);
  const args = [
    "ping-pong",
    "-i",
    host,
    "-p",
    String(port),
    "-t",
    String(seconds),
    "--mps",
    "1000",
    "--full-rtt",
    ...(proto === "tcp" ? ["--tcp"] : []),
  ];
  const r = await execa("nsenter", [`--net=/var/run/netns/${lab.clientNs}`, "sockperf", ...args], {
    reject: false,
    timeout: (seconds + 15) * 1000,
    forceKillAfterDelay: 1000,
  });
  const out = `${r.stdout}\n${r.stderr}`;
  const percentile = (p: string) =>
    Number(new RegExp(`percentile ${p.replace(".", "\\.")} =\\s*([\\d.]+)`).exec(out)?.[1]);
  const [p50, p99] = [percentile("50.000"), percentile("99.000")];
  if (r.exitCode !== 0 || !(p50 > 0) || !(p99 > 0))
    throw new Error(
      `sockperf ${proto} to ${host}:${port} gave no percentiles (exit ${r.exitCode}): ${out.replace(/\s+/g, " ").slice(-200)}`,
    );
  const dropped = Number(/# dropped messages = (\d+)/.exec(out)?.[1] ?? 0);
  if (dropped > 0)
    throw new Error(`sockperf ${proto} to ${host}:${port}: ${dropped} messages dropped`);
  return { p50, p99 };
}

/** Neither iperf3 -s nor the proxies say when they listen; one still running after a second is. */
export async function running(daemon: ReturnType<Lab["spawn"]>): Promise<void> {
  const exited = await Promise.race([
    daemon.then(
      r => r,
      e => e,
    ),
    new Promise(r => setTimeout(() => r(undefined), 1000)),
  ]);
  if (exited)
    throw new Error(`${exited.command} exited at start: ${exited.stderr || exited.message}`);
}

async function nginxModulesPath(): Promise<string> {
  const r = await execa("nginx", ["-V"], { reject: false });
  const found = /--modules-path=(\S+)/.exec(r.stderr + r.stdout)?.[1];
  if (!found)
    throw new Error(
      "nginx -V names no --modules-path; install nginx with its stream module (hack/deps.sh installs nginx and libnginx-mod-stream)",
    );
  return found;
}

// ---- the run ----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const program = new Command("bench/dataplane.ts")
    .description(
      "measure blixt's dataplane against direct routing, nftables DNAT, haproxy and nginx in the netns lab",
    )
    .option("--smoke", "a short run (about a minute) that checks the benchmark still works")
    .option(
      "--out <file>",
      "where to write the report; the charts go next to it (default: bench/REPORT.md; with --smoke, a temporary directory)",
    )
    .parse();
  const opts = program.opts<{ smoke?: boolean; out?: string }>();
  const smoke = !!opts.smoke;
  // A smoke run's figures must never replace the committed report.
  const out =
    opts.out ??
    (smoke
      ? join(tmpdir(), "blixt-bench-smoke", "REPORT.md")
      : fileURLToPath(new URL("./REPORT.md", import.meta.url)));
  const settings: Settings = smoke
    ? {
        smoke,
        repeats: 1,
        seconds: 1,
        connections: 32,
        progRuns: 100,
        latencySamples: 200,
        applySizes: [10, 1000],
      }
    : {
        smoke,
        repeats: 5,
        seconds: 4,
        connections: 32,
        progRuns: 2000,
        latencySamples: 1000,
        applySizes: [10, 1000, 10000],
      };

  const results: Results = emptyResults(settings, await machine());
  const modulesPath = await nginxModulesPath();
  progress("ns/packet through BPF_PROG_TEST_RUN");
  results.nsPerPacket = await nsPerPacket(settings);
  progress("node agent apply time");
  const apply = await applyTimes(settings.applySizes, smoke ? 1 : settings.repeats, progress);
  for (const [n, a] of Object.entries(apply)) results.apply[Number(n)] = a;

  const lab = new Lab({ name: "bench", backends: 3 });
  const cfgDir = await mkdtemp(join(tmpdir(), "blixt-bench-"));
  // Deleting the lab's namespaces also removes the nft table, the links and every process in them.
  const stop = async () => {
    // nginx workers outlive a killed master and hold its output pipes open, which would keep
    // lab.down() waiting for the master forever. So first ask everything in the lab's namespaces
    // to stop (nginx's master then reaps its workers), then kill what is left.
    const namespaces = [lab.clientNs, lab.gatewayNs, ...lab.backendNs];
    const signal = async (sig: NodeJS.Signals | 0) => {
      let left = 0;
      for (const ns of namespaces) {
        for (const pid of await netnsPids(ns)) {
          try {
            process.kill(Number(pid), sig);
            left++;
          } catch {
            // already gone
          }
        }
      }
      return left;
    };
    await signal("SIGTERM");
    for (let i = 0; i < 20 && (await signal(0)) > 0; i++)
      await new Promise(r => setTimeout(r, 100));
    await signal("SIGKILL");
    await lab.down();
    await rm(cfgDir, { recursive: true, force: true });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => void stop().then(() => process.exit(130)));
  try {
    progress("bringing the lab up");
    await lab.up();
    for (const [i, ns] of lab.backendNs.entries()) {
      const name = `backend-${i}`;
      await writeFile(
        join(cfgDir, `${name}.conf`),
        backendNginxConfig(lab.backendIps[i], cfgDir, name),
      );
      await running(
        lab.spawn(ns, "nginx", ["-p", cfgDir, "-c", join(cfgDir, `${name}.conf`), "-e", "stderr"]),
      );
      for (const tcp of [true, false])
        await running(
          lab.spawn(ns, "sockperf", [
            "server",
            ...(tcp ? ["--tcp"] : []),
            "-i",
            lab.backendIps[i],
            "-p",
            String(SOCKPERF),
          ]),
        );
    }
    // The connection-rate runs open tens of thousands of connections to one destination each; with
    // the default port range the later runs wait on ports still in TIME_WAIT. The client's ports,
    // and the proxies' ports towards the backends.
    for (const ns of [lab.clientNs, lab.gatewayNs]) {
      for (const sysctl of ["net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"]) {
        await execa("nsenter", [`--net=/var/run/netns/${ns}`, "sysctl", "-qw", sysctl]);
      }
    }
    await writeFile(join(cfgDir, "haproxy.cfg"), haproxyConfig(lab));
    await running(lab.spawn(lab.gatewayNs, "haproxy", ["-f", join(cfgDir, "haproxy.cfg"), "-db"]));
    await writeFile(join(cfgDir, "nginx.conf"), nginxConfig(lab, modulesPath, cfgDir));
    await running(
      lab.spawn(lab.gatewayNs, "nginx", [
        "-p",
        cfgDir,
        "-c",
        join(cfgDir, "nginx.conf"),
        "-e",
        "stderr",
      ]),
    );

    const dp = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs });
    await dp.load();
    const vip = lab.vip(0);
    const nftVip = lab.vip(1);
    const b = lab.backendIps;
    // iperf3's control connection (TCP) and its UDP stream share a port: one backend takes both.
    await dp.setService({
      vip,
      port: IPERF,
      proto: "tcp",
      backends: [{ ip: b[0], port: IPERF, weight: 1 }],
      rejectWeight: 0,
    });
    await dp.setService({
      vip,
      port: IPERF,
      proto: "udp",
      backends: [{ ip: b[0], port: IPERF, weight: 1 }],
      rejectWeight: 0,
    });
    await dp.setService({
      vip,
      port: 82,
      proto: "tcp",
      backends: b.map(ip => ({ ip, port: HTTP, weight: 1 })),
      rejectWeight: 0,
    });
    for (const proto of ["tcp", "udp"] as const)
      await dp.setService({
        vip,
        port: 83,
        proto,
        backends: b.map(ip => ({ ip, port: SOCKPERF, weight: 1 })),
        rejectWeight: 0,
      });

    const target: Record<Path, Target> = {
      // direct: one backend, as for iperf3; the balanced paths spread over all three.
      direct: { iperf: [b[0], IPERF], http: b.map(ip => [ip, HTTP]), sockperf: [b[0], SOCKPERF] },
      "blixt-xdp": { iperf: [vip, IPERF], http: b.map(() => [vip, 82]), sockperf: [vip, 83] },
      "blixt-tc": { iperf: [vip, IPERF], http: b.map(() => [vip, 82]), sockperf: [vip, 83] },
      nftables: { iperf: [nftVip, IPERF], http: b.map(() => [nftVip, 82]), sockperf: [nftVip, 83] },
      haproxy: {
        iperf: [lab.gatewayIp, HAPROXY.iperf],
        http: b.map(() => [lab.gatewayIp, HAPROXY.http]),
        sockperf: [lab.gatewayIp, HAPROXY.sockperf],
      },
      nginx: {
        iperf: [lab.gatewayIp, NGINX.iperf],
        http: b.map(() => [lab.gatewayIp, NGINX.http]),
        sockperf: [lab.gatewayIp, NGINX.sockperf],
      },
    };
    let iperfServer: ReturnType<Lab["spawn"]> | undefined;
    const n = settings.repeats;
    const meter: CpuMeter = { gatewayNs: lab.gatewayNs, ksoftirqd: await ksoftirqdPids() };
    const take = sampler();
    // Rounds, not one path after another: each round measures every path once, so a change in
    // the machine's other load (which moves these figures more than most paths differ) falls on
    // every path alike instead of on whichever path ran while it lasted.
    for (let round = 1; round <= n; round++) {
      for (const [i, path] of PATHS.entries()) {
        progress(`round ${round}/${n}, path ${i + 1}/${PATHS.length}: ${path}`);
        if (path === "blixt-xdp") await dp.attach(lab.gatewayIface, "xdp");
        else if (path === "blixt-tc") await dp.attach(lab.gatewayIface, "tc");
        else await dp.detach(lab.gatewayIface);
        if (path === "nftables") await nft(lab, ["-f", "-"], nftRuleset(lab, nftVip));
        // A fresh iperf3 server per path: one whose client vanished mid-test stays busy for minutes.
        iperfServer?.kill("SIGKILL");
        iperfServer = lab.spawn(lab.backendNs[0], "iperf3", ["-s", "-p", String(IPERF)]);
        await running(iperfServer);
        const t = target[path];

        const tcp1 = await take(`${path} TCP 1 stream`, ["gbps", "cpu", "gw"], async () => {
          const m = await metered(meter, () => iperf(lab, t.iperf, settings.seconds, {}));
          const gb = m.result.amount / 1e9;
          return { gbps: m.result.rate, cpu: m.cpu / gb, gw: m.gatewayCpu / gb };
        });
        results.tcp1[path] = tcp1.gbps;
        results.cpuPerGB[path] = tcp1.cpu;
        results.proxyCpuPerGB[path] = tcp1.gw;
        results.tcp4[path] = (
          await take(`${path} TCP 4 streams`, ["gbps"], async () => ({
            gbps: (await iperf(lab, t.iperf, settings.seconds, { streams: 4 })).rate,
          }))
        ).gbps;
        results.connectionRate[path] = (
          await take(`${path} conn/s`, ["rate"], async () => ({
            rate: await connectionRate(lab, t.http, settings.seconds, settings.connections),
          }))
        ).rate;
        const tcpLat = await take(`${path} TCP latency µs`, ["p50", "p99"], () =>
          latency(lab, "tcp", t.sockperf, settings.latencySamples),
        );
        results.tcpP50[path] = tcpLat.p50;
        results.tcpP99[path] = tcpLat.p99;
        if (UDP_PATHS.includes(path)) {
          const udp = await take(`${path} UDP`, ["kpps", "cpu", "gw"], async () => {
            const m = await metered(meter, () =>
              iperf(lab, t.iperf, settings.seconds, { udp: true }),
            );
            const mpkt = m.result.amount / 1e6;
            return { kpps: m.result.rate, cpu: m.cpu / mpkt, gw: m.gatewayCpu / mpkt };
          });
          results.udpRate[path] = udp.kpps;
          results.cpuPerMpkt[path] = udp.cpu;
          results.proxyCpuPerMpkt[path] = udp.gw;
          const udpLat = await take(`${path} UDP latency µs`, ["p50", "p99"], () =>
            latency(lab, "udp", t.sockperf, settings.latencySamples),
          );
          results.udpP50[path] = udpLat.p50;
          results.udpP99[path] = udpLat.p99;
        }
        if (path === "nftables") await nft(lab, ["delete", "table", "ip", NFT_TABLE]);
      }
    }
  } finally {
    await stop();
  }
  await mkdir(dirname(out), { recursive: true });
  const previous = await readFile(out, "utf8").catch(() => undefined);
  await writeFile(out, renderReport(results, e2eBlock(previous)));
  for (const [file, svg] of Object.entries(renderCharts(results)))
    await writeFile(join(dirname(out), file), svg);
  progress(`wrote ${out} and its charts`);
}

// Run, unless imported (bench/nodes.ts measures with the same tools).
if (import.meta.url === `file://${process.argv[1]}`) await main();
