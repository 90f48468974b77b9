// SPDX-License-Identifier: Apache-2.0
// The lab itself, without blixt: direct traffic from the client to each backend through the
// gateway's kernel routing, so a failure in the blixt lab tests is blixt's, not the lab's.
import t from "tap";
import { execa } from "execa";
import { Lab, countByBackend } from "../lib/lab.js";

const lab = new Lab({ name: "labself", backends: 3 });
t.teardown(() => lab.down());

t.test("direct TCP and UDP reach every backend, which sees the client's address", async t => {
  await lab.up();
  await lab.startServers({ tcp: [8080], udp: [5353] });
  for (const [i, ip] of lab.backendIps.entries()) {
    const tcp = await lab.tcp(ip, 8080, 4);
    t.same(
      countByBackend(tcp),
      { [lab.backendName(i)]: 4 },
      `TCP to ${ip} answered by ${lab.backendName(i)}`,
    );
    t.ok(
      tcp.every(o => o.ok && o.peer.startsWith(`${lab.clientIp}:`)),
      `backend ${i} saw the client's IP over TCP`,
    );
    const udp = await lab.udp(ip, 5353, 4);
    t.ok(
      udp.every(
        o =>
          o.ok &&
          o.backend === lab.backendName(i) &&
          o.from === `${ip}:5353` &&
          o.peer.startsWith(`${lab.clientIp}:`),
      ),
      `UDP to ${ip} echoed from ${ip}:5353`,
    );
  }
});

t.test("a long-lived connection carries many exchanges", async t => {
  const first = await lab.open("c1", lab.backendIps[0], 8080);
  t.match(first, { ok: true, backend: "b0" });
  for (let n = 0; n < 3; n++) t.match(await lab.send("c1"), { ok: true, backend: "b0" });
  await lab.close("c1");
});

t.test("a port nothing listens on is refused", async t => {
  const [outcome] = await lab.tcp(lab.backendIps[1], 9, 1);
  t.same(outcome, { ok: false, code: "ECONNREFUSED" });
});

t.test("down removes every namespace and pin, and is idempotent", async t => {
  await lab.down();
  await lab.down();
  const { stdout } = await execa("ip", ["netns", "list"]);
  t.notMatch(stdout, /blixt-labself-/, "no namespace of the lab is left");
  const pins = await execa("ls", [lab.pinDir], { reject: false });
  t.not(pins.exitCode, 0, "the pin directory is gone");
});
