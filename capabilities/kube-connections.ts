// SPDX-License-Identifier: Apache-2.0
/**
 * API clients whose requests share keep-alive connections. kubernetes-fluent-client (`K8s()`)
 * and @kubernetes/client-node's `KubeConfig.makeApiClient` give every request an agent of its
 * own, so every request opens a TCP connection and makes a TLS handshake with the API server.
 * For a watch that does not matter; for the controller's status writes, a thousand of them
 * when a thousand routes are applied, the handshakes cost the controller several times what
 * the requests do, and the API server about as much (bench/requests.ts; bench/REPORT.md, "API
 * requests"). Authentication stays the library's own (client certificates, token files read
 * again as they rotate); only the agent it makes is swapped for one kept per set of TLS options.
 */
import https from "node:https";
import {
  createConfiguration,
  CustomObjectsApi,
  KubeConfig,
  ServerConfiguration,
  type RequestContext,
  type SecurityAuthentication,
} from "@kubernetes/client-node";

/** An idle kept-alive connection is closed after this long (so is one to an API server gone quiet). */
const IDLE_TIMEOUT_MS = 60_000;
const TLS_OPTIONS = ["ca", "cert", "key", "pfx", "passphrase", "rejectUnauthorized"] as const;

function sameOption(a: unknown, b: unknown): boolean {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  return a === b;
}

/** A KubeConfig's authentication, on one pool of keep-alive connections per set of TLS options. */
export class KeepAliveAuthentication implements SecurityAuthentication {
  readonly #config: KubeConfig;
  #agent?: https.Agent;
  #options?: https.AgentOptions;
  /** agents made, for tests: one unless the TLS options changed */
  agentsMade = 0;

  constructor(config: KubeConfig) {
    this.#config = config;
  }

  getName(): string {
    return "KeepAliveKubeConfig";
  }

  async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await this.#config.applySecurityAuthentication(context);
    const made = context.getAgent();
    // A proxy's agent, or plain HTTP: as the library made it.
    if (!(made instanceof https.Agent)) return;
    const options = made.options;
    const same =
      this.#agent &&
      this.#options &&
      TLS_OPTIONS.every(key => sameOption(this.#options![key], options[key]));
    if (!same) {
      // The old agent's requests finish on it; its idle connections close after the timeout.
      this.#agent = new https.Agent({ ...options, keepAlive: true, timeout: IDLE_TIMEOUT_MS });
      this.#options = options;
      this.agentsMade++;
    }
    context.setAgent(this.#agent!);
  }
}

/** An API client of `type` for `config`, on keep-alive connections. */
export function keepAliveClient<T>(
  config: KubeConfig,
  type: new (configuration: ReturnType<typeof createConfiguration>) => T,
): { client: T; authentication: KeepAliveAuthentication } {
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error("no current cluster in the kubeconfig");
  const authentication = new KeepAliveAuthentication(config);
  const client = new type(
    createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: { default: authentication },
    }),
  );
  return { client, authentication };
}

let customObjects: { kubeconfig: string | undefined; api: CustomObjectsApi } | undefined;

/**
 * The process's CustomObjectsApi on keep-alive connections, for KUBECONFIG or, without it,
 * the in-cluster account (as kubernetes-fluent-client finds them); made again if KUBECONFIG
 * changes.
 */
export function customObjectsApi(): CustomObjectsApi {
  const kubeconfig = process.env.KUBECONFIG;
  if (!customObjects || customObjects.kubeconfig !== kubeconfig) {
    const config = new KubeConfig();
    config.loadFromDefault();
    customObjects = { kubeconfig, api: keepAliveClient(config, CustomObjectsApi).client };
  }
  return customObjects.api;
}
