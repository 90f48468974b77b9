// SPDX-License-Identifier: Apache-2.0
// Backends on another node (bpf/encap.h), packet by packet through BPF_PROG_TEST_RUN:
//  - the receiving node wraps the client's packet, unchanged, in an outer IPv4 header to the
//    backend (IP-in-IP, id = the backend's port, DF) and sends it itself (XDP and TC ingress);
//  - the backend's node strips it, DNATs the inner packet and records the flow, so TC egress gives
//    the backend's reply VIP:port as source, and clamps its SYN-ACK's MSS to the MTU less 20;
//  - what does not fit once encapsulated is answered with ICMP fragmentation needed (DF) or
//    dropped; IP-in-IP for no known backend is dropped; without this node's address, flows to a
//    remote backend are dropped.
// The FIB lookups run in a network namespace of the test's own: a veth up0 (MTU 1500) with a
// route to one backend network through a neighbour whose MAC is known, and to another through
// one whose MAC is not; the programs run there (nsenter), with lo (MTU 1500) as their device.
import t from "tap";
import { execa } from "execa";
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
  checksum,
  ipBytes,
  parseFrame,
  tcpFrame,
  udpFrame,
  TCP_ACK,
  TCP_FIN,
  TCP_SYN,
} from "../lib/packet.js";
import {
  batch,
  mapLookup,
  mapUpdateLine,
  progRunMany,
} from "../../capabilities/dataplane/bpftool.js";
import type { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import {
  CT_F_ENCAP,
  CT_F_FIN_CLIENT,
  CT_F_REMOTE,
  decodeConntrackFlags,
  encodeConntrackKey,
  hex,
  type ConntrackKey,
  type ProgName,
} from "../../capabilities/dataplane/maps.js";

const XDP_REDIRECT = 4;
const NETNS = `blixt-dsr-${process.pid}`;
const NODE = "172.31.255.1"; // this node's address on up0
const NEXT_HOP = "172.31.255.2"; // the other node, MAC known
const NEXT_HOP_MAC = "02:00:00:00:aa:02";
const VIP = "198.18.60.1";
const CLIENT = "192.0.2.60";
const REMOTE = "10.70.0.9"; // a backend on the other node (routed via NEXT_HOP)
const UNRESOLVED = "10.71.0.9"; // a backend behind a next hop with no neighbour entry
const LOCAL = "10.1.0.7"; // a backend on this node, for the decapsulating side
const S = 1_000_000_000n;

const ns = (...args: string[]) => execa("ip", ["-n", NETNS, ...args]);

async function upNetns(): Promise<string> {
  await execa("ip", ["netns", "del", NETNS], { reject: false });
  await execa("ip", ["netns", "add", NETNS]);
  await ns("link", "set", "lo", "mtu", "1500", "up");
  await ns("link", "add", "up0", "type", "veth", "peer", "name", "up1");
  await ns("addr", "add", `${NODE}/24`, "dev", "up0");
  await ns("link", "set", "up0", "up");
  await ns("link", "set", "up1", "up");
  await ns("neigh", "add", NEXT_HOP, "lladdr", NEXT_HOP_MAC, "dev", "up0", "nud", "permanent");
  await ns("route", "add", "10.70.0.0/16", "via", NEXT_HOP);
  await ns("route", "add", "10.71.0.0/16", "via", "172.31.255.3");
  await execa("nsenter", [
    `--net=/var/run/netns/${NETNS}`,
    "sysctl",
    "-qw",
    "net.ipv4.conf.all.forwarding=1",
  ]);
  const link = JSON.parse((await ns("-j", "link", "show", "up0")).stdout)[0];
  return link.address as string;
}

const runIn = async (dp: Dataplane, prog: ProgName, pkt: Uint8Array) =>
  (await progRunMany(dp.progPin(prog), [pkt], { netns: NETNS }))[0];

/** An IP-in-IP frame as the receiving node sends it: outer header (id = port, DF) + the client's packet. */
function ipipFrame(
  inner: Uint8Array,
  outer: { src: string; dst: string; port: number },
): Uint8Array {
  const ip = inner.subarray(14);
  const out = new Uint8Array(14 + 20 + ip.length);
  const v = new DataView(out.buffer);
  out.set(inner.subarray(0, 14), 0);
  out[14] = 0x45;
  v.setUint16(16, 20 + ip.length);
  v.setUint16(18, outer.port);
  v.setUint16(20, 0x4000);
  out[22] = 64;
  out[23] = 4;
  out.set(ipBytes(outer.src), 26);
  out.set(ipBytes(outer.dst), 30);
  v.setUint16(24, checksum(out.subarray(14, 34)));
  out.set(ip, 34);
  return out;
}

/** The outer header of an encapsulated frame, and the frame inside it (with the outer Ethernet header). */
function outerOf(b: Uint8Array) {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const inner = new Uint8Array(b.length - 20);
  inner.set(b.subarray(0, 14), 0);
  inner.set(b.subarray(34), 14);
  return {
    dstMac: Array.from(b.subarray(0, 6), x => x.toString(16).padStart(2, "0")).join(":"),
    srcMac: Array.from(b.subarray(6, 12), x => x.toString(16).padStart(2, "0")).join(":"),
    ethType: v.getUint16(12),
    verIhl: b[14],
    tos: b[15],
    totalLength: v.getUint16(16),
    id: v.getUint16(18),
    fragWord: v.getUint16(20),
    ttl: b[22],
    protocol: b[23],
    src: Array.from(b.subarray(26, 30)).join("."),
    dst: Array.from(b.subarray(30, 34)).join("."),
    checksumOk: checksum(b.subarray(14, 34)) === 0,
    ip: b.subarray(34),
    inner,
  };
}

async function reasons(dp: Dataplane) {
  return (await dp.stats()).reasons;
}

async function ctFlags(dp: Dataplane, table: "blixt_ct4" | "blixt_ct4_new", key: ConntrackKey) {
  const e = await mapLookup(dp.mapPin(table), hex(encodeConntrackKey(key)));
  return e && decodeConntrackFlags(e.value!);
}

/** Rewrites an entry's last_seen_ns as if its last packet was `ago` before now. */
async function age(
  dp: Dataplane,
  table: "blixt_ct4" | "blixt_ct4_new",
  key: ConntrackKey,
  ago: bigint,
) {
  const pin = dp.mapPin(table);
  const entry = (await mapLookup(pin, hex(encodeConntrackKey(key))))!;
  const value = entry.value!.slice();
  new DataView(value.buffer).setBigUint64(16, process.hrtime.bigint() - ago, true);
  await batch([mapUpdateLine(pin, hex(encodeConntrackKey(key)), hex(value))], "ageing an entry");
}

t.test("remote backends: IP-in-IP with direct server return", async t => {
  t.teardown(() => execa("ip", ["netns", "del", NETNS], { reject: false }));
  const upMac = await upNetns();
  const dp = await loadedDataplane(t, "dsr");
  await dp.setService({
    vip: VIP,
    port: 80,
    proto: "tcp",
    backends: [{ ip: REMOTE, port: 8080, weight: 1, remote: true }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: VIP,
    port: 53,
    proto: "udp",
    backends: [{ ip: REMOTE, port: 5353, weight: 1, remote: true }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: VIP,
    port: 81,
    proto: "tcp",
    backends: [{ ip: UNRESOLVED, port: 8081, weight: 1, remote: true }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: VIP,
    port: 443,
    proto: "tcp",
    backends: [{ ip: LOCAL, port: 8443, weight: 1 }],
    rejectWeight: 0,
  });
  t.same(
    (await dp.listServices()).find(s => s.port === 80)?.backends,
    [{ ip: REMOTE, port: 8080, weight: 1 }],
    "the remote flag lives in the table's backend list, not in blixt_backends",
  );

  const ingress = [
    ["blixt_xdp_ingress", XDP_REDIRECT, XDP_DROP, XDP_PASS, XDP_TX],
    ["blixt_tc_ingress", TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_OK, TC_ACT_REDIRECT],
  ] as const;

  await t.test(
    "no node address yet: a flow to a remote backend is dropped, nothing recorded",
    async t => {
      t.equal(await dp.nodeAddress(), "0.0.0.0");
      for (const [prog, , drop] of ingress) {
        const before = await reasons(dp);
        const syn = tcpFrame({ src: CLIENT, dst: VIP, sport: 30000, dport: 80, flags: TCP_SYN });
        const r = await runIn(dp, prog, syn);
        t.equal(r.retval, drop, `${prog}: dropped`);
        t.equal(
          (await reasons(dp)).drop_no_node_address - before.drop_no_node_address,
          1,
          "counted",
        );
        t.equal(
          await ctFlags(dp, "blixt_ct4_new", {
            saddr: CLIENT,
            daddr: VIP,
            sport: 30000,
            dport: 80,
            proto: "tcp",
          }),
          undefined,
          "no conntrack entry",
        );
      }
      await dp.setNodeAddress(NODE);
      await dp.setNodeAddress(NODE);
      t.equal(await dp.nodeAddress(), NODE, "setNodeAddress is idempotent");
    },
  );

  for (const [prog, sent, drop, pass, tx] of ingress) {
    await t.test(`${prog}: the client's packet goes whole to the backend's node`, async t => {
      const sport = prog === "blixt_xdp_ingress" ? 31000 : 32000;
      for (const [i, pkt] of [
        tcpFrame({
          src: CLIENT,
          dst: VIP,
          sport,
          dport: 80,
          flags: TCP_SYN,
          tcpOptions: Uint8Array.of(2, 4, 5, 0xb4),
        }),
        tcpFrame({
          src: CLIENT,
          dst: VIP,
          sport,
          dport: 80,
          flags: TCP_ACK,
          payload: new Uint8Array(100).fill(7),
        }),
        udpFrame({ src: CLIENT, dst: VIP, sport, dport: 53, payload: new Uint8Array(33).fill(1) }),
      ].entries()) {
        const before = await reasons(dp);
        const r = await runIn(dp, prog, pkt);
        t.equal(r.retval, sent, `packet ${i}: sent by the program (redirect to up0)`);
        const o = outerOf(r.dataOut);
        t.equal(r.dataOut.length, pkt.length + 20, "20 bytes longer");
        t.same(
          [o.dstMac, o.srcMac, o.ethType],
          [NEXT_HOP_MAC, upMac, 0x0800],
          "Ethernet to the next hop's MAC, from up0's",
        );
        t.same(
          {
            verIhl: o.verIhl,
            tos: o.tos,
            totalLength: o.totalLength,
            fragWord: o.fragWord,
            ttl: o.ttl,
            protocol: o.protocol,
            src: o.src,
            dst: o.dst,
          },
          {
            verIhl: 0x45,
            tos: pkt[15],
            totalLength: pkt.length - 14 + 20,
            fragWord: 0x4000,
            ttl: 64,
            protocol: 4,
            src: NODE,
            dst: REMOTE,
          },
          "outer IPv4: from this node to the backend, IP-in-IP, DF, TTL 64, the inner TOS",
        );
        t.equal(o.id, i === 2 ? 5353 : 8080, "outer id = the backend's port");
        t.ok(o.checksumOk, "outer header checksum verifies");
        t.same(
          Buffer.from(o.ip),
          Buffer.from(pkt.subarray(14)),
          "inner packet unchanged, byte for byte",
        );
        t.equal((await reasons(dp)).encap - before.encap, 1, "counted as encap");
      }
      const key = { saddr: CLIENT, daddr: VIP, sport, dport: 80, proto: "tcp" as const };
      const flags = await ctFlags(dp, "blixt_ct4_new", key);
      t.ok(flags !== undefined && flags & CT_F_REMOTE, "forward entry flagged CT_F_REMOTE");
      t.equal(
        await ctFlags(dp, "blixt_ct4_new", {
          saddr: REMOTE,
          daddr: CLIENT,
          sport: 8080,
          dport: sport,
          proto: "tcp",
        }),
        undefined,
        "no reverse entry: replies never come back through this node",
      );
    });

    await t.test(
      `${prog}: a remote flow is confirmed by the client still talking a second later`,
      async t => {
        const sport = prog === "blixt_xdp_ingress" ? 31100 : 32100;
        const key = { saddr: CLIENT, daddr: VIP, sport, dport: 80, proto: "tcp" as const };
        const ack = tcpFrame({ src: CLIENT, dst: VIP, sport, dport: 80, flags: TCP_ACK });
        await runIn(
          dp,
          prog,
          tcpFrame({ src: CLIENT, dst: VIP, sport, dport: 80, flags: TCP_SYN }),
        );
        await runIn(dp, prog, ack);
        t.ok(await ctFlags(dp, "blixt_ct4_new", key), "the handshake's ACK confirms nothing");
        t.equal(await ctFlags(dp, "blixt_ct4", key), undefined);
        await age(dp, "blixt_ct4_new", key, 2n * S);
        t.equal((await runIn(dp, prog, ack)).retval, sent, "still encapsulated");
        t.equal(await ctFlags(dp, "blixt_ct4_new", key), undefined, "moved out of ct4_new");
        const confirmed = await ctFlags(dp, "blixt_ct4", key);
        t.ok(confirmed !== undefined && confirmed & CT_F_REMOTE, "confirmed in ct4, still remote");
      },
    );

    await t.test(`${prog}: a remote flow closes on the client's FIN`, async t => {
      const sport = prog === "blixt_xdp_ingress" ? 31200 : 32200;
      const key = { saddr: CLIENT, daddr: VIP, sport, dport: 80, proto: "tcp" as const };
      const seg = (flags: number) => tcpFrame({ src: CLIENT, dst: VIP, sport, dport: 80, flags });
      await runIn(dp, prog, seg(TCP_SYN));
      await age(dp, "blixt_ct4_new", key, 11n * S);
      let before = await dp.conntrackCounters();
      await runIn(dp, prog, seg(TCP_ACK));
      t.equal(
        (await dp.conntrackCounters()).expired - before.expired,
        0,
        "open: 11 s idle is not too long",
      );
      await runIn(dp, prog, seg(TCP_ACK | TCP_FIN));
      t.ok(((await ctFlags(dp, "blixt_ct4", key)) ?? 0) & CT_F_FIN_CLIENT, "the FIN is recorded");
      await age(dp, "blixt_ct4", key, 11n * S);
      before = await dp.conntrackCounters();
      t.equal(
        (await runIn(dp, prog, seg(TCP_ACK))).retval,
        sent,
        "the client's last ACK still goes through",
      );
      t.equal(
        (await dp.conntrackCounters()).expired - before.expired,
        1,
        "closed by the client's FIN alone: expired after the closing timeout (10 s)",
      );
    });

    await t.test(`${prog}: next hop's MAC unknown`, async t => {
      const before = await reasons(dp);
      const syn = tcpFrame({ src: CLIENT, dst: VIP, sport: 33000, dport: 81, flags: TCP_SYN });
      const r = await runIn(dp, prog, syn);
      const o = outerOf(r.dataOut);
      t.equal(
        (await reasons(dp)).encap_no_neigh - before.encap_no_neigh,
        1,
        "counted encap_no_neigh",
      );
      t.equal(o.dst, UNRESOLVED);
      t.equal(o.id, 8081);
      t.ok(o.checksumOk);
      t.same(Buffer.from(o.ip), Buffer.from(syn.subarray(14)), "inner packet unchanged");
      if (prog === "blixt_xdp_ingress") {
        t.equal(
          r.retval,
          pass,
          "XDP: passed to the kernel to forward (which resolves the neighbour)",
        );
        t.equal(o.src, CLIENT, "with the client as outer source (not a martian)");
      } else {
        t.equal(r.retval, sent, "TC: bpf_redirect_neigh, which resolves it");
        t.equal(o.src, NODE, "from this node");
      }
    });

    await t.test(`${prog}: too big once encapsulated`, async t => {
      // 1481 bytes of IPv4 + 20 > 1500, up0's MTU.
      const big = (df: boolean) =>
        udpFrame({
          src: CLIENT,
          dst: VIP,
          sport: 34000,
          dport: 53,
          payload: new Uint8Array(1481 - 28).fill(9),
          fragWord: df ? 0x4000 : 0,
        });
      const fits = udpFrame({
        src: CLIENT,
        dst: VIP,
        sport: 34001,
        dport: 53,
        payload: new Uint8Array(1480 - 28),
      });
      t.equal((await runIn(dp, prog, fits)).retval, sent, "1480 bytes still fit");

      let before = await reasons(dp);
      const withDf = big(true);
      const r = await runIn(dp, prog, withDf);
      t.equal(r.retval, tx, "DF: answered");
      t.equal(
        (await reasons(dp)).icmp_frag_needed - before.icmp_frag_needed,
        1,
        "counted icmp_frag_needed",
      );
      const f = parseFrame(r.dataOut);
      t.equal(r.dataOut.length, 70, "Ethernet + IPv4 + ICMP + quoted IPv4 header and 8 bytes");
      t.same(
        [f.dstMac, f.srcMac],
        [parseFrame(withDf).srcMac, parseFrame(withDf).dstMac],
        "MACs swapped",
      );
      t.same(
        [f.ip.src, f.ip.dst, f.ip.protocol, f.ip.ttl],
        [VIP, CLIENT, 1, 64],
        "from the VIP to the client",
      );
      t.ok(f.ipChecksumOk, "IPv4 checksum verifies");
      const icmp = r.dataOut.subarray(34);
      t.same([icmp[0], icmp[1]], [3, 4], "destination unreachable, fragmentation needed");
      t.equal((icmp[6] << 8) | icmp[7], 1480, "next-hop MTU = 1500 - 20");
      t.equal(checksum(icmp), 0, "ICMP checksum verifies");
      t.same(
        Buffer.from(icmp.subarray(8)),
        Buffer.from(withDf.subarray(14, 42)),
        "quotes the client's header and 8 bytes",
      );

      before = await reasons(dp);
      t.equal((await runIn(dp, prog, big(false))).retval, drop, "no DF: dropped");
      t.equal((await reasons(dp)).drop_too_big - before.drop_too_big, 1, "counted drop_too_big");

      // RFC 1122 3.2.2: no ICMP error to a source that names no single host.
      before = await reasons(dp);
      const fromMulticast = udpFrame({
        src: "224.1.2.3",
        dst: VIP,
        sport: 34002,
        dport: 53,
        payload: new Uint8Array(1481 - 28),
        fragWord: 0x4000,
      });
      t.equal(
        (await runIn(dp, prog, fromMulticast)).retval,
        drop,
        "DF from a multicast source: dropped",
      );
      const after = await reasons(dp);
      t.equal(after.icmp_frag_needed - before.icmp_frag_needed, 0, "no ICMP error sent to it");
      t.equal(after.drop_too_big - before.drop_too_big, 1, "counted drop_too_big");
    });
  }

  await t.test(
    "the backend's node: decapsulated, DNATed, recorded; the reply leaves from VIP:port",
    async t => {
      for (const [prog, , , pass] of ingress) {
        const sport = prog === "blixt_xdp_ingress" ? 35000 : 36000;
        const syn = tcpFrame({
          src: CLIENT,
          dst: VIP,
          sport,
          dport: 443,
          flags: TCP_SYN,
          tcpOptions: Uint8Array.of(2, 4, 5, 0xb4),
        });
        const before = await reasons(dp);
        const r = await runIn(
          dp,
          prog,
          ipipFrame(syn, { src: "172.31.255.9", dst: LOCAL, port: 8443 }),
        );
        t.equal(r.retval, pass, `${prog}: passed to the kernel`);
        t.equal((await reasons(dp)).decap - before.decap, 1, "counted decap");
        t.equal(r.dataOut.length, syn.length, "outer header gone");
        const o = parseFrame(r.dataOut);
        const i = parseFrame(syn);
        t.same(
          [o.ip.src, o.ip.dst, o.tcp!.sport, o.tcp!.dport],
          [CLIENT, LOCAL, sport, 8443],
          "DNATed, client kept",
        );
        t.same([o.dstMac, o.srcMac], [i.dstMac, i.srcMac], "Ethernet header kept");
        t.ok(o.ipChecksumOk && o.l4ChecksumOk, "checksums verify");
        const fwd = await ctFlags(dp, "blixt_ct4_new", {
          saddr: CLIENT,
          daddr: VIP,
          sport,
          dport: 443,
          proto: "tcp",
        });
        const rev = await ctFlags(dp, "blixt_ct4_new", {
          saddr: LOCAL,
          daddr: CLIENT,
          sport: 8443,
          dport: sport,
          proto: "tcp",
        });
        t.ok(fwd !== undefined && fwd & CT_F_ENCAP, "forward entry flagged CT_F_ENCAP");
        t.ok(rev !== undefined && rev & CT_F_ENCAP, "reverse entry flagged CT_F_ENCAP");

        // The backend's SYN-ACK: reverse-NATed at TC egress, MSS clamped to lo's 1500 - 60.
        const synAck = tcpFrame({
          src: LOCAL,
          dst: CLIENT,
          sport: 8443,
          dport: sport,
          flags: TCP_SYN | TCP_ACK,
          tcpOptions: Uint8Array.of(2, 4, 5, 0xb4, 4, 2, 1, 1),
        });
        const e = await runIn(dp, "blixt_tc_egress", synAck);
        t.equal(e.retval, TC_ACT_OK);
        const eo = parseFrame(e.dataOut);
        t.same(
          [eo.ip.src, eo.tcp!.sport, eo.ip.dst, eo.tcp!.dport],
          [VIP, 443, CLIENT, sport],
          "from VIP:port",
        );
        t.equal(
          (e.dataOut[54 + 2] << 8) | e.dataOut[54 + 3],
          1440,
          "MSS clamped to 1500 - 20 - 40",
        );
        t.ok(eo.ipChecksumOk && eo.l4ChecksumOk, "checksums verify");
        const data = tcpFrame({
          src: LOCAL,
          dst: CLIENT,
          sport: 8443,
          dport: sport,
          flags: TCP_ACK,
          payload: new Uint8Array(10),
        });
        const d = parseFrame((await runIn(dp, "blixt_tc_egress", data)).dataOut);
        t.same([d.ip.src, d.tcp!.sport], [VIP, 443], "later replies reverse-NATed too");

        // The client's next packet, encapsulated again: the flow is confirmed like a local one.
        const ack = tcpFrame({ src: CLIENT, dst: VIP, sport, dport: 443, flags: TCP_ACK });
        const a = await runIn(
          dp,
          prog,
          ipipFrame(ack, { src: "172.31.255.9", dst: LOCAL, port: 8443 }),
        );
        t.equal(a.retval, pass);
        t.ok(
          await ctFlags(dp, "blixt_ct4", {
            saddr: CLIENT,
            daddr: VIP,
            sport,
            dport: 443,
            proto: "tcp",
          }),
          "confirmed",
        );
      }

      // A local flow's SYN-ACK (not encapsulated) keeps its MSS.
      await runIn(
        dp,
        "blixt_tc_ingress",
        tcpFrame({ src: CLIENT, dst: VIP, sport: 37000, dport: 443, flags: TCP_SYN }),
      );
      const local = await runIn(
        dp,
        "blixt_tc_egress",
        tcpFrame({
          src: LOCAL,
          dst: CLIENT,
          sport: 8443,
          dport: 37000,
          flags: TCP_SYN | TCP_ACK,
          tcpOptions: Uint8Array.of(2, 4, 5, 0xb4),
        }),
      );
      t.equal(
        (local.dataOut[56] << 8) | local.dataOut[57],
        1460,
        "a local flow's MSS is left alone",
      );
      t.equal(parseFrame(local.dataOut).ip.src, VIP);
    },
  );

  await t.test(
    "the sending node's choice wins: an entry naming another backend is replaced",
    async t => {
      const OTHER = "10.1.0.9";
      await dp.setService({
        vip: VIP,
        port: 443,
        proto: "tcp",
        backends: [
          { ip: LOCAL, port: 8443, weight: 1 },
          { ip: OTHER, port: 8443, weight: 1 },
        ],
        rejectWeight: 0,
      });
      for (const [prog, , , pass] of ingress) {
        const sport = prog === "blixt_xdp_ingress" ? 39000 : 39100;
        const syn = tcpFrame({ src: CLIENT, dst: VIP, sport, dport: 443, flags: TCP_SYN });
        const ack = tcpFrame({ src: CLIENT, dst: VIP, sport, dport: 443, flags: TCP_ACK });
        await runIn(dp, prog, ipipFrame(syn, { src: "172.31.255.9", dst: LOCAL, port: 8443 }));
        const r = await runIn(
          dp,
          prog,
          ipipFrame(ack, { src: "172.31.255.9", dst: OTHER, port: 8443 }),
        );
        t.equal(r.retval, pass);
        t.equal(
          parseFrame(r.dataOut).ip.dst,
          OTHER,
          `${prog}: DNATed to the backend the outer header names`,
        );
        const rev = (b: string) =>
          ctFlags(dp, "blixt_ct4_new", {
            saddr: b,
            daddr: CLIENT,
            sport: 8443,
            dport: sport,
            proto: "tcp",
          });
        t.equal(await rev(LOCAL), undefined, "the old backend's reverse entry is gone");
        t.ok(((await rev(OTHER)) ?? 0) & CT_F_ENCAP, "the new one's is there");
      }
    },
  );

  await t.test("IP-in-IP for no known backend or service is dropped", async t => {
    for (const [prog, , drop] of ingress) {
      const syn = tcpFrame({ src: CLIENT, dst: VIP, sport: 38000, dport: 443, flags: TCP_SYN });
      for (const [what, frame] of [
        ["unknown backend port", ipipFrame(syn, { src: "172.31.255.9", dst: LOCAL, port: 9999 })],
        [
          "unknown backend address",
          ipipFrame(syn, { src: "172.31.255.9", dst: "10.1.0.8", port: 8443 }),
        ],
        [
          "unknown service",
          ipipFrame(tcpFrame({ src: CLIENT, dst: VIP, sport: 38000, dport: 444, flags: TCP_SYN }), {
            src: "172.31.255.9",
            dst: LOCAL,
            port: 8443,
          }),
        ],
      ] as const) {
        const before = await reasons(dp);
        t.equal((await runIn(dp, prog, frame)).retval, drop, `${prog}, ${what}: dropped`);
        t.equal((await reasons(dp)).drop_ipip - before.drop_ipip, 1, "counted drop_ipip");
      }
      t.equal(
        await ctFlags(dp, "blixt_ct4_new", {
          saddr: CLIENT,
          daddr: VIP,
          sport: 38000,
          dport: 443,
          proto: "tcp",
        }),
        undefined,
        "nothing recorded",
      );
    }
  });
});
