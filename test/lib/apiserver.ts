// SPDX-License-Identifier: Apache-2.0
/**
 * A throwaway kube-apiserver for integration tests: etcd and kube-apiserver on loopback, with
 * certificates, keys and a kubeconfig made in a temporary directory, the Gateway API v1.6.3
 * standard CRDs and blixt's DataplaneConfig CRD installed. Everything is stopped and removed
 * in the test's teardown, also when the test fails.
 *
 * Binaries: kube-apiserver v1.36.3 from the cache the local-cluster build fills,
 * ${BLIXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blixt}/bin/kube-apiserver, and etcd from the
 * same bin/ directory or else Debian's etcd-server (/usr/bin/etcd).
 */
import { execa, type ResultPromise } from "execa";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { createServer, type Server } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { GenericKind, K8s, kind } from "kubernetes-fluent-client";
import { parseAllDocuments, stringify } from "yaml";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
export const CRD_FILES = [
  join(REPO, "hack/gateway-api/v1.6.3/standard-install.yaml"),
  join(REPO, "charts/blixt/crds/dataplaneconfig.yaml"),
];

export function cacheBinDir(env: NodeJS.ProcessEnv = process.env): string {
  const cache = env.BLIXT_CACHE || join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "blixt");
  return join(cache, "bin");
}

export interface Binaries {
  kubeApiserver: string;
  etcd: string;
}

/** The binaries to run, or why they cannot be found (for a test to skip with). */
export function findBinaries(env: NodeJS.ProcessEnv = process.env): Binaries | { missing: string } {
  const bin = cacheBinDir(env);
  const kubeApiserver = join(bin, "kube-apiserver");
  const etcd = [join(bin, "etcd"), "/usr/bin/etcd"].find(existsSync);
  if (!existsSync(kubeApiserver)) {
    return {
      missing: `kube-apiserver v1.36.3 not found at ${kubeApiserver}; build it with the local-cluster build (hack/cluster) or set BLIXT_CACHE`,
    };
  }
  if (!etcd)
    return {
      missing: `etcd not found in ${bin} nor at /usr/bin/etcd; install Debian's etcd-server`,
    };
  return { kubeApiserver, etcd };
}

/**
 * `count` distinct free loopback TCP ports, as the kernel picks them. Every one is held until all
 * are picked: a port picked and let go at once may come back from the next pick (a CI run once
 * gave etcd's peer port to kube-apiserver too, which then failed to listen).
 */
async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve());
      });
      const address = server.address();
      if (typeof address !== "object" || !address) throw new Error("no port");
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map(s => new Promise<void>(resolve => s.close(() => resolve()))));
  }
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await execa("openssl", args, { cwd, stdin: "ignore" });
}

/** CA, apiserver serving certificate (127.0.0.1), an admin client certificate, service-account keys. */
async function makePKI(dir: string): Promise<void> {
  const ec = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"];
  await openssl([...ec, "ca.key"], dir);
  await openssl(
    [
      "req",
      "-x509",
      "-new",
      "-key",
      "ca.key",
      "-subj",
      "/CN=blixt-test-ca",
      "-days",
      "2",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
      "-out",
      "ca.crt",
    ],
    dir,
  );
  const sign = async (name: string, subject: string, extensions: string) => {
    await openssl([...ec, `${name}.key`], dir);
    await openssl(
      ["req", "-new", "-key", `${name}.key`, "-subj", subject, "-out", `${name}.csr`],
      dir,
    );
    await writeFile(join(dir, `${name}.ext`), extensions);
    await openssl(
      [
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        `${name}.ext`,
        "-out",
        `${name}.crt`,
      ],
      dir,
    );
  };
  await sign(
    "apiserver",
    "/CN=kube-apiserver",
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  await sign(
    "admin",
    "/O=system:masters/CN=blixt-test-admin",
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
  );
  await openssl(
    ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key"],
    dir,
  );
  await openssl(["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"], dir);
}

async function readyz(port: number, dir: string): Promise<boolean> {
  const [ca, cert, key] = await Promise.all(
    ["ca.crt", "admin.crt", "admin.key"].map(f => readFile(join(dir, f))),
  );
  return new Promise(resolve => {
    const req = request(
      { host: "127.0.0.1", port, path: "/readyz", ca, cert, key, timeout: 2000 },
      res => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

/** Polls `check` (its errors count as "not yet"); `fatal` may throw to stop waiting at once. */
async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs: number,
  logs: () => Promise<string>,
  fatal = async () => {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await fatal(), !(await check().catch(() => false)))) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}\n${await logs()}`);
    await new Promise(resolve => setTimeout(resolve, 200));
  }
}

export interface ApiServer {
  /** The kubeconfig file (admin, system:masters) that process.env.KUBECONFIG now points at. */
  kubeconfig: string;
  port: number;
  dir: string;
  /** With `audit`: the API server's audit log (JSON lines, one event per request, written before it answers). */
  auditLog?: string;
}

export interface ApiServerOptions {
  /** Record every request (level Metadata: who, verb, path, object) in an audit log. */
  audit?: boolean;
}

/** One request as the audit log records it (the fields tests read). */
export interface AuditEvent {
  /** one per request: a long request (a watch) logs its start and its end under the same id */
  auditID: string;
  verb: string;
  user?: { username?: string };
  requestURI: string;
  responseStatus?: { code?: number };
  objectRef?: {
    resource?: string;
    subresource?: string;
    namespace?: string;
    name?: string;
    apiGroup?: string;
  };
}

/** The audit log's events, in the order the API server handled them. */
export async function readAuditLog(server: ApiServer): Promise<AuditEvent[]> {
  if (!server.auditLog) throw new Error("the API server was started without { audit: true }");
  const text = await readFile(server.auditLog, "utf8");
  return text
    .split("\n")
    .filter(line => line.trim())
    .map(line => JSON.parse(line) as AuditEvent);
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

async function stop(child: ResultPromise | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await child.catch(() => undefined);
  clearTimeout(timer);
}

/**
 * Starts etcd and kube-apiserver, points process.env.KUBECONFIG (which kubernetes-fluent-client
 * reads on every request) at an admin kubeconfig, and installs the CRDs. Registers teardown.
 */
export async function startApiServer(
  t: Teardown,
  binaries: Binaries,
  options: ApiServerOptions = {},
): Promise<ApiServer> {
  const dir = await mkdtemp(join(tmpdir(), "blixt-apiserver-"));
  let etcd: ResultPromise | undefined;
  let apiserver: ResultPromise | undefined;
  const previousKubeconfig = process.env.KUBECONFIG;
  // The apiserver stops first: with etcd gone it waits out its storage timeouts.
  t.teardown(async () => {
    await stop(apiserver);
    await stop(etcd);
    if (previousKubeconfig === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = previousKubeconfig;
    await rm(dir, { recursive: true, force: true });
  });

  await makePKI(dir);
  const auditLog = options.audit ? join(dir, "audit.log") : undefined;
  if (auditLog) {
    await writeFile(
      join(dir, "audit-policy.yaml"),
      stringify({
        apiVersion: "audit.k8s.io/v1",
        kind: "Policy",
        omitStages: ["RequestReceived"],
        rules: [{ level: "Metadata" }],
      }),
    );
  }
  const [etcdClient, etcdPeer, port] = await freePorts(3);
  const logs = async () =>
    (
      await Promise.all(
        ["etcd.log", "kube-apiserver.log"].map(
          async f =>
            `--- ${f} (tail)\n${(await readFile(join(dir, f), "utf8").catch(() => "")).split("\n").slice(-30).join("\n")}`,
        ),
      )
    ).join("\n");

  etcd = execa(
    binaries.etcd,
    [
      "--name",
      "test",
      "--data-dir",
      join(dir, "etcd"),
      "--listen-client-urls",
      `http://127.0.0.1:${etcdClient}`,
      "--advertise-client-urls",
      `http://127.0.0.1:${etcdClient}`,
      "--listen-peer-urls",
      `http://127.0.0.1:${etcdPeer}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${etcdPeer}`,
      "--initial-cluster",
      `test=http://127.0.0.1:${etcdPeer}`,
    ],
    {
      stdin: "ignore",
      stdout: { file: join(dir, "etcd.log") },
      stderr: { file: join(dir, "etcd.log") },
      reject: false,
      cleanup: true,
    },
  );

  apiserver = execa(
    binaries.kubeApiserver,
    [
      "--etcd-servers",
      `http://127.0.0.1:${etcdClient}`,
      "--bind-address",
      "127.0.0.1",
      "--advertise-address",
      "127.0.0.1",
      "--secure-port",
      String(port),
      "--tls-cert-file",
      join(dir, "apiserver.crt"),
      "--tls-private-key-file",
      join(dir, "apiserver.key"),
      "--client-ca-file",
      join(dir, "ca.crt"),
      "--service-account-issuer",
      "https://kubernetes.default.svc.cluster.local",
      "--service-account-key-file",
      join(dir, "sa.pub"),
      "--service-account-signing-key-file",
      join(dir, "sa.key"),
      "--service-cluster-ip-range",
      // The local cluster's Service range (hack/cluster/lib.sh SERVICE_CIDR): inside 198.18.0.0/15.
      "198.19.240.0/21",
      "--authorization-mode",
      "RBAC",
      // No endpoints for the kubernetes Service: nothing in these tests runs in a pod.
      "--endpoint-reconciler-type",
      "none",
      "--profiling=false",
      ...(auditLog
        ? [
            "--audit-policy-file",
            join(dir, "audit-policy.yaml"),
            "--audit-log-path",
            auditLog,
            "--audit-log-mode",
            "blocking",
          ]
        : []),
    ],
    {
      stdin: "ignore",
      stdout: { file: join(dir, "kube-apiserver.log") },
      stderr: { file: join(dir, "kube-apiserver.log") },
      reject: false,
      cleanup: true,
    },
  );

  const bothRunning = async () => {
    for (const [name, child] of [
      ["etcd", etcd],
      ["kube-apiserver", apiserver],
    ] as const) {
      if (child.exitCode !== null)
        throw new Error(`${name} exited with ${child.exitCode}\n${await logs()}`);
    }
  };
  await until("kube-apiserver /readyz", () => readyz(port, dir), 90_000, logs, bothRunning);

  const [ca, cert, key] = await Promise.all(
    ["ca.crt", "admin.crt", "admin.key"].map(async f =>
      (await readFile(join(dir, f))).toString("base64"),
    ),
  );
  const kubeconfig = join(dir, "admin.kubeconfig");
  await writeFile(
    kubeconfig,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        {
          name: "test",
          cluster: { server: `https://127.0.0.1:${port}`, "certificate-authority-data": ca },
        },
      ],
      users: [{ name: "admin", user: { "client-certificate-data": cert, "client-key-data": key } }],
      contexts: [{ name: "test", context: { cluster: "test", user: "admin" } }],
      "current-context": "test",
    }),
    { mode: 0o600 },
  );
  process.env.KUBECONFIG = kubeconfig;

  await installCRDs(logs);
  return { kubeconfig, port, dir, ...(auditLog ? { auditLog } : {}) };
}

/** Applies every CRD of the bundles and waits until each is Established and can be listed. */
async function installCRDs(logs: () => Promise<string>): Promise<void> {
  const names: string[] = [];
  const resources: { group: string; version: string; kind: string; plural: string }[] = [];
  for (const file of CRD_FILES) {
    for (const document of parseAllDocuments(await readFile(file, "utf8"))) {
      const crd = document.toJSON();
      if (crd?.kind !== "CustomResourceDefinition") continue;
      await K8s(kind.CustomResourceDefinition).Apply(crd, { force: true });
      names.push(crd.metadata.name);
      const served = crd.spec.versions.find((v: { served: boolean }) => v.served);
      resources.push({
        group: crd.spec.group,
        version: served.name,
        kind: crd.spec.names.kind,
        plural: crd.spec.names.plural,
      });
    }
  }
  for (const name of names) {
    await until(
      `CRD ${name} to be Established`,
      async () => {
        const crd = await K8s(kind.CustomResourceDefinition).Get(name);
        return (
          crd.status?.conditions?.some(c => c.type === "Established" && c.status === "True") ??
          false
        );
      },
      60_000,
      logs,
    );
  }
  // Established is not the end: the new kind's storage answers 429 while it initialises.
  for (const resource of resources) {
    await until(
      `${resource.plural}.${resource.group} to be listable`,
      async () => {
        await K8s(GenericKind, { kindOverride: resource }).Get();
        return true;
      },
      60_000,
      logs,
    );
  }
}

/** A kubeconfig whose client certificate names the ServiceAccount: RBAC matches it as that account. */
export async function serviceAccountKubeconfig(
  server: ApiServer,
  namespace: string,
  account: string,
): Promise<string> {
  const user = `system:serviceaccount:${namespace}:${account}`;
  const ssl = (args: string[]) => execa("openssl", args, { cwd: server.dir, stdin: "ignore" });
  await ssl([
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    `${account}.key`,
  ]);
  await ssl([
    "req",
    "-new",
    "-key",
    `${account}.key`,
    "-subj",
    `/O=system:serviceaccounts/CN=${user}`,
    "-out",
    `${account}.csr`,
  ]);
  await writeFile(
    join(server.dir, "sa.ext"),
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
  );
  await ssl([
    "x509",
    "-req",
    "-in",
    `${account}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    "sa.ext",
    "-out",
    `${account}.crt`,
  ]);
  const [ca, cert, key] = await Promise.all(
    ["ca.crt", `${account}.crt`, `${account}.key`].map(async f =>
      (await readFile(join(server.dir, f))).toString("base64"),
    ),
  );
  const kubeconfig = join(server.dir, `${account}.kubeconfig`);
  await writeFile(
    kubeconfig,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      "current-context": "sa",
      clusters: [
        {
          name: "test",
          cluster: { server: `https://127.0.0.1:${server.port}`, "certificate-authority-data": ca },
        },
      ],
      users: [{ name: "sa", user: { "client-certificate-data": cert, "client-key-data": key } }],
      contexts: [{ name: "sa", context: { cluster: "test", user: "sa" } }],
    }),
    { mode: 0o600 },
  );
  return kubeconfig;
}

/** Runs `body` with kubernetes-fluent-client (and client-node) acting as `kubeconfig`'s user. */
export async function as<T>(kubeconfig: string, body: () => Promise<T>): Promise<T> {
  const admin = process.env.KUBECONFIG;
  process.env.KUBECONFIG = kubeconfig;
  try {
    return await body();
  } finally {
    process.env.KUBECONFIG = admin;
  }
}
