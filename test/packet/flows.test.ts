// SPDX-License-Identifier: Apache-2.0
// Backend choice over many flows: the weighted shares the Maglev table promises, the rejected
// share, and conntrack keeping an established flow on its backend while that backend exists.
import t from "tap";
import { loadedDataplane, run, runOne, XDP_PASS, XDP_TX } from "./fixture.js";
import { parseFrame, tcpFrame, udpFrame, TCP_ACK, TCP_SYN } from "../lib/packet.js";
import { batch, mapLookup, mapUpdateLine } from "../../capabilities/dataplane/bpftool.js";
import type { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import {
  CT_CONFIG_KEY,
  EPOCH_COUNTER,
  decodeEpoch,
  encodeConntrackConfig,
  encodeConntrackKey,
  encodeConntrackValue,
  encodeIndexKey,
  hex,
} from "../../capabilities/dataplane/maps.js";

const VIP = "198.18.30.1";
const [A, B, C] = ["10.3.0.1", "10.3.0.2", "10.3.0.3"];
const FLOWS = 1000;
/** Binomial sd of a 25 % share over 1000 flows is 1.4 points; 4 points is ~3 sd. The hash and the table are deterministic, so the outcome does not vary between runs. */
const TOLERANCE = 0.04;

const clientOf = (i: number) => `192.0.${2 + (i >> 12)}.${1 + ((i >> 8) & 0x0f)}`;
const sportOf = (i: number) => 10000 + (i & 0xff) * 200 + (i % 7);

/** blixt_svc_epoch[svcId], as the programs read it. */
async function epochOf(dp: Dataplane, svcId: number): Promise<number> {
  const entry = await mapLookup(dp.mapPin("blixt_svc_epoch"), hex(encodeIndexKey(svcId)));
  return decodeEpoch(entry!.value!);
}

function shares(outs: Uint8Array[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const o of outs)
    counts.set(parseFrame(o).ip.dst, (counts.get(parseFrame(o).ip.dst) ?? 0) + 1);
  return new Map([...counts].map(([k, v]) => [k, v / outs.length]));
}

t.test("flows", async t => {
  const dp = await loadedDataplane(t, "flows");

  t.test(`weights 1:3 over ${FLOWS} flows`, async t => {
    await dp.setService({
      vip: VIP,
      port: 53,
      proto: "udp",
      backends: [
        { ip: A, port: 53, weight: 1 },
        { ip: B, port: 53, weight: 3 },
      ],
      rejectWeight: 0,
    });
    const packets = Array.from({ length: FLOWS }, (_, i) =>
      udpFrame({ src: clientOf(i), dst: VIP, sport: sportOf(i), dport: 53 }),
    );
    const results = await run(dp, "blixt_xdp_ingress", packets);
    t.ok(
      results.every(r => r.retval === XDP_PASS),
      "every flow forwarded",
    );
    const s = shares(results.map(r => r.dataOut));
    t.ok(
      Math.abs((s.get(A) ?? 0) - 0.25) <= TOLERANCE,
      `${A} gets 25 % ± ${TOLERANCE * 100} (got ${((s.get(A) ?? 0) * 100).toFixed(1)} %)`,
    );
    t.ok(
      Math.abs((s.get(B) ?? 0) - 0.75) <= TOLERANCE,
      `${B} gets 75 % ± ${TOLERANCE * 100} (got ${((s.get(B) ?? 0) * 100).toFixed(1)} %)`,
    );
    const stats = (await dp.stats()).services.find(x => x.port === 53)!;
    t.equal(stats.newFlows, FLOWS, "every flow new");
  });

  t.test(`weight 1 against a rejected share of 1: half the SYNs get a RST`, async t => {
    await dp.setService({
      vip: VIP,
      port: 443,
      proto: "tcp",
      backends: [{ ip: A, port: 443, weight: 1 }],
      rejectWeight: 1,
    });
    const packets = Array.from({ length: FLOWS }, (_, i) =>
      tcpFrame({ src: clientOf(i), dst: VIP, sport: sportOf(i), dport: 443, flags: TCP_SYN }),
    );
    const results = await run(dp, "blixt_xdp_ingress", packets);
    const rejected = results.filter(r => r.retval === XDP_TX).length / FLOWS;
    const forwarded =
      results.filter(r => r.retval === XDP_PASS && parseFrame(r.dataOut).ip.dst === A).length /
      FLOWS;
    t.ok(
      Math.abs(rejected - 0.5) <= TOLERANCE,
      `rejected 50 % ± ${TOLERANCE * 100} (got ${(rejected * 100).toFixed(1)} %)`,
    );
    t.equal(
      rejected + forwarded,
      1,
      "every SYN either forwarded to the backend or answered with a RST",
    );
  });

  t.test("conntrack keeps a flow on its backend while the backend exists", async t => {
    const spec = (backends: string[]) => ({
      vip: VIP,
      port: 80,
      proto: "tcp" as const,
      backends: backends.map(ip => ({ ip, port: 8080, weight: 1 })),
      rejectWeight: 0,
    });
    const flow = (i: number, flags = TCP_ACK) =>
      tcpFrame({ src: clientOf(i), dst: VIP, sport: 20000 + i, dport: 80, flags });
    const dst = async (packets: Uint8Array[]) =>
      (await run(dp, "blixt_xdp_ingress", packets)).map(r => parseFrame(r.dataOut).ip.dst);
    const old = Array.from({ length: 60 }, (_, i) => flow(i, TCP_SYN));

    await dp.setService(spec([A]));
    t.ok(
      (await dst(old)).every(d => d === A),
      "60 flows established on the only backend",
    );

    await dp.setService(spec([A, B, C]));
    t.ok(
      (await dst(old.map((_, i) => flow(i)))).every(d => d === A),
      "after adding backends, established flows stay on theirs",
    );
    const fresh = await dst(Array.from({ length: 60 }, (_, i) => flow(1000 + i, TCP_SYN)));
    t.ok(fresh.includes(B) && fresh.includes(C), "while new flows do spread over the new backends");

    await dp.setService(spec([B, C]));
    const moved = await dst(old.map((_, i) => flow(i)));
    t.ok(
      moved.every(d => d === B || d === C),
      "once their backend is removed, the flows move to the remaining ones",
    );

    const ct = await dp.conntrack();
    const fwd = ct.find(
      e => e.direction === "forward" && e.proto === "tcp" && e.dport === 80 && e.sport === 20000,
    );
    t.same(
      fwd && { ...fwd, lastSeenNs: 0, svcId: 0, epoch: 0 },
      {
        confirmed: false,
        direction: "forward",
        proto: "tcp",
        saddr: clientOf(0),
        sport: 20000,
        daddr: VIP,
        dport: 80,
        natAddr: moved[0],
        natPort: 8080,
        svcId: 0,
        epoch: 0,
        lastSeenNs: 0,
      },
      "forward entry: client → VIP gives the backend (unconfirmed: no reply went through egress here)",
    );
    t.ok(
      fwd && fwd.epoch > 0 && fwd.epoch === (await epochOf(dp, fwd.svcId)),
      "the moved flow's entry carries its service's epoch now",
    );
    const rev = ct.find(
      e =>
        e.direction === "reverse" &&
        e.proto === "tcp" &&
        e.sport === 8080 &&
        e.dport === 20000 &&
        e.saddr === moved[0],
    );
    t.same(
      rev && { ...rev, lastSeenNs: 0, svcId: 0 },
      {
        confirmed: false,
        direction: "reverse",
        proto: "tcp",
        saddr: moved[0],
        sport: 8080,
        daddr: clientOf(0),
        dport: 20000,
        natAddr: VIP,
        natPort: 80,
        svcId: 0,
        epoch: 0,
        lastSeenNs: 0,
      },
      "reverse entry: backend → client gives VIP:port",
    );
  });

  t.test("a flow idle past its timeout picks its backend afresh, UDP and TCP alike", async t => {
    // TCP's default idle timeout (6 h) may exceed this machine's uptime, and CLOCK_MONOTONIC starts at boot: 1 s here.
    await batch(
      [
        mapUpdateLine(
          dp.mapPin("blixt_ct_config"),
          hex(encodeIndexKey(CT_CONFIG_KEY)),
          hex(encodeConntrackConfig({ tcpEstablishedSeconds: 1 })),
        ),
      ],
      "setting the TCP idle timeout",
    );
    await dp.setService({
      vip: VIP,
      port: 5000,
      proto: "udp",
      backends: [
        { ip: A, port: 5000, weight: 1 },
        { ip: B, port: 5000, weight: 1 },
      ],
      rejectWeight: 0,
    });
    await dp.setService({
      vip: VIP,
      port: 5000,
      proto: "tcp",
      backends: [
        { ip: A, port: 5000, weight: 1 },
        { ip: B, port: 5000, weight: 1 },
      ],
      rejectWeight: 0,
    });
    const svcId = (await dp.stats()).services.find(
      s => s.port === 5000 && s.proto === "udp",
    )!.svcId;
    const tcpSvcId = (await dp.stats()).services.find(
      s => s.port === 5000 && s.proto === "tcp",
    )!.svcId;
    const client = "192.0.2.200";
    for (const proto of ["udp", "tcp"] as const) {
      const pkt =
        proto === "udp"
          ? udpFrame({ src: client, dst: VIP, sport: 5555, dport: 5000 })
          : tcpFrame({ src: client, dst: VIP, sport: 5555, dport: 5000, flags: TCP_ACK });
      const picked = parseFrame((await runOne(dp, "blixt_xdp_ingress", pkt)).dataOut).ip.dst;
      const other = picked === A ? B : A;
      // Pin the flow to the other backend in conntrack, once freshly seen and once long ago.
      // process.hrtime is CLOCK_MONOTONIC, the clock bpf_ktime_get_coarse_ns() reads (to the tick).
      const pinTo = (lastSeenNs: bigint) =>
        batch(
          [
            mapUpdateLine(
              dp.mapPin("blixt_ct4"),
              hex(
                encodeConntrackKey({ saddr: client, daddr: VIP, sport: 5555, dport: 5000, proto }),
              ),
              hex(
                encodeConntrackValue({
                  addr: other,
                  port: 5000,
                  direction: "forward",
                  svcId: proto === "udp" ? svcId : tcpSvcId,
                  epoch: 0,
                  lastSeenNs,
                }),
              ),
            ),
          ],
          "pinning a flow",
        );
      await pinTo(process.hrtime.bigint());
      t.equal(
        parseFrame((await runOne(dp, "blixt_xdp_ingress", pkt)).dataOut).ip.dst,
        other,
        `${proto}: a fresh conntrack entry wins over the table`,
      );
      await pinTo(1n);
      const after = parseFrame((await runOne(dp, "blixt_xdp_ingress", pkt)).dataOut).ip.dst;
      t.equal(after, picked, `${proto}: an idle entry is ignored, the table decides`);
    }
    await batch(
      [
        mapUpdateLine(
          dp.mapPin("blixt_ct_config"),
          hex(encodeIndexKey(CT_CONFIG_KEY)),
          hex(encodeConntrackConfig({})),
        ),
      ],
      "restoring the default timeouts",
    );
  });

  t.test(
    "an entry stamped with its service's epoch is followed without the full check; any change to the service moves the epoch",
    async t => {
      const port = 7000;
      const spec = (backends: string[]) => ({
        vip: VIP,
        port,
        proto: "tcp" as const,
        backends: backends.map(ip => ({ ip, port, weight: 1 })),
        rejectWeight: 0,
      });
      const client = "192.0.2.210";
      const pkt = tcpFrame({ src: client, dst: VIP, sport: 6000, dport: port, flags: TCP_ACK });
      const dst = async () => {
        const r = await runOne(dp, "blixt_xdp_ingress", pkt);
        return r.retval === XDP_PASS ? parseFrame(r.dataOut).ip.dst : `retval ${r.retval}`;
      };
      await dp.setService(spec([A, B]));
      const svcId = (await dp.stats()).services.find(s => s.port === port)!.svcId;
      const first = await epochOf(dp, svcId);
      t.ok(first > 0, "a programmed service has an epoch");
      t.ok(
        (await epochOf(dp, EPOCH_COUNTER)) >= first,
        "the counter holds the last epoch handed out",
      );

      // Stamp the flow with the current epoch but point it at an address that is no backend: only
      // the fast path would follow it, so this shows the fast path is taken.
      const stamp = (epoch: number) =>
        batch(
          [
            mapUpdateLine(
              dp.mapPin("blixt_ct4"),
              hex(
                encodeConntrackKey({
                  saddr: client,
                  daddr: VIP,
                  sport: 6000,
                  dport: port,
                  proto: "tcp",
                }),
              ),
              hex(
                encodeConntrackValue({
                  addr: C,
                  port,
                  direction: "forward",
                  svcId,
                  epoch,
                  lastSeenNs: process.hrtime.bigint(),
                }),
              ),
            ),
          ],
          "stamping a flow",
        );
      await stamp(first);
      t.equal(await dst(), C, "current epoch: the entry is followed as it is");
      await stamp(first - 1);
      const checked = await dst();
      t.ok(
        checked === A || checked === B,
        `an older epoch: checked, C is no backend, the table picks (${checked})`,
      );
      const entry = (await dp.conntrack()).find(
        e => e.direction === "forward" && e.sport === 6000 && e.dport === port,
      )!;
      t.same(
        [entry.natAddr, entry.epoch],
        [checked, first],
        "the entry now names the table's pick, stamped with the current epoch",
      );

      await stamp(first);
      await dp.setService(spec([A, B])); // the same backends, rewritten: still a new epoch
      const second = await epochOf(dp, svcId);
      t.ok(second > first, `a rewrite moves the epoch (${first} → ${second})`);
      const again = await dst();
      t.ok(again === A || again === B, "so the stale stamp is checked again, and C left");

      await dp.deleteService(VIP, port, "tcp");
      const third = await epochOf(dp, svcId);
      t.ok(third > second, "removing the service moves its epoch too");
      const entry2 = (await dp.conntrack()).find(
        e => e.direction === "forward" && e.sport === 6000 && e.dport === port,
      )!;
      t.equal(entry2.epoch, second, "the flow's entry still carries the epoch before the removal");
      t.equal(await dst(), VIP, "a packet of the flow is no longer forwarded: the service is gone");

      await dp.setService(spec([A]));
      const reused = (await dp.stats()).services.find(s => s.port === port)!.svcId;
      t.equal(reused, svcId, "a new service takes the freed id");
      t.ok(
        (await epochOf(dp, reused)) > third,
        "and an epoch no earlier holder of the id ever had",
      );
    },
  );
});
