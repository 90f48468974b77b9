// SPDX-License-Identifier: Apache-2.0
// One HTTPS listener's TLS terminator on this node: a TLS server on a node-local port (the
// dataplane DNATs the listener's connections to it, so it sees the client's address), which
// answers each handshake with the certificate the SNI asks for and pipes the plaintext to one
// of the listener's backends, chosen per connection by weight. Certificates and backends can
// be replaced at any time: new connections get the new ones, open connections keep theirs.
// Each terminator bounds what one client can hold: a handshake must finish within a timeout,
// a connection with no bytes either way for the idle timeout is closed, and connections past
// the per-listener cap are refused before any TLS work; each of these is counted.
import { connect, type Socket } from "node:net";
import {
  createSecureContext,
  createServer,
  type SecureContext,
  type Server,
  type TLSSocket,
} from "node:tls";
import type { Backend } from "../../dataplane/tables.js";
import { pickBackend, pickCertificate, type TlsCertificate } from "./certificates.js";
import { envInt } from "../../env.js";

export type TlsEvent =
  | "connection"
  | "handshake_failure"
  | "backend_error"
  | "handshake_timeout"
  | "idle_close"
  | "refused";

/** What one terminator lets a client hold; the chart sets them (agent.tls), the agent validates them. */
export interface TlsLimits {
  /** a TCP connection must complete its TLS handshake within this, or it is closed */
  handshakeTimeoutMs: number;
  /** a terminated connection with no bytes in either direction for this long is closed */
  idleTimeoutMs: number;
  /** open connections per listener on this node; more are refused at accept */
  maxConnections: number;
}

export const DEFAULT_TLS_LIMITS: TlsLimits = {
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  maxConnections: 1024,
};

/** The limits from the agent's environment; throws naming the variable that is wrong. Pure. */
export function tlsLimits(env: NodeJS.ProcessEnv): TlsLimits {
  const int = (name: string, fallback: number, min: number, max: number) =>
    envInt(env, name, fallback, min, max, "the chart's agent.tls values");
  return {
    handshakeTimeoutMs:
      int(
        "BLIXT_TLS_HANDSHAKE_TIMEOUT_SECONDS",
        DEFAULT_TLS_LIMITS.handshakeTimeoutMs / 1000,
        1,
        300,
      ) * 1000,
    idleTimeoutMs:
      int("BLIXT_TLS_IDLE_TIMEOUT_SECONDS", DEFAULT_TLS_LIMITS.idleTimeoutMs / 1000, 1, 86_400) *
      1000,
    maxConnections: int(
      "BLIXT_TLS_MAX_CONNECTIONS_PER_LISTENER",
      DEFAULT_TLS_LIMITS.maxConnections,
      1,
      1_000_000,
    ),
  };
}

export interface TlsTerminatorOptions {
  /** the node address to listen on (the DNAT target) */
  host: string;
  certificates: TlsCertificate[];
  backends: Backend[];
  /** counted per listener by the caller */
  onEvent?: (event: TlsEvent) => void;
  /** [0, 1); Math.random by default */
  random?: () => number;
  /** DEFAULT_TLS_LIMITS unless given */
  limits?: TlsLimits;
}

interface Loaded extends TlsCertificate {
  context: SecureContext;
}

const load = (certificates: TlsCertificate[]): Loaded[] =>
  certificates.map(c => ({ ...c, context: createSecureContext({ cert: c.cert, key: c.key }) }));

export class TlsTerminator {
  private readonly server: Server;
  private readonly host: string;
  private readonly onEvent: (event: TlsEvent) => void;
  private readonly random: () => number;
  private certificates: Loaded[];
  private backends: Backend[];
  private readonly sockets = new Set<Socket>();
  private readonly limits: TlsLimits;
  private open = 0;
  private port = 0;

  constructor(opts: TlsTerminatorOptions) {
    if (opts.certificates.length === 0)
      throw new Error("a TLS terminator needs at least one certificate");
    this.host = opts.host;
    this.onEvent = opts.onEvent ?? (() => {});
    this.random = opts.random ?? Math.random;
    this.certificates = load(opts.certificates);
    this.backends = opts.backends;
    this.limits = opts.limits ?? DEFAULT_TLS_LIMITS;
    const first = this.certificates[0];
    this.server = createServer({
      cert: first.cert,
      key: first.key,
      // A client that connects and never finishes (or never starts) its handshake is closed.
      handshakeTimeout: this.limits.handshakeTimeoutMs,
      // The client's end of the stream is passed on to the backend, not taken as a close.
      allowHalfOpen: true,
      SNICallback: (serverName, done) =>
        done(null, pickCertificate(serverName, this.certificates)?.context),
    });
    this.server.on("secureConnection", socket => this.forward(socket));
    this.server.on("tlsClientError", (error: NodeJS.ErrnoException, socket) => {
      this.onEvent(
        error.code === "ERR_TLS_HANDSHAKE_TIMEOUT" ? "handshake_timeout" : "handshake_failure",
      );
      socket.destroy();
    });
    // Past the cap the kernel's accepted socket is closed before any TLS work is done.
    this.server.maxConnections = this.limits.maxConnections;
    this.server.on("drop", () => this.onEvent("refused"));
    // Every accepted socket, handshake done or not, so close() can end them all.
    this.server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      this.open++;
      socket.once("close", () => {
        this.sockets.delete(socket);
        this.open--;
      });
    });
  }

  /** Starts listening on host, on a port the kernel picks; resolves with it. */
  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, this.host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    const address = this.server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
    // A later error (none is expected once listening) must not crash the agent.
    this.server.on("error", () => {});
    return this.port;
  }

  get address(): { address: string; port: number } {
    return { address: this.host, port: this.port };
  }

  /** Client connections open now, in handshake or forwarded. */
  get connections(): number {
    return this.open;
  }

  /** Fingerprints of the certificates served now, in listener order. */
  get fingerprints(): string[] {
    return this.certificates.map(c => c.fingerprint);
  }

  /** New certificates for new handshakes; established connections are not touched. */
  setCertificates(certificates: TlsCertificate[]): void {
    if (certificates.length === 0)
      throw new Error("a TLS terminator needs at least one certificate");
    this.certificates = load(certificates);
    // The default context answers handshakes without SNI.
    this.server.setSecureContext({ cert: certificates[0].cert, key: certificates[0].key });
  }

  setBackends(backends: Backend[]): void {
    this.backends = backends;
  }

  private forward(client: TLSSocket): void {
    const backend = pickBackend(this.backends, this.random());
    if (!backend) {
      // The kernel refuses connections while no backend has weight; this is the race with it.
      client.destroy();
      return;
    }
    this.onEvent("connection");
    const upstream = connect({ host: backend.ip, port: backend.port, allowHalfOpen: true });
    this.sockets.add(upstream);
    upstream.once("close", () => this.sockets.delete(upstream));
    // pipe() passes each side's end on as the other's end, so a half-close goes through; an
    // error on either side ends both.
    client.pipe(upstream);
    upstream.pipe(client);
    let connected = false;
    upstream.once("connect", () => (connected = true));
    upstream.once("error", () => {
      if (!connected) this.onEvent("backend_error");
      client.destroy();
    });
    client.once("error", () => upstream.destroy());
    // Bytes either way (read from or written to the client) restart the clock.
    client.setTimeout(this.limits.idleTimeoutMs, () => {
      this.onEvent("idle_close");
      client.destroy();
      upstream.destroy();
    });
    // With allowHalfOpen, a socket whose both directions ended must still be released.
    const release = (socket: Socket) => () => {
      if (socket.writableEnded && socket.readableEnded) socket.destroy();
    };
    for (const socket of [client, upstream] as Socket[]) {
      socket.on("end", release(socket));
      socket.on("finish", release(socket));
    }
  }

  /** Stops accepting and ends every connection it carries. */
  async close(): Promise<void> {
    const closed = new Promise<void>(resolve => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}
