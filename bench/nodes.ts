// SPDX-License-Identifier: Apache-2.0
// The several-nodes benchmark: a backend behind the node the client's packets reach (local) against
// one behind another node, reached by IP-in-IP with direct server return (remote), side by side
// in rounds on a two-node netns lab (the one test/lab/dsr.test.ts builds), with the tools and the
// method of bench/dataplane.ts: TCP throughput (one stream), TCP connection rate, UDP packet rate,
// round-trip latency; and ns/packet of the encapsulating and decapsulating runs next to the
// local DNAT in BPF_PROG_TEST_RUN. Writes bench/NODES.md (bench/nodes-report.ts).
//
//   npx tsx bench/nodes.ts [--smoke] [--out FILE]     (bench/run.sh --only several-nodes)
//   npx tsx bench/nodes.ts --rerender                 (NODES.md again from the figures it carries)
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { execa } from "execa";
import { Dataplane } from "../capabilities/dataplane/dataplane.js";
import { progRunMany } from "../capabilities/dataplane/bpftool.js";
import { inNetns } from "../test/lib/lab.js";
import {
  ETH_P_IPV6,
  TCP_ACK,
  TCP_SYN,
  checksum,
  ipBytes,
  nonIpFrame,
  tcpFrame,
} from "../test/lib/packet.js";
import {
  HTTP,
  IPERF,
  SOCKPERF,
  backendNginxConfig,
  connectionRate,
  iperf,
  latency,
  machine,
  netnsPids,
  running,
  sampler,
} from "./dataplane.js";
import { fmt, median, type Series } from "./report.js";
import {
  NODE_PATHS,
  NS_CASE,
  embeddedNodeFigures,
  emptyNodeResults,
  renderNodesReport,
  type NodePath,
  type NodeResults,
  type NodeSettings,
} from "./nodes-report.js";

const started = Date.now();
const progress = (line: string) =>
  console.error(`nodes [${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}`);

const XDP_PASS = 2;
const XDP_REDIRECT = 4;
const TC_ACT_OK = 0;
const TC_ACT_REDIRECT = 7;

// ---- ns/packet (BPF_PROG_TEST_RUN) -------------------------------------------------------------

/** An IP-in-IP frame as the receiving node sends it: outer IPv4 (id = the backend's port, DF) + the client's packet. */
function ipipFrame(inner: Uint8Array, src: string, dst: string, port: number): Uint8Array {
  const ip = inner.subarray(14);
  const out = new Uint8Array(14 + 20 + ip.length);
  const v = new DataView(out.buffer);
  out.set(inner.subarray(0, 14), 0);
  out[14] = 0x45;
  v.setUint16(16, 20 + ip.length);
  v.setUint16(18, port);
  v.setUint16(20, 0x4000);
  out[22] = 64;
  out[23] = 4;
  out.set(ipBytes(src), 26);
  out.set(ipBytes(dst), 30);
  v.setUint16(24, checksum(out.subarray(14, 34)));
  out.set(ip, 34);
  return out;
}

/**
 * One run per packet of: a frame passed at once, an established flow to a local backend, one to a
 * remote backend (encapsulated and sent), and, on the backend's node, the same flow arriving in
 * IP-in-IP. The programs run in a netns of their own whose routes lead to the remote backend
 * through a next hop with a known MAC, so bpf_fib_lookup finds it, as on a node.
 */
async function nsPerPacket(settings: NodeSettings): Promise<Record<string, Series>> {
  const netns = `blixt-bench-nodes-prog-${process.pid}`;
  const NODE = "172.31.254.1";
  const OTHER_NODE = "172.31.254.2";
  const VIP = "198.18.61.1";
  const CLIENT = "192.0.2.61";
  const REMOTE = "10.72.0.9";
  const LOCAL = "10.1.0.8";
  const ns = (...args: string[]) => execa("ip", ["-n", netns, ...args]);
  const dp = new Dataplane({ pinDir: `/sys/fs/bpf/blixt-bench-nodes-prog-${process.pid}` });
  try {
    await execa("ip", ["netns", "del", netns], { reject: false });
    await execa("ip", ["netns", "add", netns]);
    await ns("link", "set", "lo", "mtu", "1500", "up");
    await ns("link", "add", "up0", "type", "veth", "peer", "name", "up1");
    await ns("addr", "add", `${NODE}/24`, "dev", "up0");
    await ns("link", "set", "up0", "up");
    await ns("link", "set", "up1", "up");
    await ns(
      "neigh",
      "add",
      OTHER_NODE,
      "lladdr",
      "02:00:00:00:bb:02",
      "dev",
      "up0",
      "nud",
      "permanent",
    );
    await ns("route", "add", "10.72.0.0/16", "via", OTHER_NODE);
    await inNetns(netns, "sysctl", ["-qw", "net.ipv4.conf.all.forwarding=1"]);
    await dp.load();
    await dp.setNodeAddress(NODE);
    // The receiving node's service (port 80: its backend on the other node) and the backend
    // node's own (port 81: the same backend, local there; port 443: a local backend).
    await dp.setService({
      vip: VIP,
      port: 80,
      proto: "tcp",
      backends: [{ ip: REMOTE, port: 8080, weight: 1, remote: true }],
      rejectWeight: 0,
    });
    await dp.setService({
      vip: VIP,
      port: 81,
      proto: "tcp",
      backends: [{ ip: LOCAL, port: 8081, weight: 1 }],
      rejectWeight: 0,
    });
    await dp.setService({
      vip: VIP,
      port: 443,
      proto: "tcp",
      backends: [{ ip: LOCAL, port: 8443, weight: 1 }],
      rejectWeight: 0,
    });
    const seg = (dport: number, flags: number) =>
      tcpFrame({ src: CLIENT, dst: VIP, sport: 40000, dport, flags });
    const local = seg(443, TCP_ACK);
    const encap = seg(80, TCP_ACK);
    const decap = ipipFrame(seg(81, TCP_ACK), OTHER_NODE, LOCAL, 8081);
    const floor = nonIpFrame(ETH_P_IPV6, 74);
    const progs = {
      xdp: { pin: dp.progPin("blixt_xdp_ingress"), pass: XDP_PASS, sent: XDP_REDIRECT },
      tc: { pin: dp.progPin("blixt_tc_ingress"), pass: TC_ACT_OK, sent: TC_ACT_REDIRECT },
    };
    const run = (pin: string, packets: Uint8Array[]) => progRunMany(pin, packets, { netns });
    // The flows, established: a SYN each first (the decapsulated one, wrapped as it comes).
    for (const p of Object.values(progs)) {
      await run(p.pin, [seg(443, TCP_SYN), seg(80, TCP_SYN)]);
      await run(p.pin, [ipipFrame(seg(81, TCP_SYN), OTHER_NODE, LOCAL, 8081)]);
    }
    const cases: [string, string, Uint8Array, number | undefined][] = [
      [NS_CASE.floor("xdp"), progs.xdp.pin, floor, undefined],
      [NS_CASE.local("xdp"), progs.xdp.pin, local, progs.xdp.pass],
      [NS_CASE.encap("xdp"), progs.xdp.pin, encap, progs.xdp.sent],
      [NS_CASE.floor("tc"), progs.tc.pin, floor, undefined],
      [NS_CASE.local("tc"), progs.tc.pin, local, progs.tc.pass],
      [NS_CASE.encap("tc"), progs.tc.pin, encap, progs.tc.sent],
      [NS_CASE.decap, progs.tc.pin, decap, progs.tc.pass],
    ];
    const out: Record<string, Series> = Object.fromEntries(
      cases.map(([label]) => [label, { samples: [] }]),
    );
    for (let round = 1; round <= settings.repeats; round++) {
      for (const [label, pin, packet, verdict] of cases) {
        if (out[label].failure) continue;
        try {
          const results = await run(
            pin,
            Array.from({ length: settings.progRuns }, () => packet),
          );
          const wrong = results.find(r => verdict !== undefined && r.retval !== verdict);
          if (wrong)
            throw new Error(
              `verdict ${wrong.retval}, not ${verdict}: the program no longer takes the path this row is about`,
            );
          const ns = median(results.map(r => r.duration));
          out[label].samples.push(ns);
          progress(`round ${round}: ${label}: ${fmt(ns)} ns`);
        } catch (err) {
          out[label].failure = (err instanceof Error ? err.message : String(err))
            .split("\n")[0]
            .slice(0, 160);
          progress(`${label}: failed: ${out[label].failure}`);
        }
      }
    }
    return out;
  } finally {
    await dp.unpin();
    await execa("ip", ["netns", "del", netns], { reject: false });
  }
}

// ---- the two-node lab --------------------------------------------------------------------------

const P = `blixt-bench-n${process.pid % 10000}`;
const NS = {
  lan: `${P}-lan`,
  client: `${P}-cl`,
  gw1: `${P}-gw1`,
  gw2: `${P}-gw2`,
  b1: `${P}-b1`,
  b2: `${P}-b2`,
};
const CLIENT = "192.168.78.100";
const GW1 = "192.168.78.1";
const GW2 = "192.168.78.2";
const B1 = "10.78.1.2";
const B2 = "10.78.2.2";
/** The Gateway address whose backend is behind the first node, and the one whose backend is behind the second. */
const VIP = { local: "198.19.78.10", remote: "198.19.78.11" } as const;
const BACKEND = { local: B1, remote: B2 } as const;
/** Where each path's client traffic goes: iperf3, the HTTP server, sockperf. */
const TARGET: Record<NodePath, { addr: string; iperf: number; http: number; sockperf: number }> = {
  "direct-local": { addr: B1, iperf: IPERF, http: HTTP, sockperf: SOCKPERF },
  local: { addr: VIP.local, iperf: IPERF, http: 82, sockperf: 83 },
  "direct-remote": { addr: B2, iperf: IPERF, http: HTTP, sockperf: SOCKPERF },
  remote: { addr: VIP.remote, iperf: IPERF, http: 82, sockperf: 83 },
};
const BACKEND_NS: Record<NodePath, "b1" | "b2"> = {
  "direct-local": "b1",
  local: "b1",
  "direct-remote": "b2",
  remote: "b2",
};
const PIN = (gw: string) => `/sys/fs/bpf/blixt-bench-nodes-${process.pid}-${gw}`;

const ip = (ns: string, ...args: string[]) => execa("ip", ["-n", ns, ...args]);

async function link(nsA: string, a: string, nsB: string, b: string) {
  await ip(nsA, "link", "add", a, "type", "veth", "peer", "name", b, "netns", nsB);
  await ip(nsA, "link", "set", a, "up");
  await ip(nsB, "link", "set", b, "up");
}

async function labUp(): Promise<void> {
  for (const ns of Object.values(NS)) {
    await execa("ip", ["netns", "add", ns]);
    await ip(ns, "link", "set", "lo", "up");
  }
  await ip(NS.lan, "link", "add", "br0", "type", "bridge");
  await ip(NS.lan, "link", "set", "br0", "up");
  for (const [ns, port, addr] of [
    [NS.client, "p0", CLIENT],
    [NS.gw1, "p1", GW1],
    [NS.gw2, "p2", GW2],
  ] as const) {
    await link(NS.lan, port, ns, "eth0");
    await ip(NS.lan, "link", "set", port, "master", "br0");
    await ip(ns, "addr", "add", `${addr}/24`, "dev", "eth0");
  }
  for (const [gw, b, addr, net] of [
    [NS.gw1, NS.b1, B1, "10.78.1"],
    [NS.gw2, NS.b2, B2, "10.78.2"],
  ] as const) {
    await link(gw, "be0", b, "eth0");
    await ip(gw, "addr", "add", `${net}.1/24`, "dev", "be0");
    await ip(b, "addr", "add", `${addr}/24`, "dev", "eth0");
    await ip(b, "route", "add", "default", "via", `${net}.1`);
    for (const kv of [
      "net.ipv4.ip_forward=1",
      "net.ipv4.conf.all.rp_filter=0",
      "net.ipv4.conf.default.rp_filter=0",
    ])
      await inNetns(gw, "sysctl", ["-qw", kv]);
  }
  await ip(NS.gw1, "route", "add", "10.78.2.0/24", "via", GW2);
  await ip(NS.gw2, "route", "add", "10.78.1.0/24", "via", GW1);
  for (const vip of Object.values(VIP))
    await ip(NS.client, "route", "add", `${vip}/32`, "via", GW1);
  await ip(NS.client, "route", "add", "10.78.0.0/16", "via", GW1);
  // The first node forwards direct-remote's packets out of the device they came in by: no ICMP
  // redirect, which would send the client to the second node straight.
  for (const ns of [NS.gw1, NS.gw2])
    for (const kv of ["net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"])
      await inNetns(ns, "sysctl", ["-qw", kv]);
  for (const kv of [
    "net.ipv4.conf.all.accept_redirects=0",
    "net.ipv4.conf.eth0.accept_redirects=0",
  ])
    await inNetns(NS.client, "sysctl", ["-qw", kv]);
  // As bench/dataplane.ts: the connection-rate runs need the client's whole port range.
  for (const sysctl of ["net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1"])
    await inNetns(NS.client, "sysctl", ["-qw", sysctl]);
}

/** Everything in the lab's namespaces asked to stop, then killed (nginx workers outlive a killed master), then the namespaces. */
async function labDown(): Promise<void> {
  const signal = async (sig: NodeJS.Signals | 0) => {
    let left = 0;
    for (const ns of Object.values(NS))
      for (const pid of await netnsPids(ns)) {
        try {
          process.kill(Number(pid), sig);
          left++;
        } catch {
          // already gone
        }
      }
    return left;
  };
  await signal("SIGTERM");
  for (let i = 0; i < 20 && (await signal(0)) > 0; i++) await new Promise(r => setTimeout(r, 100));
  await signal("SIGKILL");
  for (const ns of Object.values(NS)) await execa("ip", ["netns", "del", ns], { reject: false });
}

const spawn = (ns: string, file: string, args: string[]) => {
  const proc = inNetns(ns, file, args);
  proc.catch(() => {});
  return proc;
};

// ---- the run -----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const program = new Command("bench/nodes.ts")
    .description(
      "measure a local backend against a remote one (IP-in-IP, direct server return) on a two-node netns lab",
    )
    .option("--smoke", "a short run that checks the benchmark still works")
    .option(
      "--out <file>",
      "where to write the report (default: bench/NODES.md; with --smoke, a temporary directory)",
    )
    .option("--rerender", "write the report again from the figures it carries, without a run")
    .parse();
  const opts = program.opts<{ smoke?: boolean; out?: string; rerender?: boolean }>();
  const smoke = !!opts.smoke;
  const out =
    opts.out ??
    (smoke
      ? join(tmpdir(), "blixt-bench-smoke", "NODES.md")
      : fileURLToPath(new URL("./NODES.md", import.meta.url)));
  if (opts.rerender) {
    const figures = embeddedNodeFigures(await readFile(out, "utf8"));
    if (!figures) throw new Error(`${out} carries no figures: run the benchmark`);
    await writeFile(out, renderNodesReport(figures));
    progress(`wrote ${out} again from its figures`);
    return;
  }
  const settings: NodeSettings = smoke
    ? {
        smoke,
        repeats: 1,
        seconds: 1,
        connections: 32,
        wrkProcesses: 3,
        progRuns: 100,
        latencySamples: 200,
      }
    : {
        smoke,
        repeats: 4,
        seconds: 4,
        connections: 32,
        wrkProcesses: 3,
        progRuns: 1000,
        latencySamples: 1000,
      };
  const results: NodeResults = emptyNodeResults(settings, await machine());

  progress("ns/packet through BPF_PROG_TEST_RUN");
  results.nsPerPacket = await nsPerPacket(settings);

  const gw1 = new Dataplane({ pinDir: PIN("gw1"), netns: NS.gw1 });
  const gw2 = new Dataplane({ pinDir: PIN("gw2"), netns: NS.gw2 });
  const cfgDir = await mkdtemp(join(tmpdir(), "blixt-bench-nodes-"));
  const stop = async () => {
    await labDown();
    for (const dp of [gw1, gw2]) await dp.unpin().catch(() => {});
    await rm(PIN("gw1"), { recursive: true, force: true });
    await rm(PIN("gw2"), { recursive: true, force: true });
    await rm(cfgDir, { recursive: true, force: true });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => void stop().then(() => process.exit(130)));
  try {
    progress("bringing the two-node lab up");
    await labUp();
    for (const [name, ns, addr] of [
      ["b1", NS.b1, B1],
      ["b2", NS.b2, B2],
    ] as const) {
      await writeFile(join(cfgDir, `${name}.conf`), backendNginxConfig(addr, cfgDir, name));
      await running(
        spawn(ns, "nginx", ["-p", cfgDir, "-c", join(cfgDir, `${name}.conf`), "-e", "stderr"]),
      );
      for (const tcp of [true, false])
        await running(
          spawn(ns, "sockperf", [
            "server",
            ...(tcp ? ["--tcp"] : []),
            "-i",
            addr,
            "-p",
            String(SOCKPERF),
          ]),
        );
    }
    // The first node knows both services; the second, the one whose backend is behind it (as
    // test/lab/dsr.test.ts). The first node's table names that backend remote, the second's local.
    const nodes: [Dataplane, string, string[]][] = [
      [gw1, GW1, [VIP.local, VIP.remote]],
      [gw2, GW2, [VIP.remote]],
    ];
    for (const [dp, self, addresses] of nodes) {
      await dp.load();
      await dp.setNodeAddress(self);
      await dp.setAddresses(addresses);
      for (const path of (["local", "remote"] as const).filter(p => addresses.includes(VIP[p]))) {
        const remote = dp === gw1 && path === "remote";
        const backend = BACKEND[path];
        for (const [proto, port, bport] of [
          ["tcp", IPERF, IPERF],
          ["udp", IPERF, IPERF],
          ["tcp", 82, HTTP],
          ["tcp", 83, SOCKPERF],
          ["udp", 83, SOCKPERF],
        ] as const)
          await dp.setService({
            vip: VIP[path],
            port,
            proto,
            backends: [{ ip: backend, port: bport, weight: 1, remote }],
            rejectWeight: 0,
          });
      }
    }

    const take = sampler();
    const iperfServers: ReturnType<typeof spawn>[] = [];
    for (let round = 1; round <= settings.repeats; round++) {
      for (const [i, path] of NODE_PATHS.entries()) {
        progress(`round ${round}/${settings.repeats}, path ${i + 1}/${NODE_PATHS.length}: ${path}`);
        for (const dp of [gw1, gw2]) {
          if (path.startsWith("direct")) await dp.detach("eth0");
          else await dp.attach("eth0", "tc");
        }
        // A fresh iperf3 server per path and round, as in bench/dataplane.ts.
        for (const s of iperfServers.splice(0)) s.kill("SIGKILL");
        const server = spawn(NS[BACKEND_NS[path]], "iperf3", ["-s", "-p", String(IPERF)]);
        iperfServers.push(server);
        await running(server);
        const client = { clientNs: NS.client };
        const t = TARGET[path];
        results.tcp1[path] = (
          await take(`${path} TCP 1 stream`, ["gbps"], async () => ({
            gbps: (await iperf(client, [t.addr, t.iperf], settings.seconds, {})).rate,
          }))
        ).gbps;
        results.connectionRate[path] = (
          await take(`${path} conn/s`, ["rate"], async () => ({
            rate: await connectionRate(
              client,
              Array.from(
                { length: settings.wrkProcesses },
                () => [t.addr, t.http] as [string, number],
              ),
              settings.seconds,
              settings.connections,
            ),
          }))
        ).rate;
        const tcpLat = await take(`${path} TCP latency µs`, ["p50", "p99"], () =>
          latency(client, "tcp", [t.addr, t.sockperf], settings.latencySamples),
        );
        results.tcpP50[path] = tcpLat.p50;
        results.tcpP99[path] = tcpLat.p99;
        results.udpRate[path] = (
          await take(`${path} UDP`, ["kpps"], async () => ({
            kpps: (await iperf(client, [t.addr, t.iperf], settings.seconds, { udp: true })).rate,
          }))
        ).kpps;
        const udpLat = await take(`${path} UDP latency µs`, ["p50", "p99"], () =>
          latency(client, "udp", [t.addr, t.sockperf], settings.latencySamples),
        );
        results.udpP50[path] = udpLat.p50;
        results.udpP99[path] = udpLat.p99;
      }
    }
    const [s1, s2] = [(await gw1.stats()).reasons, (await gw2.stats()).reasons];
    progress(
      `counters: first node encap ${s1.encap}, encap_no_neigh ${s1.encap_no_neigh}; second node decap ${s2.decap}, drop_ipip ${s2.drop_ipip}`,
    );
  } finally {
    await stop();
  }
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, renderNodesReport(results));
  progress(`wrote ${out}`);
}

await main();
