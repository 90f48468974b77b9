// SPDX-License-Identifier: Apache-2.0
// Conntrack state (bpf/conntrack.h): a flow starts unconfirmed (blixt_ct4_new) on a SYN, a UDP
// datagram or a mid-flow pickup, and is confirmed into blixt_ct4 once the backend answered and
// the client spoke again; FIN/RST close it, idle timeouts (blixt_ct_config) expire it, either
// direction recreates the other, and a full unconfirmed table never touches confirmed flows.
import t, { type Test } from "tap";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { loadedDataplane, run, runOne, TC_ACT_OK, XDP_DROP, XDP_PASS } from "./fixture.js";
import {
  parseFrame,
  tcpFrame,
  udpFrame,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
} from "../lib/packet.js";
import {
  batch,
  mapDeleteLine,
  mapLookup,
  mapUpdateLine,
} from "../../capabilities/dataplane/bpftool.js";
import { Dataplane, type ConntrackEntry } from "../../capabilities/dataplane/dataplane.js";
import {
  CT_CONFIG_KEY,
  CT_F_FIN_BACKEND,
  CT_F_FIN_CLIENT,
  CT_F_PICKUP,
  CT_F_REPLIED,
  CT_F_RST,
  decodeConntrackFlags,
  encodeConntrackConfig,
  encodeConntrackKey,
  encodeIndexKey,
  hex,
  type ConntrackKey,
  type ConntrackTimeouts,
  type MapName,
} from "../../capabilities/dataplane/maps.js";

const VIP = "198.18.50.1";
const BACKEND = "10.5.0.1";
const CLIENT = "192.0.2.50";
const S = 1_000_000_000n;

const setTimeouts = (dp: Dataplane, timeouts: Partial<ConntrackTimeouts>) =>
  batch(
    [
      mapUpdateLine(
        dp.mapPin("blixt_ct_config"),
        hex(encodeIndexKey(CT_CONFIG_KEY)),
        hex(encodeConntrackConfig(timeouts)),
      ),
    ],
    "setting conntrack timeouts",
  );

const table = (confirmed: boolean): MapName => (confirmed ? "blixt_ct4" : "blixt_ct4_new");

/** Rewrites an entry's last_seen_ns (bytes 16..23), as if its last packet was `ago` before now. */
async function age(dp: Dataplane, confirmed: boolean, key: ConntrackKey, ago: bigint) {
  const pin = dp.mapPin(table(confirmed));
  const entry = await mapLookup(pin, hex(encodeConntrackKey(key)));
  if (!entry) throw new Error(`no entry ${JSON.stringify(key)} in ${table(confirmed)}`);
  const value = entry.value!.slice();
  new DataView(value.buffer).setBigUint64(16, process.hrtime.bigint() - ago, true);
  await batch([mapUpdateLine(pin, hex(encodeConntrackKey(key)), hex(value))], "ageing an entry");
}

async function flagsOf(
  dp: Dataplane,
  confirmed: boolean,
  key: ConntrackKey,
): Promise<number | undefined> {
  const entry = await mapLookup(dp.mapPin(table(confirmed)), hex(encodeConntrackKey(key)));
  return entry && decodeConntrackFlags(entry.value!);
}

const fwdKey = (
  client: string,
  sport: number,
  dport = 80,
  proto: "tcp" | "udp" = "tcp",
): ConntrackKey => ({ saddr: client, daddr: VIP, sport, dport, proto });
const revKey = (
  client: string,
  sport: number,
  bport = 8080,
  proto: "tcp" | "udp" = "tcp",
): ConntrackKey => ({ saddr: BACKEND, daddr: client, sport: bport, dport: sport, proto });

/** The entries of one flow, by table and direction. */
function flowEntries(all: ConntrackEntry[], client: string, sport: number) {
  const mine = all.filter(e =>
    e.direction === "forward"
      ? e.saddr === client && e.sport === sport
      : e.daddr === client && e.dport === sport,
  );
  return mine.map(e => `${e.confirmed ? "ct4" : "ct4_new"} ${e.direction}`).sort();
}

const syn = (client: string, sport: number) =>
  tcpFrame({ src: client, dst: VIP, sport, dport: 80, flags: TCP_SYN });
const ack = (client: string, sport: number, flags = TCP_ACK) =>
  tcpFrame({ src: client, dst: VIP, sport, dport: 80, flags });
const reply = (client: string, sport: number, flags = TCP_ACK) =>
  tcpFrame({ src: BACKEND, dst: client, sport: 8080, dport: sport, flags });

/** SYN, SYN-ACK through egress, ACK: the handshake that confirms a flow. */
async function handshake(t: Test, dp: Dataplane, client: string, sport: number) {
  t.equal(
    parseFrame((await runOne(dp, "blixt_xdp_ingress", syn(client, sport))).dataOut).ip.dst,
    BACKEND,
    "SYN forwarded",
  );
  t.equal(
    parseFrame(
      (await runOne(dp, "blixt_tc_egress", reply(client, sport, TCP_SYN | TCP_ACK))).dataOut,
    ).ip.src,
    VIP,
    "SYN-ACK reverse-NATed",
  );
  t.equal(
    parseFrame((await runOne(dp, "blixt_xdp_ingress", ack(client, sport))).dataOut).ip.dst,
    BACKEND,
    "ACK forwarded",
  );
}

async function service(dp: Dataplane) {
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
}

t.test("conntrack", async t => {
  const dp = await loadedDataplane(t, "conntrack");
  await service(dp);

  t.test(
    "a SYN makes an unconfirmed flow; the backend's reply and the client's next packet confirm it",
    async t => {
      const before = await dp.conntrackCounters();
      await runOne(dp, "blixt_xdp_ingress", syn(CLIENT, 1000));
      t.same(
        flowEntries(await dp.conntrack(), CLIENT, 1000),
        ["ct4_new forward", "ct4_new reverse"],
        "after the SYN: both directions, unconfirmed",
      );
      await runOne(dp, "blixt_xdp_ingress", syn(CLIENT, 1000));
      t.same(
        flowEntries(await dp.conntrack(), CLIENT, 1000),
        ["ct4_new forward", "ct4_new reverse"],
        "a retransmitted SYN confirms nothing",
      );
      await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 1000));
      t.same(
        flowEntries(await dp.conntrack(), CLIENT, 1000),
        ["ct4_new forward", "ct4_new reverse"],
        "nor does an ACK before the backend answered",
      );
      await runOne(dp, "blixt_tc_egress", reply(CLIENT, 1000, TCP_SYN | TCP_ACK));
      t.ok(
        (await flagsOf(dp, false, fwdKey(CLIENT, 1000)))! & CT_F_REPLIED,
        "the SYN-ACK marks the flow replied",
      );
      await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 1000));
      t.same(
        flowEntries(await dp.conntrack(), CLIENT, 1000),
        ["ct4 forward", "ct4 reverse"],
        "the client's ACK confirms it: both directions moved to blixt_ct4",
      );
      const after = await dp.conntrackCounters();
      t.equal(after.new - before.new, 1, "one new flow counted");
      t.equal(after.confirmed - before.confirmed, 1, "one confirmation counted");
    },
  );

  t.test(
    "non-SYN segments with no entry create no confirmed state: forwarded by Maglev, picked up unconfirmed",
    async t => {
      const before = await dp.conntrackCounters();
      const confirmedBefore = (await dp.conntrack()).filter(e => e.confirmed).length;
      const flood = Array.from({ length: 200 }, (_, i) =>
        ack(`192.0.3.${1 + (i % 250)}`, 30000 + i, TCP_ACK | TCP_PSH),
      );
      const results = await run(dp, "blixt_xdp_ingress", flood);
      t.ok(
        results.every(r => r.retval === XDP_PASS && parseFrame(r.dataOut).ip.dst === BACKEND),
        "every segment still reaches the backend Maglev picks",
      );
      const all = await dp.conntrack();
      t.equal(all.filter(e => e.confirmed).length, confirmedBefore, "blixt_ct4 did not grow");
      t.equal(
        all.filter(e => !e.confirmed && e.saddr.startsWith("192.0.3.")).length,
        200,
        "each picked up in blixt_ct4_new (forward entries)",
      );
      t.ok(
        (await flagsOf(dp, false, fwdKey("192.0.3.1", 30000)))! & CT_F_PICKUP,
        "marked as a pickup",
      );
      t.equal((await dp.conntrackCounters()).pickup - before.pickup, 200, "counted as pickups");

      const r = await runOne(dp, "blixt_tc_egress", reply("192.0.3.1", 30000));
      t.equal(parseFrame(r.dataOut).ip.src, VIP, "a picked-up flow's reply is reverse-NATed");
      await runOne(dp, "blixt_xdp_ingress", ack("192.0.3.1", 30000));
      t.same(
        flowEntries(await dp.conntrack(), "192.0.3.1", 30000),
        ["ct4 forward", "ct4 reverse"],
        "and once the backend answered, the client's next packet confirms it",
      );

      const rst = await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 2000, TCP_RST));
      t.equal(parseFrame(rst.dataOut).ip.dst, BACKEND, "a RST with no entry is forwarded");
      t.same(flowEntries(await dp.conntrack(), CLIENT, 2000), [], "and records nothing");
    },
  );

  t.test("a spoofed ACK the backend answers with a RST is never confirmed", async t => {
    await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 2100));
    await runOne(dp, "blixt_tc_egress", reply(CLIENT, 2100, TCP_RST));
    const flags = (await flagsOf(dp, false, fwdKey(CLIENT, 2100)))!;
    t.ok(flags & CT_F_RST, "the RST closes the pickup");
    t.notOk(flags & CT_F_REPLIED, "a RST does not count as an answer");
    await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 2100));
    t.same(
      flowEntries(await dp.conntrack(), CLIENT, 2100),
      ["ct4_new forward", "ct4_new reverse"],
      "still unconfirmed",
    );
  });

  t.test(
    "FIN each way closes a flow; it expires after the closing timeout (10 s by default)",
    async t => {
      await handshake(t, dp, CLIENT, 3000);
      const before = await dp.conntrackCounters();
      await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 3000, TCP_FIN | TCP_ACK));
      t.equal(
        (await flagsOf(dp, true, revKey(CLIENT, 3000)))! & (CT_F_FIN_CLIENT | CT_F_FIN_BACKEND),
        CT_F_FIN_CLIENT,
        "the client's FIN is on both entries",
      );
      t.equal((await dp.conntrackCounters()).closed, before.closed, "half-closed is not closed");
      await runOne(dp, "blixt_tc_egress", reply(CLIENT, 3000, TCP_FIN | TCP_ACK));
      t.equal(
        (await flagsOf(dp, true, fwdKey(CLIENT, 3000)))! & (CT_F_FIN_CLIENT | CT_F_FIN_BACKEND),
        CT_F_FIN_CLIENT | CT_F_FIN_BACKEND,
        "the backend's FIN too",
      );
      t.equal((await dp.conntrackCounters()).closed - before.closed, 1, "closed, counted once");
      // The last ACK, 5 s later: still inside the closing timeout, still forwarded on the entry.
      await age(dp, true, fwdKey(CLIENT, 3000), 5n * S);
      await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 3000));
      t.same(
        flowEntries(await dp.conntrack(), CLIENT, 3000),
        ["ct4 forward", "ct4 reverse"],
        "5 s after closing, the entries are still there",
      );
      await age(dp, true, revKey(CLIENT, 3000), 11n * S);
      const r = await runOne(dp, "blixt_tc_egress", reply(CLIENT, 3000));
      t.equal(r.retval, TC_ACT_OK);
      t.equal(
        parseFrame(r.dataOut).ip.src,
        BACKEND,
        "11 s after closing, a late reply finds no entry: passed as it is",
      );
      t.same(flowEntries(await dp.conntrack(), CLIENT, 3000), [], "both entries removed");
      t.equal((await dp.conntrackCounters()).expired - before.expired, 1, "counted as expired");
    },
  );

  t.test("a RST closes a flow at once, and a SYN on its 5-tuple starts a new one", async t => {
    await handshake(t, dp, CLIENT, 3100);
    await runOne(dp, "blixt_tc_egress", reply(CLIENT, 3100, TCP_RST | TCP_ACK));
    t.ok(
      (await flagsOf(dp, true, fwdKey(CLIENT, 3100)))! & CT_F_RST,
      "the backend's RST closes the flow, on the forward entry too",
    );
    await runOne(dp, "blixt_xdp_ingress", syn(CLIENT, 3100));
    t.same(
      flowEntries(await dp.conntrack(), CLIENT, 3100),
      ["ct4_new forward", "ct4_new reverse"],
      "the new SYN replaced the closed flow with an unconfirmed one",
    );
    t.equal(
      (await flagsOf(dp, false, fwdKey(CLIENT, 3100)))! & CT_F_RST,
      0,
      "that carries no close bits",
    );
  });

  t.test("idle timeouts from blixt_ct_config: established TCP and UDP", async t => {
    await setTimeouts(dp, { tcpEstablishedSeconds: 30, udpSeconds: 20 });
    t.teardown(() => setTimeouts(dp, {}));
    await handshake(t, dp, CLIENT, 4000);
    await runOne(
      dp,
      "blixt_xdp_ingress",
      udpFrame({ src: CLIENT, dst: VIP, sport: 4001, dport: 53 }),
    );
    await age(dp, true, fwdKey(CLIENT, 4000), 25n * S);
    await age(dp, false, fwdKey(CLIENT, 4001, 53, "udp"), 15n * S);
    await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 4000));
    await runOne(
      dp,
      "blixt_xdp_ingress",
      udpFrame({ src: CLIENT, dst: VIP, sport: 4001, dport: 53 }),
    );
    const before = await dp.conntrackCounters();
    t.same(
      flowEntries(await dp.conntrack(), CLIENT, 4000),
      ["ct4 forward", "ct4 reverse"],
      "TCP idle 25 s of 30: kept",
    );
    t.same(
      flowEntries(await dp.conntrack(), CLIENT, 4001),
      ["ct4_new forward", "ct4_new reverse"],
      "UDP idle 15 s of 20: kept",
    );

    await age(dp, true, fwdKey(CLIENT, 4000), 31n * S);
    await age(dp, false, fwdKey(CLIENT, 4001, 53, "udp"), 21n * S);
    const r = await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 4000));
    t.equal(parseFrame(r.dataOut).ip.dst, BACKEND, "TCP idle 31 s: still forwarded (Maglev)");
    t.same(
      flowEntries(await dp.conntrack(), CLIENT, 4000),
      ["ct4_new forward", "ct4_new reverse"],
      "but the confirmed entries expired; the packet picked the flow up again",
    );
    await runOne(
      dp,
      "blixt_xdp_ingress",
      udpFrame({ src: CLIENT, dst: VIP, sport: 4001, dport: 53 }),
    );
    const after = await dp.conntrackCounters();
    t.equal(after.expired - before.expired, 2, "both expiries counted");
    t.equal(after.new - before.new, 1, "the UDP datagram after the timeout is a new flow");
  });

  t.test("either direction recreates the other when it is gone", async t => {
    await handshake(t, dp, CLIENT, 5000);
    const before = await dp.conntrackCounters();
    await batch(
      [mapDeleteLine(dp.mapPin("blixt_ct4"), hex(encodeConntrackKey(revKey(CLIENT, 5000))))],
      "evicting the reverse entry",
    );
    await age(dp, true, fwdKey(CLIENT, 5000), 2n * S); // the check runs with the once-a-second refresh
    await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 5000));
    t.same(
      flowEntries(await dp.conntrack(), CLIENT, 5000),
      ["ct4 forward", "ct4 reverse"],
      "a client packet recreated the reverse entry",
    );
    t.equal(
      parseFrame((await runOne(dp, "blixt_tc_egress", reply(CLIENT, 5000))).dataOut).ip.src,
      VIP,
      "so replies are reverse-NATed again",
    );

    await batch(
      [mapDeleteLine(dp.mapPin("blixt_ct4"), hex(encodeConntrackKey(fwdKey(CLIENT, 5000))))],
      "evicting the forward entry",
    );
    await age(dp, true, revKey(CLIENT, 5000), 2n * S);
    await runOne(dp, "blixt_tc_egress", reply(CLIENT, 5000));
    const fwd = (await dp.conntrack()).find(
      e => e.confirmed && e.direction === "forward" && e.saddr === CLIENT && e.sport === 5000,
    );
    t.same(
      fwd && [fwd.natAddr, fwd.natPort, fwd.daddr, fwd.dport, fwd.epoch],
      [BACKEND, 8080, VIP, 80, 0],
      "a reply recreated the forward entry (epoch 0: checked in full once)",
    );
    t.equal(
      parseFrame((await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 5000))).dataOut).ip.dst,
      BACKEND,
      "and the client's packets follow it",
    );
    t.equal((await dp.conntrackCounters()).repaired - before.repaired, 2, "both repairs counted");
  });

  // Two listeners sharing a backend: a client that picks the same source port for both reaches
  // the backend on one 4-tuple (client:port ↔ backend:8080) whatever VIP:port it dialled.
  t.test("one client port through two VIP:ports to the same backend", async t => {
    for (const [port, proto, backendPort] of [
      [81, "tcp", 8080],
      [54, "udp", 5353],
    ] as const) {
      await dp.setService({
        vip: VIP,
        port,
        proto,
        backends: [{ ip: BACKEND, port: backendPort, weight: 1 }],
        rejectWeight: 0,
      });
    }
    const to81 = (sport: number, flags: number) =>
      tcpFrame({ src: CLIENT, dst: VIP, sport, dport: 81, flags });
    const egressSource = async (frame: Uint8Array) => {
      const out = parseFrame((await runOne(dp, "blixt_tc_egress", frame)).dataOut);
      return `${out.ip.src}:${(out.tcp ?? out.udp)!.sport}`;
    };

    // A connection through :80, closed (FIN each way): its entries stay for the closing timeout.
    await handshake(t, dp, CLIENT, 6000);
    await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 6000, TCP_FIN | TCP_ACK));
    await runOne(dp, "blixt_tc_egress", reply(CLIENT, 6000, TCP_FIN | TCP_ACK));
    const before = await dp.conntrackCounters();
    const syn81 = await runOne(dp, "blixt_xdp_ingress", to81(6000, TCP_SYN));
    t.equal(syn81.retval, XDP_PASS);
    t.equal(
      parseFrame(syn81.dataOut).ip.dst,
      BACKEND,
      "a SYN from the same port to :81 is forwarded",
    );
    t.equal(
      await egressSource(reply(CLIENT, 6000, TCP_SYN | TCP_ACK)),
      `${VIP}:81`,
      "the backend's SYN-ACK leaves from :81, the port this connection dialled, not :80",
    );
    t.same(
      (await dp.conntrack())
        .filter(e => e.direction === "forward" && e.saddr === CLIENT && e.sport === 6000)
        .map(e => e.dport),
      [81],
      "the closed connection's entries are gone",
    );
    t.equal(
      (await dp.conntrackCounters()).clash_replaced - before.clash_replaced,
      1,
      "counted clash_replaced",
    );
    await runOne(dp, "blixt_xdp_ingress", to81(6000, TCP_ACK));
    t.equal(await egressSource(reply(CLIENT, 6000)), `${VIP}:81`, "once confirmed, still from :81");

    // An open connection through :80 keeps the 4-tuple: a SYN to :81 from its port is dropped.
    await handshake(t, dp, CLIENT, 6100);
    const refusedBefore = await dp.conntrackCounters();
    const reasonsBefore = (await dp.stats()).reasons;
    const clash = await runOne(dp, "blixt_xdp_ingress", to81(6100, TCP_SYN));
    t.equal(clash.retval, XDP_DROP, "a SYN to :81 from an open :80 connection's port is dropped");
    t.equal(
      (await dp.stats()).reasons.drop_ct_clash - reasonsBefore.drop_ct_clash,
      1,
      "counted drop_ct_clash",
    );
    t.equal(
      (await dp.conntrackCounters()).clash_refused - refusedBefore.clash_refused,
      1,
      "and clash_refused",
    );
    t.equal(
      await egressSource(reply(CLIENT, 6100)),
      `${VIP}:80`,
      "the open connection's replies still leave from :80",
    );
    await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 6100, TCP_RST));
    t.equal(
      parseFrame((await runOne(dp, "blixt_xdp_ingress", to81(6100, TCP_SYN))).dataOut).ip.dst,
      BACKEND,
      "once it is reset, the retransmitted SYN gets through",
    );
    t.equal(
      await egressSource(reply(CLIENT, 6100, TCP_SYN | TCP_ACK)),
      `${VIP}:81`,
      "and is answered from :81",
    );

    // UDP: the newest datagram's flow takes the replies; the other one takes them back.
    const datagram = (dport: number) => udpFrame({ src: CLIENT, dst: VIP, sport: 6200, dport });
    const answer = udpFrame({ src: BACKEND, dst: CLIENT, sport: 5353, dport: 6200 });
    await runOne(dp, "blixt_xdp_ingress", datagram(53));
    t.equal(await egressSource(answer), `${VIP}:53`, "UDP to :53, answered from :53");
    await runOne(dp, "blixt_xdp_ingress", datagram(54));
    t.equal(await egressSource(answer), `${VIP}:54`, "then to :54 from the same port: from :54");
    await runOne(dp, "blixt_xdp_ingress", datagram(53));
    t.equal(await egressSource(answer), `${VIP}:53`, "and to :53 again: from :53");
  });

  t.test("a new flow takes back its own reverse entry left in the other table", async t => {
    // A confirmed connection whose forward entry alone went (evicted, say): its reverse entry in
    // blixt_ct4 still names this very VIP:port. The next SYN of that 4-tuple starts a flow in
    // blixt_ct4_new, and removes the leftover instead of leaving it to shadow the new reverse
    // entry at egress: no clash, nothing counted.
    await handshake(t, dp, CLIENT, 6300);
    const own = (await dp.conntrack()).filter(e => e.saddr === CLIENT || e.daddr === CLIENT);
    const confirmedOf = (entries: ConntrackEntry[], sport: number) =>
      entries
        .filter(e => e.confirmed && (e.sport === sport || e.dport === sport))
        .map(e => e.direction)
        .sort();
    t.same(confirmedOf(own, 6300), ["forward", "reverse"], "the connection is confirmed");
    await batch(
      [mapDeleteLine(dp.mapPin("blixt_ct4"), hex(encodeConntrackKey(fwdKey(CLIENT, 6300))))],
      "evicting the forward entry",
    );
    const before = await dp.conntrackCounters();
    const again = await runOne(dp, "blixt_xdp_ingress", syn(CLIENT, 6300));
    t.equal(parseFrame(again.dataOut).ip.dst, BACKEND, "the SYN is forwarded");
    const after = (await dp.conntrack()).filter(e => e.saddr === CLIENT || e.daddr === CLIENT);
    t.same(confirmedOf(after, 6300), [], "the leftover reverse entry is gone from blixt_ct4");
    t.same(
      after
        .filter(e => !e.confirmed && (e.sport === 6300 || e.dport === 6300))
        .map(e => e.direction)
        .sort(),
      ["forward", "reverse"],
      "the new flow's entries are in blixt_ct4_new",
    );
    const counters = await dp.conntrackCounters();
    t.same(
      [
        counters.clash_replaced - before.clash_replaced,
        counters.clash_refused - before.clash_refused,
      ],
      [0, 0],
      "its own entry is no clash: neither counter moved",
    );
    t.equal(
      parseFrame(
        (await runOne(dp, "blixt_tc_egress", reply(CLIENT, 6300, TCP_SYN | TCP_ACK))).dataOut,
      ).ip.src,
      VIP,
      "the SYN-ACK is reverse-NATed",
    );
  });
});

t.test("a full unconfirmed table degrades new flows only", async t => {
  // An 8-entry blixt_ct4_new pinned before loading: the loader reuses a pinned map as it is.
  const pinDir = `/sys/fs/bpf/blixt-test-ctfull-${process.pid}`;
  const dp = new Dataplane({ pinDir });
  t.teardown(() => dp.unpin());
  await mkdir(join(pinDir, "maps"), { recursive: true });
  await execa("bpftool", [
    "map",
    "create",
    dp.mapPin("blixt_ct4_new"),
    "type",
    "lru_hash",
    "key",
    "16",
    "value",
    "24",
    "entries",
    "8",
    "name",
    "blixt_ct4_new",
  ]);
  await dp.load();
  await service(dp);

  await handshake(t, dp, CLIENT, 6000);
  const established = flowEntries(await dp.conntrack(), CLIENT, 6000);
  t.same(established, ["ct4 forward", "ct4 reverse"], "one confirmed flow");
  const before = await dp.conntrackCounters();
  const flood = Array.from({ length: 100 }, (_, i) => syn(`192.0.4.${1 + (i % 250)}`, 40000 + i));
  t.ok(
    (await run(dp, "blixt_xdp_ingress", flood)).every(r => r.retval === XDP_PASS),
    "100 SYNs forwarded",
  );
  const all = await dp.conntrack();
  t.ok(
    all.filter(e => !e.confirmed).length <= 8,
    `the unconfirmed table holds at most its 8 entries (${all.filter(e => !e.confirmed).length})`,
  );
  t.same(flowEntries(all, CLIENT, 6000), established, "the confirmed flow's entries are untouched");
  t.equal(
    parseFrame((await runOne(dp, "blixt_xdp_ingress", ack(CLIENT, 6000))).dataOut).ip.dst,
    BACKEND,
    "and it is still forwarded",
  );
  t.equal(
    parseFrame((await runOne(dp, "blixt_tc_egress", reply(CLIENT, 6000))).dataOut).ip.src,
    VIP,
    "and its replies reverse-NATed",
  );
  t.equal((await dp.conntrackCounters()).new - before.new, 100, "every new flow counted");
  // The first SYN's flow was evicted by the later ones: its next packet is counted as a pickup.
  await runOne(dp, "blixt_xdp_ingress", ack("192.0.4.1", 40000));
  t.equal(
    (await dp.conntrackCounters()).pickup - before.pickup,
    1,
    "an evicted new flow comes back as a pickup, counted",
  );
});
