// SPDX-License-Identifier: Apache-2.0
// Packet shapes the malformed-input cases leave out: VLAN-tagged frames, a UDP length past the
// IPv4 payload, and a frame shorter than an Ethernet header (which BPF_PROG_TEST_RUN refuses, so
// it goes through a real TUN device with generic XDP, where the program sees the bare IP bytes).
import t from "tap";
import { execa } from "execa";
import { loadedDataplane, runOne, TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS } from "./fixture.js";
import { parseFrame, tcpFrame, udpFrame, TCP_SYN } from "../lib/packet.js";
import { attachXdp } from "../../capabilities/dataplane/bpftool.js";

const GW = "198.18.70.1";
const OTHER = "198.18.70.99";
const CLIENT = "192.0.2.70";
const BACKEND = "10.7.0.1";

/** The frame with an 802.1Q (or 802.1ad) tag inserted after the MAC addresses. */
function tagged(frame: Uint8Array, tpid = 0x8100, vid = 42): Uint8Array {
  const out = new Uint8Array(frame.length + 4);
  out.set(frame.subarray(0, 12), 0);
  out[12] = tpid >> 8;
  out[13] = tpid & 0xff;
  out[14] = vid >> 8;
  out[15] = vid & 0xff;
  out.set(frame.subarray(12), 16);
  return out;
}

/** Sets the UDP length field of an Ethernet/IPv4 (no options)/UDP frame, keeping its checksum as built. */
function udpLength(frame: Uint8Array, length: number): Uint8Array {
  const out = frame.slice();
  new DataView(out.buffer).setUint16(14 + 20 + 4, length);
  return out;
}

t.test("packet shapes", async t => {
  const dp = await loadedDataplane(t, "shapes");
  await dp.setAddresses([GW]);
  await dp.setService({
    vip: GW,
    port: 80,
    proto: "tcp",
    backends: [{ ip: BACKEND, port: 80, weight: 1 }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: GW,
    port: 53,
    proto: "udp",
    backends: [{ ip: BACKEND, port: 53, weight: 1 }],
    rejectWeight: 0,
  });

  for (const [prog, pass, drop] of [
    ["blixt_xdp_ingress", XDP_PASS, XDP_DROP],
    ["blixt_tc_ingress", TC_ACT_OK, TC_ACT_SHOT],
  ] as const) {
    t.test(`${prog}: VLAN-tagged frames to a service pass untouched (not looked into)`, async t => {
      for (const [name, frame] of [
        [
          "802.1Q TCP SYN",
          tagged(tcpFrame({ src: CLIENT, dst: GW, sport: 1000, dport: 80, flags: TCP_SYN })),
        ],
        ["802.1ad UDP", tagged(udpFrame({ src: CLIENT, dst: GW, sport: 1000, dport: 53 }), 0x88a8)],
      ] as const) {
        const r = await runOne(dp, prog, frame);
        t.equal(r.retval, pass, `${name}: passed`);
        t.same(Buffer.from(r.dataOut), Buffer.from(frame), `${name}: byte for byte`);
      }
    });

    t.test(`${prog}: a UDP length past the IPv4 payload is never forwarded`, async t => {
      const long = udpLength(
        udpFrame({ src: CLIENT, dst: GW, sport: 1001, dport: 53, payload: new Uint8Array(10) }),
        200,
      );
      t.equal(
        (await runOne(dp, prog, long)).retval,
        drop,
        "to a Gateway address: dropped (drop_malformed_l4)",
      );
      const elsewhere = udpLength(
        udpFrame({ src: CLIENT, dst: OTHER, sport: 1001, dport: 53, payload: new Uint8Array(10) }),
        19,
      );
      const r = await runOne(dp, prog, elsewhere);
      t.equal(r.retval, pass);
      t.same(Buffer.from(r.dataOut), Buffer.from(elsewhere), "to another address: untouched");
      // Shorter than the payload is legal (the receiver trims the rest): still forwarded.
      const short = udpLength(
        udpFrame({
          src: CLIENT,
          dst: GW,
          sport: 1002,
          dport: 53,
          payload: new Uint8Array(10),
          zeroChecksum: true,
        }),
        12,
      );
      const s = await runOne(dp, prog, short);
      t.equal(s.retval, pass);
      t.equal(
        parseFrame(s.dataOut).ip.dst,
        BACKEND,
        "a UDP length short of the payload is forwarded",
      );
    });
  }

  t.test("counted", async t => {
    const { reasons } = await dp.stats();
    t.equal(reasons.pass_not_ipv4, 4, "VLAN frames: pass_not_ipv4");
    t.equal(
      reasons.drop_malformed_l4,
      2,
      "UDP length past the payload to a Gateway address: drop_malformed_l4",
    );
  });
});

t.test("a frame shorter than an Ethernet header is dropped (drop_malformed_l2)", async t => {
  const dp = await loadedDataplane(t, "short");
  const netns = `blixt-short-${process.pid}`;
  await execa("ip", ["netns", "add", netns]);
  t.teardown(() => execa("ip", ["netns", "del", netns], { reject: false }));
  const ns = (...argv: string[]) => execa("ip", ["netns", "exec", netns, ...argv]);
  await ns("ip", "tuntap", "add", "dev", "bt0", "mode", "tun");
  await ns("ip", "link", "set", "bt0", "up");
  // A TUN device carries bare IP packets: generic XDP hands the program the IP bytes as its frame.
  await attachXdp(dp.progPin("blixt_xdp_ingress"), "bt0", "generic", { netns });
  const before = (await dp.stats()).reasons.drop_malformed_l2;
  // Ten bytes whose first nibble says IPv4, written into the device (IFF_TUN | IFF_NO_PI).
  const writer = `
import fcntl, os, struct
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"bt0", 0x0001 | 0x1000))
for _ in range(3):
    os.write(fd, bytes([0x45, 0, 0, 10, 0, 0, 0, 0, 64, 17]))
os.close(fd)
`;
  await ns("python3", "-c", writer);
  let after = before;
  for (let i = 0; i < 50 && after - before < 3; i++) {
    await new Promise(r => setTimeout(r, 20));
    after = (await dp.stats()).reasons.drop_malformed_l2;
  }
  t.equal(
    after - before,
    3,
    "each 10-byte frame reached the program and was dropped as malformed L2",
  );
});
