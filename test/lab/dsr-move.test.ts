// SPDX-License-Identifier: Apache-2.0
// Connections survive a change of the node that receives them (test/lib/twonodes.ts). The client
// reaches the VIP through gw1 and keeps steady flows open: a TCP stream to a service whose only
// backend is behind gw2 (gw1 encapsulates it), one to a service whose only backend is behind gw1
// (gw1 DNATs it), six to a service with both (Maglev chooses), and a UDP flow to the backend
// behind gw2. Then the client's route to the VIP moves to gw2 (what a change of announcer does to
// the client's ARP entry), and gw2 receives the flows directly:
//  - a flow to gw2's own backend is found in the conntrack entries gw2's decapsulation created
//    (no new flow, no pickup on gw2) and DNATed there;
//  - a flow to gw1's backend is new to gw2: picked up, the same backend chosen by Maglev (both
//    nodes hold the same table), encapsulated to gw1, which decapsulates it into the flow it has.
// Then the route moves back to gw1, which still holds every flow. Every stream comes back complete
// and in order from the backend it began with, which saw the client's address; the datagrams keep
// being answered.
import t from "tap";
import type { Reason } from "../../capabilities/dataplane/maps.js";
import { B1, B2, CLIENT, ECHO_PORT, TwoNodes, UDP_PORT, VIP, type Mode } from "../lib/twonodes.js";

const lab = new TwoNodes(`bdsrm${process.pid % 100000}`);
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));
const answeredBy = (backend: string) =>
  new RegExp(`^${backend} ${CLIENT.replaceAll(".", "\\.")}:\\d+$`);

/** port → the backends its service has. */
const TO_B2 = 90;
const TO_B1 = 91;
const TO_BOTH = 92;
// Six to both: the odds that none lands on b1 (so that no picked-up flow needs a Maglev choice
// among two backends) are 1/64.
const TCP = [TO_B2, TO_B1, ...Array<number>(6).fill(TO_BOTH)];

t.teardown(() => lab.down());

t.before(async () => {
  await lab.up();
  const echo = (ip: string) => ({ ip, port: ECHO_PORT });
  await lab.configure([
    { port: TO_B2, proto: "tcp", backends: [echo(B2)] },
    { port: TO_B1, proto: "tcp", backends: [echo(B1)] },
    { port: TO_BOTH, proto: "tcp", backends: [echo(B1), echo(B2)] },
    { port: 53, proto: "udp", backends: [{ ip: B2, port: UDP_PORT }] },
  ]);
});

type Counts = Record<Reason, number>;
const delta = (after: Counts, before: Counts) =>
  Object.fromEntries(
    Object.entries(after)
      .map(([r, n]) => [r, n - before[r as Reason]] as const)
      .filter(([, n]) => n !== 0),
  ) as Partial<Counts>;

for (const mode of ["xdp", "tc"] as Mode[]) {
  t.test(`${mode}: the client's route to the VIP moves from gw1 to gw2`, async t => {
    await lab.attach(mode, mode);
    await lab.moveVip(1);
    t.teardown(async () => {
      await lab.moveVip(1);
      await lab.detach();
    });
    const flows = await lab.flows({ tcp: TCP, udp: [53] });
    await sleep(1500);
    const ct2 = await lab.gw2.conntrackCounters();
    await lab.moveVip(2);
    await sleep(500);
    const r1 = (await lab.gw1.stats()).reasons;
    const r2 = (await lab.gw2.stats()).reasons;
    await sleep(1500);
    const d1 = delta((await lab.gw1.stats()).reasons, r1);
    const d2 = delta((await lab.gw2.stats()).reasons, r2);
    const ct2after = await lab.gw2.conntrackCounters();
    // And back: gw1 still holds every flow.
    const ct1 = await lab.gw1.conntrackCounters();
    await lab.moveVip(1);
    await sleep(500);
    const back1 = (await lab.gw1.stats()).reasons;
    const back2 = (await lab.gw2.stats()).reasons;
    await sleep(1500);
    const report = await flows.stop();
    const e1 = delta((await lab.gw1.stats()).reasons, back1);
    const e2 = delta((await lab.gw2.stats()).reasons, back2);
    const ct1after = await lab.gw1.conntrackCounters();

    const backendOf = new Map<number, string>();
    for (const [i, s] of report.tcp.entries()) {
      const name = `tcp to :${s.port} #${i}`;
      t.equal(s.error, null, `${name}: never failed`);
      t.equal(s.received, s.sent, `${name}: ${s.sent} bytes sent, all came back`);
      t.equal(s.mismatchAt, null, `${name}: in order, unchanged`);
      const backend = s.header?.split(" ")[0] ?? "none";
      backendOf.set(i, backend);
      const expected = s.port === TO_B2 ? "b2" : s.port === TO_B1 ? "b1" : "b[12]";
      t.match(s.header, answeredBy(expected), `${name}: ${s.header}`);
    }
    const [udp] = report.udp;
    t.same(Object.keys(udp.answers).length, 1, "udp: one backend, one client address");
    t.match(Object.keys(udp.answers)[0], answeredBy("b2"), "udp: the backend behind gw2");
    t.same(Object.keys(udp.froms), [`${VIP}:53`], "udp: every reply from VIP:port");
    t.ok(udp.replies >= udp.sent - 2, `udp: ${udp.replies} of ${udp.sent} answered`);
    t.ok(udp.maxGapMs < 1000, `udp: longest gap between replies ${udp.maxGapMs} ms`);

    // Where the packets went after the move.
    t.equal(d1.encap ?? 0, 0, "gw1 no longer receives the client's packets");
    t.ok((d2.dnat ?? 0) > 0, `gw2 DNATs the flows to its own backend (${d2.dnat})`);
    const sent2 = (d2.encap ?? 0) + (d2.encap_no_neigh ?? 0);
    const toB1 = [...backendOf.values()].filter(b => b === "b1").length;
    t.ok(sent2 > 0, `gw2 encapsulates the flows to gw1's backend (${sent2})`);
    t.ok((d1.decap ?? 0) > 0, `gw1 decapsulates them (${d1.decap})`);
    t.equal(d1.drop_ipip ?? 0, 0, "gw1 dropped no IP-in-IP");
    t.equal(ct2after.new - ct2.new, 0, "gw2: no flow counted new");
    t.equal(
      ct2after.pickup - ct2.pickup,
      toB1,
      `gw2 picked up exactly the ${toB1} TCP flows to b1; the others it knew from decapsulating`,
    );
    t.equal(
      (e2.dnat ?? 0) + (e2.encap ?? 0),
      0,
      "back: gw2 no longer receives the client's packets",
    );
    t.ok((e1.encap ?? 0) > 0 && (e1.dnat ?? 0) > 0, "back: gw1 encapsulates and DNATs again");
    t.equal(ct1after.new - ct1.new, 0, "back: gw1 counted no flow new");
    t.equal(ct1after.pickup - ct1.pickup, 0, "back: gw1 picked up no flow");
    t.comment(`after the move, gw1: ${JSON.stringify(d1)}`);
    t.comment(`after the move, gw2: ${JSON.stringify(d2)}`);
    t.comment(`back on gw1, gw1: ${JSON.stringify(e1)}`);
    t.comment(`back on gw1, gw2: ${JSON.stringify(e2)}`);
    t.comment(`backends: ${report.tcp.map((s, i) => `:${s.port}→${backendOf.get(i)}`).join(" ")}`);
  });
}
