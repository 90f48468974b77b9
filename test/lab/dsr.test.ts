// SPDX-License-Identifier: Apache-2.0
// Backends on another node, with real traffic (test/lib/twonodes.ts): the client routes the VIP to
// the first node, whose table names the second node's backend as remote, so it encapsulates the
// client's packets (IP-in-IP) to it; the second node decapsulates, DNATs, and its backend answers
// the client directly (reverse-NATed to VIP:port on the second node's way out). In every pairing
// of ingress modes (XDP↔XDP, TC↔TC, XDP→TC, TC→XDP), for TCP and UDP: every request answered, by
// the remote backend, which sees the client's address; every reply from VIP:port.
import t from "tap";
import {
  B2,
  CLIENT,
  LINE_PORT,
  REQUESTS_JS,
  TwoNodes,
  UDP_PORT,
  VIP,
  type Mode,
  type Outcome,
} from "../lib/twonodes.js";

const lab = new TwoNodes(`bdsr${process.pid % 100000}`);
const COUNT = 20;

async function requests(proto: "tcp" | "udp", port: number): Promise<Outcome[]> {
  const r = await lab.run(["-e", REQUESTS_JS, proto, VIP, String(port), String(COUNT)]);
  return JSON.parse(String(r.stdout)) as Outcome[];
}

t.teardown(() => lab.down());

t.test(
  "two gateway nodes: IP-in-IP to the remote backend, its replies straight to the client",
  async t => {
    await lab.up();
    const { gw1, gw2 } = lab;
    await lab.configure([
      { port: 80, proto: "tcp", backends: [{ ip: B2, port: LINE_PORT }] },
      { port: 53, proto: "udp", backends: [{ ip: B2, port: UDP_PORT }] },
    ]);

    const pairs: [Mode, Mode][] = [
      ["xdp", "xdp"],
      ["tc", "tc"],
      ["xdp", "tc"],
      ["tc", "xdp"],
    ];
    for (const [mode1, mode2] of pairs) {
      await t.test(`gw1 ${mode1}, gw2 ${mode2}`, async t => {
        await lab.attach(mode1, mode2);
        t.teardown(() => lab.detach());
        const before1 = (await gw1.stats()).reasons;
        const before2 = (await gw2.stats()).reasons;
        for (const [proto, port] of [
          ["tcp", 80],
          ["udp", 53],
        ] as const) {
          const outcomes = await requests(proto, port);
          t.same(
            outcomes.filter(o => !o.ok),
            [],
            `${proto}: all ${COUNT} requests answered`,
          );
          const ok = outcomes.flatMap(o => (o.ok ? [o] : []));
          t.same(
            [...new Set(ok.map(o => o.answer.split(" ")[0]))],
            ["b2"],
            `${proto}: answered by the backend behind the other node`,
          );
          t.same(
            [...new Set(ok.map(o => o.answer.split(" ")[1].split(":")[0]))],
            [CLIENT],
            `${proto}: the backend saw the client's own address`,
          );
          t.same(
            [...new Set(ok.map(o => o.from))],
            [`${VIP}:${port}`],
            `${proto}: every reply from VIP:port`,
          );
        }
        const r1 = (await gw1.stats()).reasons;
        const r2 = (await gw2.stats()).reasons;
        const sent = r1.encap - before1.encap + (r1.encap_no_neigh - before1.encap_no_neigh);
        t.ok(sent >= 2 * COUNT, `gw1 encapsulated ${sent} packets`);
        t.ok(r2.decap - before2.decap >= 2 * COUNT, `gw2 decapsulated ${r2.decap - before2.decap}`);
        t.ok(r2.reverse_nat - before2.reverse_nat >= 2 * COUNT, "gw2 reverse-NATed the replies");
        t.equal(r1.reverse_nat - before1.reverse_nat, 0, "no reply came back through gw1");
        t.equal(r2.drop_ipip - before2.drop_ipip, 0, "no IP-in-IP dropped");
        t.comment(
          `gw1: encap ${r1.encap - before1.encap}, encap_no_neigh ${r1.encap_no_neigh - before1.encap_no_neigh}; gw2: decap ${r2.decap - before2.decap}`,
        );
      });
    }
  },
);
