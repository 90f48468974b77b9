// SPDX-License-Identifier: Apache-2.0
// The node's TLS terminators, one per HTTPS listener: brought to what the DataplaneConfigs
// ask on every converge pass (so the periodic resync is also the certificate poll). Each pass
// reads the listeners' Secrets again; a changed certificate is loaded for new handshakes
// without touching open connections. A Secret that is missing or unusable stops that
// listener's terminator (the dataplane then refuses its connections); a Secret that cannot be
// read right now (API server unreachable, RBAC) keeps the certificates already loaded.
import type { AgentLog } from "../log.js";
import type { ListenerRef, TlsOutcome } from "../desired.js";
import {
  parseTlsSecret,
  type SecretLike,
  type TlsCertificate,
  type TlsListenerSpec,
} from "./certificates.js";
import { TlsTerminator, type TlsEvent, type TlsLimits } from "./terminator.js";
import { errorMessage } from "../../error-message.js";

export interface TlsListenersOptions {
  /** The node address terminators listen on; unset with the reason when there is none. */
  host: string | { error: string };
  /** A Secret by namespace/name; undefined when it does not exist; throws when it cannot be read. */
  readSecret: (namespace: string, name: string) => Promise<SecretLike | undefined>;
  /** per connection event, with the listener it happened on (metrics) */
  onEvent?: (ref: ListenerRef, address: string, event: TlsEvent) => void;
  log?: AgentLog;
  /** handshake and idle timeouts and the connection cap of every terminator (defaults otherwise) */
  limits?: TlsLimits;
}

interface Running {
  terminator: TlsTerminator;
  /** the listener as of the last pass, for the labels of later events */
  spec: TlsListenerSpec;
  /** cert+key of each certificate loaded, to tell a rotation from a resync */
  loaded: string;
}

const silent: AgentLog = { info: () => {}, error: () => {} };

export class TlsListeners {
  private readonly opts: TlsListenersOptions;
  private readonly log: AgentLog;
  private readonly running = new Map<string, Running>();
  /** the last error logged per listener, so a resync does not log the same one again */
  private readonly reported = new Map<string, string>();

  constructor(opts: TlsListenersOptions) {
    this.opts = opts;
    this.log = opts.log ?? silent;
  }

  /** The terminator of a listener (by listenerKey), while one runs. */
  terminator(key: string): TlsTerminator | undefined {
    return this.running.get(key)?.terminator;
  }

  /** Open client connections per running terminator, with its listener (metrics). */
  openConnections(): { ref: ListenerRef; address: string; connections: number }[] {
    return [...this.running.values()].map(r => ({
      ref: r.spec.ref,
      address: r.spec.address,
      connections: r.terminator.connections,
    }));
  }

  /** Brings the terminators to `specs`; returns each listener's outcome by key. Never throws. */
  async sync(specs: TlsListenerSpec[]): Promise<Map<string, TlsOutcome>> {
    const outcomes = new Map<string, TlsOutcome>();
    const reads = new Map<string, Promise<{ secret?: SecretLike; error?: string }>>();
    const read = (namespace: string, name: string) => {
      const ref = `${namespace}/${name}`;
      if (!reads.has(ref)) {
        reads.set(
          ref,
          this.opts.readSecret(namespace, name).then(
            secret => ({ secret }),
            (error: unknown) => ({
              error: `reading Secret ${ref} failed: ${errorMessage(error)}; check that the agent may get Secrets (the chart's agent ClusterRole)`,
            }),
          ),
        );
      }
      return reads.get(ref)!;
    };

    for (const spec of specs) {
      const outcome = await this.syncOne(spec, read);
      outcomes.set(spec.key, outcome);
      const problem = outcome.ok ? outcome.warning : outcome.error;
      if (problem && this.reported.get(spec.key) !== problem)
        this.log.error({ listener: spec.key }, problem);
      if (!problem && this.reported.has(spec.key))
        this.log.info({ listener: spec.key }, "HTTPS listener serves again");
      if (problem) this.reported.set(spec.key, problem);
      else this.reported.delete(spec.key);
    }
    const wanted = new Set(specs.map(s => s.key));
    for (const key of [...this.running.keys()]) {
      if (!wanted.has(key))
        await this.stop(key, "no DataplaneConfig has this HTTPS listener any more");
    }
    for (const key of [...this.reported.keys()]) if (!wanted.has(key)) this.reported.delete(key);
    return outcomes;
  }

  private async syncOne(
    spec: TlsListenerSpec,
    read: (namespace: string, name: string) => Promise<{ secret?: SecretLike; error?: string }>,
  ): Promise<TlsOutcome> {
    const name = `HTTPS listener ${spec.key}`;
    if (typeof this.opts.host !== "string") {
      await this.stop(spec.key, this.opts.host.error);
      return { ok: false, error: this.opts.host.error };
    }
    if (spec.certificateRefs.length === 0) {
      await this.stop(spec.key, "no certificateRefs");
      return {
        ok: false,
        error: `${name} has no certificateRefs; the controller should not have compiled it`,
      };
    }
    const certificates: TlsCertificate[] = [];
    const unusable: string[] = [];
    const unreadable: string[] = [];
    for (const ref of spec.certificateRefs) {
      const { secret, error } = await read(ref.namespace, ref.name);
      if (error) {
        unreadable.push(error);
        continue;
      }
      const parsed = parseTlsSecret(`${ref.namespace}/${ref.name}`, secret);
      if (parsed.ok) certificates.push(parsed.certificate);
      else unusable.push(parsed.error);
    }
    const current = this.running.get(spec.key);
    if (unusable.length > 0) {
      await this.stop(spec.key, unusable.join("; "));
      return { ok: false, error: unusable.join("; ") };
    }
    if (unreadable.length > 0) {
      if (!current) return { ok: false, error: unreadable.join("; ") };
      current.spec = spec;
      current.terminator.setBackends(spec.backends);
      return {
        ok: true,
        ...current.terminator.address,
        warning: `${unreadable.join("; ")}; serving the certificates loaded before`,
      };
    }

    const loaded = JSON.stringify(certificates.map(c => [c.cert, c.key]));
    if (current) {
      current.spec = spec;
      current.terminator.setBackends(spec.backends);
      if (current.loaded !== loaded) {
        try {
          current.terminator.setCertificates(certificates);
        } catch (error) {
          await this.stop(spec.key, errorMessage(error));
          return {
            ok: false,
            error: `${name}: the certificates of ${certificates.map(c => c.secret).join(", ")} cannot be loaded: ${errorMessage(error)}`,
          };
        }
        current.loaded = loaded;
        this.log.info(
          {
            listener: spec.key,
            secrets: certificates.map(c => c.secret),
            fingerprints: current.terminator.fingerprints,
          },
          "HTTPS listener: certificates reloaded; new connections get them",
        );
      }
      return { ok: true, ...current.terminator.address };
    }

    // The event labels follow the listener's latest spec (its port may change under it).
    const running = { spec, loaded } as Running;
    let terminator: TlsTerminator | undefined;
    try {
      terminator = new TlsTerminator({
        host: this.opts.host,
        certificates,
        backends: spec.backends,
        limits: this.opts.limits,
        onEvent: event => this.opts.onEvent?.(running.spec.ref, running.spec.address, event),
      });
      running.terminator = terminator;
      const port = await terminator.listen();
      this.running.set(spec.key, running);
      this.log.info(
        {
          listener: spec.key,
          address: `${this.opts.host}:${port}`,
          secrets: certificates.map(c => c.secret),
        },
        "HTTPS listener: TLS terminator listening",
      );
      return { ok: true, address: this.opts.host, port };
    } catch (error) {
      await terminator?.close().catch(() => undefined);
      return {
        ok: false,
        error: `${name}: the TLS terminator cannot start on ${this.opts.host}: ${errorMessage(error)}`,
      };
    }
  }

  private async stop(key: string, why: string): Promise<void> {
    const current = this.running.get(key);
    if (!current) return;
    this.running.delete(key);
    await current.terminator.close();
    this.log.info({ listener: key, why }, "HTTPS listener: TLS terminator stopped");
  }

  /** Stops every terminator and the connections they carry. */
  async close(): Promise<void> {
    for (const key of [...this.running.keys()]) await this.stop(key, "the agent is stopping");
  }
}
