// SPDX-License-Identifier: Apache-2.0
// UDP through a VIP in the netns lab, in both ingress modes: every request answered, replies
// come from VIP:port (reverse NAT), backends see the client's IP, flows spread over backends.
import t from "tap";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { Lab, countByBackend } from "../lib/lab.js";

const lab = new Lab({ name: "udp", backends: 2 });
t.teardown(() => lab.down());

const REQUESTS = 200;

t.before(async () => {
  await lab.up();
  await lab.startServers({ udp: [5353] });
});

for (const mode of ["xdp", "tc"] as const) {
  t.test(`${mode}: UDP request/reply through the VIP`, async t => {
    const dp = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs });
    await dp.load();
    await dp.attach(lab.gatewayIface, mode);
    t.teardown(() => dp.detach(lab.gatewayIface));
    const vip = lab.vip(0);
    await dp.setService({
      vip,
      port: 53,
      proto: "udp",
      backends: lab.backendIps.map(ip => ({ ip, port: 5353, weight: 1 })),
      rejectWeight: 0,
    });

    const outcomes = await lab.udp(vip, 53, REQUESTS, { concurrency: 16 });
    t.same(
      outcomes.filter(o => !o.ok),
      [],
      `all ${REQUESTS} requests answered`,
    );
    const from = new Set(outcomes.flatMap(o => (o.ok ? [o.from] : [])));
    t.same([...from], [`${vip}:53`], "every reply comes from VIP:port");
    const peers = new Set(outcomes.flatMap(o => (o.ok ? [o.peer.split(":")[0]] : [])));
    t.same([...peers], [lab.clientIp], "backends saw the client's own address");
    const counts = countByBackend(outcomes);
    // Equal weights: each share ~ Binomial(200, 0.5), σ = 3.5 %; 15 points is > 4 σ.
    for (const name of [lab.backendName(0), lab.backendName(1)]) {
      const share = (counts[name] ?? 0) / REQUESTS;
      t.ok(
        Math.abs(share - 0.5) <= 0.15,
        `${name} answered ${(100 * share).toFixed(1)} % of flows (expected 50 ± 15)`,
      );
    }

    const ct = await dp.conntrack();
    t.ok(
      ct.some(e => e.proto === "udp" && e.direction === "forward" && e.saddr === lab.clientIp),
      "conntrack holds the client's UDP flows",
    );

    await t.test("a UDP service without backends drops, never answers from a backend", async t => {
      await dp.setService({ vip, port: 53, proto: "udp", backends: [], rejectWeight: 0 });
      const [outcome] = await lab.udp(vip, 53, 1, { timeoutMs: 1000 });
      t.same(outcome, { ok: false, code: "ETIMEDOUT" });
    });

    await dp.deleteService(vip, 53, "udp");
    t.same(await dp.listServices(), [], "the service is deleted");
  });
}
