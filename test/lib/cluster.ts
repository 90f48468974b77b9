// SPDX-License-Identifier: Apache-2.0
// Helpers for the cluster end-to-end tests (test/e2e/): kubectl with the local cluster's
// kubeconfig, polling for a condition, TCP and UDP clients in the root namespace (the
// "outside" of the cluster, 198.18.0.1), and a look into a pod's network namespace.
// They talk to the cluster hack/cluster.sh runs; they never start, stop or install it.
import { execa } from "execa";
import { K8s, kind } from "kubernetes-fluent-client";
import { once } from "node:events";
import { appendFile, readFile } from "node:fs/promises";
import { createSocket } from "node:dgram";
import net from "node:net";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Which cluster these helpers talk to: BLIXT_CLUSTER=kind the multi-node kind cluster
 * hack/kind.sh runs (test/kind/), anything else the local one-node cluster of hack/cluster.sh.
 */
export const clusterTarget: "local" | "kind" =
  process.env.BLIXT_CLUSTER === "kind" ? "kind" : "local";

/** The script that runs the target cluster; both answer `env`, `kubectl` and `helm`. */
export const clusterSh = fileURLToPath(
  new URL(
    clusterTarget === "kind" ? "../../hack/kind.sh" : "../../hack/cluster.sh",
    import.meta.url,
  ),
);

/**
 * The root namespace's address towards the cluster: what a backend must see as the client
 * (the local cluster's veth, or the kind network's bridge).
 */
export const clientAddress = clusterTarget === "kind" ? "198.19.253.1" : "198.18.0.1";

/** Which e2e files run: only with BLIXT_CLUSTER=1; the reason to print otherwise. */
export function clusterSkipReason(): string | undefined {
  if (process.env.BLIXT_CLUSTER === "1") return undefined;
  if (clusterTarget === "kind")
    return "one-node cluster e2e: runs against the local cluster only (BLIXT_CLUSTER=1); BLIXT_CLUSTER=kind runs test/kind/";
  return "cluster e2e: set BLIXT_CLUSTER=1 and run as root against the local cluster with blixt installed (hack/cluster.sh up, then the chart, as hack/test.sh does; see docs/e2e.md)";
}

export type KubectlResult = { exitCode: number; stdout: string; stderr: string };

let kubeconfigPath: Promise<string> | undefined;

/** The kubeconfig `hack/cluster.sh env` names (its directory is the running cluster's state). */
export function kubeconfig(): Promise<string> {
  kubeconfigPath ??= execa(clusterSh, ["env"]).then(({ stdout }) => {
    const match = /export KUBECONFIG=(\S+)/.exec(stdout);
    if (!match) throw new Error(`hack/cluster.sh env printed no KUBECONFIG: ${stdout}`);
    return match[1];
  });
  return kubeconfigPath;
}

/** kubectl through hack/cluster.sh (the cached kubectl, the cluster's kubeconfig); never throws. */
export async function kubectlRun(args: string[], input?: string): Promise<KubectlResult> {
  const result = await execa(clusterSh, ["kubectl", ...args], {
    input,
    reject: false,
    timeout: 180_000,
  });
  return {
    exitCode: result.exitCode ?? -1,
    stdout: String(result.stdout),
    stderr: String(result.stderr),
  };
}

/** kubectl that throws, naming the command and kubectl's own words, when it fails. */
export async function kubectl(...args: string[]): Promise<string> {
  const result = await kubectlRun(args);
  if (result.exitCode !== 0)
    throw new Error(
      `kubectl ${args.join(" ")} failed (${result.exitCode}): ${result.stderr.trim()}`,
    );
  return result.stdout;
}

/** `kubectl apply -f -`; returns stderr, where kubectl prints admission warnings. */
export async function apply(manifest: string): Promise<string> {
  const result = await kubectlRun(["apply", "-f", "-"], manifest);
  if (result.exitCode !== 0)
    throw new Error(`kubectl apply failed (${result.exitCode}): ${result.stderr.trim()}`);
  return result.stderr;
}

// Kubernetes objects as kubectl returns them: only the fields the tests read.
export type Condition = {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  observedGeneration?: number;
};
export type KubeObject = {
  metadata: {
    name: string;
    namespace?: string;
    generation?: number;
    uid?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
  };
  spec?: Record<string, unknown>;
  status?: {
    conditions?: Condition[];
    addresses?: { type?: string; value: string }[];
    listeners?: { name: string; attachedRoutes: number; conditions: Condition[] }[];
    parents?: {
      parentRef: { name: string; namespace?: string; sectionName?: string };
      controllerName: string;
      conditions: Condition[];
    }[];
    containerStatuses?: {
      name: string;
      containerID?: string;
      restartCount: number;
      ready: boolean;
    }[];
    podIP?: string;
    [key: string]: unknown;
  };
};

/** One object as JSON, or undefined when it does not exist. */
export async function getObject(
  kind: string,
  name: string,
  namespace?: string,
): Promise<KubeObject | undefined> {
  const args = ["get", kind, name, "-o", "json", ...(namespace ? ["-n", namespace] : [])];
  const result = await kubectlRun(args);
  if (result.exitCode !== 0) {
    if (/NotFound|not found/.test(result.stderr)) return undefined;
    throw new Error(`kubectl ${args.join(" ")} failed: ${result.stderr.trim()}`);
  }
  return JSON.parse(result.stdout) as KubeObject;
}

/** Objects of a kind matching a label selector. */
export async function listObjects(
  kind: string,
  namespace: string,
  selector: string,
): Promise<KubeObject[]> {
  const list = JSON.parse(
    await kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "json"),
  ) as { items: KubeObject[] };
  return list.items;
}

export function findCondition(
  conditions: Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find(c => c.type === type);
}

/** A route's conditions for the parentRef naming a Gateway (blixt's entry in status.parents). */
export function routeParentConditions(
  route: KubeObject | undefined,
  gatewayName: string,
): Condition[] | undefined {
  return route?.status?.parents?.find(
    p => p.parentRef.name === gatewayName && p.controllerName === "blixt.dev/gateway-controller",
  )?.conditions;
}

/**
 * Polls `probe` until it returns something other than undefined, and returns that. On timeout
 * the error says what was awaited and what `describe` says about the last state seen, so a
 * failing test shows why (a condition's reason, a pod's phase) rather than only "timed out".
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  options: { timeoutMs?: number; intervalMs?: number; describe?: () => Promise<string> } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 120_000);
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const state = options.describe
        ? await options.describe().catch(e => `(describe failed: ${e})`)
        : "";
      throw new Error(
        `timed out waiting for ${what}${lastError ? `; last error: ${lastError}` : ""}${state ? `; last state: ${state}` : ""}`,
      );
    }
    await sleep(options.intervalMs ?? 500);
  }
}

/** Waits until an object's condition has the wanted status (and reason, when given); returns it. */
export function waitForCondition(
  kind: string,
  name: string,
  namespace: string,
  type: string,
  want: {
    status: string;
    reason?: string;
    conditions?: (o: KubeObject | undefined) => Condition[] | undefined;
  },
  timeoutMs = 120_000,
): Promise<Condition> {
  let last: Condition[] | undefined;
  return waitFor(
    `${kind} ${namespace}/${name} ${type}=${want.status}${want.reason ? ` (${want.reason})` : ""}`,
    async () => {
      const object = await getObject(kind, name, namespace);
      last = want.conditions ? want.conditions(object) : object?.status?.conditions;
      const condition = findCondition(last, type);
      if (condition?.status === want.status && (!want.reason || condition.reason === want.reason))
        return condition;
      return undefined;
    },
    { timeoutMs, describe: async () => JSON.stringify(last ?? "no conditions") },
  );
}

/**
 * A fresh namespace for one test file: removed first if an aborted run left it behind (so a
 * rerun is idempotent), and removed in teardown, also when the test fails.
 */
export async function freshNamespace(
  t: { teardown: (fn: () => Promise<void> | void) => void },
  name: string,
  labels: Record<string, string> = {},
): Promise<string> {
  if (!name.startsWith("blixt-e2e-"))
    throw new Error(`namespace "${name}": e2e namespaces must start with "blixt-e2e-"`);
  await kubectlRun([
    "delete",
    "namespace",
    name,
    "--ignore-not-found",
    "--wait=true",
    "--timeout=120s",
  ]);
  const labelLines = Object.entries({ "blixt.dev/e2e": "true", ...labels })
    .map(([k, v]) => `    ${k}: "${v}"`)
    .join("\n");
  await apply(
    `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${name}\n  labels:\n${labelLines}\n`,
  );
  t.teardown(async () => {
    await kubectlRun([
      "delete",
      "namespace",
      name,
      "--ignore-not-found",
      "--wait=true",
      "--timeout=120s",
    ]);
  });
  return name;
}

/** Deployment + Service of the conformance suite's echo-basic image in TCP or UDP echo mode. */
export function echoBackend(options: {
  namespace: string;
  name: string;
  protocol: "TCP" | "UDP";
  port: number;
  replicas?: number;
}): string {
  const { namespace, name, protocol, port } = options;
  const mode = protocol === "TCP" ? "TCP_ECHO_SERVER" : "UDP_ECHO_SERVER";
  const portVar = protocol === "TCP" ? "TCP_PORT" : "UDP_PORT";
  return `
apiVersion: apps/v1
kind: Deployment
metadata: {name: ${name}, namespace: ${namespace}, labels: {app: ${name}}}
spec:
  replicas: ${options.replicas ?? 1}
  selector: {matchLabels: {app: ${name}}}
  template:
    metadata: {labels: {app: ${name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3
        imagePullPolicy: IfNotPresent
        env:
        - {name: ${mode}, value: "1"}
        - {name: ${portVar}, value: "${port}"}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: SERVICE_NAME, value: ${name}}
        ports: [{containerPort: ${port}, protocol: ${protocol}}]
---
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: ${namespace}}
spec:
  selector: {app: ${name}}
  ports: [{name: ${protocol.toLowerCase()}, protocol: ${protocol}, port: ${port}, targetPort: ${port}}]
`;
}

/** Waits until a Deployment has all its replicas available. */
export async function waitForDeployment(
  namespace: string,
  name: string,
  timeoutMs = 120_000,
): Promise<void> {
  const result = await kubectlRun([
    "-n",
    namespace,
    "rollout",
    "status",
    `deployment/${name}`,
    `--timeout=${Math.round(timeoutMs / 1000)}s`,
  ]);
  if (result.exitCode !== 0) {
    const pods = await kubectlRun([
      "-n",
      namespace,
      "get",
      "pods",
      "-l",
      `app=${name}`,
      "-o",
      "wide",
    ]);
    throw new Error(
      `Deployment ${namespace}/${name} not available: ${result.stderr.trim()}\n${pods.stdout}`,
    );
  }
}

/** The Gateway's first address in status.addresses, once it has one. */
export async function gatewayAddress(namespace: string, name: string): Promise<string> {
  const gateway = await getObject("gateway", name, namespace);
  const address = gateway?.status?.addresses?.[0]?.value;
  if (!address) throw new Error(`Gateway ${namespace}/${name} has no status.addresses yet`);
  return address;
}

/** Which kind tests run: only with BLIXT_CLUSTER=kind; the reason to print otherwise. */
export function kindSkipReason(): string | undefined {
  if (clusterTarget === "kind") return undefined;
  return "kind e2e: set BLIXT_CLUSTER=kind and run as root against the kind cluster with blixt installed (hack/kind.sh up && hack/kind.sh install; see docs/kind.md)";
}

/**
 * Whether an IPv4 address lies in the target cluster's Gateway pool: 198.18.0.100–199 on the
 * local cluster, 198.19.253.100–199 on kind.
 */
export function inGatewayPool(address: string): boolean {
  const prefix = clusterTarget === "kind" ? "198\\.19\\.253" : "198\\.18\\.0";
  const match = new RegExp(`^${prefix}\\.(\\d+)$`).exec(address);
  return !!match && Number(match[1]) >= 100 && Number(match[1]) <= 199;
}

/** A line-oriented TCP client (echo-basic's TCP mode speaks lines). */
export class LineClient {
  private buffered = "";
  private waiters: (() => void)[] = [];
  private closedWith: Error | "closed" | undefined;
  private constructor(readonly socket: net.Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffered += chunk;
      this.wake();
    });
    socket.on("error", error => {
      this.closedWith = error;
      this.wake();
    });
    socket.on("close", () => {
      this.closedWith ??= "closed";
      this.wake();
    });
  }

  /** Connects from the root namespace; rejects with the socket error (ECONNREFUSED, ECONNRESET, timeout). */
  static async connect(host: string, port: number, timeoutMs = 5000): Promise<LineClient> {
    const socket = net.connect({ host, port });
    const timer = setTimeout(
      () =>
        socket.destroy(new Error(`TCP connect to ${host}:${port} timed out after ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      await once(socket, "connect");
    } finally {
      clearTimeout(timer);
    }
    return new LineClient(socket);
  }

  private wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  /** The next line the server sends, without its newline. */
  async readLine(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const newline = this.buffered.indexOf("\n");
      if (newline >= 0) {
        const line = this.buffered.slice(0, newline);
        this.buffered = this.buffered.slice(newline + 1);
        return line;
      }
      if (this.closedWith)
        throw this.closedWith === "closed"
          ? new Error("connection closed before a full line")
          : this.closedWith;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(
          `no line from ${this.socket.remoteAddress}:${this.socket.remotePort} within ${timeoutMs} ms`,
        );
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Sends one line and returns the answer line. */
  async request(line: string, timeoutMs = 5000): Promise<string> {
    this.socket.write(`${line}\n`);
    return this.readLine(timeoutMs);
  }

  close() {
    this.socket.destroy();
  }
}

/** What echo-basic says about itself in its TCP `TEST` answer and every UDP reply. */
export type EchoContext = { namespace: string; service: string; pod: string };

/** Opens a TCP connection to echo-basic, reads its greeting, asks `TEST`; returns the client and the pod. */
export async function tcpEcho(
  host: string,
  port: number,
): Promise<{ client: LineClient; context: EchoContext }> {
  const client = await LineClient.connect(host, port);
  try {
    const welcome = await client.readLine();
    if (!welcome.startsWith("Gateway API Test TCP Server"))
      throw new Error(`unexpected greeting from ${host}:${port}: ${JSON.stringify(welcome)}`);
    // Go's encoding/json flattens echo-basic's embedded Context into the top level.
    const context = JSON.parse(await client.request("TEST")) as EchoContext;
    return { client, context };
  } catch (error) {
    client.close();
    throw error;
  }
}

/** One TCP connection to echo-basic: which pod served it, then closed. */
export async function tcpEchoOnce(host: string, port: number): Promise<EchoContext> {
  const { client, context } = await tcpEcho(host, port);
  client.close();
  return context;
}

/** A UDP socket bound in the root namespace, for a steady flow from one source port. */
export class UdpFlow {
  private constructor(
    private readonly socket: ReturnType<typeof createSocket>,
    readonly host: string,
    readonly port: number,
  ) {}

  static async open(host: string, port: number): Promise<UdpFlow> {
    const socket = createSocket("udp4");
    socket.bind(0);
    await once(socket, "listening");
    return new UdpFlow(socket, host, port);
  }

  get localPort(): number {
    return this.socket.address().port;
  }

  /** Sends one datagram and waits for one reply; undefined when none came in time (UDP may drop). */
  async exchange(payload: string, timeoutMs = 1000): Promise<string | undefined> {
    return new Promise(resolve => {
      const timer = setTimeout(() => {
        this.socket.off("message", onMessage);
        resolve(undefined);
      }, timeoutMs);
      const onMessage = (message: Buffer) => {
        clearTimeout(timer);
        this.socket.off("message", onMessage);
        resolve(message.toString("utf8"));
      };
      this.socket.on("message", onMessage);
      this.socket.send(payload, this.port, this.host);
    });
  }

  /** Like exchange, retried a few times, since a lost datagram is not a failure of the route. */
  async echo(
    payload: string,
    attempts = 5,
  ): Promise<(EchoContext & { request: string }) | undefined> {
    for (let attempt = 0; attempt < attempts; attempt++) {
      const reply = await this.exchange(payload);
      if (reply !== undefined) return JSON.parse(reply) as EchoContext & { request: string };
    }
    return undefined;
  }

  close() {
    this.socket.close();
  }
}

/**
 * The pid of a pod's first container's init process (from containerd's task state under the
 * cluster's directory), so a test can look at the pod's own sockets with nsenter: the backend's
 * view of who connected, which no reply of echo-basic's TCP mode carries.
 */
export async function podPid(namespace: string, podName: string): Promise<number> {
  const pod = await getObject("pod", podName, namespace);
  const containerID = pod?.status?.containerStatuses?.[0]?.containerID?.replace(
    /^containerd:\/\//,
    "",
  );
  if (!containerID) throw new Error(`pod ${namespace}/${podName} has no running container yet`);
  const clusterDir = dirname(await kubeconfig());
  const pidFile = `${clusterDir}/containerd/state/io.containerd.runtime.v2.task/k8s.io/${containerID}/init.pid`;
  return Number((await readFile(pidFile, "utf8")).trim());
}

/** Established TCP connections in a pod's network namespace, as "local peer" pairs. */
export async function podTcpConnections(
  namespace: string,
  podName: string,
): Promise<{ local: string; peer: string }[]> {
  const pid = await podPid(namespace, podName);
  const { stdout } = await execa("nsenter", [
    "-t",
    String(pid),
    "-n",
    "ss",
    "-Htn",
    "state",
    "established",
  ]);
  return stdout
    .split("\n")
    .filter(Boolean)
    .map(line => {
      const fields = line.trim().split(/\s+/);
      // A dual-stack listener shows IPv4 peers as "[::ffff:a.b.c.d]:port"; report plain a.b.c.d:port.
      const plain = (endpoint: string) => endpoint.replace(/^\[::ffff:([\d.]+)\]/, "$1");
      return { local: plain(fields[2]), peer: plain(fields[3]) };
    });
}

/** restartCount of every container of the pods matching a selector, by pod name. */
export async function restartCounts(
  namespace: string,
  selector: string,
): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const pod of await listObjects("pod", namespace, selector)) {
    counts[pod.metadata.name] = (pod.status?.containerStatuses ?? []).reduce(
      (sum, c) => sum + c.restartCount,
      0,
    );
  }
  return counts;
}

/** The cached helm against the local cluster; throws with helm's own words when it fails. */
export async function helm(...args: string[]): Promise<string> {
  const result = await execa(clusterSh, ["helm", ...args], { reject: false, timeout: 600_000 });
  if (result.exitCode !== 0)
    throw new Error(
      `helm ${args.join(" ")} failed (${result.exitCode}): ${String(result.stderr).trim()}`,
    );
  return String(result.stdout);
}

/**
 * A measured figure (a convergence or recovery time): printed as a TAP comment and, when
 * BLIXT_E2E_FIGURES names a file, appended to it as one JSON line for hack/e2e-figures.ts,
 * which writes them into bench/REPORT.md. Never asserted: speed belongs to bench/.
 */
export async function recordFigure(
  t: { comment: (message: string) => void },
  name: string,
  ms: number,
): Promise<void> {
  t.comment(`figure: ${name}: ${ms} ms`);
  const file = process.env.BLIXT_E2E_FIGURES;
  if (file)
    await appendFile(file, `${JSON.stringify({ name, ms, at: new Date().toISOString() })}\n`);
}

/**
 * A figure that is not a time (hack/e2e-figures.ts): a rate per second, a share in per cent, a
 * size in MiB, or a count of API writes.
 */
export async function recordValue(
  t: { comment: (message: string) => void },
  name: string,
  value: number,
  unit: "/s" | "%" | "MiB" | "writes",
): Promise<void> {
  t.comment(`figure: ${name}: ${value} ${unit}`);
  const file = process.env.BLIXT_E2E_FIGURES;
  if (file)
    await appendFile(
      file,
      `${JSON.stringify({ name, value, unit, at: new Date().toISOString() })}\n`,
    );
}

/**
 * What the main process of a workload's container costs so far: its resident memory and its
 * CPU time (user + system), read from /proc/1 inside the container (the image's entrypoint is
 * node itself, so PID 1 is the blixt process).
 */
export async function processUsage(
  namespace: string,
  workload: string,
): Promise<{ rssMiB: number; cpuMs: number }> {
  const out = await kubectl(
    "-n",
    namespace,
    "exec",
    workload,
    "--",
    "sh",
    "-c",
    "grep VmRSS /proc/1/status; cut -d' ' -f14,15 /proc/1/stat; getconf CLK_TCK",
  );
  const [rssLine, ticks, hz] = out.trim().split("\n");
  const rssKiB = Number(rssLine.match(/VmRSS:\s+(\d+) kB/)?.[1]);
  const [user, system] = ticks.trim().split(" ").map(Number);
  const perSecond = Number(hz);
  if (!Number.isFinite(rssKiB) || !Number.isFinite(user + system) || !(perSecond > 0))
    throw new Error(`${workload} in ${namespace}: cannot read /proc/1: ${JSON.stringify(out)}`);
  return { rssMiB: rssKiB / 1024, cpuMs: ((user + system) * 1000) / perSecond };
}

/**
 * The API server's count of writes (create, update, patch, apply, delete) so far, by resource
 * and subresource ("gateways/status"), from its own /metrics (apiserver_request_total).
 */
export async function apiWrites(): Promise<Map<string, number>> {
  const text = await kubectl("get", "--raw", "/metrics");
  const writes = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("apiserver_request_total{")) continue;
    const label = (name: string) => line.match(new RegExp(`[{,]${name}="([^"]*)"`))?.[1] ?? "";
    if (!["POST", "PUT", "PATCH", "APPLY", "DELETE"].includes(label("verb"))) continue;
    const resource = label("subresource")
      ? `${label("resource")}/${label("subresource")}`
      : label("resource");
    writes.set(
      resource,
      (writes.get(resource) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)),
    );
  }
  return writes;
}

type Slice = InstanceType<typeof kind.EndpointSlice>;

/** The ready endpoint addresses of one slice (an absent condition means ready). */
const readyOf = (slice: Slice) =>
  (slice.endpoints ?? []).filter(e => e.conditions?.ready !== false).flatMap(e => e.addresses);

/**
 * The ready endpoints of a Service as a watch on its EndpointSlices sees them, each change
 * stamped with the time its event arrived (a poll would stamp it late by its own latency).
 */
export class EndpointClock {
  /** slice name → ready addresses, per Service */
  private slices = new Map<string, Map<string, string[]>>();
  private service = "";
  private waiters: {
    service: string;
    predicate: (ready: Set<string>) => boolean;
    resolve: (at: number) => void;
  }[] = [];
  private watcher?: { close(): void };

  /** The ready endpoints of the Service the clock was started for (or of another it follows). */
  ready(service = this.service): Set<string> {
    return new Set([...(this.slices.get(service)?.values() ?? [])].flat());
  }

  /** Every followed Service shows the same ready endpoints as the one the clock was started for. */
  settled(): boolean {
    const want = [...this.ready()].sort().join(",");
    return [...this.slices.keys()].every(name => [...this.ready(name)].sort().join(",") === want);
  }

  /**
   * Follows the EndpointSlices of `service`, and with `alsoFollow` those of every other Service
   * in the namespace it accepts (next() then waits for the Service it is given).
   */
  async start(
    namespace: string,
    service: string,
    alsoFollow?: (service: string) => boolean,
  ): Promise<void> {
    this.service = service;
    const follows = (name: string | undefined) =>
      name !== undefined && (name === service || (alsoFollow?.(name) ?? false));
    const serviceOf = (slice: Slice) => slice.metadata?.labels?.["kubernetes.io/service-name"];
    const record = (slice: Slice, deleted: boolean) => {
      const name = serviceOf(slice)!;
      const slices = this.slices.get(name) ?? new Map<string, string[]>();
      if (deleted) slices.delete(slice.metadata!.name!);
      else slices.set(slice.metadata!.name!, readyOf(slice));
      this.slices.set(name, slices);
      return name;
    };
    const query = () =>
      alsoFollow
        ? K8s(kind.EndpointSlice).InNamespace(namespace)
        : K8s(kind.EndpointSlice)
            .InNamespace(namespace)
            .WithLabel("kubernetes.io/service-name", service);
    for (const slice of (await query().Get()).items)
      if (follows(serviceOf(slice))) record(slice, false);
    const watcher = query().Watch((slice, phase) => {
      const at = Date.now();
      if (!follows(serviceOf(slice))) return;
      const name = record(slice, String(phase) === "DELETED");
      const ready = this.ready(name);
      this.waiters = this.waiters.filter(w =>
        w.service === name && w.predicate(ready) ? (w.resolve(at), false) : true,
      );
    });
    await watcher.start();
    this.watcher = watcher;
  }

  /** When the next change to a Service's slices (by default the clock's own) that makes `predicate` true arrives. */
  next(
    predicate: (ready: Set<string>) => boolean,
    timeoutMs: number,
    what: string,
    service = this.service,
  ): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `${what}: the EndpointSlice of ${service} did not change within ${timeoutMs} ms`,
            ),
          ),
        timeoutMs,
      );
      this.waiters.push({
        service,
        predicate,
        resolve: at => (clearTimeout(timer), resolve(at)),
      });
    });
  }

  close(): void {
    this.watcher?.close();
  }
}
