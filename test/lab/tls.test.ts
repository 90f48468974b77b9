// SPDX-License-Identifier: Apache-2.0
// HTTPS listeners terminated on the node, in the netns lab, in both ingress modes. The node
// agent's loop (Agent, TlsListeners, the real Dataplane) runs in a process inside the gateway
// namespace, as it runs in the node's network namespace on a cluster; Kubernetes cannot run
// here, so the Secrets it reads and the status it writes go through the same callbacks the
// agent uses, fed over stdin. Everything below those callbacks is real: the programs DNAT the
// client's connection to the node-local terminator, which answers with the certificate the SNI
// asks for and forwards the plaintext to a backend namespace.
import t from "tap";
import { execa, type ResultPromise } from "execa";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { X509Certificate } from "node:crypto";
import { Lab } from "../lib/lab.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const lab = new Lab({ name: "tls", backends: 2 });
const BACKEND_PORT = 8080;

/** The node agent's loop inside the gateway namespace: JSON commands in, one JSON answer per line out. */
const NODE_JS = String.raw`
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
const root = process.argv[1];
const load = (p) => import(pathToFileURL(root + "/capabilities/" + p).href);
const { Dataplane } = await load("dataplane/dataplane.ts");
const { Agent } = await load("agent/loop.ts");
const { TlsListeners } = await load("agent/tls/listeners.ts");
const { AgentMetrics } = await load("agent/metrics.ts");
const { interfaceAddress } = await load("agent/node.ts");
const secrets = new Map(), acks = {}, logs = [];
let dp, agent, metrics, iface;
const log = { info: (f, m) => logs.push(m + " " + JSON.stringify(f)), error: (f, m) => logs.push("ERROR " + m + " " + JSON.stringify(f)) };
async function handle(cmd) {
  switch (cmd.op) {
    case "start": {
      iface = cmd.iface;
      dp = new Dataplane({ pinDir: cmd.pinDir });
      await dp.load();
      await dp.attach(iface, cmd.mode);
      const host = await interfaceAddress(iface);
      const tls = new TlsListeners({ host, readSecret: async (ns, name) => secrets.get(ns + "/" + name), onEvent: (r, a, e) => metrics.observeTls(r, a, e), log });
      agent = new Agent({ nodeName: "lab-node", dataplane: dp, mode: cmd.mode, tls, resyncMs: 0, log, acknowledge: async (c, ack) => { acks[c.metadata.namespace + "/" + c.metadata.name] = ack; } });
      metrics = new AgentMetrics({ stats: () => dp.stats(), conntrackEntries: async () => 0, listener: (s) => agent.listener(s), ready: () => agent.ready, iface, mode: cmd.mode });
      return { host };
    }
    case "secret": cmd.secret ? secrets.set(cmd.ref, cmd.secret) : secrets.delete(cmd.ref); return {};
    case "config": agent.observe(cmd.config); return {};
    case "converge": { const result = await agent.converge(); return { result, acks }; }
    case "conntrack": return { entries: await dp.conntrack() };
    case "metric": return { text: await metrics.registry.getSingleMetricAsString(cmd.name) };
    case "logs": return { logs };
    case "stop": await agent.stop(); await dp.detach(iface); return {};
  }
  return { error: "unknown op " + cmd.op };
}
createInterface({ input: process.stdin })
  .on("line", (line) => { const cmd = JSON.parse(line); handle(cmd).then((r) => r, (e) => ({ error: String(e && e.stack || e) })).then((r) => process.stdout.write(JSON.stringify({ id: cmd.id, ...r }) + "\n")); })
  .on("close", () => process.exit(0));
process.stdout.write(JSON.stringify({ id: 0 }) + "\n");
`;

/**
 * The TLS client in the client namespace: a handshake (with or without SNI), the certificate
 * the server answered with, and one line exchanged in plaintext through it.
 *  {id, op:"once", host, port, sni}    → {id, result}
 *  {id, op:"open", conn, host, port, sni} → {id, result} (keeps the connection)
 *  {id, op:"send", conn}               → {id, result}
 *  {id, op:"close", conn}              → {id}
 * result: {ok:true, fingerprint, reply, backend, peer} | {ok:false, code}
 */
const CLIENT_JS = String.raw`
const tls = require("node:tls"), readline = require("node:readline");
const conns = new Map();
function line(sock) {
  return new Promise((resolve) => {
    let buf = "";
    const done = (r) => { clearTimeout(timer); sock.off("data", onData); sock.off("error", onError); sock.off("close", onClose); resolve(r); };
    const onData = (d) => { buf += d; const i = buf.indexOf("\n"); if (i >= 0) { const [backend, peer] = buf.slice(0, i).split(" "); done({ ok: true, backend, peer }); } };
    const onError = (e) => done({ ok: false, code: e.code || String(e) });
    const onClose = () => done({ ok: false, code: "ECLOSED" });
    const timer = setTimeout(() => done({ ok: false, code: "ETIMEDOUT" }), 5000);
    sock.on("data", onData); sock.on("error", onError); sock.on("close", onClose);
    sock.write("hello\n");
  });
}
function open(cmd) {
  return new Promise((resolve) => {
    const sock = tls.connect({ host: cmd.host, port: cmd.port, servername: cmd.sni || undefined, rejectUnauthorized: false });
    const timer = setTimeout(() => { sock.destroy(); resolve({ error: "ETIMEDOUT" }); }, 5000);
    sock.once("secureConnect", () => { clearTimeout(timer); sock.setEncoding("utf8"); resolve({ sock, fingerprint: sock.getPeerX509Certificate().fingerprint256 }); });
    sock.once("error", (e) => { clearTimeout(timer); resolve({ error: e.code || String(e) }); });
  });
}
async function exchange(cmd, keep) {
  const c = await open(cmd);
  if (c.error) return { ok: false, code: c.error };
  const r = await line(c.sock);
  if (keep) { c.sock.on("error", () => {}); conns.set(cmd.conn, c.sock); } else c.sock.end();
  return { ...r, fingerprint: c.fingerprint };
}
async function handle(cmd) {
  switch (cmd.op) {
    case "once": return { result: await exchange(cmd, false) };
    case "open": return { result: await exchange(cmd, true) };
    case "send": { const s = conns.get(cmd.conn); return { result: s ? await line(s) : { ok: false, code: "ENOCONN" } }; }
    case "close": conns.get(cmd.conn)?.end(); conns.delete(cmd.conn); return {};
  }
  return { error: "unknown op " + cmd.op };
}
readline.createInterface({ input: process.stdin })
  .on("line", (l) => { const cmd = JSON.parse(l); handle(cmd).then((r) => process.stdout.write(JSON.stringify({ id: cmd.id, ...r }) + "\n")); })
  .on("close", () => process.exit(0));
process.stdout.write(JSON.stringify({ id: 0 }) + "\n");
`;

type Answer = Record<string, any>;

/** A line-protocol child process: ask() sends one command and resolves with its answer. */
function driver(
  proc: ResultPromise,
  what: string,
): { ask: (cmd: Answer) => Promise<Answer>; ready: Promise<void> } {
  const pending = new Map<number, (a: Answer) => void>();
  let nextId = 1;
  let stderr = "";
  proc.stderr?.on("data", d => (stderr += d));
  let readyResolve!: () => void;
  let readyReject!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => ((readyResolve = res), (readyReject = rej)));
  createInterface({ input: proc.stdout! }).on("line", line => {
    const msg = JSON.parse(line) as Answer;
    if (msg.id === 0) return readyResolve();
    pending.get(msg.id)?.(msg);
    pending.delete(msg.id);
  });
  proc.once("exit", code => {
    const error = new Error(`${what} exited (code ${code}): ${stderr.trim()}`);
    readyReject(error);
    for (const reject of pending.values()) reject({ error: error.message });
  });
  return {
    ready,
    ask: cmd => {
      const id = nextId++;
      const answer = new Promise<Answer>(res => pending.set(id, res));
      proc.stdin!.write(JSON.stringify({ id, ...cmd }) + "\n");
      return answer.then(a => {
        if (a.error) throw new Error(`${what}: ${a.error}`);
        return a;
      });
    },
  };
}

interface Pem {
  cert: string;
  key: string;
  fingerprint: string;
}

/** A self-signed certificate for `name` (ECDSA P-256), made by openssl. */
async function certificate(dir: string, file: string, name: string): Promise<Pem> {
  const cert = join(dir, `${file}.crt`);
  const key = join(dir, `${file}.key`);
  await execa("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-addext",
    `subjectAltName=DNS:${name}`,
  ]);
  const pem = { cert: await readFile(cert, "utf8"), key: await readFile(key, "utf8") };
  return { ...pem, fingerprint: new X509Certificate(pem.cert).fingerprint256 };
}

const tlsSecret = (pem: { cert: string; key: string }) => ({
  type: "kubernetes.io/tls",
  data: {
    "tls.crt": Buffer.from(pem.cert).toString("base64"),
    "tls.key": Buffer.from(pem.key).toString("base64"),
  },
});

function httpsConfig(vip: string, generation: number) {
  const [b0, b1] = lab.backendIps;
  const backends = [
    { weight: 1, endpoints: [{ address: b0, port: BACKEND_PORT }] },
    { weight: 1, endpoints: [{ address: b1, port: BACKEND_PORT }] },
  ];
  const https = (name: string, port: number, secrets: string[]) => ({
    name,
    port,
    protocol: "TCP",
    rejectWeight: 0,
    backends,
    tls: { certificateRefs: secrets.map(name => ({ namespace: "default", name })) },
  });
  return {
    apiVersion: "blixt.dev/v1alpha1",
    kind: "DataplaneConfig",
    metadata: { namespace: "default", name: "web", generation },
    spec: {
      gatewayName: "web",
      gatewayGeneration: generation,
      address: vip,
      announcingNode: "lab-node",
      listeners: [
        https("https", 443, ["cert-a", "cert-b"]),
        https("missing", 8443, ["cert-missing"]),
        https("invalid", 9443, ["cert-invalid"]),
      ],
    },
  };
}

const labelled = (text: string, listener: string) =>
  Number(
    text
      .split("\n")
      .find(l => l.includes(`listener="${listener}"`))
      ?.split(" ")
      .pop() ?? 0,
  );

let certs: { a: Pem; b: Pem; a2: Pem };
let certDir = "";
t.before(async () => {
  certDir = await mkdtemp(join(tmpdir(), "blixt-tls-lab-"));
  certs = {
    a: await certificate(certDir, "a", "a.example"),
    b: await certificate(certDir, "b", "b.example"),
    a2: await certificate(certDir, "a2", "a.example"),
  };
  await lab.up();
  await lab.startServers({ tcp: [BACKEND_PORT] });
});
t.teardown(async () => {
  await lab.down();
  if (certDir) await rm(certDir, { recursive: true, force: true });
});

for (const mode of ["xdp", "tc"] as const) {
  t.test(`${mode}: HTTPS listeners terminated on the node`, async t => {
    await rm(lab.pinDir, { recursive: true, force: true });
    const node = driver(
      lab.spawn(lab.gatewayNs, process.execPath, [
        "--import=tsx",
        "--input-type=module",
        "-e",
        NODE_JS,
        ROOT,
      ]),
      "node agent loop",
    );
    const client = driver(
      lab.spawn(lab.clientNs, process.execPath, ["-e", CLIENT_JS]),
      "TLS client",
    );
    await Promise.all([node.ready, client.ready]);
    const { host } = await node.ask({
      op: "start",
      pinDir: lab.pinDir,
      iface: lab.gatewayIface,
      mode,
    });
    t.teardown(() => node.ask({ op: "stop" }).catch(() => undefined));
    t.equal(
      host,
      lab.gatewayIp,
      "terminators listen on the node's own address on the ingress interface",
    );

    const vip = lab.vip(0);
    await node.ask({ op: "secret", ref: "default/cert-a", secret: tlsSecret(certs.a) });
    await node.ask({ op: "secret", ref: "default/cert-b", secret: tlsSecret(certs.b) });
    await node.ask({
      op: "secret",
      ref: "default/cert-invalid",
      secret: tlsSecret({ cert: "not a certificate", key: certs.a.key }),
    });
    await node.ask({ op: "config", config: httpsConfig(vip, 1) });
    const first = await node.ask({ op: "converge" });
    t.ok(first.result.ok, first.result.error ?? "the pass applied");
    const once = async (port: number, sni?: string) =>
      (await client.ask({ op: "once", host: vip, port, sni })).result;

    await t.test(
      "SNI picks the certificate; the plaintext reaches a backend and the answer comes back",
      async t => {
        t.match(
          await once(443, "a.example"),
          { ok: true, fingerprint: certs.a.fingerprint },
          "SNI a.example: certificate A",
        );
        t.match(
          await once(443, "b.example"),
          { ok: true, fingerprint: certs.b.fingerprint },
          "SNI b.example: certificate B",
        );
        t.match(
          await once(443, "B.Example"),
          { ok: true, fingerprint: certs.b.fingerprint },
          "names match without case",
        );
        t.match(
          await once(443, "c.example"),
          { ok: true, fingerprint: certs.a.fingerprint },
          "an unknown name: the first certificate",
        );
        t.match(
          await once(443),
          { ok: true, fingerprint: certs.a.fingerprint },
          "no SNI: the first certificate",
        );

        const outcomes = await Promise.all(
          Array.from({ length: 24 }, () => once(443, "a.example")),
        );
        t.same(
          outcomes.filter(o => !o.ok),
          [],
          "24 connections answered",
        );
        t.same(
          [...new Set(outcomes.map(o => o.backend))].sort(),
          ["b0", "b1"],
          "both weighted backends took connections",
        );
        const peers = new Set(outcomes.map(o => o.peer.split(":")[0]));
        t.notOk(peers.has(lab.clientIp), "backends see the node's address, not the client's");

        // The terminator sees the client: the dataplane's flow goes from the client to the node's own address.
        const { entries } = await node.ask({ op: "conntrack" });
        const flows = (
          entries as {
            direction: string;
            saddr: string;
            daddr: string;
            dport: number;
            natAddr: string;
          }[]
        ).filter(e => e.direction === "forward" && e.daddr === vip && e.dport === 443);
        t.ok(flows.length > 0, "the connections to the Gateway address went through the dataplane");
        t.same(
          [...new Set(flows.map(e => `${e.saddr} → ${e.natAddr}`))],
          [`${lab.clientIp} → ${lab.gatewayIp}`],
          "from the client's own address, DNATed to the node",
        );
      },
    );

    await t.test(
      "a listener whose Secret is missing or does not parse refuses connections",
      async t => {
        t.same(
          await once(8443, "a.example"),
          { ok: false, code: "ECONNREFUSED" },
          "Secret missing: port 8443 refused",
        );
        t.same(
          await once(9443, "a.example"),
          { ok: false, code: "ECONNREFUSED" },
          "Secret invalid: port 9443 refused",
        );
        const ack = first.acks["default/web"];
        t.equal(ack.observedGeneration, 0, "the generation is not acknowledged as applied");
        t.match(
          ack.message,
          /Secret default\/cert-missing not found; create it/,
          "status names the missing Secret and what to do",
        );
        t.match(
          ack.message,
          /Secret default\/cert-invalid: tls\.crt does not parse/,
          "and the invalid one",
        );
        t.match(
          await once(443, "a.example"),
          { ok: true },
          "the config's other HTTPS listener still serves",
        );
      },
    );

    await t.test(
      "metrics count terminated connections and failed handshakes per listener",
      async t => {
        const before = labelled(
          (await node.ask({ op: "metric", name: "blixt_tls_handshake_failures_total" })).text,
          "https",
        );
        // Plaintext to the TLS port: the handshake fails.
        const [plain] = await lab.tcp(vip, 443, 1);
        t.equal(plain.ok, false, "a plaintext client gets no answer from a backend");
        const failures = labelled(
          (await node.ask({ op: "metric", name: "blixt_tls_handshake_failures_total" })).text,
          "https",
        );
        t.equal(failures, before + 1, "one more handshake failure on listener https");
        const connections = labelled(
          (await node.ask({ op: "metric", name: "blixt_tls_connections_total" })).text,
          "https",
        );
        // 5 + 24 in the first subtest, 1 in the second; the plaintext one never completed a handshake.
        t.equal(connections, 30, "every terminated connection on listener https counted");
      },
    );

    await t.test(
      "a rotated certificate is served to new connections; open ones carry on",
      async t => {
        const open = (
          await client.ask({ op: "open", conn: "long", host: vip, port: 443, sni: "a.example" })
        ).result;
        t.match(
          open,
          { ok: true, fingerprint: certs.a.fingerprint },
          "a connection opened before the rotation",
        );
        await node.ask({ op: "secret", ref: "default/cert-a", secret: tlsSecret(certs.a2) });
        await node.ask({ op: "secret", ref: "default/cert-missing", secret: tlsSecret(certs.b) });
        await node.ask({ op: "secret", ref: "default/cert-invalid", secret: tlsSecret(certs.b) });
        const pass = await node.ask({ op: "converge" });
        t.ok(pass.result.ok, pass.result.error ?? "the pass applied");
        t.match(
          await once(443, "a.example"),
          { ok: true, fingerprint: certs.a2.fingerprint },
          "a new connection sees the new certificate",
        );
        t.match(
          await once(443, "b.example"),
          { ok: true, fingerprint: certs.b.fingerprint },
          "the other certificate is unchanged",
        );
        t.match(
          (await client.ask({ op: "send", conn: "long" })).result,
          { ok: true },
          "the connection opened before still answers",
        );
        await client.ask({ op: "close", conn: "long" });
        t.match(
          await once(8443, "b.example"),
          { ok: true, fingerprint: certs.b.fingerprint },
          "a listener whose Secret appeared serves",
        );
        t.equal(
          pass.acks["default/web"].observedGeneration,
          1,
          "and the generation is acknowledged",
        );
        t.notOk("message" in pass.acks["default/web"], "with no message");
      },
    );

    await t.test("a Secret that goes missing takes its listener down", async t => {
      await node.ask({ op: "secret", ref: "default/cert-missing", secret: null });
      await node.ask({ op: "converge" });
      t.same(
        await once(8443, "b.example"),
        { ok: false, code: "ECONNREFUSED" },
        "port 8443 refused again",
      );
    });
  });
}
