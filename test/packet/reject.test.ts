// SPDX-License-Identifier: Apache-2.0
// Refusals: a service with no usable backend rejects (TCP SYN → RST, everything else dropped),
// and a Gateway address refuses every port no listener has, so nothing reaches host sockets.
import t, { type Test } from "tap";
import {
  loadedDataplane,
  runOne,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  XDP_DROP,
  XDP_TX,
} from "./fixture.js";
import {
  parseFrame,
  tcpFrame,
  udpFrame,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
} from "../lib/packet.js";

const GW = "198.18.20.1";
const CLIENT = "192.0.2.33";
const CLIENT_MAC = "02:aa:00:00:00:01";
const NODE_MAC = "02:bb:00:00:00:02";

/** Every field of the RST a SYN from CLIENT:sport to GW:dport (seq, payload) must get. */
function assertRst(
  t: Test,
  out: Uint8Array,
  o: { sport: number; dport: number; seq: number; payloadLength: number },
) {
  const r = parseFrame(out);
  t.equal(out.length, 54, "Ethernet + IPv4 + TCP, no options, no payload");
  t.equal(r.dstMac, CLIENT_MAC, "sent back to the client's MAC");
  t.equal(r.srcMac, NODE_MAC, "from the MAC the SYN was sent to");
  t.equal(r.ethType, 0x0800);
  t.same(
    { ...r.ip, checksum: 0 },
    {
      ihl: 5,
      totalLength: 40,
      id: 0,
      fragWord: 0x4000,
      ttl: 64,
      protocol: 6,
      checksum: 0,
      src: GW,
      dst: CLIENT,
    },
    "IPv4: from the Gateway address to the client, DF, TTL 64",
  );
  t.ok(r.ipChecksumOk, "IPv4 checksum verifies from scratch");
  t.same(
    { ...r.tcp!, checksum: 0 },
    {
      sport: o.dport,
      dport: o.sport,
      seq: 0,
      ack: (o.seq + 1 + o.payloadLength) >>> 0,
      doff: 5,
      flags: TCP_RST | TCP_ACK,
      window: 0,
      checksum: 0,
      urgent: 0,
    },
    "TCP: ports swapped, seq 0, ack = SYN seq + 1 + payload, RST|ACK",
  );
  t.ok(r.l4ChecksumOk, "TCP checksum verifies from scratch");
}

t.test("reject and refuse", async t => {
  const dp = await loadedDataplane(t, "reject");
  await dp.setAddresses([GW]);
  // A listener whose route resolved to nothing: no backend, so every new flow is rejected.
  await dp.setService({ vip: GW, port: 5432, proto: "tcp", backends: [], rejectWeight: 0 });
  await dp.setService({ vip: GW, port: 5353, proto: "udp", backends: [], rejectWeight: 1 });
  await dp.setService({
    vip: GW,
    port: 6000,
    proto: "tcp",
    backends: [{ ip: "10.9.9.9", port: 6000, weight: 0 }],
    rejectWeight: 0,
  });

  const syn = (dport: number, seq = 0x11223344, payload?: Uint8Array) =>
    tcpFrame({
      src: CLIENT,
      dst: GW,
      srcMac: CLIENT_MAC,
      dstMac: NODE_MAC,
      sport: 41000,
      dport,
      seq,
      flags: TCP_SYN,
      tcpOptions: Uint8Array.of(2, 4, 5, 0xb4, 1, 1, 4, 2),
      payload,
    });

  for (const [prog, rst, drop] of [
    ["blixt_xdp_ingress", XDP_TX, XDP_DROP],
    ["blixt_tc_ingress", TC_ACT_REDIRECT, TC_ACT_SHOT],
  ] as const) {
    t.test(`${prog}: SYN to a service with no backend gets a RST`, async t => {
      const r = await runOne(dp, prog, syn(5432));
      t.equal(
        r.retval,
        rst,
        prog === "blixt_xdp_ingress" ? "XDP_TX" : "redirected out of the device it came in on",
      );
      assertRst(t, r.dataOut, { sport: 41000, dport: 5432, seq: 0x11223344, payloadLength: 0 });
    });

    t.test(`${prog}: SYN with data (TFO) and a seq that wraps`, async t => {
      const r = await runOne(dp, prog, syn(5432, 0xffffffff, new Uint8Array(10).fill(7)));
      t.equal(r.retval, rst);
      assertRst(t, r.dataOut, { sport: 41000, dport: 5432, seq: 0xffffffff, payloadLength: 10 });
    });

    t.test(`${prog}: only weight-0 backends counts as no backend`, async t => {
      const r = await runOne(dp, prog, syn(6000));
      t.equal(r.retval, rst);
      assertRst(t, r.dataOut, { sport: 41000, dport: 6000, seq: 0x11223344, payloadLength: 0 });
    });

    t.test(`${prog}: non-SYN TCP and UDP to a rejecting service are dropped`, async t => {
      for (const flags of [TCP_ACK, TCP_ACK | TCP_FIN, TCP_RST, TCP_SYN | TCP_ACK]) {
        const r = await runOne(
          dp,
          prog,
          tcpFrame({ src: CLIENT, dst: GW, sport: 41001, dport: 5432, flags }),
        );
        t.equal(
          r.retval,
          drop,
          `flags 0x${flags.toString(16)} dropped, no RST (no reflection of spoofed segments)`,
        );
      }
      const r = await runOne(
        dp,
        prog,
        udpFrame({ src: CLIENT, dst: GW, sport: 41002, dport: 5353 }),
      );
      t.equal(r.retval, drop, "UDP to a service whose only share is the rejected one");
    });

    t.test(`${prog}: a Gateway address refuses ports no listener has`, async t => {
      let r = await runOne(dp, prog, syn(22));
      t.equal(r.retval, rst, "SYN to port 22 answered with RST, not handed to the host's sshd");
      assertRst(t, r.dataOut, { sport: 41000, dport: 22, seq: 0x11223344, payloadLength: 0 });
      r = await runOne(
        dp,
        prog,
        tcpFrame({ src: CLIENT, dst: GW, sport: 41003, dport: 22, flags: TCP_ACK }),
      );
      t.equal(r.retval, drop, "non-SYN dropped");
      r = await runOne(dp, prog, udpFrame({ src: CLIENT, dst: GW, sport: 41004, dport: 5432 }));
      t.equal(r.retval, drop, "UDP to a port only TCP listens on is dropped");
    });
  }

  t.test("counters", async t => {
    const s = await dp.stats();
    // Per program: 3 rejected SYNs, 5 rejected drops (4 TCP + 1 UDP), 1 refused SYN, 2 refused drops.
    t.equal(s.reasons.reject_rst, 6);
    t.equal(s.reasons.reject_drop, 10);
    t.equal(s.reasons.refused_rst, 2);
    t.equal(s.reasons.refused_drop, 4);
    t.equal(s.reasons.dnat, 0, "nothing forwarded");
    const by = (port: number) => s.services.find(x => x.port === port)!;
    t.same(
      [by(5432).packets, by(5432).rejects, by(5432).newFlows],
      [12, 12, 0],
      "5432/tcp: every packet rejected",
    );
    t.same([by(5353).packets, by(5353).rejects], [2, 2], "5353/udp");
    t.same([by(6000).packets, by(6000).rejects], [2, 2], "6000/tcp");
  });

  t.test("after setAddresses([]) the address is no longer refused", async t => {
    await dp.setAddresses([]);
    t.same(await dp.addresses(), []);
    const r = await runOne(dp, "blixt_xdp_ingress", syn(22));
    t.equal(r.retval, 2, "XDP_PASS: not blixt's address any more");
  });
});
