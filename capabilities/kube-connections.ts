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
  PatchStrategy,
  ServerConfiguration,
  setHeaderOptions,
  type RequestContext,
  type SecurityAuthentication,
} from "@kubernetes/client-node";

/** An idle kept-alive connection is closed after this long (so is one to an API server gone quiet). */
const IDLE_TIMEOUT_MS = 60_000;
/**
 * A request with no answer after this long is abandoned (and fails): a kept-alive connection to
 * an API server that went away without closing it (a restart behind a load balancer, a powered-
 * off control-plane node) would otherwise hold a write, and the controller's write stage or the
 * agent's pass waiting on it, until the kernel gives the connection up. The API server ends a
 * request it cannot serve after 60 s by default; every write blixt makes is answered in far less.
 */
export const REQUEST_TIMEOUT_MS = 30_000;
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
  readonly #timeoutMs: number;
  /** agents made, for tests: one unless the TLS options changed */
  agentsMade = 0;

  constructor(config: KubeConfig, timeoutMs = REQUEST_TIMEOUT_MS) {
    this.#config = config;
    this.#timeoutMs = timeoutMs;
  }

  getName(): string {
    return "KeepAliveKubeConfig";
  }

  async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await this.#config.applySecurityAuthentication(context);
    if (!context.getSignal()) context.setSignal(AbortSignal.timeout(this.#timeoutMs));
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

/** An API client of `type` for `config`, on keep-alive connections; requests fail after `timeoutMs` without an answer. */
export function keepAliveClient<T>(
  config: KubeConfig,
  type: new (configuration: ReturnType<typeof createConfiguration>) => T,
  timeoutMs = REQUEST_TIMEOUT_MS,
): { client: T; authentication: KeepAliveAuthentication } {
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error("no current cluster in the kubeconfig");
  const authentication = new KeepAliveAuthentication(config, timeoutMs);
  const client = new type(
    createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: { default: authentication },
    }),
  );
  return { client, authentication };
}

const customObjects = new Map<string, { kubeconfig: string | undefined; api: CustomObjectsApi }>();

/**
 * The process's CustomObjectsApi on keep-alive connections, for KUBECONFIG or, without it,
 * the in-cluster account (as kubernetes-fluent-client finds them); made again if KUBECONFIG
 * changes. One per request timeout: the agent's Lease renewals give up sooner than other writes.
 */
export function customObjectsApi(timeoutMs = REQUEST_TIMEOUT_MS): CustomObjectsApi {
  const kubeconfig = process.env.KUBECONFIG;
  let made = customObjects.get(String(timeoutMs));
  if (!made || made.kubeconfig !== kubeconfig) {
    const config = new KubeConfig();
    config.loadFromDefault();
    made = { kubeconfig, api: keepAliveClient(config, CustomObjectsApi, timeoutMs).client };
    customObjects.set(String(timeoutMs), made);
  }
  return made.api;
}

/**
 * client-node throws ApiException; blixt's callers read errors as kubernetes-fluent-client
 * throws them: `{ status, statusText, data }`, data the API server's Status when it sent one.
 */
export function asResponse(error: unknown): unknown {
  const name = (error as { name?: string } | undefined)?.name;
  if (name === "AbortError" || name === "TimeoutError")
    return new Error(
      "the API server did not answer within the request timeout; the request was abandoned (it may still have been applied)",
    );
  const exception = error as { code?: number; body?: unknown };
  if (typeof exception?.code !== "number") return error;
  let data = exception.body;
  if (typeof data === "string") {
    try {
      data = JSON.parse(data);
    } catch {
      // a plain-text body is its own message
    }
  }
  const reason = (data as { reason?: string } | undefined)?.reason;
  return { status: exception.code, statusText: reason ?? "", data };
}

/** A namespaced resource kind of a named API group (a custom one, as KINDS gives it, or a built-in one). */
export interface CustomKind {
  group: string;
  version?: string;
  plural?: string;
}

/**
 * Server-side applies `object` (namespaced, custom) or, with `status`, its status subresource,
 * on the keep-alive connections: a DataplaneConfig write and an agent's acknowledgement are
 * twenty requests each when an EndpointSlice behind twenty Gateways changes. Strict field
 * validation, as kubernetes-fluent-client's Apply asks for. Returns the object as stored;
 * throws as `asResponse` says.
 */
export async function applyCustomObject(
  kind: CustomKind,
  object: { metadata?: { namespace?: string; name?: string } },
  options: { fieldManager: string; force: boolean; status?: boolean },
  api: CustomObjectsApi = customObjectsApi(),
): Promise<unknown> {
  const request = {
    group: kind.group,
    version: kind.version ?? "",
    plural: kind.plural ?? "",
    namespace: object.metadata?.namespace ?? "",
    name: object.metadata?.name ?? "",
    body: object,
    fieldManager: options.fieldManager,
    fieldValidation: "Strict",
    force: options.force,
  };
  const apply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
  try {
    return options.status
      ? await api.patchNamespacedCustomObjectStatus(request, apply)
      : await api.patchNamespacedCustomObject(request, apply);
  } catch (error) {
    throw asResponse(error);
  }
}
