// SPDX-License-Identifier: Apache-2.0
// Per-Gateway addresses in the netns lab, in both ingress modes. The client sits on the gateway
// node's segment with no route via the node: it must ARP for each Gateway address, and only
// blixt's programs answer (no interface holds the addresses). Two Gateways listen on TCP port 80
// at different addresses and each one's connections reach its own backends; a port no listener
// has is refused; the node's own listening sockets are never reachable through a Gateway address;
// an address the node knows but does not announce gets no ARP answer; a gratuitous ARP moves a
// neighbour's stale entry back to the node.
import t from "tap";
import { execa } from "execa";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { linkInfo } from "../../capabilities/dataplane/bpftool.js";
import { Lab, countByBackend } from "../lib/lab.js";

const lab = new Lab({ name: "addresses", backends: 3 });
t.teardown(() => lab.down());

/** On the client's own /24 (lab.clientIp/24, lab.gatewayIp/24): reached by ARP, not via a route. */
const onLink = (host: number) => `198.18.${2 * lab.index}.${host}`;
const GATEWAY_A = onLink(100); // listeners: 80/tcp → b0, b1
const GATEWAY_B = onLink(101); // listeners: 80/tcp → b2
const KNOWN_NOT_ANNOUNCED = onLink(102); // another node announces it: this node must stay silent
const BACKEND_PORT = 8080;

/** The node's own services, listening on every address of the gateway namespace. */
const HOST_JS = String.raw`
const net = require("node:net"), dgram = require("node:dgram");
for (const port of [22, 8080]) net.createServer((s) => { s.on("error", () => {}); s.on("data", () => s.write("host " + s.remoteAddress + ":" + s.remotePort + "\n")); }).listen(port, "0.0.0.0");
const u = dgram.createSocket("udp4"); u.on("message", (_m, r) => u.send("host " + r.address + ":" + r.port, r.port, r.address)); u.bind(5353, "0.0.0.0");
process.stdin.on("end", () => process.exit(0)).resume();
`;

const client = (...args: string[]) => execa("ip", ["-n", lab.clientNs, ...args]);
async function neighbour(ip: string): Promise<{ lladdr?: string; state?: string[] } | undefined> {
  const { stdout } = await client("-j", "neigh", "show", ip, "dev", "eth0");
  return (JSON.parse(stdout || "[]") as { dst: string; lladdr?: string; state?: string[] }[]).find(
    n => n.dst === ip,
  );
}

t.before(async () => {
  await lab.up();
  await lab.startServers({ tcp: [BACKEND_PORT] });
  lab.spawn(lab.gatewayNs, "node", ["-e", HOST_JS]);
  // Wait for the node's own server (readiness only, nothing is timed).
  for (let i = 0; i < 100; i++) {
    const [o] = await lab.tcp(lab.gatewayIp, 8080, 1, { timeoutMs: 1000 });
    if (o.ok) return;
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error(
    `the node's own server on ${lab.gatewayIp}:8080 in ${lab.gatewayNs} never answered`,
  );
});

for (const mode of ["xdp", "tc"] as const) {
  t.test(`${mode}: two Gateways on port 80 at their own addresses`, async t => {
    const dp = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs });
    await dp.load();
    await dp.attach(lab.gatewayIface, mode);
    t.teardown(() => dp.detach(lab.gatewayIface));
    const iface = await linkInfo(lab.gatewayIface, { netns: lab.gatewayNs });

    await dp.setAddresses([GATEWAY_A, GATEWAY_B, KNOWN_NOT_ANNOUNCED]);
    await dp.setAnnounced([GATEWAY_A, GATEWAY_B]);
    const [b0, b1, b2] = lab.backendIps;
    await dp.setService({
      vip: GATEWAY_A,
      port: 80,
      proto: "tcp",
      backends: [b0, b1].map(ip => ({ ip, port: BACKEND_PORT, weight: 1 })),
      rejectWeight: 0,
    });
    await dp.setService({
      vip: GATEWAY_B,
      port: 80,
      proto: "tcp",
      backends: [{ ip: b2, port: BACKEND_PORT, weight: 1 }],
      rejectWeight: 0,
    });
    // Each mode must resolve the addresses itself.
    await client("neigh", "flush", "dev", "eth0");

    await t.test("the ingress mode and the interface's MAC are reported", async t => {
      t.equal(await dp.attachment(lab.gatewayIface), mode);
      t.same(
        await dp.interfaces(),
        [{ ifindex: iface.ifindex, mac: iface.mac }],
        "attach recorded the device's MAC for ARP replies",
      );
      const { stdout } = await execa("ip", ["-n", lab.gatewayNs, "-j", "addr", "show"]);
      const held = (JSON.parse(stdout) as { addr_info: { local: string }[] }[]).flatMap(l =>
        l.addr_info.map(a => a.local),
      );
      t.notOk(
        [GATEWAY_A, GATEWAY_B].some(a => held.includes(a)),
        "no interface of the node holds a Gateway address",
      );
      const { stdout: routes } = await client("-j", "route", "get", GATEWAY_A);
      t.notOk(
        (JSON.parse(routes) as { gateway?: string }[])[0].gateway,
        "the client reaches the address on-link, not via the node",
      );
    });

    await t.test("each Gateway's connections reach its own backends", async t => {
      const a = await lab.tcp(GATEWAY_A, 80, 40, { concurrency: 8 });
      t.same(
        a.filter(o => !o.ok),
        [],
        "all 40 connections to Gateway A answered",
      );
      t.same(Object.keys(countByBackend(a)).sort(), ["b0", "b1"], "Gateway A: b0 and b1, never b2");
      const b = await lab.tcp(GATEWAY_B, 80, 20, { concurrency: 8 });
      t.same(countByBackend(b), { b2: 20 }, "Gateway B: b2 only");
      const peers = new Set([...a, ...b].flatMap(o => (o.ok ? [o.peer.split(":")[0]] : [])));
      t.same([...peers], [lab.clientIp], "backends saw the client's own address");
    });

    await t.test(
      "the client learned both addresses by ARP, answered with the node's MAC",
      async t => {
        for (const address of [GATEWAY_A, GATEWAY_B]) {
          const n = await neighbour(address);
          t.equal(n?.lladdr, iface.mac, `${address} is-at ${iface.mac}`);
        }
        t.ok((await dp.arpCounters()).replied >= 2, "answered in the kernel, and counted");
      },
    );

    await t.test("a port no listener has is refused: TCP RST, UDP dropped", async t => {
      t.same(
        (await lab.tcp(GATEWAY_A, 81, 1))[0],
        { ok: false, code: "ECONNREFUSED" },
        "Gateway A, port 81",
      );
      t.same(
        (await lab.tcp(GATEWAY_B, 443, 1))[0],
        { ok: false, code: "ECONNREFUSED" },
        "Gateway B, port 443",
      );
      const [udp] = await lab.udp(GATEWAY_A, 5353, 1, { timeoutMs: 1500 });
      t.same(
        udp,
        { ok: false, code: "ETIMEDOUT" },
        "UDP to a Gateway address gets no answer, not even the node's own UDP server's",
      );
    });

    await t.test(
      "the node's own sockets are never reachable through a Gateway address",
      async t => {
        const [direct] = await lab.tcp(lab.gatewayIp, 8080, 1);
        t.match(
          direct,
          { ok: true, backend: "host" },
          "control: the node's server answers on the node's own address",
        );
        const [directUdp] = await lab.udp(lab.gatewayIp, 5353, 1);
        t.match(directUdp, { ok: true, backend: "host" }, "control: and its UDP server");
        for (const [address, port] of [
          [GATEWAY_A, 22],
          [GATEWAY_A, 8080],
          [GATEWAY_B, 22],
          [GATEWAY_B, 8080],
        ] as const) {
          t.same(
            (await lab.tcp(address, port, 1))[0],
            { ok: false, code: "ECONNREFUSED" },
            `${address}:${port} refused, not the node's server`,
          );
        }
      },
    );

    await t.test("a Gateway address this node does not announce gets no ARP answer", async t => {
      // Three unanswered ARP probes (1 s apart) make the kernel give up with EHOSTUNREACH.
      const [o] = await lab.tcp(KNOWN_NOT_ANNOUNCED, 80, 1, { timeoutMs: 6000 });
      t.same(o, { ok: false, code: "EHOSTUNREACH" });
      t.not(
        (await neighbour(KNOWN_NOT_ANNOUNCED))?.lladdr,
        iface.mac,
        "no entry pointing at the node",
      );
    });

    await t.test("a gratuitous ARP moves a neighbour's stale entry back to the node", async t => {
      // As if another node had announced Gateway A before this one took it over.
      await client(
        "neigh",
        "replace",
        GATEWAY_A,
        "lladdr",
        "02:00:5e:00:00:99",
        "nud",
        "stale",
        "dev",
        "eth0",
      );
      t.equal((await neighbour(GATEWAY_A))?.lladdr, "02:00:5e:00:00:99");
      await dp.announce(lab.gatewayIface, GATEWAY_A);
      t.equal(
        (await neighbour(GATEWAY_A))?.lladdr,
        iface.mac,
        "the client's entry now names the node",
      );
      const [o] = await lab.tcp(GATEWAY_A, 80, 1);
      t.match(o, { ok: true }, "and traffic flows to Gateway A again");
    });

    await dp.deleteService(GATEWAY_A, 80, "tcp");
    await dp.deleteService(GATEWAY_B, 80, "tcp");
    await dp.setAddresses([]);
    t.same(await dp.announced(), [], "nothing announced once the addresses are gone");
  });
}

t.test(
  "generic XDP is reported as such; detach reports no attachment and forgets the interface",
  async t => {
    const dp = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs, xdpMode: "generic" });
    await dp.load();
    await dp.attach(lab.gatewayIface, "xdp");
    t.equal(await dp.attachment(lab.gatewayIface), "xdpgeneric");
    await dp.detach(lab.gatewayIface);
    t.equal(await dp.attachment(lab.gatewayIface), undefined);
    t.same(await dp.interfaces(), []);
  },
);
