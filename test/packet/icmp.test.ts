// SPDX-License-Identifier: Apache-2.0
// ICMP (bpf/icmp.h): echo requests to an announced Gateway address are answered in the kernel;
// ICMP errors about a flow are translated both ways (path-MTU discovery through the VIP), with
// every checksum verified from scratch; anything else is treated like any other protocol.
import t from "tap";
import {
  loadedDataplane,
  runOne,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  XDP_DROP,
  XDP_PASS,
  XDP_TX,
} from "./fixture.js";
import { parseFrame, tcpFrame, udpFrame, TCP_ACK, TCP_SYN } from "../lib/packet.js";
import {
  badChecksums,
  icmpFrame,
  parseIcmp,
  quoteOf,
  quotedL4ChecksumOf,
  ICMP_DEST_UNREACH,
  ICMP_ECHO,
  ICMP_ECHOREPLY,
  ICMP_FRAG_NEEDED,
  ICMP_PORT_UNREACH,
  ICMP_TIME_EXCEEDED,
} from "../lib/icmp.js";

const GW = "198.18.60.1"; // announced by this node, TCP listener on 80, UDP on 53
const QUIET = "198.18.60.2"; // a Gateway address another node announces
const OTHER = "198.18.60.99";
const BACKEND = "10.6.0.1";
const CLIENT = "192.0.2.60";
const ROUTER = "203.0.113.9";
const data = new TextEncoder().encode("x".repeat(600));

t.test("icmp", async t => {
  const dp = await loadedDataplane(t, "icmp");
  await dp.setAddresses([GW, QUIET]);
  await dp.setAnnounced([GW]);
  await dp.setService({
    vip: GW,
    port: 80,
    proto: "tcp",
    backends: [{ ip: BACKEND, port: 8080, weight: 1 }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: GW,
    port: 53,
    proto: "udp",
    backends: [{ ip: BACKEND, port: 5353, weight: 1 }],
    rejectWeight: 0,
  });

  for (const [prog, tx, pass, drop] of [
    ["blixt_xdp_ingress", XDP_TX, XDP_PASS, XDP_DROP],
    ["blixt_tc_ingress", TC_ACT_REDIRECT, TC_ACT_OK, TC_ACT_SHOT],
  ] as const) {
    t.test(`${prog}: echo request to an announced Gateway address is answered`, async t => {
      const req = icmpFrame({
        src: CLIENT,
        dst: GW,
        type: ICMP_ECHO,
        rest: 0x12340007,
        payload: data.subarray(0, 56),
        ttl: 57,
        srcMac: "02:00:00:00:00:61",
        dstMac: "02:00:00:00:00:62",
      });
      const r = await runOne(dp, prog, req);
      t.equal(r.retval, tx, "sent back out of the device");
      const o = parseFrame(r.dataOut);
      const icmp = parseIcmp(r.dataOut);
      t.same([o.srcMac, o.dstMac], ["02:00:00:00:00:62", "02:00:00:00:00:61"], "MACs swapped");
      t.same(
        [o.ip.src, o.ip.dst, o.ip.ttl],
        [GW, CLIENT, 64],
        "from the Gateway address to the client, TTL 64",
      );
      t.same(
        [icmp.type, icmp.code, icmp.rest],
        [ICMP_ECHOREPLY, 0, 0x12340007],
        "an echo reply with the request's id and sequence",
      );
      t.same(Buffer.from(icmp.data), Buffer.from(data.subarray(0, 56)), "and its data");
      t.same(badChecksums(r.dataOut), [], "every checksum verifies");
      t.equal(r.dataOut.length, req.length, "same length");
    });

    t.test(
      `${prog}: echo to a Gateway address this node does not announce is dropped, to another address passed`,
      async t => {
        t.equal(
          (await runOne(dp, prog, icmpFrame({ src: CLIENT, dst: QUIET, type: ICMP_ECHO }))).retval,
          drop,
          "not announced here: dropped",
        );
        const other = icmpFrame({ src: CLIENT, dst: OTHER, type: ICMP_ECHO });
        const r = await runOne(dp, prog, other);
        t.equal(r.retval, pass);
        t.same(Buffer.from(r.dataOut), Buffer.from(other), "not blixt's: untouched");
        t.equal(
          (await runOne(dp, prog, icmpFrame({ src: "224.0.0.5", dst: GW, type: ICMP_ECHO })))
            .retval,
          drop,
          "from a multicast source: no reply",
        );
      },
    );

    t.test(
      `${prog}: "fragmentation needed" about a backend's reply reaches the backend, translated`,
      async t => {
        const sport = prog === "blixt_xdp_ingress" ? 41000 : 41001;
        await runOne(
          dp,
          prog,
          tcpFrame({ src: CLIENT, dst: GW, sport, dport: 80, flags: TCP_SYN }),
        );
        // The reply as it left the node (reverse-NATed) and as the backend sent it.
        const left = tcpFrame({
          src: GW,
          dst: CLIENT,
          sport: 80,
          dport: sport,
          flags: TCP_ACK,
          seq: 99,
          payload: data.subarray(0, 500),
        });
        const sent = tcpFrame({
          src: BACKEND,
          dst: CLIENT,
          sport: 8080,
          dport: sport,
          flags: TCP_ACK,
          seq: 99,
          payload: data.subarray(0, 500),
        });
        for (const [what, quoteLen] of [
          ["the RFC 792 minimum quote (IPv4 header + 8 bytes)", 28],
          ["a quote with the whole TCP header", 48],
          ["the whole packet quoted", 540],
        ] as const) {
          const err = icmpFrame({
            src: ROUTER,
            dst: GW,
            type: ICMP_DEST_UNREACH,
            code: ICMP_FRAG_NEEDED,
            rest: 1400,
            payload: quoteOf(left, quoteLen),
          });
          const r = await runOne(dp, prog, err);
          t.equal(r.retval, pass, `${what}: passed on to be routed`);
          const o = parseFrame(r.dataOut);
          const icmp = parseIcmp(r.dataOut);
          t.same(
            [o.ip.src, o.ip.dst],
            [ROUTER, BACKEND],
            `${what}: outer destination is the backend`,
          );
          t.same(
            [icmp.type, icmp.code, icmp.rest],
            [ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 1400],
            `${what}: still fragmentation needed, MTU 1400`,
          );
          t.same(
            icmp.quote && [icmp.quote.src, icmp.quote.sport, icmp.quote.dst, icmp.quote.dport],
            [BACKEND, 8080, CLIENT, sport],
            `${what}: the quote names the backend's own packet`,
          );
          t.same(
            badChecksums(r.dataOut),
            [],
            `${what}: outer IPv4, ICMP and quoted IPv4 checksums verify`,
          );
          if (quoteLen >= 48) {
            t.equal(
              icmp.quote!.l4Checksum,
              parseFrame(sent).tcp!.checksum,
              `${what}: the quoted TCP checksum is the one the backend sent`,
            );
            t.same(
              Buffer.from(icmp.data),
              Buffer.from(quoteOf(sent, quoteLen)),
              `${what}: the quote is byte for byte what the backend sent`,
            );
          }
        }
      },
    );

    t.test(
      `${prog}: an ICMP error about no flow is dropped at a Gateway address and passed elsewhere`,
      async t => {
        const stray = tcpFrame({ src: GW, dst: CLIENT, sport: 80, dport: 9, flags: TCP_ACK });
        t.equal(
          (
            await runOne(
              dp,
              prog,
              icmpFrame({
                src: ROUTER,
                dst: GW,
                type: ICMP_DEST_UNREACH,
                code: ICMP_FRAG_NEEDED,
                payload: quoteOf(stray, 28),
              }),
            )
          ).retval,
          drop,
        );
        const elsewhere = icmpFrame({
          src: ROUTER,
          dst: OTHER,
          type: ICMP_TIME_EXCEEDED,
          payload: quoteOf(tcpFrame({ src: OTHER, dst: CLIENT, sport: 1, dport: 2 }), 28),
        });
        const r = await runOne(dp, prog, elsewhere);
        t.equal(r.retval, pass);
        t.same(Buffer.from(r.dataOut), Buffer.from(elsewhere), "untouched");
      },
    );
  }

  t.test(
    "an error quoting only 8 bytes of TCP, in a frame with Ethernet padding: the padding is no part of the quote",
    async t => {
      await runOne(
        dp,
        "blixt_xdp_ingress",
        tcpFrame({ src: CLIENT, dst: GW, sport: 41500, dport: 80, flags: TCP_SYN }),
      );
      const left = tcpFrame({ src: GW, dst: CLIENT, sport: 80, dport: 41500, flags: TCP_ACK });
      const err = icmpFrame({
        src: ROUTER,
        dst: GW,
        type: ICMP_DEST_UNREACH,
        code: ICMP_FRAG_NEEDED,
        rest: 1400,
        payload: quoteOf(left, 28),
      });
      const padded = new Uint8Array(err.length + 24).fill(0x5a);
      padded.set(err);
      const r = await runOne(dp, "blixt_xdp_ingress", padded);
      t.equal(parseFrame(r.dataOut).ip.dst, BACKEND, "translated");
      t.same(badChecksums(r.dataOut), [], "the ICMP checksum verifies");
      t.same(
        Buffer.from(r.dataOut.subarray(err.length)),
        Buffer.from(padded.subarray(err.length)),
        "the padding is untouched",
      );
    },
  );

  t.test(
    "ingress UDP: port unreachable from the client about a reply; the quoted checksum 0 stays 0",
    async t => {
      await runOne(
        dp,
        "blixt_xdp_ingress",
        udpFrame({ src: CLIENT, dst: GW, sport: 42000, dport: 53 }),
      );
      for (const zero of [false, true]) {
        const left = udpFrame({
          src: GW,
          dst: CLIENT,
          sport: 53,
          dport: 42000,
          payload: data.subarray(0, 40),
          zeroChecksum: zero,
        });
        const sent = udpFrame({
          src: BACKEND,
          dst: CLIENT,
          sport: 5353,
          dport: 42000,
          payload: data.subarray(0, 40),
          zeroChecksum: zero,
        });
        const r = await runOne(
          dp,
          "blixt_xdp_ingress",
          icmpFrame({
            src: CLIENT,
            dst: GW,
            type: ICMP_DEST_UNREACH,
            code: ICMP_PORT_UNREACH,
            payload: quoteOf(left),
          }),
        );
        t.equal(r.retval, XDP_PASS);
        t.equal(parseFrame(r.dataOut).ip.dst, BACKEND);
        t.same(
          Buffer.from(parseIcmp(r.dataOut).data),
          Buffer.from(quoteOf(sent)),
          `checksum ${zero ? "0" : "set"}: the quote is what the backend sent`,
        );
        t.same(badChecksums(r.dataOut), []);
      }
    },
  );

  t.test("egress: an error about a client's packet leaves with the VIP in its quote", async t => {
    await runOne(
      dp,
      "blixt_xdp_ingress",
      tcpFrame({ src: CLIENT, dst: GW, sport: 43000, dport: 80, flags: TCP_SYN }),
    );
    const arrived = tcpFrame({
      src: CLIENT,
      dst: BACKEND,
      sport: 43000,
      dport: 8080,
      flags: TCP_ACK,
      payload: data.subarray(0, 100),
    });
    const sentByClient = tcpFrame({
      src: CLIENT,
      dst: GW,
      sport: 43000,
      dport: 80,
      flags: TCP_ACK,
      payload: data.subarray(0, 100),
    });

    const fromRouter = await runOne(
      dp,
      "blixt_tc_egress",
      icmpFrame({ src: ROUTER, dst: CLIENT, type: ICMP_TIME_EXCEEDED, payload: quoteOf(arrived) }),
    );
    t.equal(fromRouter.retval, TC_ACT_OK);
    let o = parseFrame(fromRouter.dataOut);
    t.same([o.ip.src, o.ip.dst], [ROUTER, CLIENT], "a router's error keeps its source");
    t.same(
      Buffer.from(parseIcmp(fromRouter.dataOut).data),
      Buffer.from(quoteOf(sentByClient)),
      "the quote is the packet the client sent, to VIP:80",
    );
    t.same(badChecksums(fromRouter.dataOut), []);

    const fromBackend = await runOne(
      dp,
      "blixt_tc_egress",
      icmpFrame({
        src: BACKEND,
        dst: CLIENT,
        type: ICMP_DEST_UNREACH,
        code: ICMP_FRAG_NEEDED,
        rest: 1280,
        payload: quoteOf(arrived, 28),
      }),
    );
    o = parseFrame(fromBackend.dataOut);
    t.same([o.ip.src, o.ip.dst], [GW, CLIENT], "the backend's own error comes from the VIP");
    const q = parseIcmp(fromBackend.dataOut).quote!;
    t.same([q.src, q.sport, q.dst, q.dport], [CLIENT, 43000, GW, 80]);
    t.same(badChecksums(fromBackend.dataOut), []);
    t.equal(
      quotedL4ChecksumOf(CLIENT, GW, 6, quoteOf(sentByClient).subarray(20)),
      parseFrame(sentByClient).tcp!.checksum,
      "(the checker agrees with the builder)",
    );

    const unrelated = icmpFrame({
      src: ROUTER,
      dst: CLIENT,
      type: ICMP_TIME_EXCEEDED,
      payload: quoteOf(tcpFrame({ src: CLIENT, dst: BACKEND, sport: 1, dport: 8080 })),
    });
    const r = await runOne(dp, "blixt_tc_egress", unrelated);
    t.same(
      Buffer.from(r.dataOut),
      Buffer.from(unrelated),
      "an error about no flow leaves untouched",
    );
  });

  t.test("counted", async t => {
    const { reasons } = await dp.stats();
    t.equal(reasons.icmp_echo_reply, 2, "two echo replies");
    t.equal(reasons.icmp_error_nat, 2 * 3 + 1 + 2 + 2, "every translated error, both ways");
  });
});
