// SPDX-License-Identifier: Apache-2.0
// The TLS terminators on real sockets (loopback): bytes both ways, a half-close passed on
// and the connection released, a backend that refuses, a failed handshake, certificates
// rotated without dropping open connections, TlsListeners bringing terminators up, down
// and back as Secrets appear, change and vanish, and the limits: handshake timeout, idle
// timeout, connection cap.
import t from "tap";
import { execa } from "execa";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  connect as netConnect,
  createServer,
  type AddressInfo,
  type Server,
  type Socket,
} from "node:net";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { X509Certificate } from "node:crypto";
import {
  TlsTerminator,
  tlsLimits,
  type TlsEvent,
} from "../../capabilities/agent/tls/terminator.js";
import { agentSettings } from "../../capabilities/agent/start.js";
import { TlsListeners } from "../../capabilities/agent/tls/listeners.js";
import {
  parseTlsSecret,
  type SecretLike,
  type TlsCertificate,
  type TlsListenerSpec,
} from "../../capabilities/agent/tls/certificates.js";

let dir = "";
const pems: Record<string, { cert: string; key: string; fingerprint: string }> = {};
t.before(async () => {
  dir = await mkdtemp(join(tmpdir(), "blixt-tls-term-"));
  for (const [file, name] of [
    ["a", "a.example"],
    ["b", "b.example"],
    ["a2", "a.example"],
  ]) {
    await execa("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-subj",
      `/CN=${name}`,
      "-days",
      "1",
      "-addext",
      `subjectAltName=DNS:${name}`,
      "-keyout",
      join(dir, `${file}.key`),
      "-out",
      join(dir, `${file}.crt`),
    ]);
    const cert = await readFile(join(dir, `${file}.crt`), "utf8");
    pems[file] = {
      cert,
      key: await readFile(join(dir, `${file}.key`), "utf8"),
      fingerprint: new X509Certificate(cert).fingerprint256,
    };
  }
});
t.teardown(() => rm(dir, { recursive: true, force: true }));

const secretOf = (file: string): SecretLike => ({
  type: "kubernetes.io/tls",
  data: {
    "tls.crt": Buffer.from(pems[file].cert).toString("base64"),
    "tls.key": Buffer.from(pems[file].key).toString("base64"),
  },
});
const certificate = (file: string): TlsCertificate => {
  const parsed = parseTlsSecret(`default/${file}`, secretOf(file));
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.certificate;
};

/** A backend that answers every chunk with "<name>:<chunk>" and, at the client's end, says "bye" and ends too. */
async function backend(
  t: { teardown: (fn: () => unknown) => void },
  name: string,
): Promise<{ port: number; server: Server }> {
  const server = createServer({ allowHalfOpen: true }, s => {
    s.on("error", () => {});
    s.on("data", d => s.write(`${name}:${d}`));
    s.on("end", () => s.end("bye"));
  });
  await new Promise<void>(r => server.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>(r => server.close(() => r())));
  return { port: (server.address() as AddressInfo).port, server };
}

function tlsClient(port: number, servername?: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: "127.0.0.1", port, servername, rejectUnauthorized: false });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}
const nextData = (s: Socket) => new Promise<string>(r => s.once("data", d => r(String(d))));
const rest = (s: Socket) =>
  new Promise<string>(r => {
    let all = "";
    s.on("data", d => (all += d));
    s.once("end", () => r(all));
  });

t.test("a terminator: SNI, bytes both ways, half-close, rotation, failures", async t => {
  const b0 = await backend(t, "b0");
  const events: TlsEvent[] = [];
  const terminator = new TlsTerminator({
    host: "127.0.0.1",
    certificates: [certificate("a"), certificate("b")],
    backends: [{ ip: "127.0.0.1", port: b0.port, weight: 1 }],
    onEvent: e => events.push(e),
  });
  const port = await terminator.listen();
  t.teardown(() => terminator.close());
  t.ok(port > 0, "listens on a port the kernel picked");

  const a = await tlsClient(port, "a.example");
  t.equal(a.getPeerX509Certificate()?.fingerprint256, pems.a.fingerprint, "SNI a.example: A");
  const b = await tlsClient(port, "b.example");
  t.equal(b.getPeerX509Certificate()?.fingerprint256, pems.b.fingerprint, "SNI b.example: B");
  b.write("b");
  t.equal(await nextData(b), "b0:b");
  b.destroy();

  a.write("ping");
  t.equal(await nextData(a), "b0:ping", "plaintext reached the backend and its answer came back");
  const tail = rest(a);
  a.end();
  t.equal(
    await tail,
    "bye",
    "the client's end reached the backend, whose last bytes and end came back",
  );
  await new Promise(r => a.once("close", r));
  t.pass("and the connection closed on both sides");

  const open = await tlsClient(port, "a.example");
  open.write("before");
  t.equal(await nextData(open), "b0:before");
  terminator.setCertificates([certificate("a2"), certificate("b")]);
  const fresh = await tlsClient(port, "a.example");
  t.equal(
    fresh.getPeerX509Certificate()?.fingerprint256,
    pems.a2.fingerprint,
    "after rotation a new connection gets A2",
  );
  const noSni = await tlsClient(port);
  t.equal(
    noSni.getPeerX509Certificate()?.fingerprint256,
    pems.a2.fingerprint,
    "and a connection without SNI gets the new first certificate",
  );
  open.write("still");
  t.equal(await nextData(open), "b0:still", "a connection opened before the rotation carries on");
  for (const s of [fresh, noSni]) {
    s.write("new");
    t.equal(await nextData(s), "b0:new", "and the new ones forward too");
  }
  for (const s of [open, fresh, noSni]) s.destroy();

  terminator.setBackends([{ ip: "127.0.0.1", port: b0.port, weight: 0 }]);
  const unweighted = await tlsClient(port, "a.example");
  await new Promise(r => unweighted.once("close", r));
  t.pass("with no weighted backend the connection is closed after the handshake");

  // A port nobody listens on: taken and released, so the connect is refused.
  const probe = createServer();
  await new Promise<void>(r => probe.listen(0, "127.0.0.1", r));
  const deadPort = (probe.address() as AddressInfo).port;
  await new Promise<void>(r => probe.close(() => r()));
  terminator.setBackends([{ ip: "127.0.0.1", port: deadPort, weight: 1 }]);
  const refused = await tlsClient(port, "a.example");
  await new Promise(r => refused.once("close", r));
  t.pass("a backend that refuses: the client's connection is closed");

  const plain = netConnect({ host: "127.0.0.1", port });
  plain.on("error", () => {});
  plain.write("GET / HTTP/1.0\r\n\r\n");
  await new Promise(r => plain.once("close", r));
  t.same(
    events.reduce<Record<string, number>>((c, e) => ({ ...c, [e]: (c[e] ?? 0) + 1 }), {}),
    { connection: 6, backend_error: 1, handshake_failure: 1 },
    "events: 6 forwarded connections, 1 unreachable backend, 1 failed handshake",
  );

  terminator.setBackends([{ ip: "127.0.0.1", port: b0.port, weight: 1 }]);
  const held = await tlsClient(port, "a.example");
  const closed = new Promise(r => held.once("close", r));
  await terminator.close();
  await closed;
  t.pass("close() ends the connections it carries");
});

t.test("TlsListeners: terminators follow the listeners and their Secrets", async t => {
  const b0 = await backend(t, "b0");
  const secrets = new Map<string, SecretLike | Error>();
  const logs: string[] = [];
  const listeners = new TlsListeners({
    host: "127.0.0.1",
    readSecret: async (namespace, name) => {
      const s = secrets.get(`${namespace}/${name}`);
      if (s instanceof Error) throw s;
      return s;
    },
    log: { info: (_f, m) => logs.push(m), error: (_f, m) => logs.push(`ERROR ${m}`) },
  });
  t.teardown(() => listeners.close());
  const spec = (certificateRefs: string[]): TlsListenerSpec => ({
    key: "default/web#https",
    ref: {
      config: "default/web",
      namespace: "default",
      gateway: "web",
      listener: "https",
      port: 443,
      protocol: "TCP",
    },
    address: "198.18.60.1",
    certificateRefs: certificateRefs.map(name => ({ namespace: "default", name })),
    backends: [{ ip: "127.0.0.1", port: b0.port, weight: 1 }],
    rejectWeight: 0,
  });

  let outcome = (await listeners.sync([spec(["a"])])).get("default/web#https");
  t.match(
    outcome,
    { ok: false, error: /Secret default\/a not found/ },
    "missing Secret: not served",
  );
  t.equal(listeners.terminator("default/web#https"), undefined, "and no terminator runs");

  secrets.set("default/a", secretOf("a"));
  outcome = (await listeners.sync([spec(["a"])])).get("default/web#https");
  t.match(outcome, { ok: true, address: "127.0.0.1" }, "the Secret appeared: served");
  const port = outcome?.ok ? outcome.port : 0;
  const open = await tlsClient(port, "a.example");
  t.equal(open.getPeerX509Certificate()?.fingerprint256, pems.a.fingerprint);

  t.same(
    (await listeners.sync([spec(["a"])])).get("default/web#https"),
    { ok: true, address: "127.0.0.1", port },
    "a resync keeps the same terminator",
  );
  t.notOk(
    logs.includes("HTTPS listener: certificates reloaded; new connections get them"),
    "and reloads nothing unchanged",
  );

  secrets.set("default/a", secretOf("a2"));
  t.same(
    (await listeners.sync([spec(["a"])])).get("default/web#https"),
    { ok: true, address: "127.0.0.1", port },
    "rotation: same terminator, same port",
  );
  const rotated = await tlsClient(port, "a.example");
  t.equal(
    rotated.getPeerX509Certificate()?.fingerprint256,
    pems.a2.fingerprint,
    "new connections get the new certificate",
  );
  rotated.destroy();
  open.write("x");
  t.equal(await nextData(open), "b0:x", "the open connection carries on");

  secrets.set("default/a", new Error("503 Service Unavailable"));
  outcome = (await listeners.sync([spec(["a"])])).get("default/web#https");
  t.match(
    outcome,
    {
      ok: true,
      port,
      warning:
        /reading Secret default\/a failed: 503 Service Unavailable; check that the agent may get Secrets.*serving the certificates loaded before/,
    },
    "an unreadable Secret keeps the loaded certificates",
  );

  secrets.set("default/a", {
    type: "kubernetes.io/tls",
    data: { "tls.crt": "bm9wZQ==", "tls.key": "bm9wZQ==" },
  });
  const closed = new Promise(r => open.once("close", r));
  outcome = (await listeners.sync([spec(["a"])])).get("default/web#https");
  t.match(
    outcome,
    { ok: false, error: /Secret default\/a: tls\.crt does not parse/ },
    "an invalid Secret: not served",
  );
  await closed;
  t.pass("its terminator stopped, ending its connections");
  t.ok(
    logs.some(l => l.startsWith("ERROR Secret default/a: tls.crt does not parse")),
    "the error is logged",
  );

  secrets.set("default/a", secretOf("a"));
  outcome = (await listeners.sync([spec(["a"])])).get("default/web#https");
  t.match(outcome, { ok: true }, "fixed: served again");
  t.ok(logs.includes("HTTPS listener serves again"));
  await listeners.sync([]);
  t.equal(
    listeners.terminator("default/web#https"),
    undefined,
    "a listener no config has: its terminator stops",
  );

  const noHost = new TlsListeners({
    host: { error: "interface eth9 has no global IPv4 address" },
    readSecret: async () => secretOf("a"),
  });
  t.same(
    (await noHost.sync([spec(["a"])])).get("default/web#https"),
    { ok: false, error: "interface eth9 has no global IPv4 address" },
    "no node address: not served, and why",
  );
});

/** Resolves when the socket closes, with how long that took; rejects after `ms`. */
const closedWithin = (s: Socket, ms: number) =>
  new Promise<number>((resolve, reject) => {
    const started = Date.now();
    const timer = setTimeout(() => reject(new Error(`still open after ${ms} ms`)), ms);
    s.once("close", () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
const tcpConnect = (port: number) =>
  new Promise<Socket>((resolve, reject) => {
    const s = netConnect({ host: "127.0.0.1", port }, () => resolve(s));
    s.once("error", reject);
  });
const until = async (what: string, check: () => boolean, ms = 3000) => {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (check()) return;
    await new Promise(r => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
};

t.test(
  "limits: a handshake that never starts is closed, an idle connection is closed, the cap refuses",
  async t => {
    const b0 = await backend(t, "b0");
    const events: TlsEvent[] = [];
    const terminator = new TlsTerminator({
      host: "127.0.0.1",
      certificates: [certificate("a")],
      backends: [{ ip: "127.0.0.1", port: b0.port, weight: 1 }],
      onEvent: e => events.push(e),
      limits: { handshakeTimeoutMs: 300, idleTimeoutMs: 500, maxConnections: 2 },
    });
    const port = await terminator.listen();
    t.teardown(() => terminator.close());

    // TCP open, no ClientHello, ever.
    const silent = await tcpConnect(port);
    silent.on("error", () => {});
    const waited = await closedWithin(silent, 3000);
    t.ok(waited >= 250, `not before the handshake timeout (${waited} ms)`);
    t.same(events, ["handshake_timeout"], "counted as a handshake timeout, not a failure");
    await until("the closed connection to leave the count", () => terminator.connections === 0);

    // A forwarded connection that then goes quiet.
    const idle = await tlsClient(port, "a.example");
    idle.on("error", () => {});
    idle.write("ping");
    t.equal(await nextData(idle), "b0:ping", "forwarded");
    const idled = await closedWithin(idle, 3000);
    t.ok(idled >= 400, `closed after the idle timeout, not before (${idled} ms)`);
    t.same(events, ["handshake_timeout", "connection", "idle_close"]);

    // A connection that keeps talking is not idle.
    const busy = await tlsClient(port, "a.example");
    busy.on("error", () => {});
    for (let i = 0; i < 5; i++) {
      busy.write(`n${i}`);
      t.equal(await nextData(busy), `b0:n${i}`);
      await new Promise(r => setTimeout(r, 200));
    }
    t.notOk(busy.destroyed, "a connection with bytes every 200 ms outlives a 500 ms idle timeout");
    busy.destroy();
    await until("the busy connection to leave the count", () => terminator.connections === 0);

    // The cap: two open (one in handshake, one forwarded), the third refused at accept.
    const holding = await tcpConnect(port);
    holding.on("error", () => {});
    const forwarded = await tlsClient(port, "a.example");
    forwarded.on("error", () => {});
    await until("two open connections", () => terminator.connections === 2);
    t.equal(terminator.connections, 2, "the open-connection count");
    const third = await tcpConnect(port);
    third.on("error", () => {});
    await closedWithin(third, 3000);
    await until("the refusal to be counted", () => events.includes("refused"));
    t.equal(events.filter(e => e === "refused").length, 1, "counted once");
    t.equal(terminator.connections, 2, "the refused connection was never counted open");
    forwarded.write("still");
    t.equal(await nextData(forwarded), "b0:still", "the connections under the cap are untouched");
    holding.destroy();
    forwarded.destroy();
    await until("both to close", () => terminator.connections === 0);
    const again = await tlsClient(port, "a.example");
    again.write("back");
    t.equal(await nextData(again), "b0:back", "below the cap again, a new connection is served");
    again.destroy();
  },
);

t.test(
  "limits from the environment: defaults, values, and a clear error naming the variable",
  async t => {
    t.same(tlsLimits({}), {
      handshakeTimeoutMs: 10_000,
      idleTimeoutMs: 300_000,
      maxConnections: 1024,
    });
    t.same(
      tlsLimits({
        BLIXT_TLS_HANDSHAKE_TIMEOUT_SECONDS: "5",
        BLIXT_TLS_IDLE_TIMEOUT_SECONDS: "60",
        BLIXT_TLS_MAX_CONNECTIONS_PER_LISTENER: "100",
      }),
      { handshakeTimeoutMs: 5000, idleTimeoutMs: 60_000, maxConnections: 100 },
    );
    t.throws(
      () => tlsLimits({ BLIXT_TLS_HANDSHAKE_TIMEOUT_SECONDS: "0" }),
      /BLIXT_TLS_HANDSHAKE_TIMEOUT_SECONDS="0" must be an integer in 1\.\.300/,
    );
    t.throws(
      () => tlsLimits({ BLIXT_TLS_IDLE_TIMEOUT_SECONDS: "5m" }),
      /BLIXT_TLS_IDLE_TIMEOUT_SECONDS="5m" must be an integer/,
    );
    t.throws(
      () => tlsLimits({ BLIXT_TLS_MAX_CONNECTIONS_PER_LISTENER: "-1" }),
      /BLIXT_TLS_MAX_CONNECTIONS_PER_LISTENER="-1"/,
    );
    t.throws(
      () => agentSettings({ NODE_NAME: "n", BLIXT_TLS_IDLE_TIMEOUT_SECONDS: "x" }),
      /BLIXT_TLS_IDLE_TIMEOUT_SECONDS/,
      "the agent refuses to start on a bad value",
    );
    t.equal(
      agentSettings({ NODE_NAME: "n" }).metricsAddress,
      "127.0.0.1",
      "metrics on loopback unless told",
    );
    t.equal(
      agentSettings({ NODE_NAME: "n", BLIXT_METRICS_ADDRESS: "198.18.1.7" }).metricsAddress,
      "198.18.1.7",
    );
    t.throws(
      () => agentSettings({ NODE_NAME: "n", BLIXT_METRICS_ADDRESS: "node-1" }),
      /BLIXT_METRICS_ADDRESS="node-1" is not an IP address/,
    );
  },
);
