// SPDX-License-Identifier: Apache-2.0
// Flows to a backend on another node live through the node agent restarting on either node
// (test/lib/twonodes.ts). The client talks to the backend behind gw2 through gw1: a TCP stream
// (4 KiB every 10 ms, echoed) and a UDP flow (a datagram every 100 ms). Meanwhile gw1's agent
// restarts, then gw2's, as the agent does: a new Dataplane, load() reusing the pinned maps, attach
// again. The stream never resets and comes back complete and in order; the datagrams keep being
// answered by the same backend, which sees the client's address; and neither node picked a flow up
// afresh (a restart that lost conntrack would count each flow again as new or picked up).
import t from "tap";
import { B1, B2, CLIENT, ECHO_PORT, TwoNodes, UDP_PORT, VIP, type Mode } from "../lib/twonodes.js";

const lab = new TwoNodes(`bdsrr${process.pid % 100000}`);
/** "<backend> <client>:<port>": the backend's line when it saw the client's own address. */
const answeredBy = (backend: string) =>
  new RegExp(`^${backend} ${CLIENT.replaceAll(".", "\\.")}:\\d+$`);
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

t.teardown(() => lab.down());

t.before(async () => {
  await lab.up();
  await lab.configure([
    { port: 90, proto: "tcp", backends: [{ ip: B2, port: ECHO_PORT }] },
    { port: 53, proto: "udp", backends: [{ ip: B2, port: UDP_PORT }] },
  ]);
});

for (const mode of ["xdp", "tc"] as Mode[]) {
  t.test(`${mode}: the node agent restarts on gw1, then on gw2`, async t => {
    await lab.attach(mode, mode);
    t.teardown(() => lab.detach());
    const flows = await lab.flows({ tcp: [90], udp: [53] });
    // Past a second, so both nodes hold the flows as confirmed.
    await sleep(1500);
    const ct1 = await lab.gw1.conntrackCounters();
    const ct2 = await lab.gw2.conntrackCounters();
    for (const node of [1, 2] as const) {
      const restarted = lab.dataplane(node);
      await restarted.load();
      await restarted.attach("eth0", mode);
      await sleep(1500);
    }
    const report = await flows.stop();
    const after1 = await lab.gw1.conntrackCounters();
    const after2 = await lab.gw2.conntrackCounters();

    const [tcp] = report.tcp;
    t.equal(tcp.error, null, "the TCP stream never failed");
    t.match(tcp.header, answeredBy("b2"), "from the backend behind gw2, seeing the client");
    t.ok(tcp.sent > 1 << 18, `the client wrote ${tcp.sent} bytes during the restarts`);
    t.equal(tcp.received, tcp.sent, "every byte came back");
    t.equal(tcp.mismatchAt, null, "in order, unchanged");

    const [udp] = report.udp;
    const answers = Object.keys(udp.answers);
    t.equal(answers.length, 1, `one backend, one client address: ${answers.join(", ")}`);
    t.match(answers[0], answeredBy("b2"), "the backend behind gw2, seeing the client");
    t.same(Object.keys(udp.froms), [`${VIP}:53`], "every reply from VIP:port");
    t.ok(udp.replies >= udp.sent - 2, `${udp.replies} of ${udp.sent} datagrams answered`);
    t.ok(udp.maxGapMs < 1000, `longest gap between replies ${udp.maxGapMs} ms`);
    t.comment(`udp: ${udp.replies}/${udp.sent} answered, longest gap ${udp.maxGapMs} ms`);

    for (const [node, before, after] of [
      ["gw1", ct1, after1],
      ["gw2", ct2, after2],
    ] as const) {
      t.equal(after.new - before.new, 0, `${node}: no flow counted new again`);
      t.equal(after.pickup - before.pickup, 0, `${node}: no flow picked up again`);
    }
  });
}

// What conntrack surviving the restart protects: flows that began before a change of their service
// (a second backend, behind gw1) keep their backend by their entries, through the change and then
// through the restarts; only new flows use the new table. With the entries lost, Maglev would send
// about half of the streams to the new backend, which would reset them.
const GROWN = 93;
const STREAMS = 6;
const echo = (ip: string) => ({ ip, port: ECHO_PORT });

for (const mode of ["xdp", "tc"] as Mode[]) {
  t.test(`${mode}: restarts while the service gains a backend`, async t => {
    await lab.setService({ port: GROWN, proto: "tcp", backends: [echo(B2)] });
    await lab.attach(mode, mode);
    t.teardown(() => lab.detach());
    const flows = await lab.flows({ tcp: Array<number>(STREAMS).fill(GROWN), udp: [] });
    await sleep(1500);
    await lab.setService({ port: GROWN, proto: "tcp", backends: [echo(B1), echo(B2)] });
    await sleep(500);
    const restarted = lab.dataplane(1);
    await restarted.load();
    await restarted.attach("eth0", mode);
    await sleep(1000);
    const again = lab.dataplane(2);
    await again.load();
    await again.attach("eth0", mode);
    await sleep(1000);
    const report = await flows.stop();
    for (const [i, s] of report.tcp.entries()) {
      t.equal(s.error, null, `stream #${i}: never failed`);
      t.equal(s.received, s.sent, `stream #${i}: ${s.sent} bytes sent, all came back`);
      t.equal(s.mismatchAt, null, `stream #${i}: in order, unchanged`);
      t.match(s.header, answeredBy("b2"), `stream #${i}: still on b2`);
    }
    // 16 new connections all on b2 would mean the new table never took (odds 2^-16).
    const fresh = await lab.flows({ tcp: Array<number>(16).fill(GROWN), udp: [] });
    const backends = new Set((await fresh.stop()).tcp.map(s => s.header?.split(" ")[0]));
    t.same([...backends].sort(), ["b1", "b2"], "new connections use both backends");
  });
}
