// SPDX-License-Identifier: Apache-2.0
// TC ingress leaves a unicast frame for another host's MAC (PACKET_OTHERHOST) to the kernel,
// which drops it: a bridge floods such frames to every port when it has no entry for their MAC
// (the port of a powered-off announcer went away), and every node forwarding its copy would
// hand the backend duplicates. The run names an ingress device (ctx_in ingress_ifindex), as a
// frame off the wire has; the device is the loopback, whose MAC is 00:00:00:00:00:00.
import t from "tap";
import { progRun } from "../../capabilities/dataplane/bpftool.js";
import { loadedDataplane, skbFromLoopback, TC_ACT_OK } from "./fixture.js";
import { parseFrame, tcpFrame, TCP_SYN } from "../lib/packet.js";

const VIP = "198.18.10.1";
const CLIENT = "192.0.2.10";
const BACKEND = "10.1.0.7";

t.test("a frame for another host is not forwarded", async t => {
  const dp = await loadedDataplane(t, "otherhost");
  await dp.setService({
    vip: VIP,
    port: 80,
    proto: "tcp",
    backends: [{ ip: BACKEND, port: 8080, weight: 1 }],
    rejectWeight: 0,
  });
  const prog = dp.progPin("blixt_tc_ingress");
  const syn = (dstMac: string) =>
    tcpFrame({ src: CLIENT, dst: VIP, sport: 40001, dport: 80, flags: TCP_SYN, dstMac });
  const counted = async () => (await dp.stats()).reasons;

  const before = await counted();
  const flooded = syn("02:00:00:00:00:99");
  const r = await progRun(prog, flooded, { ctxIn: skbFromLoopback() });
  t.equal(r.retval, TC_ACT_OK, "passed to the kernel, which drops PACKET_OTHERHOST");
  t.same(Buffer.from(r.dataOut), Buffer.from(flooded), "untouched: not DNATed");
  let after = await counted();
  t.equal(after.pass_other_host - before.pass_other_host, 1, "counted pass_other_host");
  t.equal(after.dnat - before.dnat, 0, "and not dnat");

  const mine = await progRun(prog, syn("00:00:00:00:00:00"), { ctxIn: skbFromLoopback() });
  t.equal(parseFrame(mine.dataOut).ip.dst, BACKEND, "a frame for the device's own MAC is DNATed");
  const broadcast = await progRun(prog, syn("ff:ff:ff:ff:ff:ff"), { ctxIn: skbFromLoopback() });
  t.equal(parseFrame(broadcast.dataOut).ip.dst, BACKEND, "and so is a broadcast one");
  after = await counted();
  t.equal(after.dnat - before.dnat, 2);
  t.equal(after.pass_other_host - before.pass_other_host, 1);
});
