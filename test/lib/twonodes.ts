// SPDX-License-Identifier: Apache-2.0
// The two-node lab for backends on another node (IP-in-IP, direct server return): two gateway
// nodes on one Ethernet segment, a backend behind each, a client on the segment that routes the
// VIP to one of the nodes, and a pod beside the first node's backend, a client inside the
// cluster (test/lab/hairpin.test.ts). Shared by the test/lab/dsr*.test.ts files.
//
//   client ns  eth0 198.19.76.100 ─┐
//   gw1 ns     eth0 198.19.76.1  ──┼── br0 (lan ns)       gw1: be0 ── eth0 198.19.78.2 (backend b1)
//   gw2 ns     eth0 198.19.76.2  ──┘                      gw2: be0 ── eth0 198.19.79.2 (backend b2)
//                                                         gw1: vethpod0 ── eth0 198.19.80.2 (pod)
//   the client routes the VIP via gw1 (moveVip changes that); gw1 and gw2 route each other's
//   backend and pod networks, as a pod network does
//
// Each backend answers per TCP line / UDP datagram "<name> <peer ip>:<port>" (8080/tcp, 5353/udp,
// SERVER_JS) and on 9090/tcp writes that line once, then echoes every byte it gets.
import { createInterface } from "node:readline";
import { execa, type ResultPromise } from "execa";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { SERVER_JS, buildXdpPass, inNetns } from "./lab.js";

export const CLIENT = "198.19.76.100";
export const GW1 = "198.19.76.1";
export const GW2 = "198.19.76.2";
export const B1 = "198.19.78.2";
export const B2 = "198.19.79.2";
export const VIP = "198.19.77.10";
/** A client pod on gw1, and the node's end of its interface (named as the bridge CNI names them). */
export const POD = "198.19.80.2";
export const POD_LINK = "vethpod0";
/** The backends' ports: line server, echo server, datagram server. */
export const LINE_PORT = 8080;
export const ECHO_PORT = 9090;
export const UDP_PORT = 5353;

/** ETHTOOL_STXCSUM (0x17) with data 0 through SIOCETHTOOL (0x8946) on the device in argv[1]. */
const TX_CSUM_OFF = `
import ctypes, fcntl, socket, struct, sys
value = ctypes.create_string_buffer(struct.pack("II", 0x17, 0))
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(value))
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
fcntl.ioctl(sock.fileno(), 0x8946, ifr)
`;

/** `count` requests to host:port (argv: proto host port count), one after another: per request, the backend's answer ("<name> <peer>") and where the reply came from. */
export const REQUESTS_JS = String.raw`
const net = require("node:net"), dgram = require("node:dgram");
const [proto, host, port, count] = process.argv.slice(1);
const once = () => new Promise((resolve) => {
  const timer = setTimeout(() => done({ ok: false, code: "ETIMEDOUT" }), 3000);
  let done;
  if (proto === "udp") {
    const s = dgram.createSocket("udp4");
    done = (r) => { clearTimeout(timer); s.close(); resolve(r); };
    s.on("message", (m, r) => done({ ok: true, answer: String(m), from: r.address + ":" + r.port }));
    s.on("error", (e) => done({ ok: false, code: e.code }));
    s.send("hello", Number(port), host);
  } else {
    const sock = net.connect({ host, port: Number(port) });
    let buf = "";
    done = (r) => { clearTimeout(timer); sock.destroy(); resolve(r); };
    sock.on("connect", () => sock.write("hello\n"));
    sock.on("data", (d) => { buf += d; const i = buf.indexOf("\n"); if (i >= 0) done({ ok: true, answer: buf.slice(0, i), from: sock.remoteAddress + ":" + sock.remotePort }); });
    sock.on("error", (e) => done({ ok: false, code: e.code }));
  }
});
(async () => { const out = []; for (let i = 0; i < Number(count); i++) out.push(await once()); console.log(JSON.stringify(out)); })();
`;

export type Outcome = { ok: true; answer: string; from: string } | { ok: false; code: string };

const ECHO_JS = String.raw`
const [name, port] = process.argv.slice(1);
require("node:net").createServer((sock) => {
  sock.on("error", () => {});
  sock.write(name + " " + sock.remoteAddress + ":" + sock.remotePort + "\n");
  sock.pipe(sock);
}).listen(Number(port), "0.0.0.0", () => process.stdout.write("ready\n"));
process.stdin.on("end", () => process.exit(0)).resume();
`;

/**
 * Steady traffic from the client, until a line "stop" on stdin; then one JSON line (FlowReport).
 * argv[1]: {host, tcp: port[], udp: port[], chunk, everyMs}. Each TCP port: one connection that
 * writes `chunk` bytes of a non-repeating pattern every `everyMs` and checks that the echo brings
 * them back complete and in order. Each UDP port: one socket, a datagram every 100 ms.
 * Writes "ready" once every TCP connection has its first line (or failed).
 */
const FLOWS_JS = String.raw`
const net = require("node:net"), dgram = require("node:dgram"), readline = require("node:readline");
const spec = JSON.parse(process.argv[1]);
const pattern = (off, n) => { const b = Buffer.allocUnsafe(n); for (let i = 0; i < n; i++) { const x = off + i; b[i] = (x ^ (x >>> 8) ^ (x >>> 16)) & 255; } return b; };
const out = { tcp: [], udp: [] }, timers = [], socks = [];
let stopping = false, waiting = spec.tcp.length;
const headerDone = () => { if (--waiting === 0) process.stdout.write("ready\n"); };
if (waiting === 0) setImmediate(() => process.stdout.write("ready\n"));
for (const port of spec.tcp) {
  const r = { port, sent: 0, received: 0, header: null, error: null, closed: false, mismatchAt: null };
  out.tcp.push(r);
  const sock = net.connect({ host: spec.host, port });
  socks.push(sock);
  let head = Buffer.alloc(0), gotHeader = false;
  sock.setNoDelay(true);
  sock.on("data", (d) => {
    if (!gotHeader) {
      head = Buffer.concat([head, d]);
      const i = head.indexOf(10);
      if (i < 0) return;
      r.header = head.subarray(0, i).toString();
      d = head.subarray(i + 1);
      gotHeader = true;
      headerDone();
    }
    if (r.mismatchAt === null && !pattern(r.received, d.length).equals(d)) {
      const want = pattern(r.received, d.length);
      for (let i = 0; i < d.length; i++) if (want[i] !== d[i]) { r.mismatchAt = r.received + i; break; }
    }
    r.received += d.length;
  });
  sock.on("error", (e) => { r.error = e.code || String(e); if (!gotHeader) { gotHeader = true; headerDone(); } });
  sock.on("close", () => { r.closed = true; });
  sock.on("connect", () => timers.push(setInterval(() => {
    if (stopping || sock.destroyed || sock.writableLength > (1 << 20)) return;
    sock.write(pattern(r.sent, spec.chunk));
    r.sent += spec.chunk;
  }, spec.everyMs)));
}
for (const port of spec.udp) {
  const r = { port, sent: 0, replies: 0, answers: {}, froms: {}, maxGapMs: 0, errors: 0, startedAt: performance.now(), lastAt: null };
  out.udp.push(r);
  const s = dgram.createSocket("udp4");
  socks.push(s);
  s.on("message", (m, from) => {
    // Gaps on the monotonic clock: a wall-clock step (a CI run saw one) is no gap.
    const now = performance.now();
    if (r.lastAt !== null) r.maxGapMs = Math.max(r.maxGapMs, Math.round(now - r.lastAt));
    r.lastAt = now;
    r.replies++;
    const a = String(m), f = from.address + ":" + from.port;
    r.answers[a] = (r.answers[a] || 0) + 1;
    r.froms[f] = (r.froms[f] || 0) + 1;
  });
  s.on("error", () => { r.errors++; });
  timers.push(setInterval(() => { if (!stopping) { s.send("hello", port, spec.host); r.sent++; } }, 100));
}
readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  if (line !== "stop" || stopping) return;
  stopping = true;
  for (const t of timers) clearInterval(t);
  // Replies that stopped coming count as a gap up to now.
  const now = performance.now();
  for (const r of out.udp) r.maxGapMs = Math.max(r.maxGapMs, Math.round(now - (r.lastAt ?? r.startedAt)));
  // The echoes of what is in flight, then the datagrams' last replies.
  const until = Date.now() + 5000;
  while (Date.now() < until && out.tcp.some((r) => !r.error && !r.closed && r.received < r.sent))
    await new Promise((ok) => setTimeout(ok, 20));
  await new Promise((ok) => setTimeout(ok, 300));
  process.stdout.write(JSON.stringify(out) + "\n");
  for (const s of socks) (s.destroy ? s.destroy() : s.close());
  process.exit(0);
});
`;

export interface TcpFlowReport {
  port: number;
  /** Bytes written, bytes echoed back (after the first line). */
  sent: number;
  received: number;
  /** The backend's first line: "<name> <peer ip>:<port>". */
  header: string | null;
  error: string | null;
  closed: boolean;
  /** Offset of the first echoed byte that differs from what was sent, null when none. */
  mismatchAt: number | null;
}

export interface UdpFlowReport {
  port: number;
  sent: number;
  replies: number;
  /** Replies by text ("<name> <peer>") and by source ("ip:port"). */
  answers: Record<string, number>;
  froms: Record<string, number>;
  /** Longest time between two replies, or from the last reply to stop(). */
  maxGapMs: number;
  errors: number;
}

export interface FlowReport {
  tcp: TcpFlowReport[];
  udp: UdpFlowReport[];
}

/** Flows running in the client namespace; stop() ends them and returns what happened. */
export class Flows {
  private result: Promise<FlowReport>;
  readonly ready: Promise<void>;

  constructor(private proc: ResultPromise) {
    const lines = createInterface({ input: proc.stdout! });
    const exited = new Promise<never>((_, reject) =>
      proc.once("exit", code => reject(new Error(`client flows exited (code ${code})`))),
    );
    exited.catch(() => {});
    let first = true;
    let resolveReady!: () => void;
    let resolveResult!: (r: FlowReport) => void;
    this.ready = Promise.race([new Promise<void>(r => (resolveReady = r)), exited]);
    this.result = Promise.race([new Promise<FlowReport>(r => (resolveResult = r)), exited]);
    this.result.catch(() => {});
    lines.on("line", line => {
      if (first) {
        first = false;
        resolveReady();
      } else resolveResult(JSON.parse(line) as FlowReport);
    });
  }

  async stop(): Promise<FlowReport> {
    this.proc.stdin!.write("stop\n");
    return this.result;
  }
}

export type Mode = "xdp" | "tc";

export interface Service {
  port: number;
  proto: "tcp" | "udp";
  backends: { ip: string; port: number }[];
}

export class TwoNodes {
  readonly ns: {
    lan: string;
    client: string;
    gw1: string;
    gw2: string;
    b1: string;
    b2: string;
    pod: string;
  };
  readonly gw1: Dataplane;
  readonly gw2: Dataplane;
  private procs: ResultPromise[] = [];

  /** `prefix`: unique per test file and process, at most 10 characters (names namespaces, pins). */
  constructor(prefix: string) {
    this.ns = {
      lan: `${prefix}-lan`,
      client: `${prefix}-cl`,
      gw1: `${prefix}-gw1`,
      gw2: `${prefix}-gw2`,
      b1: `${prefix}-b1`,
      b2: `${prefix}-b2`,
      pod: `${prefix}-pod`,
    };
    this.gw1 = this.dataplane(1);
    this.gw2 = this.dataplane(2);
  }

  /** A fresh Dataplane of node 1 or 2 on its pins: what a restarted node agent builds. */
  dataplane(node: 1 | 2): Dataplane {
    const netns = node === 1 ? this.ns.gw1 : this.ns.gw2;
    return new Dataplane({ pinDir: `/sys/fs/bpf/blixt-lab-${netns}`, netns });
  }

  private ip(ns: string, ...args: string[]) {
    return execa("ip", ["-n", ns, ...args]);
  }

  /** veth `a` in netns `nsA` to `b` in netns `nsB`. */
  private async link(nsA: string, a: string, nsB: string, b: string) {
    await this.ip(nsA, "link", "add", a, "type", "veth", "peer", "name", b, "netns", nsB);
    await this.ip(nsA, "link", "set", a, "up");
    await this.ip(nsB, "link", "set", b, "up");
  }

  async up(): Promise<void> {
    await this.down();
    const NS = this.ns;
    for (const ns of Object.values(NS)) {
      await execa("ip", ["netns", "add", ns]);
      await this.ip(ns, "link", "set", "lo", "up");
    }
    await this.ip(NS.lan, "link", "add", "br0", "type", "bridge");
    await this.ip(NS.lan, "link", "set", "br0", "up");
    for (const [ns, port, addr] of [
      [NS.client, "p0", CLIENT],
      [NS.gw1, "p1", GW1],
      [NS.gw2, "p2", GW2],
    ] as const) {
      await this.link(NS.lan, port, ns, "eth0");
      await this.ip(NS.lan, "link", "set", port, "master", "br0");
      await this.ip(ns, "addr", "add", `${addr}/24`, "dev", "eth0");
    }
    for (const [gw, b, addr, net] of [
      [NS.gw1, NS.b1, B1, "198.19.78"],
      [NS.gw2, NS.b2, B2, "198.19.79"],
    ] as const) {
      await this.link(gw, "be0", b, "eth0");
      await this.ip(gw, "addr", "add", `${net}.1/24`, "dev", "be0");
      await this.ip(b, "addr", "add", `${addr}/24`, "dev", "eth0");
      await this.ip(b, "route", "add", "default", "via", `${net}.1`);
      for (const kv of [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
      ])
        await inNetns(gw, "sysctl", ["-qw", kv]);
    }
    await this.ip(NS.gw1, "route", "add", "198.19.79.0/24", "via", GW2);
    await this.ip(NS.gw2, "route", "add", "198.19.78.0/24", "via", GW1);
    await this.addPod();
    await this.ip(NS.gw2, "route", "add", "198.19.80.0/24", "via", GW1);
    await this.ip(NS.client, "route", "add", `${VIP}/32`, "via", GW1);
    // A veth hands its peer a checksum still to be filled in (offload); an XDP program that sends
    // the frame on (XDP_TX) loses that state, and the backend would get a bad checksum. A client
    // behind a real link sends complete checksums: the client's veth computes them (tx checksum
    // offload off, with the ethtool ioctl; TSO goes with it).
    await inNetns(NS.client, "python3", ["-c", TX_CSUM_OFF, "eth0"]);
    // XDP_TX from a gateway's veth reaches the bridge only if the peer runs XDP too.
    const pass = await buildXdpPass();
    for (const port of ["p1", "p2"])
      await this.ip(NS.lan, "link", "set", "dev", port, "xdpdrv", "obj", pass, "sec", "xdp");
    for (const [ns, name] of [
      [NS.b1, "b1"],
      [NS.b2, "b2"],
    ] as const) {
      await this.start(ns, ["-e", SERVER_JS, name, String(LINE_PORT), String(UDP_PORT)]);
      await this.start(ns, ["-e", ECHO_JS, name, String(ECHO_PORT)]);
    }
  }

  /** The pod's interface, anew (a pod that came back gets another ifindex): gw1's end is POD_LINK. */
  async addPod(): Promise<void> {
    const NS = this.ns;
    await this.ip(NS.gw1, "link", "del", POD_LINK).catch(() => undefined);
    await this.link(NS.gw1, POD_LINK, NS.pod, "eth0");
    await this.ip(NS.gw1, "addr", "add", "198.19.80.1/24", "dev", POD_LINK);
    await this.ip(NS.pod, "addr", "add", `${POD}/24`, "dev", "eth0");
    await this.ip(NS.pod, "route", "add", "default", "via", "198.19.80.1");
  }

  /** A one-shot client program in the pod's namespace. */
  runInPod(args: string[]) {
    return inNetns(this.ns.pod, "node", args);
  }

  private async start(ns: string, args: string[]): Promise<void> {
    const proc = inNetns(ns, "node", args);
    this.procs.push(proc);
    proc.catch(() => {});
    await new Promise<void>((resolve, reject) => {
      proc.stdout!.once("data", () => resolve());
      proc.once("exit", code => reject(new Error(`server in ${ns} exited (${code})`)));
    });
  }

  /**
   * Both nodes: the node's address, the VIP, and each service with its backends (the same list on
   * both nodes, so the same Maglev table; flagged remote on the node the backend is not behind).
   */
  async configure(services: Service[]): Promise<void> {
    for (const [dp, self] of [
      [this.gw1, GW1],
      [this.gw2, GW2],
    ] as const) {
      await dp.load();
      await dp.setNodeAddress(self);
      await dp.setAddresses([VIP]);
    }
    for (const s of services) await this.setService(s);
  }

  /** One service on both nodes (loaded), its backends flagged remote where they are not behind the node. */
  async setService(s: Service): Promise<void> {
    for (const [dp, local] of [
      [this.gw1, B1],
      [this.gw2, B2],
    ] as const)
      await dp.setService({
        vip: VIP,
        port: s.port,
        proto: s.proto,
        backends: s.backends.map(b => ({ ...b, weight: 1, remote: b.ip !== local })),
        rejectWeight: 0,
      });
  }

  async attach(mode1: Mode, mode2: Mode): Promise<void> {
    await this.gw1.attach("eth0", mode1);
    await this.gw2.attach("eth0", mode2);
  }

  async detach(): Promise<void> {
    await this.gw1.detach("eth0");
    await this.gw2.detach("eth0");
  }

  /** The client's route to the VIP now leads to node 1 or 2. */
  async moveVip(node: 1 | 2): Promise<void> {
    await this.ip(this.ns.client, "route", "replace", `${VIP}/32`, "via", node === 1 ? GW1 : GW2);
  }

  /** Starts steady flows from the client to VIP (FLOWS_JS); resolves once they run. */
  async flows(spec: { tcp: number[]; udp: number[]; chunk?: number; everyMs?: number }) {
    const proc = inNetns(this.ns.client, "node", [
      "-e",
      FLOWS_JS,
      JSON.stringify({ host: VIP, chunk: 4096, everyMs: 10, ...spec }),
    ]);
    this.procs.push(proc);
    proc.catch(() => {});
    const flows = new Flows(proc);
    await flows.ready;
    return flows;
  }

  /** A one-shot client program in the client namespace. */
  run(args: string[]) {
    return inNetns(this.ns.client, "node", args);
  }

  /** Removes processes, namespaces (with every link and attached program) and both nodes' pins. */
  async down(): Promise<void> {
    for (const p of this.procs) p.kill("SIGKILL");
    await Promise.allSettled(this.procs);
    this.procs = [];
    for (const ns of Object.values(this.ns))
      await execa("ip", ["netns", "del", ns], { reject: false });
    await this.gw1.unpin();
    await this.gw2.unpin();
    await execa("rm", ["-rf", this.gw1.pinDir, this.gw2.pinDir]);
  }
}
