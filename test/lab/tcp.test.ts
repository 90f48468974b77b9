// SPDX-License-Identifier: Apache-2.0
// TCP through a VIP in the netns lab, in both ingress modes: weighted spread over backends,
// the client's real IP at the backend, and an immediate refusal when a service has no backend.
import t from "tap";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { Lab, countByBackend } from "../lib/lab.js";

const lab = new Lab({ name: "tcp", backends: 3 });
t.teardown(() => lab.down());

const WEIGHTS = [1, 2, 3];
const CONNECTIONS = 600;
/**
 * Each connection has a fresh source port, so its backend is a draw with p = weight share:
 * at 600 connections one share's standard deviation is ≤ 2 percentage points; 7 points is 3.5 σ.
 */
const TOLERANCE = 0.07;

t.before(async () => {
  await lab.up();
  await lab.startServers({ tcp: [8080] });
});

for (const mode of ["xdp", "tc"] as const) {
  t.test(`${mode}: TCP to the VIP`, async t => {
    const dp = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs });
    await dp.load();
    await dp.attach(lab.gatewayIface, mode);
    t.teardown(() => dp.detach(lab.gatewayIface));
    const vip = lab.vip(0);
    await dp.setService({
      vip,
      port: 80,
      proto: "tcp",
      backends: lab.backendIps.map((ip, i) => ({ ip, port: 8080, weight: WEIGHTS[i] })),
      rejectWeight: 0,
    });
    await dp.setService({ vip: lab.vip(1), port: 80, proto: "tcp", backends: [], rejectWeight: 0 });

    await t.test(
      "connections spread over backends by weight, each seeing the client's IP",
      async t => {
        const outcomes = await lab.tcp(vip, 80, CONNECTIONS, { concurrency: 32 });
        const failed = outcomes.filter(o => !o.ok);
        t.same(failed, [], `all ${CONNECTIONS} connections answered`);
        const counts = countByBackend(outcomes);
        const total = WEIGHTS.reduce((a, b) => a + b, 0);
        for (const [i, w] of WEIGHTS.entries()) {
          const share = (counts[lab.backendName(i)] ?? 0) / CONNECTIONS;
          t.ok(
            Math.abs(share - w / total) <= TOLERANCE,
            `${lab.backendName(i)} (weight ${w}) took ${(100 * share).toFixed(1)} %, expected ${((100 * w) / total).toFixed(1)} ± ${Math.round(100 * TOLERANCE)}`,
          );
        }
        const peers = new Set(outcomes.flatMap(o => (o.ok ? [o.peer.split(":")[0]] : [])));
        t.same(
          [...peers],
          [lab.clientIp],
          "backends saw the client's own address, not the gateway's",
        );
      },
    );

    await t.test("a SYN to a VIP without backends is refused at once", async t => {
      // 2 s is less than the first SYN retransmission (1 s) plus the second (2 s): a dropped SYN times out.
      const [outcome] = await lab.tcp(lab.vip(1), 80, 1, { timeoutMs: 2000 });
      t.same(outcome, { ok: false, code: "ECONNREFUSED" });
    });

    await t.test("a VIP port with no service is not answered by blixt", async t => {
      const [outcome] = await lab.tcp(vip, 81, 1, { timeoutMs: 1500 });
      t.not(outcome.ok, true, "nothing listens on the VIP itself");
    });

    await dp.deleteService(vip, 80, "tcp");
    await dp.deleteService(lab.vip(1), 80, "tcp");
    t.same(await dp.listServices(), [], "both services deleted");
  });
}
