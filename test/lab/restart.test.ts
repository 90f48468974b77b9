// SPDX-License-Identifier: Apache-2.0
// What established connections live through, in both ingress modes: the node agent restarting
// (a new Dataplane, load() reusing the pinned maps, attach again) and a backend being removed
// (new connections avoid it, connections to the other backends carry on).
import t from "tap";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { Lab, countByBackend, type TcpOutcome } from "../lib/lab.js";

const lab = new Lab({ name: "restart", backends: 3 });
t.teardown(() => lab.down());

const LONG_LIVED = 12;

t.before(async () => {
  await lab.up();
  await lab.startServers({ tcp: [8080] });
});

const backendOf = (o: TcpOutcome) => (o.ok ? o.backend : `failed: ${o.code}`);

for (const mode of ["xdp", "tc"] as const) {
  t.test(`${mode}: long-lived connections`, async t => {
    const vip = lab.vip(mode === "xdp" ? 0 : 1);
    const service = { vip, port: 80, proto: "tcp" as const, rejectWeight: 0 };
    const first = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs });
    await first.load();
    await first.attach(lab.gatewayIface, mode);
    t.teardown(() => first.detach(lab.gatewayIface));
    await first.setService({
      ...service,
      backends: lab.backendIps.map(ip => ({ ip, port: 8080, weight: 1 })),
    });

    const conns = Array.from({ length: LONG_LIVED }, (_, i) => `${mode}-${i}`);
    const owner = new Map<string, string>();
    for (const conn of conns) owner.set(conn, backendOf(await lab.open(conn, vip, 80)));
    t.teardown(() => Promise.all(conns.map(c => lab.close(c))));
    t.ok(
      [...owner.values()].every(b => b.startsWith("b")),
      `all ${LONG_LIVED} connections opened: ${[...owner.values()].join(" ")}`,
    );

    await t.test(
      "they survive the agent restarting (new instance, load reusing pins, attach again)",
      async t => {
        const restarted = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs });
        await restarted.load();
        await restarted.attach(lab.gatewayIface, mode);
        for (const conn of conns)
          t.equal(
            backendOf(await lab.send(conn)),
            owner.get(conn),
            `${conn} still talks to ${owner.get(conn)}`,
          );
        t.same(
          (await lab.tcp(vip, 80, 20)).filter(o => !o.ok),
          [],
          "new connections work after the restart",
        );
      },
    );

    await t.test(
      "removing a backend: new connections avoid it, the others' connections carry on",
      async t => {
        const removed = owner.get(conns[0])!;
        const removedIp = lab.backendIps[Number(removed.slice(1))];
        await first.setService({
          ...service,
          backends: lab.backendIps
            .filter(ip => ip !== removedIp)
            .map(ip => ({ ip, port: 8080, weight: 1 })),
        });
        for (const conn of conns.filter(c => owner.get(c) !== removed)) {
          t.equal(
            backendOf(await lab.send(conn)),
            owner.get(conn),
            `${conn} to ${owner.get(conn)} carries on`,
          );
        }
        const fresh = await lab.tcp(vip, 80, 100, { concurrency: 16 });
        t.same(
          fresh.filter(o => !o.ok),
          [],
          "new connections are all answered",
        );
        t.equal(
          countByBackend(fresh)[removed] ?? 0,
          0,
          `no new connection went to the removed ${removed}`,
        );
      },
    );
  });
}
