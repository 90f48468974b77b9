// SPDX-License-Identifier: Apache-2.0
// ARP answered in the kernel for the Gateway addresses this node announces: the real programs on
// crafted frames through BPF_PROG_TEST_RUN. A request for an announced address gets a reply with
// every field right; anything else (another address, a known but not announced one, a gratuitous
// request, a reply, a malformed frame) passes byte for byte untouched.
import t, { type Test } from "tap";
import {
  loadedDataplane,
  run,
  runOne,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  XDP_PASS,
  XDP_TX,
} from "./fixture.js";
import {
  macBytes,
  macString,
  ipBytes,
  ipString,
  ETH_P_ARP,
  ETH_P_IP,
  tcpFrame,
  TCP_SYN,
} from "../lib/packet.js";
import { execa } from "execa";
import {
  addressesTakenOver,
  gratuitousArpFrame,
  sendGratuitousArp,
  socatArgs,
} from "../../capabilities/dataplane/garp.js";
import { mapLookup, parseLink } from "../../capabilities/dataplane/bpftool.js";
import {
  hex,
  encodeIndexKey,
  decodeInterfaceValue,
  encodeInterfaceValue,
} from "../../capabilities/dataplane/maps.js";

const ANNOUNCED = "198.18.30.10";
const NOT_ANNOUNCED = "198.18.30.11"; // a Gateway address another node announces
const ELSEWHERE = "198.18.30.99"; // not a Gateway address at all
const NODE_MAC = "02:bb:00:00:00:02";
const CLIENT_MAC = "02:aa:00:00:00:01";
const CLIENT = "198.18.30.2";
/** BPF_PROG_TEST_RUN runs the programs as if the frame came in on the test's netns loopback. */
const TEST_RUN_IFINDEX = 1;

interface ArpFields {
  ethDst?: string;
  ethSrc?: string;
  htype?: number;
  ptype?: number;
  hlen?: number;
  plen?: number;
  oper?: number;
  sha?: string;
  spa: string;
  tha?: string;
  tpa: string;
  /** frame length; Ethernet pads a 42-byte ARP frame to 60 */
  length?: number;
}

/** An ARP frame built field by field (the dataplane's own layout is not used, so a shared mistake cannot hide). */
function arpFrame(f: ArpFields): Uint8Array {
  const out = new Uint8Array(f.length ?? 60);
  const v = new DataView(out.buffer);
  out.set(macBytes(f.ethDst ?? "ff:ff:ff:ff:ff:ff"), 0);
  out.set(macBytes(f.ethSrc ?? CLIENT_MAC), 6);
  v.setUint16(12, ETH_P_ARP);
  if (out.length < 42) return out;
  v.setUint16(14, f.htype ?? 1);
  v.setUint16(16, f.ptype ?? ETH_P_IP);
  out[18] = f.hlen ?? 6;
  out[19] = f.plen ?? 4;
  v.setUint16(20, f.oper ?? 1);
  out.set(macBytes(f.sha ?? CLIENT_MAC), 22);
  out.set(ipBytes(f.spa), 28);
  out.set(macBytes(f.tha ?? "00:00:00:00:00:00"), 32);
  out.set(ipBytes(f.tpa), 38);
  return out;
}

function parseArp(b: Uint8Array) {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    ethDst: macString(b.subarray(0, 6)),
    ethSrc: macString(b.subarray(6, 12)),
    ethType: v.getUint16(12),
    htype: v.getUint16(14),
    ptype: v.getUint16(16),
    hlen: b[18],
    plen: b[19],
    oper: v.getUint16(20),
    sha: macString(b.subarray(22, 28)),
    spa: ipString(b.subarray(28, 32)),
    tha: macString(b.subarray(32, 38)),
    tpa: ipString(b.subarray(38, 42)),
  };
}

const request = (over: Partial<ArpFields> = {}) =>
  arpFrame({ spa: CLIENT, tpa: ANNOUNCED, ...over });

/** Every field of the reply `req` must get, and the rest of the frame (padding) as it was. */
function assertReply(
  t: Test,
  out: Uint8Array,
  req: Uint8Array,
  requester: { mac: string; ip: string },
) {
  t.equal(out.length, req.length, "same length: the padding stays");
  t.same(
    parseArp(out),
    {
      ethDst: requester.mac,
      ethSrc: NODE_MAC,
      ethType: ETH_P_ARP,
      htype: 1,
      ptype: ETH_P_IP,
      hlen: 6,
      plen: 4,
      oper: 2,
      sha: NODE_MAC,
      spa: ANNOUNCED,
      tha: requester.mac,
      tpa: requester.ip,
    },
    "to the requester, from the interface: ANNOUNCED is-at the interface's MAC",
  );
  t.same(out.subarray(42), req.subarray(42), "bytes after the ARP payload untouched");
}

const PROGS = [
  { prog: "blixt_xdp_ingress", reply: XDP_TX, pass: XDP_PASS },
  { prog: "blixt_tc_ingress", reply: TC_ACT_REDIRECT, pass: TC_ACT_OK },
] as const;

t.test("ARP in the kernel", async t => {
  const dp = await loadedDataplane(t, "arp");
  await dp.setAddresses([ANNOUNCED, NOT_ANNOUNCED]);
  await dp.setAnnounced([ANNOUNCED]);
  await dp.setInterface({ ifindex: TEST_RUN_IFINDEX, mac: NODE_MAC });

  t.test("the Dataplane API reads back what it wrote", async t => {
    t.same(await dp.announced(), [ANNOUNCED]);
    t.same(await dp.addresses(), [ANNOUNCED, NOT_ANNOUNCED], "announcing keeps the address set");
    t.same(await dp.interfaces(), [{ ifindex: TEST_RUN_IFINDEX, mac: NODE_MAC }]);
    const entry = (await mapLookup(
      dp.mapPin("blixt_ifaces"),
      hex(encodeIndexKey(TEST_RUN_IFINDEX)),
    ))!;
    t.same(
      entry.formatted?.value,
      { mac: Array.from(macBytes(NODE_MAC)), pad: 0 },
      "struct iface_value as BTF prints it",
    );
    t.equal(
      decodeInterfaceValue(encodeInterfaceValue("02:BB:00:00:00:02")).mac,
      NODE_MAC,
      "MACs are stored case-insensitively",
    );
    await t.rejects(
      dp.setAnnounced([ELSEWHERE]),
      new RegExp(`setAnnounced: ${ELSEWHERE} is not a Gateway address .*setAddresses first`),
    );
    await t.rejects(
      dp.setAnnounced(["not-an-ip"]),
      /addresses\[0\] "not-an-ip" must be an IPv4 address literal/,
    );
    await t.rejects(
      dp.announce("eth0", NOT_ANNOUNCED),
      new RegExp(`announce: ${NOT_ANNOUNCED} is not announced by this node`),
    );
    await t.rejects(
      dp.setInterface({ ifindex: 0, mac: NODE_MAC }),
      /ifindex must be a positive integer/,
    );
    await t.rejects(
      dp.setInterface({ ifindex: 5, mac: "02:bb:00" }),
      /"02:bb:00" is not a MAC address/,
    );
    t.same(await dp.announced(), [ANNOUNCED], "a refused call changed nothing");
  });

  for (const { prog, reply, pass } of PROGS) {
    t.test(`${prog}: a broadcast request for an announced address is answered`, async t => {
      const req = request();
      const r = await runOne(dp, prog, req);
      t.equal(
        r.retval,
        reply,
        prog === "blixt_xdp_ingress" ? "XDP_TX" : "redirected out of the device it came in on",
      );
      assertReply(t, r.dataOut, req, { mac: CLIENT_MAC, ip: CLIENT });
    });

    t.test(`${prog}: a unicast refresh to the interface's MAC, and an unpadded frame`, async t => {
      let req = request({ ethDst: NODE_MAC, tha: NODE_MAC });
      let r = await runOne(dp, prog, req);
      t.equal(r.retval, reply);
      assertReply(t, r.dataOut, req, { mac: CLIENT_MAC, ip: CLIENT });
      req = request({ length: 42 });
      r = await runOne(dp, prog, req);
      t.equal(r.retval, reply);
      assertReply(t, r.dataOut, req, { mac: CLIENT_MAC, ip: CLIENT });
    });

    t.test(
      `${prog}: the reply goes to the ARP sender, even when the Ethernet source differs`,
      async t => {
        const req = request({ ethSrc: "02:cc:00:00:00:03", sha: "02:dd:00:00:00:04" });
        const r = await runOne(dp, prog, req);
        t.equal(r.retval, reply);
        assertReply(t, r.dataOut, req, { mac: "02:dd:00:00:00:04", ip: CLIENT });
      },
    );

    t.test(
      `${prog}: an RFC 5227 probe (sender 0.0.0.0) is answered, defending the address`,
      async t => {
        const req = request({ spa: "0.0.0.0" });
        const r = await runOne(dp, prog, req);
        t.equal(r.retval, reply);
        assertReply(t, r.dataOut, req, { mac: CLIENT_MAC, ip: "0.0.0.0" });
      },
    );

    t.test(`${prog}: everything else passes byte for byte`, async t => {
      const cases: [string, Uint8Array][] = [
        ["a request for an address that is no Gateway address", request({ tpa: ELSEWHERE })],
        [
          "a request for a Gateway address this node does not announce",
          request({ tpa: NOT_ANNOUNCED }),
        ],
        [
          "a gratuitous request (sender = target = the address)",
          request({ spa: ANNOUNCED, tpa: ANNOUNCED }),
        ],
        [
          "a gratuitous request from another host for the address",
          request({
            spa: ANNOUNCED,
            tpa: ANNOUNCED,
            sha: "02:ee:00:00:00:05",
            ethSrc: "02:ee:00:00:00:05",
          }),
        ],
        [
          "an ARP reply about the address",
          request({ oper: 2, spa: ANNOUNCED, tpa: CLIENT, ethDst: NODE_MAC }),
        ],
        ["a request unicast to another host's MAC", request({ ethDst: "02:cc:00:00:00:03" })],
        ["a multicast sender hardware address", request({ sha: "01:00:5e:00:00:01" })],
        ["hardware type other than Ethernet", request({ htype: 6 })],
        ["protocol type other than IPv4", request({ ptype: 0x86dd })],
        ["hardware length not 6", request({ hlen: 8 })],
        ["protocol length not 4", request({ plen: 16 })],
        ["RARP request (opcode 3)", request({ oper: 3 })],
        ["truncated: 41 bytes", request({ length: 41 }).subarray(0, 41)],
        ["truncated: Ethernet header only", arpFrame({ spa: CLIENT, tpa: ANNOUNCED, length: 14 })],
      ];
      const results = await run(
        dp,
        prog,
        cases.map(([, frame]) => frame),
      );
      cases.forEach(([what, frame], i) => {
        t.equal(results[i].retval, pass, `${what}: passed`);
        t.same(results[i].dataOut, frame, `${what}: untouched`);
      });
    });

    t.test(
      `${prog}: IPv4 to the announced address is still refused, not answered as ARP`,
      async t => {
        const syn = tcpFrame({
          src: CLIENT,
          dst: ANNOUNCED,
          srcMac: CLIENT_MAC,
          dstMac: NODE_MAC,
          sport: 40000,
          dport: 22,
          flags: TCP_SYN,
        });
        const r = await runOne(dp, prog, syn);
        t.equal(r.retval, reply, "the RST leaves the same way");
        t.equal(
          new DataView(r.dataOut.buffer, r.dataOut.byteOffset).getUint16(12),
          ETH_P_IP,
          "an IPv4 RST, not an ARP frame",
        );
      },
    );
  }

  t.test("counters", async t => {
    const arp = await dp.arpCounters();
    t.same(
      arp,
      { replied: 2 * 5, no_iface: 0, deadline_passed: 0, other_announced: 0, yielded: 0 },
      "five replies per program",
    );
    const s = await dp.stats();
    t.equal(s.reasons.pass_not_ipv4, 2 * 14, "the passed frames count as not IPv4, as before");
  });

  t.test("the announce deadline: a node whose agent stopped moving it falls silent", async t => {
    t.equal(await dp.announceDeadline(), 0n, "none set (the CLI, the tests above): answered");
    // One clock on both sides: the deadline is 1.5 s ahead by this process's monotonic clock,
    // answered now and left unanswered once that clock has passed it.
    const until = process.hrtime.bigint() + 1_500_000_000n;
    await dp.setAnnounceDeadline(until);
    t.equal(await dp.announceDeadline(), until, "reads back");
    for (const { prog, reply } of PROGS)
      t.equal((await runOne(dp, prog, request())).retval, reply, `${prog}: answered before it`);
    while (process.hrtime.bigint() <= until + 50_000_000n)
      await new Promise(resolve => setTimeout(resolve, 100));
    for (const { prog, pass } of PROGS) {
      const req = request();
      const r = await runOne(dp, prog, req);
      t.equal(r.retval, pass, `${prog}: past it, passed unanswered`);
      t.same(r.dataOut, req, `${prog}: untouched`);
    }
    t.equal((await dp.arpCounters()).deadline_passed, 2, "counted as deadline_passed");
    await dp.setAnnounceDeadline(0n);
    for (const { prog, reply } of PROGS)
      t.equal(
        (await runOne(dp, prog, request())).retval,
        reply,
        `${prog}: deadline removed, answered`,
      );
    await t.rejects(dp.setAnnounceDeadline(-1n), /not an unsigned 64-bit/);
  });

  t.test(
    "another node's gratuitous ARP: this node yields the address, where a deadline is set",
    async t => {
      const OTHER_MAC = "02:cc:00:00:00:03";
      const garp = (over: Partial<ArpFields> = {}) =>
        arpFrame({ ethSrc: OTHER_MAC, sha: OTHER_MAC, spa: ANNOUNCED, tpa: ANNOUNCED, ...over });
      const answered = async (what: string) => {
        for (const { prog, reply } of PROGS)
          t.equal((await runOne(dp, prog, request())).retval, reply, `${prog}: ${what}`);
      };
      const before = await dp.arpCounters();

      // No deadline (no Leases: the controller alone moves addresses): noted nowhere.
      t.equal(await dp.announceDeadline(), 0n);
      for (const { prog, pass } of PROGS) {
        const frame = garp();
        const r = await runOne(dp, prog, frame);
        t.equal(r.retval, pass, `${prog}: an announcement is passed on`);
        t.same(r.dataOut, frame, `${prog}: untouched`);
      }
      t.same(await dp.yields(), [], "without a deadline, nothing is yielded");
      await answered("still answered");

      await dp.setAnnounceDeadline(process.hrtime.bigint() + 60_000_000_000n);
      // Ours, or for an address this node does not announce: nothing.
      await runOne(dp, "blixt_xdp_ingress", garp({ ethSrc: NODE_MAC, sha: NODE_MAC }));
      await runOne(dp, "blixt_tc_ingress", garp({ spa: NOT_ANNOUNCED, tpa: NOT_ANNOUNCED }));
      t.same(await dp.yields(), [], "its own MAC, or another address: nothing yielded");

      const heardFrom = process.hrtime.bigint();
      const r = await runOne(dp, "blixt_xdp_ingress", garp());
      t.equal(r.retval, XDP_PASS, "the announcement itself is passed on");
      const yields = await dp.yields();
      t.match(yields, [{ address: ANNOUNCED, mac: OTHER_MAC }], "yielded to the announcing MAC");
      t.ok(yields[0].atNs >= heardFrom, "stamped with the time it was heard");
      for (const { prog, pass } of PROGS)
        t.equal((await runOne(dp, prog, request())).retval, pass, `${prog}: no longer answered`);
      t.same(await dp.announced(), [ANNOUNCED], "the address stays announced in the maps");

      await dp.clearYield(ANNOUNCED);
      await dp.clearYield(ANNOUNCED); // absent: no error
      await answered("answered again once the yield is cleared");
      // The reply form of a gratuitous ARP counts too.
      await runOne(dp, "blixt_tc_ingress", garp({ oper: 2, ethDst: "ff:ff:ff:ff:ff:ff" }));
      t.match(await dp.yields(), [{ address: ANNOUNCED }], "a gratuitous reply yields as well");
      await dp.clearYield(ANNOUNCED);

      const after = await dp.arpCounters();
      t.equal(after.other_announced - before.other_announced, 2, "two announcements counted");
      t.equal(after.yielded - before.yielded, 2, "two requests left unanswered, counted");
      await dp.setAnnounceDeadline(0n);
    },
  );

  t.test("without the interface's MAC the request passes, counted", async t => {
    await dp.removeInterface(TEST_RUN_IFINDEX);
    await dp.removeInterface(TEST_RUN_IFINDEX); // absent: no error
    t.same(await dp.interfaces(), []);
    for (const { prog, pass } of PROGS) {
      const req = request();
      const r = await runOne(dp, prog, req);
      t.equal(r.retval, pass, `${prog}: passed`);
      t.same(r.dataOut, req, `${prog}: untouched`);
    }
    t.equal((await dp.arpCounters()).no_iface, 2);
  });

  t.test("setAnnounced([]) stops the answers; the address is still refused", async t => {
    await dp.setInterface({ ifindex: TEST_RUN_IFINDEX, mac: NODE_MAC });
    await dp.setAnnounced([]);
    t.same(await dp.announced(), []);
    t.same(await dp.addresses(), [ANNOUNCED, NOT_ANNOUNCED]);
    let r = await runOne(dp, "blixt_xdp_ingress", request());
    t.equal(r.retval, XDP_PASS, "no ARP reply");
    r = await runOne(
      dp,
      "blixt_xdp_ingress",
      tcpFrame({ src: CLIENT, dst: ANNOUNCED, sport: 40001, dport: 22, flags: TCP_SYN }),
    );
    t.equal(r.retval, XDP_TX, "a SYN to a port without listener still gets a RST");
  });
});

t.test("parseLink reads what attach records and what picks the mode", async t => {
  const veth = JSON.stringify([
    {
      ifindex: 7,
      ifname: "cl",
      link_type: "ether",
      address: "8A:6E:62:E9:38:07",
      linkinfo: { info_kind: "veth" },
    },
  ]);
  t.same(parseLink("cl", veth), {
    ifname: "cl",
    ifindex: 7,
    mac: "8a:6e:62:e9:38:07",
    kind: "veth",
    linkType: "ether",
  });
  const physical = JSON.stringify([
    { ifindex: 2, ifname: "eno1", link_type: "ether", address: "00:11:22:33:44:55" },
  ]);
  t.equal(parseLink("eno1", physical).kind, undefined, "a physical device has no kind");
  t.equal(
    parseLink("wg0", JSON.stringify([{ ifindex: 9, ifname: "wg0", link_type: "none" }])).linkType,
    "none",
    "no MAC: attach records nothing",
  );
  t.throws(
    () => parseLink("gone0", "[]"),
    /device gone0: `ip -j -d link show` gave no ifindex for it/,
  );
});

t.test("gratuitous ARP: the frame and takeovers (pure)", async t => {
  const frame = gratuitousArpFrame("02:BB:00:00:00:02", "198.18.0.5");
  t.equal(frame.length, 60, "padded to Ethernet's minimum");
  t.same(
    parseArp(frame),
    {
      ethDst: "ff:ff:ff:ff:ff:ff",
      ethSrc: NODE_MAC,
      ethType: ETH_P_ARP,
      htype: 1,
      ptype: ETH_P_IP,
      hlen: 6,
      plen: 4,
      oper: 1,
      sha: NODE_MAC,
      spa: "198.18.0.5",
      tha: "00:00:00:00:00:00",
      tpa: "198.18.0.5",
    },
    "RFC 5227 announcement: broadcast request, sender = target = the address",
  );
  t.ok(
    frame.subarray(42).every(b => b === 0),
    "zero padding",
  );
  t.same(socatArgs("eth0"), ["-u", "STDIN", "INTERFACE:eth0"]);
  t.throws(() => socatArgs("eth 0"), /interface "eth 0" is not a Linux interface name/);
  t.throws(() => socatArgs("averyveryverylongname"), /is not a Linux interface name/);
  t.throws(() => socatArgs("eth0:1"), /is not a Linux interface name/);
  t.throws(
    () => gratuitousArpFrame(NODE_MAC, "198.18.0"),
    /address "198.18.0" must be an IPv4 address literal/,
  );
  t.throws(() => gratuitousArpFrame("02:bb", "198.18.0.5"), /"02:bb" is not a MAC address/);
  t.same(
    addressesTakenOver(
      ["198.18.1.1", "198.18.1.2"],
      ["198.18.1.3", "198.18.1.2", "198.18.1.0", "198.18.1.3"],
    ),
    ["198.18.1.0", "198.18.1.3"],
  );
  t.same(addressesTakenOver(["198.18.1.1"], []), [], "giving an address up sends nothing");
});

t.test(
  "gratuitous ARP on a veth: the neighbour's stale entry moves; errors name what failed",
  async t => {
    const netns = `blixt-pkt-garp-${process.pid}`;
    t.teardown(() => execa("ip", ["netns", "del", netns], { reject: false }));
    await execa("ip", ["netns", "add", netns]);
    const inNs = (...argv: string[]) =>
      execa("nsenter", [`--net=/var/run/netns/${netns}`, ...argv]);
    await inNs("ip", "link", "add", "bxg0", "type", "veth", "peer", "name", "bxg1");
    await inNs("ip", "link", "set", "bxg0", "up");
    await inNs("ip", "link", "set", "bxg1", "up");
    await inNs("ip", "addr", "add", "198.18.31.1/24", "dev", "bxg0");
    await inNs("ip", "addr", "add", "198.18.31.2/24", "dev", "bxg1");
    // The receiving side holds a stale entry for the address, as after another node announced it.
    await inNs(
      "ip",
      "neigh",
      "replace",
      "198.18.31.50",
      "lladdr",
      "02:00:5e:00:00:99",
      "nud",
      "stale",
      "dev",
      "bxg1",
    );
    const { stdout } = await inNs("ip", "-j", "link", "show", "dev", "bxg0");
    const mac = (JSON.parse(stdout) as { address: string }[])[0].address;
    await sendGratuitousArp("bxg0", mac, "198.18.31.50", { netns, count: 2 });
    const neigh = JSON.parse(
      (await inNs("ip", "-j", "neigh", "show", "198.18.31.50", "dev", "bxg1")).stdout,
    ) as { lladdr: string }[];
    t.equal(neigh[0]?.lladdr, mac, "the neighbour's entry now names the announcing interface");

    await t.rejects(
      sendGratuitousArp("nosuchdev9", mac, "198.18.0.5", { netns }),
      /gratuitous ARP for 198\.18\.0\.5 on nosuchdev9: `nsenter .* socat -u STDIN INTERFACE:nosuchdev9` failed: .+/,
    );
    await t.rejects(
      sendGratuitousArp("bxg0", mac, "198.18.0.5", { socat: "/nonexistent/socat" }),
      /install the Debian package socat/,
    );
    await t.rejects(
      sendGratuitousArp("bxg0", mac, "198.18.0.5", { count: 0 }),
      /count must be an integer in 1..10, got 0/,
    );
  },
);
