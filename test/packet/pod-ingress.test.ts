// SPDX-License-Identifier: Apache-2.0
// Clients inside the cluster ("hairpin"): blixt_tc_pod_ingress runs on the node's end of each
// pod's interface. A pod's packet to a service is DNATed to its backend whichever node that
// backend runs on (the pod network carries it; nothing is encapsulated), the flow is recorded so
// that blixt_tc_egress on the same interface gives the replies VIP:port back, a port with no
// listener and a rejected share are answered with a RST sent back to the pod, and what is not
// for a service passes untouched and uncounted. A frame for another MAC (the bridge's, seen from
// one of its ports) is handled all the same, where blixt_tc_ingress would leave it alone.
import t from "tap";
import { progRun } from "../../capabilities/dataplane/bpftool.js";
import { loadedDataplane, runOne, skbFromLoopback, TC_ACT_OK, TC_ACT_REDIRECT } from "./fixture.js";
import { parseFrame, tcpFrame, udpFrame, TCP_ACK, TCP_RST, TCP_SYN } from "../lib/packet.js";

const VIP = "198.18.61.1";
const POD = "198.19.192.10"; // the client pod, on this node
const LOCAL = "198.19.192.20"; // a backend on this node
const REMOTE = "198.19.193.20"; // a backend on another node
const NODE = "198.19.253.2";

t.test("a pod's packets to a service", async t => {
  const dp = await loadedDataplane(t, "podin");
  await dp.setNodeAddress(NODE);
  await dp.setAddresses([VIP]);
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
    backends: [{ ip: LOCAL, port: 5353, weight: 1 }],
    rejectWeight: 0,
  });
  await dp.setService({
    vip: VIP,
    port: 81,
    proto: "tcp",
    backends: [],
    rejectWeight: 1,
  });
  const reasons = async () => (await dp.stats()).reasons;
  const before = await reasons();

  await t.test("a remote backend is DNATed, not encapsulated", async t => {
    const syn = tcpFrame({ src: POD, dst: VIP, sport: 41000, dport: 80, flags: TCP_SYN });
    const r = await runOne(dp, "blixt_tc_pod_ingress", syn);
    t.equal(r.retval, TC_ACT_OK, "handed to the kernel to route");
    const f = parseFrame(r.dataOut);
    t.equal(f.ip.protocol, 6, "still TCP: no outer header");
    t.equal(f.ip.src, POD, "the pod's own address stays the source");
    t.equal(f.ip.dst, REMOTE);
    t.equal(f.tcp?.dport, 8080);
    t.ok(f.ipChecksumOk && f.l4ChecksumOk, "checksums valid");

    const reply = tcpFrame({
      src: REMOTE,
      dst: POD,
      sport: 8080,
      dport: 41000,
      flags: TCP_SYN | TCP_ACK,
    });
    const back = parseFrame((await runOne(dp, "blixt_tc_egress", reply)).dataOut);
    t.equal(
      back.ip.src,
      VIP,
      "the backend's reply leaves towards the pod from the Gateway address",
    );
    t.equal(back.tcp?.sport, 80);
    t.ok(back.ipChecksumOk && back.l4ChecksumOk);

    const ack = tcpFrame({ src: POD, dst: VIP, sport: 41000, dport: 80, flags: TCP_ACK });
    t.equal(
      parseFrame((await runOne(dp, "blixt_tc_pod_ingress", ack)).dataOut).ip.dst,
      REMOTE,
      "the flow's next segment follows its entry",
    );
    const entries = await dp.conntrack();
    const forward = entries.find(e => e.direction === "forward" && e.saddr === POD);
    t.equal(forward?.natAddr, REMOTE, "the flow is recorded with its backend");
    t.ok(
      entries.find(e => e.direction === "reverse" && e.saddr === REMOTE && e.daddr === POD),
      "and its reverse entry, as for a DNATed flow (a remote one has none on this node)",
    );
  });

  await t.test("UDP to a local backend, from a frame for the bridge's MAC", async t => {
    const dgram = udpFrame({
      src: POD,
      dst: VIP,
      sport: 42000,
      dport: 53,
      dstMac: "02:00:00:00:00:99",
      payload: new Uint8Array([1, 2, 3]),
    });
    const r = await progRun(dp.progPin("blixt_tc_pod_ingress"), dgram, {
      ctxIn: skbFromLoopback(),
    });
    t.equal(r.retval, TC_ACT_OK);
    const f = parseFrame(r.dataOut);
    t.equal(f.ip.dst, LOCAL, "DNATed although the frame is PACKET_OTHERHOST to the port");
    t.equal(f.udp?.dport, 5353);
    t.ok(f.l4ChecksumOk);
  });

  await t.test("refused and rejected: a RST back to the pod", async t => {
    for (const [port, what] of [
      [82, "no listener on the port"],
      [81, "a rejected share"],
    ] as const) {
      const syn = tcpFrame({ src: POD, dst: VIP, sport: 43000, dport: port, flags: TCP_SYN });
      const r = await runOne(dp, "blixt_tc_pod_ingress", syn);
      t.equal(r.retval, TC_ACT_REDIRECT, `${what}: sent back out of the pod's interface`);
      const f = parseFrame(r.dataOut);
      t.equal(f.ip.src, VIP, `${what}: from the Gateway address`);
      t.equal(f.ip.dst, POD);
      t.ok((f.tcp?.flags ?? 0) & TCP_RST, `${what}: a RST`);
    }
  });

  await t.test("a pod's other traffic passes untouched and uncounted", async t => {
    const mid = await reasons();
    const other = tcpFrame({ src: POD, dst: LOCAL, sport: 44000, dport: 8080, flags: TCP_SYN });
    const r = await runOne(dp, "blixt_tc_pod_ingress", other);
    t.equal(r.retval, TC_ACT_OK);
    t.same(Buffer.from(r.dataOut), Buffer.from(other), "untouched");
    const ipip = udpFrame({ src: POD, dst: "198.19.193.1", sport: 1, dport: 2, protocol: 4 });
    const r2 = await runOne(dp, "blixt_tc_pod_ingress", ipip);
    t.equal(r2.retval, TC_ACT_OK, "a pod's own IP-in-IP is not decapsulated or dropped");
    t.same(Buffer.from(r2.dataOut), Buffer.from(ipip));
    const after = await reasons();
    t.equal(after.pass_no_service, mid.pass_no_service, "pass_no_service not counted");
    t.equal(after.pass_unparsed, mid.pass_unparsed, "pass_unparsed not counted");
    t.equal(after.drop_ipip, mid.drop_ipip, "drop_ipip not counted");
  });

  const after = await reasons();
  t.equal(
    after.dnat_in_cluster - before.dnat_in_cluster,
    3,
    "counted dnat_in_cluster (SYN, ACK, UDP)",
  );
  t.equal(after.refused_rst - before.refused_rst, 1, "refused_rst");
  t.equal(after.reject_rst - before.reject_rst, 1, "reject_rst");
});
