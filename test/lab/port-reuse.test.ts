// SPDX-License-Identifier: Apache-2.0
// One client port through two listeners that share a backend, with real traffic (test/lib/
// twonodes.ts). The backend is DNATed to, so it sees client:port ↔ backend:8080 whichever
// VIP:port the client dialled; the conntrack entry for that direction (bpf/conntrack.h) must
// follow the connection that uses it now. A connection from a port whose last connection, through
// the other listener, has just closed is answered at once, from the VIP:port it dialled (it used
// to get the old connection's VIP:port, and its handshake never completed until the old entries
// expired 10 s later). While a connection through the other listener is still open, the new one
// is held back (its SYNs dropped) and the open one keeps working; once that closes, the next
// retransmitted SYN gets in. Both for a backend on the node the client reaches (DNAT there) and
// for one behind the other node (IP-in-IP; the backend's node decides).
import t from "tap";
import { B1, B2, LINE_PORT, TwoNodes, VIP } from "../lib/twonodes.js";

const lab = new TwoNodes(`bpr${process.pid % 100000}`);

/**
 * argv: host portA portB localPort. First a connection to portA from localPort, one line, closed;
 * then one to portB from the same port (3 s to answer). Then, from localPort + 1, a connection to
 * portA held open while one to portB from the same port waits 2 s; a second line on the open one;
 * the open one closed; the waiting one's answer, 8 s at most. Prints one JSON line.
 */
const REUSE_JS = String.raw`
const net = require("node:net");
const [host, a, b, local] = process.argv.slice(1).map((x, i) => (i ? Number(x) : x));
const started = () => performance.now();
function open(port, localPort) {
  const sock = net.connect({ host, port, localPort });
  const lines = [];
  let buf = "", waiters = [];
  sock.on("data", (d) => {
    buf += d;
    for (let i; (i = buf.indexOf("\n")) >= 0; buf = buf.slice(i + 1)) lines.push(buf.slice(0, i));
    waiters.forEach((w) => w());
  });
  sock.on("error", (e) => { sock.failed = e.code; waiters.forEach((w) => w()); });
  sock.line = (ms) => new Promise((resolve) => {
    const t0 = started();
    const want = lines.length + 1;
    const check = () => {
      if (lines.length >= want) done({ ok: true, answer: lines[want - 1], from: sock.remoteAddress + ":" + sock.remotePort, ms: Math.round(started() - t0) });
      else if (sock.failed) done({ ok: false, code: sock.failed });
    };
    const timer = setTimeout(() => done({ ok: false, code: "no answer in " + ms + " ms" }), ms);
    const done = (r) => { clearTimeout(timer); waiters = waiters.filter((w) => w !== check); resolve(r); };
    waiters.push(check);
    check();
  });
  sock.write("hello\n");
  return sock;
}
const closed = (sock) => new Promise((resolve) => { sock.on("close", resolve); sock.end(); });
(async () => {
  const out = {};
  const first = open(a, local);
  out.first = await first.line(3000);
  await closed(first);
  const second = open(b, local);
  out.reused = await second.line(3000);
  await closed(second);

  const held = open(a, local + 1);
  out.held = await held.line(3000);
  const waiting = open(b, local + 1);
  out.whileHeld = await waiting.line(2000);
  held.write("again\n");
  out.heldAgain = await held.line(3000);
  await closed(held);
  out.afterClose = await waiting.line(8000);
  waiting.destroy();
  console.log(JSON.stringify(out));
})();
`;

type Line = { ok: true; answer: string; from: string; ms: number } | { ok: false; code: string };
interface Report {
  first: Line;
  reused: Line;
  held: Line;
  whileHeld: Line;
  heldAgain: Line;
  afterClose: Line;
}

t.teardown(() => lab.down());

t.test("one client port through two listeners sharing a backend", async t => {
  await lab.up();
  await lab.configure([
    { port: 80, proto: "tcp", backends: [{ ip: B1, port: LINE_PORT }] },
    { port: 81, proto: "tcp", backends: [{ ip: B1, port: LINE_PORT }] },
    { port: 82, proto: "tcp", backends: [{ ip: B2, port: LINE_PORT }] },
    { port: 83, proto: "tcp", backends: [{ ip: B2, port: LINE_PORT }] },
  ]);
  await lab.attach("xdp", "xdp");

  for (const [where, name, a, b, local] of [
    ["on the node the client reaches", "b1", 80, 81, 41000],
    ["behind the other node", "b2", 82, 83, 42000],
  ] as const) {
    await t.test(`a backend ${where}`, async t => {
      const before1 = (await lab.gw1.conntrackCounters()).clash_refused;
      const before2 = (await lab.gw2.conntrackCounters()).clash_refused;
      const r = await lab.run(["-e", REUSE_JS, VIP, String(a), String(b), String(local)]);
      const out = JSON.parse(String(r.stdout)) as Report;
      t.comment(JSON.stringify(out));
      const from = (line: Line) => (line.ok ? [line.answer.split(" ")[0], line.from] : line.code);
      t.same(from(out.first), [name, `${VIP}:${a}`], `:${a} from port ${local}: answered`);
      t.same(
        from(out.reused),
        [name, `${VIP}:${b}`],
        `then :${b} from the same port, right after the first closed: answered from :${b}`,
      );
      t.ok(
        out.reused.ok && out.reused.ms < 900,
        `at once, no SYN retransmitted (${out.reused.ok ? `${out.reused.ms} ms` : "none"})`,
      );
      t.same(from(out.held), [name, `${VIP}:${a}`], `:${a} from port ${local + 1}, held open`);
      t.same(
        out.whileHeld,
        { ok: false, code: "no answer in 2000 ms" },
        `:${b} from that port gets no answer while the connection through :${a} is open`,
      );
      t.same(
        from(out.heldAgain),
        [name, `${VIP}:${a}`],
        `and the open connection still works meanwhile`,
      );
      t.same(
        from(out.afterClose),
        [name, `${VIP}:${b}`],
        `once it closed, the waiting connection gets in, answered from :${b}`,
      );
      const decider = name === "b1" ? lab.gw1 : lab.gw2;
      const refused =
        (await decider.conntrackCounters()).clash_refused - (name === "b1" ? before1 : before2);
      t.ok(
        refused >= 1,
        `the backend's node counted the held-back SYNs: clash_refused +${refused}`,
      );
    });
  }
});
