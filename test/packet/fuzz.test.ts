// SPDX-License-Identifier: Apache-2.0
// Deterministic fuzzing of the four programs through BPF_PROG_TEST_RUN: random frames and
// mutations of well-formed ones (fixed seeds, a fixed count), run in batches through one bpftool
// process per few thousand frames, and checked against the invariants bpf/README.md promises:
//  - every return code is one the verdict table names (XDP: drop, pass, tx; TC ingress: ok, shot,
//    redirect; TC egress: ok, shot);
//  - a frame that is not for blixt (no Gateway address or VIP as IPv4 destination or ARP target,
//    nor IP-in-IP, at ingress; no backend as source or quoted destination at egress) is passed byte for byte,
//    or dropped only when its IPv4 header is one ip_rcv would drop too;
//  - every frame a program changed has valid IPv4, TCP/UDP, ICMP (and quoted IPv4) checksums
//    whenever the frame it was given had (a RST it built: always).
import t from "tap";
import { execa } from "execa";
import { fileURLToPath } from "node:url";
import {
  loadedDataplane,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  XDP_DROP,
  XDP_PASS,
  XDP_TX,
} from "./fixture.js";
import {
  nonIpFrame,
  tcpFrame,
  udpFrame,
  ETH_P_ARP,
  ETH_P_IP,
  ETH_P_IPV6,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
} from "../lib/packet.js";
import {
  badChecksums,
  icmpFrame,
  quoteOf,
  ICMP_DEST_UNREACH,
  ICMP_ECHO,
  ICMP_FRAG_NEEDED,
  ICMP_TIME_EXCEEDED,
} from "../lib/icmp.js";
import type { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import type { ProgName } from "../../capabilities/dataplane/maps.js";

const GW = "198.18.80.1"; // Gateway address, announced, services on TCP 80 and UDP 53
const GW_QUIET = "198.18.80.2"; // Gateway address, not announced here, no service
const VIP = "198.18.81.1"; // a service address that is no Gateway address (TCP 443)
const BACKENDS = ["10.8.0.1", "10.8.0.2"];
const OTHERS = ["198.18.80.99", "192.0.2.99", "10.8.0.99"];
const CLIENTS = ["192.0.2.80", "192.0.2.81", "203.0.113.80"];
const BLIXT_ADDRS = new Set([GW, GW_QUIET, VIP]);
const FRAMES = 12_000; // per seed; each through XDP and TC ingress, and a third of them through TC egress
const SEEDS = [0x5eed0001, 0x5eed0002];
const BATCH = 4000;
const RUNNER = fileURLToPath(new URL("../lib/progrun.py", import.meta.url));

/**
 * BPF_PROG_TEST_RUN of every frame through one process (test/lib/progrun.py: bpf(2) on one program
 * fd): bpftool's batch mode opens the pin and a file per frame, which costs milliseconds each on a
 * busy machine. A negative return code is the errno of a run the kernel refused.
 */
async function runFast(
  dp: Dataplane,
  prog: ProgName,
  frames: Uint8Array[],
): Promise<{ retval: number; dataOut: Uint8Array }[]> {
  const input = Buffer.concat(
    frames.flatMap(f => [Buffer.from(Uint32Array.of(f.length).buffer), Buffer.from(f)]),
  );
  const r = await execa("python3", [RUNNER, dp.progPin(prog)], {
    input,
    encoding: "buffer",
    stripFinalNewline: false,
  });
  const out = Buffer.from(r.stdout);
  const results: { retval: number; dataOut: Uint8Array }[] = [];
  for (let pos = 0; pos < out.length; ) {
    const retval = out.readInt32LE(pos);
    const n = out.readUInt32LE(pos + 4);
    results.push({ retval, dataOut: new Uint8Array(out.subarray(pos + 8, pos + 8 + n)) });
    pos += 8 + n;
  }
  if (results.length !== frames.length)
    throw new Error(`progrun returned ${results.length} results for ${frames.length} frames`);
  return results;
}

/** mulberry32: a small, fast, seeded PRNG. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  return { next, int, pick, bytes };
}
type Rng = ReturnType<typeof rng>;

const ip4 = (b: Uint8Array, off: number) => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
const ethType = (b: Uint8Array) => (b[12] << 8) | b[13];

/** A frame ip_rcv would drop for its IPv4 header alone (parse.h's drop_malformed_l3). */
function badIpv4Header(b: Uint8Array): boolean {
  if (b.length < 34) return true;
  const ihl = b[14] & 0x0f;
  const total = (b[16] << 8) | b[17];
  return b[14] >> 4 !== 4 || ihl < 5 || total < ihl * 4 || 14 + total > b.length;
}

/**
 * Is this frame for blixt at ingress: IPv4 to one of its addresses, IP-in-IP (without options,
 * not a fragment: decapsulated for a backend, or dropped), or ARP asking for one of its addresses.
 */
function forBlixtIngress(b: Uint8Array): boolean {
  const ipip = b[23] === 4 && (b[14] & 0x0f) === 5 && (((b[20] << 8) | b[21]) & 0x3fff) === 0;
  if (ethType(b) === ETH_P_IP && b.length >= 34) return ipip || BLIXT_ADDRS.has(ip4(b, 30));
  if (ethType(b) === ETH_P_ARP && b.length >= 42) return BLIXT_ADDRS.has(ip4(b, 38));
  return false;
}

/** Is this frame for blixt at egress: from a backend, or an ICMP error quoting a packet to one. */
function forBlixtEgress(b: Uint8Array): boolean {
  if (ethType(b) !== ETH_P_IP || b.length < 34) return false;
  if (BACKENDS.includes(ip4(b, 26))) return true;
  return b[23] === 1 && b.length >= 62 && BACKENDS.includes(ip4(b, 42 + 16));
}

/** Every checksum of a well-formed IPv4 frame verifies (false for anything we cannot check). */
function checksumsOk(b: Uint8Array): boolean {
  if (ethType(b) !== ETH_P_IP || badIpv4Header(b) || (b[14] & 0x0f) !== 5) return false;
  const total = (b[16] << 8) | b[17];
  const proto = b[23];
  if (proto === 6 && total < 40) return false;
  if (proto === 17 && total < 28) return false;
  if (proto === 1 && total < 28) return false;
  try {
    return badChecksums(b).length === 0;
  } catch {
    return false;
  }
}

const FLAGS = [
  TCP_SYN,
  TCP_ACK,
  TCP_ACK | TCP_PSH,
  TCP_FIN | TCP_ACK,
  TCP_RST,
  TCP_RST | TCP_ACK,
  TCP_SYN | TCP_ACK,
  0,
  0xff,
];

/** A well-formed frame of one of the shapes the programs tell apart. */
function wellFormed(r: Rng, egress: boolean): Uint8Array {
  const client = r.pick(CLIENTS);
  const sport = 30000 + r.int(64);
  const payload = r.bytes(r.int(3) === 0 ? r.int(1200) : r.int(40));
  const to = r.pick([GW, GW, GW, VIP, GW_QUIET, ...OTHERS]);
  const backend = r.pick(BACKENDS);
  if (egress) {
    switch (r.int(4)) {
      case 0:
        return tcpFrame({
          src: backend,
          dst: client,
          sport: r.pick([8080, 8443, 80]),
          dport: sport,
          flags: r.pick(FLAGS),
          payload,
        });
      case 1:
        return udpFrame({
          src: backend,
          dst: client,
          sport: r.pick([5353, 53]),
          dport: sport,
          payload,
          zeroChecksum: r.int(4) === 0,
        });
      case 2: {
        const quoted = r.int(2)
          ? tcpFrame({ src: client, dst: backend, sport, dport: 8080, flags: TCP_ACK, payload })
          : udpFrame({ src: client, dst: backend, sport, dport: 5353, payload });
        return icmpFrame({
          src: r.pick([backend, "203.0.113.1"]),
          dst: client,
          type: r.pick([ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED]),
          code: ICMP_FRAG_NEEDED,
          rest: 1400,
          payload: quoteOf(quoted, Math.min(quoted.length - 14, r.pick([28, 48, 548]))),
        });
      }
      default:
        return tcpFrame({
          src: r.pick(OTHERS),
          dst: client,
          sport: 80,
          dport: sport,
          flags: r.pick(FLAGS),
          payload,
        });
    }
  }
  switch (r.int(7)) {
    case 0:
    case 1:
      return tcpFrame({
        src: client,
        dst: to,
        sport,
        dport: r.pick([80, 443, 81]),
        flags: r.pick(FLAGS),
        payload,
        tcpOptions: r.int(3) ? undefined : Uint8Array.of(2, 4, 5, 0xb4),
      });
    case 2:
      return udpFrame({
        src: client,
        dst: to,
        sport,
        dport: r.pick([53, 54]),
        payload,
        zeroChecksum: r.int(4) === 0,
      });
    case 3:
      return icmpFrame({ src: client, dst: to, type: ICMP_ECHO, rest: r.int(0x10000), payload });
    case 4: {
      const quoted = r.int(2)
        ? tcpFrame({
            src: to,
            dst: client,
            sport: r.pick([80, 443]),
            dport: sport,
            flags: TCP_ACK,
            payload,
          })
        : udpFrame({ src: to, dst: client, sport: 53, dport: sport, payload });
      return icmpFrame({
        src: "203.0.113.1",
        dst: to,
        type: r.pick([ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED]),
        code: r.int(5),
        rest: 1400,
        payload: quoteOf(quoted, Math.min(quoted.length - 14, r.pick([28, 48, 548]))),
      });
    }
    case 5: {
      const arp = nonIpFrame(ETH_P_ARP, 60);
      arp.set([0, 1, 8, 0, 6, 4, 0, r.pick([1, 2])], 14);
      arp.set([2, 0, 0, 0, 0, 1], 22);
      arp.set(to.split(".").map(Number), 38);
      arp.set(client.split(".").map(Number), 28);
      return arp;
    }
    default:
      return nonIpFrame(r.pick([ETH_P_IPV6, 0x8100, 0x88a8, r.int(0x10000)]), 60 + r.int(60));
  }
}

/** 0..4 mutations: bytes flipped or set, the frame cut or extended, a header field set. */
function mutate(r: Rng, frame: Uint8Array): Uint8Array {
  let b = frame.slice();
  const n = r.int(5);
  for (let i = 0; i < n; i++) {
    switch (r.int(6)) {
      case 0:
        b[r.int(b.length)] ^= 1 << r.int(8);
        break;
      case 1:
        b[r.int(b.length)] = r.int(256);
        break;
      case 2:
        b = b.slice(0, 14 + r.int(Math.max(1, b.length - 13)));
        break;
      case 3: {
        const longer = new Uint8Array(b.length + 1 + r.int(64));
        longer.set(b);
        longer.set(r.bytes(longer.length - b.length), b.length);
        b = longer;
        break;
      }
      default: {
        // A field parse.h reads: version/IHL, total length, flags/fragment, protocol, L4 ports, TCP doff/flags, UDP length.
        const off = r.pick([14, 16, 17, 20, 21, 23, 34, 36, 46, 47, 38, 39, 42, 43, 44]);
        if (off < b.length) b[off] = r.int(256);
      }
    }
  }
  return b;
}

function frameFor(r: Rng, egress: boolean): Uint8Array {
  const kind = r.int(10);
  if (kind === 0) {
    // Random bytes behind a chosen EtherType.
    const b = r.bytes(14 + r.int(180));
    const et = r.pick([ETH_P_IP, ETH_P_IP, ETH_P_IP, ETH_P_ARP, ETH_P_IPV6, 0x8100]);
    b[12] = et >> 8;
    b[13] = et & 0xff;
    if (et === ETH_P_IP && b.length > 14) b[14] = 0x45;
    return b;
  }
  const f = wellFormed(r, egress);
  return kind <= 4 ? f : mutate(r, f);
}

/** BPF_PROG_TEST_RUN of an skb refuses an IPv4/IPv6 EtherType with less than that header; XDP refuses past a page. */
function runnable(prog: ProgName, b: Uint8Array): boolean {
  if (b.length < 14 || b.length > 3000) return false;
  if (prog === "blixt_xdp_ingress") return true;
  if (ethType(b) === ETH_P_IP && b.length < 34) return false;
  if (ethType(b) === ETH_P_IPV6 && b.length < 54) return false;
  return true;
}

const ALLOWED: Record<ProgName, number[]> = {
  blixt_xdp_ingress: [XDP_DROP, XDP_PASS, XDP_TX],
  blixt_tc_ingress: [TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT],
  blixt_tc_egress: [TC_ACT_OK, TC_ACT_SHOT],
  blixt_tc_pod_ingress: [TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT],
};
const PASS: Record<ProgName, number> = {
  blixt_xdp_ingress: XDP_PASS,
  blixt_tc_ingress: TC_ACT_OK,
  blixt_tc_egress: TC_ACT_OK,
  blixt_tc_pod_ingress: TC_ACT_OK,
};

interface Failure {
  prog: ProgName;
  seed: number;
  index: number;
  why: string;
  frame: string;
}

async function fuzz(
  dp: Dataplane,
  prog: ProgName,
  seed: number,
  count: number,
): Promise<{ runs: number; changed: number; failures: Failure[] }> {
  const r = rng(seed);
  const egress = prog === "blixt_tc_egress";
  const frames: Uint8Array[] = [];
  while (frames.length < count) {
    const f = frameFor(r, egress);
    if (runnable(prog, f)) frames.push(f);
  }
  const failures: Failure[] = [];
  let changed = 0;
  for (let first = 0; first < frames.length; first += BATCH) {
    const chunk = frames.slice(first, first + BATCH);
    const results = await runFast(dp, prog, chunk);
    results.forEach((res, i) => {
      const input = chunk[i];
      const out = res.dataOut;
      const fail = (why: string) =>
        failures.push({
          prog,
          seed,
          index: first + i,
          why,
          frame: Buffer.from(input).toString("hex"),
        });
      if (res.retval < 0) return fail(`the kernel refused to run it: errno ${-res.retval}`);
      if (!ALLOWED[prog].includes(res.retval)) return fail(`return code ${res.retval}`);
      const same =
        out.length === input.length && Buffer.compare(Buffer.from(out), Buffer.from(input)) === 0;
      if (!same) changed++;
      const mine = egress ? forBlixtEgress(input) : forBlixtIngress(input);
      if (!mine) {
        if (res.retval === PASS[prog] && !same) return fail("a frame not for blixt was changed");
        if (res.retval !== PASS[prog] && !(ethType(input) === ETH_P_IP && badIpv4Header(input)))
          return fail(`a frame not for blixt got return code ${res.retval}`);
        return;
      }
      if (same) return;
      const dropped =
        prog === "blixt_xdp_ingress" ? res.retval === XDP_DROP : res.retval === TC_ACT_SHOT;
      if (dropped) return; // a dropped frame's bytes go nowhere
      if (ethType(out) === ETH_P_ARP) return; // an ARP reply: arp.test.ts checks its bytes
      const builtRst = out.length === 54 && out[23] === 6 && (out[47] & TCP_RST) !== 0;
      if ((builtRst || checksumsOk(input)) && !checksumsOk(out))
        return fail(`rewritten with bad checksums: ${badChecksums(out).join(", ")}`);
    });
  }
  return { runs: frames.length, changed, failures };
}

t.test("fuzz", async t => {
  const started = Date.now();
  const dp = await loadedDataplane(t, "fuzz");
  await dp.setAddresses([GW, GW_QUIET]);
  await dp.setAnnounced([GW]);
  await dp.setService({
    vip: GW,
    port: 80,
    proto: "tcp",
    backends: [
      { ip: BACKENDS[0], port: 8080, weight: 1 },
      { ip: BACKENDS[1], port: 8080, weight: 1 },
    ],
    rejectWeight: 1,
  });
  await dp.setService({
    vip: GW,
    port: 53,
    proto: "udp",
    backends: [{ ip: BACKENDS[0], port: 5353, weight: 1 }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: VIP,
    port: 443,
    proto: "tcp",
    backends: [{ ip: BACKENDS[1], port: 8443, weight: 1 }],
    rejectWeight: 0,
  });

  let total = 0;
  for (const seed of SEEDS) {
    for (const [prog, count] of [
      ["blixt_xdp_ingress", FRAMES],
      ["blixt_tc_ingress", FRAMES],
      ["blixt_tc_egress", FRAMES / 3],
      ["blixt_tc_pod_ingress", FRAMES / 3],
    ] as const) {
      const { runs, changed, failures } = await fuzz(dp, prog, seed, count);
      total += runs;
      t.same(
        failures.slice(0, 5),
        [],
        `${prog}, seed ${seed.toString(16)}: ${runs} frames, ${changed} rewritten, ${failures.length} invariant violations`,
      );
      t.ok(
        changed > runs / 50,
        `${prog}, seed ${seed.toString(16)}: the frames reach the rewriting paths (${changed} rewritten)`,
      );
    }
  }
  const { reasons } = await dp.stats();
  for (const r of [
    "dnat",
    "dnat_in_cluster",
    "reverse_nat",
    "refused_rst",
    "reject_rst",
    "drop_malformed_l3",
    "drop_malformed_l4",
    "pass_not_ipv4",
    "icmp_echo_reply",
    "icmp_error_nat",
  ] as const) {
    t.ok(reasons[r] > 0, `reason ${r} reached (${reasons[r]})`);
  }
  t.comment(`${total} frames in ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
