// SPDX-License-Identifier: Apache-2.0
// DNAT of client packets to a service's backend, reverse NAT of the backend's replies, and
// traffic that is not for a service left byte-for-byte alone: XDP and TC ingress alike.
import t, { type Test } from "tap";
import { loadedDataplane, runOne, TC_ACT_OK, XDP_PASS } from "./fixture.js";
import { parseFrame, tcpFrame, udpFrame, TCP_ACK, TCP_PSH, TCP_SYN } from "../lib/packet.js";

const VIP = "198.18.10.1";
const CLIENT = "192.0.2.10";
const BACKEND = "10.1.0.7";
const payload = new TextEncoder().encode("hello blixt, this is payload");

t.test("nat", async t => {
  const dp = await loadedDataplane(t, "nat");
  await dp.setService({
    vip: VIP,
    port: 80,
    proto: "tcp",
    backends: [{ ip: BACKEND, port: 8080, weight: 1 }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: VIP,
    port: 53,
    proto: "udp",
    backends: [{ ip: BACKEND, port: 5353, weight: 1 }],
    rejectWeight: 0,
  });

  /** Everything but destination address, port and the checksums must come out as it went in. */
  function assertDnat(t: Test, input: Uint8Array, output: Uint8Array, dport: number) {
    const i = parseFrame(input);
    const o = parseFrame(output);
    t.equal(output.length, input.length, "length unchanged");
    t.equal(o.ip.dst, BACKEND, "destination rewritten to the backend");
    t.equal(o.ip.src, CLIENT, "client source IP kept");
    t.same(
      { ...o.ip, dst: 0, checksum: 0 },
      { ...i.ip, dst: 0, checksum: 0 },
      "other IPv4 fields untouched",
    );
    t.ok(o.ipChecksumOk, "IPv4 header checksum verifies from scratch");
    t.ok(o.l4ChecksumOk, "L4 checksum verifies from scratch (pseudo-header included)");
    t.same([o.srcMac, o.dstMac], [i.srcMac, i.dstMac], "MACs untouched");
    t.same(Buffer.from(o.payload), Buffer.from(i.payload), "payload untouched");
    const l4 = o.tcp ?? o.udp!;
    const l4in = i.tcp ?? i.udp!;
    t.equal(l4.dport, dport, "destination port rewritten to the backend port");
    t.equal(l4.sport, l4in.sport, "source port kept");
  }

  for (const prog of ["blixt_xdp_ingress", "blixt_tc_ingress"] as const) {
    const pass = prog === "blixt_xdp_ingress" ? XDP_PASS : TC_ACT_OK;
    t.test(`${prog}: TCP SYN and data to VIP:80 go to ${BACKEND}:8080`, async t => {
      const syn = tcpFrame({
        src: CLIENT,
        dst: VIP,
        sport: 40001,
        dport: 80,
        flags: TCP_SYN,
        seq: 7,
        tcpOptions: Uint8Array.of(2, 4, 5, 0xb4),
      });
      let r = await runOne(dp, prog, syn);
      t.equal(r.retval, pass, "passed on to the kernel to route");
      assertDnat(t, syn, r.dataOut, 8080);
      const data = tcpFrame({
        src: CLIENT,
        dst: VIP,
        sport: 40001,
        dport: 80,
        flags: TCP_ACK | TCP_PSH,
        seq: 8,
        ack: 99,
        payload,
      });
      r = await runOne(dp, prog, data);
      t.equal(r.retval, pass);
      assertDnat(t, data, r.dataOut, 8080);
    });

    t.test(`${prog}: UDP with a checksum and with checksum 0`, async t => {
      const withSum = udpFrame({ src: CLIENT, dst: VIP, sport: 40002, dport: 53, payload });
      let r = await runOne(dp, prog, withSum);
      t.equal(r.retval, pass);
      assertDnat(t, withSum, r.dataOut, 5353);
      t.not(parseFrame(r.dataOut).udp!.checksum, 0, "a checksum stays a checksum");

      const noSum = udpFrame({
        src: CLIENT,
        dst: VIP,
        sport: 40003,
        dport: 53,
        payload,
        zeroChecksum: true,
      });
      r = await runOne(dp, prog, noSum);
      t.equal(r.retval, pass);
      assertDnat(t, noSum, r.dataOut, 5353);
      t.equal(parseFrame(r.dataOut).udp!.checksum, 0, "UDP checksum 0 stays 0");
    });
  }

  t.test("XDP and TC ingress rewrite the same bytes", async t => {
    const pkt = tcpFrame({
      src: CLIENT,
      dst: VIP,
      sport: 40010,
      dport: 80,
      flags: TCP_ACK,
      payload,
    });
    const x = await runOne(dp, "blixt_xdp_ingress", pkt);
    const c = await runOne(dp, "blixt_tc_ingress", pkt);
    t.same(Buffer.from(c.dataOut), Buffer.from(x.dataOut));
  });

  t.test("blixt_tc_egress: replies leave from VIP:port", async t => {
    for (const [reply, vport] of [
      [
        tcpFrame({
          src: BACKEND,
          dst: CLIENT,
          sport: 8080,
          dport: 40001,
          flags: TCP_SYN | TCP_ACK,
          seq: 555,
          ack: 8,
        }),
        80,
      ],
      [udpFrame({ src: BACKEND, dst: CLIENT, sport: 5353, dport: 40002, payload }), 53],
      [
        udpFrame({
          src: BACKEND,
          dst: CLIENT,
          sport: 5353,
          dport: 40003,
          payload,
          zeroChecksum: true,
        }),
        53,
      ],
    ] as const) {
      const r = await runOne(dp, "blixt_tc_egress", reply);
      const i = parseFrame(reply);
      const o = parseFrame(r.dataOut);
      t.equal(r.retval, TC_ACT_OK);
      t.equal(o.ip.src, VIP, "source is the VIP again");
      t.equal(o.ip.dst, CLIENT, "destination untouched");
      t.equal((o.tcp ?? o.udp)!.sport, vport, "source port is the listener port");
      t.equal((o.tcp ?? o.udp)!.dport, (i.tcp ?? i.udp)!.dport, "client port untouched");
      t.ok(o.ipChecksumOk, "IPv4 checksum verifies");
      t.ok(o.l4ChecksumOk, "L4 checksum verifies");
      if (i.udp?.checksum === 0) t.equal(o.udp!.checksum, 0, "UDP checksum 0 stays 0");
    }
  });

  t.test("traffic for no service passes byte-for-byte", async t => {
    const others = [
      tcpFrame({ src: CLIENT, dst: "198.18.10.2", sport: 1, dport: 80 }), // another address
      tcpFrame({ src: CLIENT, dst: VIP, sport: 1, dport: 81 }), // VIP (not a Gateway address here), other port
      udpFrame({ src: CLIENT, dst: VIP, sport: 1, dport: 80 }), // VIP:80 but UDP
    ];
    for (const pkt of others) {
      for (const [prog, pass] of [
        ["blixt_xdp_ingress", XDP_PASS],
        ["blixt_tc_ingress", TC_ACT_OK],
        ["blixt_tc_egress", TC_ACT_OK],
      ] as const) {
        const r = await runOne(dp, prog, pkt);
        t.equal(r.retval, pass, `${prog} passes`);
        t.same(Buffer.from(r.dataOut), Buffer.from(pkt), `${prog} leaves it untouched`);
      }
    }
  });

  t.test("counters moved", async t => {
    const s = await dp.stats();
    const tcp = s.services.find(x => x.proto === "tcp")!;
    const udp = s.services.find(x => x.proto === "udp")!;
    t.same(
      [tcp.packets, tcp.newFlows, tcp.rejects],
      [6, 2, 0],
      "TCP: 6 packets in 2 flows (40001 seen by XDP, then a conntrack hit in TC; 40010)",
    );
    t.same([udp.packets, udp.newFlows, udp.rejects], [4, 2, 0], "UDP: 4 packets in 2 flows");
    t.ok(tcp.bytes > 6 * 54, "bytes counted");
    t.equal(s.reasons.dnat, 10, "every forwarded packet counted under dnat");
    t.equal(s.reasons.reverse_nat, 3, "three replies reverse-NATed");
    t.equal(
      s.reasons.pass_no_service,
      6,
      "non-service packets through both ingress programs counted as passed",
    );
  });
});
