// SPDX-License-Identifier: Apache-2.0
// Backend choice over many flows: the weighted shares the Maglev table promises, the rejected
// share, and conntrack keeping an established flow on its backend while that backend exists.
import t from "tap";
import { loadedDataplane, run, runOne, XDP_PASS, XDP_TX } from "./fixture.js";
import { parseFrame, tcpFrame, udpFrame, TCP_ACK, TCP_SYN } from "../lib/packet.js";
import { batch, mapUpdateLine } from "../../capabilities/dataplane/bpftool.js";
import { encodeConntrackKey, encodeConntrackValue, hex } from "../../capabilities/dataplane/maps.js";

const VIP = "198.18.30.1";
const [A, B, C] = ["10.3.0.1", "10.3.0.2", "10.3.0.3"];
const FLOWS = 1000;
/** Binomial sd of a 25 % share over 1000 flows is 1.4 points; 4 points is ~3 sd. The hash and the table are deterministic, so the outcome does not vary between runs. */
const TOLERANCE = 0.04;

const clientOf = (i: number) => `192.0.${2 + (i >> 12)}.${1 + ((i >> 8) & 0x0f)}`;
const sportOf = (i: number) => 10000 + (i & 0xff) * 200 + (i % 7);

function shares(outs: Uint8Array[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const o of outs) counts.set(parseFrame(o).ip.dst, (counts.get(parseFrame(o).ip.dst) ?? 0) + 1);
  return new Map([...counts].map(([k, v]) => [k, v / outs.length]));
}

t.test("flows", async (t) => {
  const dp = await loadedDataplane(t, "flows");

  t.test(`weights 1:3 over ${FLOWS} flows`, async (t) => {
    await dp.setService({ vip: VIP, port: 53, proto: "udp", backends: [{ ip: A, port: 53, weight: 1 }, { ip: B, port: 53, weight: 3 }], rejectWeight: 0 });
    const packets = Array.from({ length: FLOWS }, (_, i) => udpFrame({ src: clientOf(i), dst: VIP, sport: sportOf(i), dport: 53 }));
    const results = await run(dp, "blixt_xdp_ingress", packets);
    t.ok(results.every((r) => r.retval === XDP_PASS), "every flow forwarded");
    const s = shares(results.map((r) => r.dataOut));
    t.ok(Math.abs((s.get(A) ?? 0) - 0.25) <= TOLERANCE, `${A} gets 25 % ± ${TOLERANCE * 100} (got ${((s.get(A) ?? 0) * 100).toFixed(1)} %)`);
    t.ok(Math.abs((s.get(B) ?? 0) - 0.75) <= TOLERANCE, `${B} gets 75 % ± ${TOLERANCE * 100} (got ${((s.get(B) ?? 0) * 100).toFixed(1)} %)`);
    const stats = (await dp.stats()).services.find((x) => x.port === 53)!;
    t.equal(stats.newFlows, FLOWS, "every flow new");
  });

  t.test(`weight 1 against a rejected share of 1: half the SYNs get a RST`, async (t) => {
    await dp.setService({ vip: VIP, port: 443, proto: "tcp", backends: [{ ip: A, port: 443, weight: 1 }], rejectWeight: 1 });
    const packets = Array.from({ length: FLOWS }, (_, i) => tcpFrame({ src: clientOf(i), dst: VIP, sport: sportOf(i), dport: 443, flags: TCP_SYN }));
    const results = await run(dp, "blixt_xdp_ingress", packets);
    const rejected = results.filter((r) => r.retval === XDP_TX).length / FLOWS;
    const forwarded = results.filter((r) => r.retval === XDP_PASS && parseFrame(r.dataOut).ip.dst === A).length / FLOWS;
    t.ok(Math.abs(rejected - 0.5) <= TOLERANCE, `rejected 50 % ± ${TOLERANCE * 100} (got ${(rejected * 100).toFixed(1)} %)`);
    t.equal(rejected + forwarded, 1, "every SYN either forwarded to the backend or answered with a RST");
  });

  t.test("conntrack keeps a flow on its backend while the backend exists", async (t) => {
    const spec = (backends: string[]) => ({ vip: VIP, port: 80, proto: "tcp" as const, backends: backends.map((ip) => ({ ip, port: 8080, weight: 1 })), rejectWeight: 0 });
    const flow = (i: number, flags = TCP_ACK) => tcpFrame({ src: clientOf(i), dst: VIP, sport: 20000 + i, dport: 80, flags });
    const dst = async (packets: Uint8Array[]) => (await run(dp, "blixt_xdp_ingress", packets)).map((r) => parseFrame(r.dataOut).ip.dst);
    const old = Array.from({ length: 60 }, (_, i) => flow(i, TCP_SYN));

    await dp.setService(spec([A]));
    t.ok((await dst(old)).every((d) => d === A), "60 flows established on the only backend");

    await dp.setService(spec([A, B, C]));
    t.ok((await dst(old.map((_, i) => flow(i)))).every((d) => d === A), "after adding backends, established flows stay on theirs");
    const fresh = await dst(Array.from({ length: 60 }, (_, i) => flow(1000 + i, TCP_SYN)));
    t.ok(fresh.includes(B) && fresh.includes(C), "while new flows do spread over the new backends");

    await dp.setService(spec([B, C]));
    const moved = await dst(old.map((_, i) => flow(i)));
    t.ok(moved.every((d) => d === B || d === C), "once their backend is removed, the flows move to the remaining ones");

    const ct = await dp.conntrack();
    const fwd = ct.find((e) => e.direction === "forward" && e.proto === "tcp" && e.dport === 80 && e.sport === 20000);
    t.same(fwd && { ...fwd, lastSeenNs: 0, svcId: 0 }, { direction: "forward", proto: "tcp", saddr: clientOf(0), sport: 20000, daddr: VIP, dport: 80, natAddr: moved[0], natPort: 8080, svcId: 0, lastSeenNs: 0 }, "forward entry: client → VIP gives the backend");
    const rev = ct.find((e) => e.direction === "reverse" && e.proto === "tcp" && e.sport === 8080 && e.dport === 20000 && e.saddr === moved[0]);
    t.same(rev && { ...rev, lastSeenNs: 0, svcId: 0 }, { direction: "reverse", proto: "tcp", saddr: moved[0], sport: 8080, daddr: clientOf(0), dport: 20000, natAddr: VIP, natPort: 80, svcId: 0, lastSeenNs: 0 }, "reverse entry: backend → client gives VIP:port");
  });

  t.test("a UDP flow idle past the timeout picks its backend afresh; TCP does not expire", async (t) => {
    await dp.setService({ vip: VIP, port: 5000, proto: "udp", backends: [{ ip: A, port: 5000, weight: 1 }, { ip: B, port: 5000, weight: 1 }], rejectWeight: 0 });
    await dp.setService({ vip: VIP, port: 5000, proto: "tcp", backends: [{ ip: A, port: 5000, weight: 1 }, { ip: B, port: 5000, weight: 1 }], rejectWeight: 0 });
    const svcId = (await dp.stats()).services.find((s) => s.port === 5000 && s.proto === "udp")!.svcId;
    const tcpSvcId = (await dp.stats()).services.find((s) => s.port === 5000 && s.proto === "tcp")!.svcId;
    const client = "192.0.2.200";
    for (const proto of ["udp", "tcp"] as const) {
      const pkt = proto === "udp" ? udpFrame({ src: client, dst: VIP, sport: 5555, dport: 5000 }) : tcpFrame({ src: client, dst: VIP, sport: 5555, dport: 5000, flags: TCP_ACK });
      const picked = parseFrame((await runOne(dp, "blixt_xdp_ingress", pkt)).dataOut).ip.dst;
      const other = picked === A ? B : A;
      // Pin the flow to the other backend in conntrack, once freshly seen and once long ago.
      // process.hrtime is CLOCK_MONOTONIC, the clock bpf_ktime_get_ns() reads.
      const pinTo = (lastSeenNs: bigint) =>
        batch(
          [
            mapUpdateLine(
              dp.mapPin("blixt_conntrack"),
              hex(encodeConntrackKey({ saddr: client, daddr: VIP, sport: 5555, dport: 5000, proto })),
              hex(encodeConntrackValue({ addr: other, port: 5000, direction: "forward", svcId: proto === "udp" ? svcId : tcpSvcId, lastSeenNs })),
            ),
          ],
          "pinning a flow",
        );
      await pinTo(process.hrtime.bigint());
      t.equal(parseFrame((await runOne(dp, "blixt_xdp_ingress", pkt)).dataOut).ip.dst, other, `${proto}: a fresh conntrack entry wins over the table`);
      await pinTo(1n);
      const after = parseFrame((await runOne(dp, "blixt_xdp_ingress", pkt)).dataOut).ip.dst;
      t.equal(after, proto === "udp" ? picked : other, proto === "udp" ? "udp: an idle entry is ignored, the table decides" : "tcp: an old entry still holds");
    }
  });
});
