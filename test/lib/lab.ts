// SPDX-License-Identifier: Apache-2.0
// The netns lab: a client, a gateway node and N backends as network namespaces on this machine,
// shared by the lab tests, hack/lab-demo.sh and bench/. blixt attaches on the gateway's interface
// that faces the client; everything else is plain kernel routing.
//
//   client ns            gateway ns                       backend ns (× N)
//   eth0 ────────────── cl  (blixt attaches here)
//   198.18.{2k}.2        198.18.{2k}.1
//                        b<i> ──────────────────────────── eth0  198.18.{2k+1}.{4i+2}
//                        198.18.{2k+1}.{4i+1}               default via the gateway
//   VIPs 198.19.{2k}.0/24 are routed by the client via the gateway; no interface holds them.
//
// k comes from the lab's name, so two labs with different names (one per test file) use
// different namespaces, pins and subnets. The subnets live only inside the lab's namespaces, so
// even two names hashing to the same k cannot disturb each other.
import { createHash } from "node:crypto";
import { mkdir, rm, writeFile, access } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { execa, type ResultPromise } from "execa";

export interface LabOptions {
  /** Short, unique per user of the lab (e.g. the test file's name): names namespaces and pins. */
  name: string;
  /** How many backend namespaces, each with its own veth to the gateway. At most 60. */
  backends: number;
}

export interface TcpReply {
  /** Name of the backend that answered (e.g. "b1"). */
  backend: string;
  /** The peer address the backend saw, "ip:port": the client's real address if blixt kept it. */
  peer: string;
}

export type TcpOutcome = ({ ok: true } & TcpReply) | { ok: false; code: string };

export interface UdpReply extends TcpReply {
  /** The source of the reply as the client received it, "ip:port". */
  from: string;
}

export type UdpOutcome = ({ ok: true } & UdpReply) | { ok: false; code: string };

/** The backend program: per TCP line or UDP datagram, answers "<name> <peer ip>:<peer port>". */
export const SERVER_JS = String.raw`
const net = require("node:net"), dgram = require("node:dgram");
const [name, tcpPorts, udpPorts] = process.argv.slice(1);
const ports = (s) => (s ? s.split(",").map(Number) : []);
let pending = 0;
const ready = () => { if (--pending === 0) process.stdout.write("ready\n"); };
for (const port of ports(tcpPorts)) {
  pending++;
  net.createServer((sock) => {
    sock.on("error", () => {});
    let buf = "";
    sock.on("data", (d) => {
      buf += d;
      for (let i; (i = buf.indexOf("\n")) >= 0; buf = buf.slice(i + 1))
        sock.write(name + " " + sock.remoteAddress + ":" + sock.remotePort + "\n");
    });
  }).listen(port, "0.0.0.0", ready);
}
for (const port of ports(udpPorts)) {
  pending++;
  const s = dgram.createSocket("udp4");
  s.on("message", (_m, r) => s.send(name + " " + r.address + ":" + r.port, r.port, r.address));
  s.bind(port, "0.0.0.0", ready);
}
if (pending === 0) process.stdout.write("ready\n");
// Exit with the lab: the parent holds our stdin.
process.stdin.on("end", () => process.exit(0)).resume();
`;

/**
 * The client program: JSON commands on stdin, one JSON answer per line on stdout.
 *  {id, op:"tcp", host, port, count, concurrency, timeoutMs} → {id, results: TcpOutcome[]}
 *  {id, op:"udp", host, port, count, timeoutMs}             → {id, results: UdpOutcome[]}
 *  {id, op:"open", conn, host, port, timeoutMs}             → {id, result: TcpOutcome} (keeps it)
 *  {id, op:"send", conn, timeoutMs}                         → {id, result: TcpOutcome}
 *  {id, op:"close", conn}                                   → {id}
 */
const CLIENT_JS = String.raw`
const net = require("node:net"), dgram = require("node:dgram"), readline = require("node:readline");
const conns = new Map();
const parse = (line) => { const [backend, peer] = line.split(" "); return { ok: true, backend, peer }; };
function exchange(sock, timeoutMs) {
  return new Promise((resolve) => {
    let buf = "";
    const done = (r) => { clearTimeout(timer); sock.off("data", onData); sock.off("error", onError); sock.off("close", onClose); resolve(r); };
    const onData = (d) => { buf += d; const i = buf.indexOf("\n"); if (i >= 0) done(parse(buf.slice(0, i))); };
    const onError = (e) => done({ ok: false, code: e.code || String(e) });
    const onClose = () => done({ ok: false, code: "ECLOSED" });
    const timer = setTimeout(() => done({ ok: false, code: "ETIMEDOUT" }), timeoutMs);
    sock.on("data", onData); sock.on("error", onError); sock.on("close", onClose);
    sock.write("hello\n");
  });
}
function connect(host, port, timeoutMs) {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => { sock.destroy(); resolve({ error: "ETIMEDOUT" }); }, timeoutMs);
    sock.once("connect", () => { clearTimeout(timer); resolve({ sock }); });
    sock.once("error", (e) => { clearTimeout(timer); resolve({ error: e.code || String(e) }); });
  });
}
async function tcpOnce(host, port, timeoutMs) {
  const c = await connect(host, port, timeoutMs);
  if (c.error) return { ok: false, code: c.error };
  const r = await exchange(c.sock, timeoutMs);
  c.sock.destroy();
  return r;
}
function udpOnce(host, port, timeoutMs) {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    const done = (r) => { clearTimeout(timer); s.close(); resolve(r); };
    const timer = setTimeout(() => done({ ok: false, code: "ETIMEDOUT" }), timeoutMs);
    s.on("message", (m, r) => done({ ...parse(String(m)), from: r.address + ":" + r.port }));
    s.on("error", (e) => done({ ok: false, code: e.code || String(e) }));
    s.send("hello", port, host);
  });
}
async function pool(count, concurrency, fn) {
  const results = new Array(count);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) { const i = next++; results[i] = await fn(); }
  }));
  return results;
}
async function handle(cmd) {
  const t = cmd.timeoutMs ?? 3000;
  switch (cmd.op) {
    case "tcp": return { results: await pool(cmd.count, cmd.concurrency ?? 16, () => tcpOnce(cmd.host, cmd.port, t)) };
    case "udp": return { results: await pool(cmd.count, cmd.concurrency ?? 16, () => udpOnce(cmd.host, cmd.port, t)) };
    case "open": {
      const c = await connect(cmd.host, cmd.port, t);
      if (c.error) return { result: { ok: false, code: c.error } };
      c.sock.on("error", () => {});
      conns.set(cmd.conn, c.sock);
      return { result: await exchange(c.sock, t) };
    }
    case "send": {
      const sock = conns.get(cmd.conn);
      return { result: sock ? await exchange(sock, t) : { ok: false, code: "ENOCONN" } };
    }
    case "close": conns.get(cmd.conn)?.destroy(); conns.delete(cmd.conn); return {};
    default: return { error: "unknown op " + cmd.op };
  }
}
readline.createInterface({ input: process.stdin })
  .on("line", (line) => { const cmd = JSON.parse(line); handle(cmd).then((r) => process.stdout.write(JSON.stringify({ id: cmd.id, ...r }) + "\n")); })
  .on("close", () => process.exit(0));
`;

/** A pass-through XDP program, so XDP_TX from the gateway's veth reaches its peer. */
const XDP_PASS_C = `#include <linux/bpf.h>
__attribute__((section("xdp"), used)) int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
`;

function labIndex(name: string): number {
  return createHash("sha256").update(name).digest().readUInt16BE(0) % 128;
}

/** Runs a command inside a network namespace, keeping the mount namespace (and /sys/fs/bpf). */
export function inNetns(netns: string, file: string, args: string[]): ResultPromise {
  return execa("nsenter", [`--net=/var/run/netns/${netns}`, file, ...args]);
}

export async function buildXdpPass(): Promise<string> {
  const dir = join(
    tmpdir(),
    `blixt-lab-xdp-pass-${createHash("sha256").update(XDP_PASS_C).digest("hex").slice(0, 12)}`,
  );
  const obj = join(dir, "xdp_pass.o");
  try {
    await access(obj);
    return obj;
  } catch {
    await mkdir(dir, { recursive: true });
    const src = join(dir, `xdp_pass.${process.pid}.c`);
    const tmpObj = join(dir, `xdp_pass.${process.pid}.o`);
    await writeFile(src, XDP_PASS_C);
    const multiarch = (await execa("gcc", ["-print-multiarch"], { reject: false })).stdout.trim();
    const includes = multiarch ? [`-I/usr/include/${multiarch}`] : [];
    await execa("clang", ["-O2", "-target", "bpf", ...includes, "-c", src, "-o", tmpObj]);
    // Rename is atomic, so a lab in another test file never loads a half-written object.
    await execa("mv", ["-f", tmpObj, obj]);
    await rm(src, { force: true });
    return obj;
  }
}

export class Lab {
  readonly name: string;
  readonly backendCount: number;
  readonly index: number;
  readonly clientNs: string;
  readonly gatewayNs: string;
  readonly backendNs: string[];
  /** The gateway's interface facing the client: where blixt attaches. */
  readonly gatewayIface = "cl";
  readonly clientIp: string;
  /** The gateway's address on the client side (haproxy in the bench listens here). */
  readonly gatewayIp: string;
  readonly backendIps: string[];
  /** A pin directory of the lab's own, so labs and the real agent never share maps. */
  readonly pinDir: string;
  private procs: ResultPromise[] = [];
  private client?: { proc: ResultPromise; pending: Map<number, (v: any) => void>; nextId: number };

  constructor(opts: LabOptions) {
    if (!/^[a-z0-9-]{1,20}$/.test(opts.name)) {
      throw new Error(`Lab: name "${opts.name}" must be 1-20 characters of a-z, 0-9 and "-"`);
    }
    if (!Number.isInteger(opts.backends) || opts.backends < 1 || opts.backends > 60) {
      throw new Error(
        `Lab ${opts.name}: backends must be an integer in 1..60, got ${opts.backends}`,
      );
    }
    this.name = opts.name;
    this.backendCount = opts.backends;
    this.index = labIndex(opts.name);
    const prefix = `blixt-${opts.name}`;
    this.clientNs = `${prefix}-client`;
    this.gatewayNs = `${prefix}-gw`;
    this.backendNs = Array.from({ length: opts.backends }, (_, i) => `${prefix}-b${i}`);
    const k = this.index;
    this.clientIp = `198.18.${2 * k}.2`;
    this.gatewayIp = `198.18.${2 * k}.1`;
    this.backendIps = Array.from(
      { length: opts.backends },
      (_, i) => `198.18.${2 * k + 1}.${4 * i + 2}`,
    );
    this.pinDir = `/sys/fs/bpf/blixt-lab-${opts.name}`;
  }

  /** The j-th VIP of this lab (routed to the gateway, held by no interface). */
  vip(j = 0): string {
    return `198.19.${2 * this.index}.${10 + j}`;
  }

  /** Name a backend answers with: "b<i>". */
  backendName(i: number): string {
    return `b${i}`;
  }

  private ns(netns: string, file: string, args: string[]) {
    return inNetns(netns, file, args);
  }

  /** Builds the namespaces, links, addresses and routes. Cleans a stale lab of the same name first. */
  async up(): Promise<void> {
    await this.down();
    const k = this.index;
    for (const ns of [this.clientNs, this.gatewayNs, ...this.backendNs]) {
      await execa("ip", ["netns", "add", ns]);
      await execa("ip", ["-n", ns, "link", "set", "lo", "up"]);
    }
    const gw = this.gatewayNs;
    for (const [key, value] of [
      ["net.ipv4.ip_forward", "1"],
      ["net.ipv4.conf.all.rp_filter", "0"],
      ["net.ipv4.conf.default.rp_filter", "0"],
    ]) {
      await this.ns(gw, "sysctl", ["-qw", `${key}=${value}`]);
    }

    await execa("ip", [
      "-n",
      gw,
      "link",
      "add",
      this.gatewayIface,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      this.clientNs,
    ]);
    await execa("ip", ["-n", gw, "addr", "add", `${this.gatewayIp}/24`, "dev", this.gatewayIface]);
    await execa("ip", ["-n", gw, "link", "set", this.gatewayIface, "up"]);
    await execa("ip", ["-n", this.clientNs, "addr", "add", `${this.clientIp}/24`, "dev", "eth0"]);
    await execa("ip", ["-n", this.clientNs, "link", "set", "eth0", "up"]);
    await execa("ip", [
      "-n",
      this.clientNs,
      "route",
      "add",
      `198.19.${2 * k}.0/24`,
      "via",
      this.gatewayIp,
    ]);
    await execa("ip", [
      "-n",
      this.clientNs,
      "route",
      "add",
      `198.18.${2 * k + 1}.0/24`,
      "via",
      this.gatewayIp,
    ]);

    for (const [i, ns] of this.backendNs.entries()) {
      const gwSide = `198.18.${2 * k + 1}.${4 * i + 1}`;
      await execa("ip", [
        "-n",
        gw,
        "link",
        "add",
        `b${i}`,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns,
      ]);
      await execa("ip", ["-n", gw, "addr", "add", `${gwSide}/30`, "dev", `b${i}`]);
      await execa("ip", ["-n", gw, "link", "set", `b${i}`, "up"]);
      await execa("ip", ["-n", ns, "addr", "add", `${this.backendIps[i]}/30`, "dev", "eth0"]);
      await execa("ip", ["-n", ns, "link", "set", "eth0", "up"]);
      await execa("ip", ["-n", ns, "route", "add", "default", "via", gwSide]);
    }

    // Native XDP on the gateway's veth sends XDP_TX frames (the RST) to the client's side,
    // which drops them unless it runs an XDP program too.
    const pass = await buildXdpPass();
    await execa("ip", [
      "-n",
      this.clientNs,
      "link",
      "set",
      "dev",
      "eth0",
      "xdpdrv",
      "obj",
      pass,
      "sec",
      "xdp",
    ]);
  }

  /** Starts the answering server in backend i on the given ports; resolves once it listens. */
  async startServer(i: number, ports: { tcp?: number[]; udp?: number[] }): Promise<void> {
    const proc = this.ns(this.backendNs[i], "node", [
      "-e",
      SERVER_JS,
      this.backendName(i),
      (ports.tcp ?? []).join(","),
      (ports.udp ?? []).join(","),
    ]);
    await this.track(proc, `server in ${this.backendNs[i]}`);
  }

  /** Starts servers on every backend with the same ports. */
  async startServers(ports: { tcp?: number[]; udp?: number[] }): Promise<void> {
    await Promise.all(this.backendNs.map((_, i) => this.startServer(i, ports)));
  }

  /** Starts a long-running process inside one of the lab's namespaces; down() kills it. */
  spawn(netns: string, file: string, args: string[]): ResultPromise {
    const proc = this.ns(netns, file, args);
    this.procs.push(proc);
    proc.catch(() => {});
    return proc;
  }

  private async track(proc: ResultPromise, what: string): Promise<void> {
    this.procs.push(proc);
    proc.catch(() => {});
    const lines = createInterface({ input: proc.stdout! });
    await new Promise<void>((resolve, reject) => {
      lines.once("line", () => resolve());
      proc.once("exit", code =>
        reject(new Error(`Lab ${this.name}: ${what} exited (code ${code}) before it was ready`)),
      );
    });
  }

  private clientAgent() {
    if (this.client) return this.client;
    const proc = this.ns(this.clientNs, "node", ["-e", CLIENT_JS]);
    this.procs.push(proc);
    proc.catch(() => {});
    const pending = new Map<number, (v: any) => void>();
    createInterface({ input: proc.stdout! }).on("line", line => {
      const msg = JSON.parse(line);
      pending.get(msg.id)?.(msg);
      pending.delete(msg.id);
    });
    this.client = { proc, pending, nextId: 1 };
    return this.client;
  }

  private async ask(cmd: Record<string, unknown>): Promise<any> {
    const client = this.clientAgent();
    const id = client.nextId++;
    const answer = new Promise(resolve => client.pending.set(id, resolve));
    client.proc.stdin!.write(JSON.stringify({ id, ...cmd }) + "\n");
    return answer;
  }

  /** `count` short TCP connections from the client, each exchanging one line. */
  async tcp(
    host: string,
    port: number,
    count: number,
    opts: { concurrency?: number; timeoutMs?: number } = {},
  ): Promise<TcpOutcome[]> {
    return (await this.ask({ op: "tcp", host, port, count, ...opts })).results;
  }

  /** `count` UDP requests from the client, each from a fresh socket (a new source port). */
  async udp(
    host: string,
    port: number,
    count: number,
    opts: { concurrency?: number; timeoutMs?: number } = {},
  ): Promise<UdpOutcome[]> {
    return (await this.ask({ op: "udp", host, port, count, ...opts })).results;
  }

  /** Opens a TCP connection the client keeps, and exchanges a first line on it. */
  async open(conn: string, host: string, port: number, timeoutMs?: number): Promise<TcpOutcome> {
    return (await this.ask({ op: "open", conn, host, port, timeoutMs })).result;
  }

  /** Exchanges one more line on a connection from open(). */
  async send(conn: string, timeoutMs?: number): Promise<TcpOutcome> {
    return (await this.ask({ op: "send", conn, timeoutMs })).result;
  }

  async close(conn: string): Promise<void> {
    await this.ask({ op: "close", conn });
  }

  /**
   * Removes everything the lab made: processes, namespaces (and with them every link and
   * attached program), pins. Idempotent; safe after a failed up().
   */
  async down(): Promise<void> {
    for (const proc of this.procs) proc.kill("SIGKILL");
    await Promise.allSettled(this.procs);
    this.procs = [];
    this.client = undefined;
    for (const ns of [this.clientNs, this.gatewayNs, ...this.backendNs]) {
      // Whatever still runs in the lab's namespaces was started by a lab of this name (a run
      // killed before its teardown); a namespace with processes would outlive its deletion.
      const pids = await execa("ip", ["netns", "pids", ns], { reject: false });
      for (const pid of pids.stdout.split("\n").filter(Boolean)) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // already gone
        }
      }
      await execa("ip", ["netns", "del", ns], { reject: false });
    }
    await rm(this.pinDir, { recursive: true, force: true });
  }
}

/** How many outcomes each backend answered, by backend name. */
export function countByBackend(
  outcomes: { ok: boolean; backend?: string }[],
): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) if (o.ok && o.backend) counts[o.backend] = (counts[o.backend] ?? 0) + 1;
  return counts;
}
