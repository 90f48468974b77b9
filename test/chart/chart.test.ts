// SPDX-License-Identifier: Apache-2.0
// charts/blixt through the real helm binary: lint, `helm template` with defaults and
// variations (objects parsed with yaml and checked field by field), and values the schema
// must reject. A missing helm fails the file in CI (CI set, as CI services set it, or HELM set,
// as hack/test.sh sets it); elsewhere it skips, with a warning on stderr.
import t from "tap";
import { X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { execa } from "execa";
import { parse, parseAllDocuments } from "yaml";
import {
  certificateChecksum,
  webhookCertificateSettings,
} from "../../capabilities/gateway/webhook-certificate";
import { MAP_SIZE_ENV, agentSettings } from "../../capabilities/agent/start";

const chartDir = resolve(import.meta.dirname, "../../charts/blixt");

/** The Gateway API CRDs a real cluster would have; offline rendering must be told. */
const GATEWAY_API = ["--api-versions", "gateway.networking.k8s.io/v1/GatewayClass"];

/** $HELM, then the cache the local cluster's build fills, then PATH; undefined when none. */
async function findHelm(): Promise<string | undefined> {
  // A HELM that names no file is an error the caller reports, not a reason to look elsewhere.
  if (process.env.HELM) return existsSync(process.env.HELM) ? process.env.HELM : undefined;
  const cache =
    process.env.BLIXT_CACHE ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "blixt");
  if (existsSync(join(cache, "bin", "helm"))) return join(cache, "bin", "helm");
  const which = await execa("sh", ["-c", "command -v helm"], { reject: false });
  return which.exitCode === 0 ? which.stdout.trim() : undefined;
}

/**
 * Whether a missing helm must fail the run rather than skip it: in CI (the CI variable, which
 * CI services set to "true"), and whenever HELM names the binary to use (hack/test.sh does).
 */
function helmRequired(env: NodeJS.ProcessEnv): string | undefined {
  if (env.HELM) return `HELM=${env.HELM} names no file`;
  const ci = env.CI?.trim().toLowerCase();
  if (ci && ci !== "false" && ci !== "0")
    return `CI=${env.CI} and no helm in $BLIXT_CACHE/bin or on PATH`;
  return undefined;
}

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations: Record<string, string>;
  };
  [field: string]: any;
}

interface Rendered {
  objects: K8sObject[];
  /** The one object of this kind and name; throws naming what was there instead. */
  get(kind: string, name: string): K8sObject;
  all(kind: string): K8sObject[];
}

const RELEASE = "gw";
const NAMESPACE = "blixt-system";

/** `helm template` with --set-json per top-level value; rejects with helm's stderr on failure. */
async function template(
  helm: string,
  values: Record<string, unknown> = {},
  extra: string[] = GATEWAY_API,
): Promise<Rendered> {
  const sets = Object.entries(values).flatMap(([key, value]) => [
    "--set-json",
    `${key}=${JSON.stringify(value)}`,
  ]);
  const result = await execa(
    helm,
    ["template", RELEASE, chartDir, "--namespace", NAMESPACE, ...extra, ...sets],
    { reject: false },
  );
  if (result.exitCode !== 0) throw new Error(result.stderr || result.stdout);
  const objects = parseAllDocuments(result.stdout)
    .map(doc => doc.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null && typeof o === "object");
  const all = (kind: string) => objects.filter(o => o.kind === kind);
  return {
    objects,
    all,
    get(kind, name) {
      const found = objects.find(o => o.kind === kind && o.metadata.name === name);
      if (!found)
        throw new Error(
          `no ${kind} ${name}; rendered ${kind}s: ${
            all(kind)
              .map(o => o.metadata.name)
              .join(", ") || "none"
          }`,
        );
      return found;
    },
  };
}

/** The error text of a render that must fail. */
async function templateError(
  helm: string,
  values: Record<string, unknown>,
  extra: string[] = GATEWAY_API,
): Promise<string> {
  try {
    await template(helm, values, extra);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error(`helm template accepted ${JSON.stringify(values)}`);
}

type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };

/** Verbs a ClusterRole grants on group/resource. */
function verbs(role: K8sObject, group: string, resource: string): string[] {
  return [
    ...new Set(
      (role.rules as Rule[])
        .filter(r => r.apiGroups.includes(group) && r.resources.includes(resource))
        .flatMap(r => r.verbs),
    ),
  ].sort();
}

/** A container's env as name → value (or valueFrom). */
function envOf(container: any): Record<string, any> {
  return Object.fromEntries((container.env as any[]).map(e => [e.name, e.value ?? e.valueFrom]));
}

const WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection", "*"];
const POOLS = [
  { name: "default", addresses: ["198.18.100.0/24"] },
  { name: "team-a", addresses: ["198.18.101.10-198.18.101.20"], namespaces: ["team-a"] },
];

const helm = await findHelm();
const missingHelm =
  "no helm binary found: run hack/cluster.sh build (it caches helm), put helm on PATH, or set HELM";
if (!helm && helmRequired(process.env)) {
  t.fail(`chart tests: ${missingHelm} (${helmRequired(process.env)})`);
} else if (!helm) {
  process.stderr.write(
    `\nWARNING: test/chart/chart.test.ts: the chart is NOT tested: ${missingHelm}. In CI this fails.\n\n`,
  );
  t.pass("chart tests", { skip: missingHelm });
} else {
  const full = `${RELEASE}-blixt`;
  const defaults = await template(helm);

  t.test("helm lint passes, strict, with and without address pools", async t => {
    for (const sets of [[], ["--set-json", `addressPools=${JSON.stringify(POOLS)}`]]) {
      // lint cannot be told about the Gateway API CRDs, so it renders without the GatewayClass.
      const lint = await execa(
        helm,
        ["lint", "--strict", chartDir, "--set", "gatewayClass.create=false", ...sets],
        { reject: false },
      );
      t.equal(lint.exitCode, 0, lint.stdout + lint.stderr);
    }
  });

  t.test("defaults: every role, the GatewayClass, the webhook", async t => {
    const kinds = defaults.objects.map(o => `${o.kind}/${o.metadata.name}`);
    for (const expected of [
      `Deployment/${full}-admission`,
      `Service/${full}-admission`,
      `Deployment/${full}-controller`,
      `DaemonSet/${full}-agent`,
      `ValidatingWebhookConfiguration/${full}-admission`,
      `GatewayClass/blixt`,
      `ConfigMap/${full}-controller-address-pools`,
      `Namespace/pepr-system`,
    ])
      t.ok(kinds.includes(expected), `renders ${expected}`);
    t.equal(
      defaults.get("GatewayClass", "blixt").spec.controllerName,
      "blixt.dev/gateway-controller",
    );
    t.equal(defaults.get("Deployment", `${full}-controller`).spec.replicas, 1, "one controller");
    t.equal(
      defaults.get("Deployment", `${full}-controller`).spec.strategy.type,
      "Recreate",
      "never two controllers at once",
    );
    for (const o of defaults.objects) {
      if (
        o.kind !== "ClusterRole" &&
        o.kind !== "ClusterRoleBinding" &&
        o.kind !== "ValidatingWebhookConfiguration" &&
        o.kind !== "GatewayClass" &&
        o.kind !== "Namespace"
      ) {
        const expectedNs = o.metadata.name.endsWith("-pepr-store") ? "pepr-system" : NAMESPACE;
        t.equal(o.metadata.namespace, expectedNs, `${o.kind}/${o.metadata.name} namespace`);
      }
    }
  });

  t.test(
    "the agent DaemonSet: privileged, host network, bpffs, every node, NODE_NAME, HOST_IP",
    async t => {
      const agent = defaults.get("DaemonSet", `${full}-agent`);
      const pod = agent.spec.template.spec;
      const container = pod.containers[0];
      t.equal(pod.hostNetwork, true);
      t.equal(container.securityContext.privileged, true);
      t.equal(container.securityContext.runAsUser, 0);
      const bpffs = pod.volumes.find((v: any) => v.hostPath?.path === "/sys/fs/bpf");
      t.ok(bpffs, "a hostPath volume of /sys/fs/bpf");
      const bpffsMount = container.volumeMounts.find((m: any) => m.name === bpffs?.name);
      t.equal(bpffsMount?.mountPath, "/sys/fs/bpf");
      t.notOk(
        bpffsMount?.mountPropagation,
        "no propagation: a host whose /sys/fs/bpf is a private mount could not start the pod",
      );
      t.same(pod.tolerations, [{ operator: "Exists" }], "tolerates every taint");
      t.same(envOf(container).NODE_NAME, { fieldRef: { fieldPath: "spec.nodeName" } });
      t.same(
        envOf(container).HOST_IP,
        { fieldRef: { fieldPath: "status.hostIP" } },
        "the node's own address, for IP-in-IP to backends on other nodes",
      );
      t.equal(envOf(container).BLIXT_ROLE, "agent");
      t.equal(
        envOf(container).PEPR_WATCH_MODE,
        "true",
        "Pepr runs Watch bindings only in watch mode",
      );
      t.equal(envOf(container).BLIXT_PIN_DIR, "/sys/fs/bpf/blixt");
      t.equal(envOf(container).BLIXT_ATTACH_MODE, "auto");
      t.notOk("BLIXT_INTERFACE" in envOf(container), "the agent finds its device unless told");
      const pinned = await template(helm, {
        agent: { interface: "eth1", attachMode: "tc", bpfPinDir: "/sys/fs/bpf/gw" },
      });
      const pinnedEnv = envOf(
        pinned.get("DaemonSet", `${full}-agent`).spec.template.spec.containers[0],
      );
      t.match(pinnedEnv, {
        BLIXT_INTERFACE: "eth1",
        BLIXT_ATTACH_MODE: "tc",
        BLIXT_PIN_DIR: "/sys/fs/bpf/gw",
      });
      t.equal(container.ports[0].containerPort, 9090);
      t.equal(container.readinessProbe.httpGet.path, "/readyz");
      t.notOk(
        container.readinessProbe.httpGet.host,
        "probes go to the pod IP, where the metrics listen",
      );
      t.same(
        envOf(container).BLIXT_METRICS_ADDRESS,
        { fieldRef: { fieldPath: "status.podIP" } },
        "metrics and health on the node's own IP, not every interface",
      );
      const local = (await template(helm, { agent: { metricsBindAddress: "127.0.0.1" } })).get(
        "DaemonSet",
        `${full}-agent`,
      ).spec.template.spec.containers[0];
      t.equal(envOf(local).BLIXT_METRICS_ADDRESS, "127.0.0.1");
      t.equal(
        local.readinessProbe.httpGet.host,
        "127.0.0.1",
        "a node-local bind: the probes follow it",
      );
      t.equal(local.livenessProbe.httpGet.host, "127.0.0.1");
      // The agent serves no admission: no webhook key in its pod, no Pepr HTTPS port.
      t.notOk(
        pod.volumes.some((v: any) => v.secret),
        "no Secret volume (the webhook's serving key) in the agent's pod",
      );
      t.notOk(
        container.volumeMounts.some((m: any) => m.mountPath === "/etc/certs"),
        "nothing mounted at /etc/certs",
      );
      t.notOk(
        "SSL_KEY_PATH" in envOf(container) || "SSL_CERT_PATH" in envOf(container),
        "no serving key path",
      );
      t.notOk(
        container.ports.some((p: any) => p.containerPort === 3000),
        "no port 3000",
      );
      t.match(
        envOf(container),
        {
          BLIXT_TLS_HANDSHAKE_TIMEOUT_SECONDS: "10",
          BLIXT_TLS_IDLE_TIMEOUT_SECONDS: "300",
          BLIXT_TLS_MAX_CONNECTIONS_PER_LISTENER: "1024",
        },
        "the TLS terminators' limits",
      );
      const limited = (
        await template(helm, {
          agent: {
            tls: {
              handshakeTimeoutSeconds: 3,
              idleTimeoutSeconds: 60,
              maxConnectionsPerListener: 50,
            },
          },
        })
      ).get("DaemonSet", `${full}-agent`).spec.template.spec.containers[0];
      t.match(envOf(limited), {
        BLIXT_TLS_HANDSHAKE_TIMEOUT_SECONDS: "3",
        BLIXT_TLS_IDLE_TIMEOUT_SECONDS: "60",
        BLIXT_TLS_MAX_CONNECTIONS_PER_LISTENER: "50",
      });
      t.equal(container.livenessProbe.httpGet.path, "/healthz");
      const preStop = JSON.stringify(container.lifecycle.preStop);
      t.ok(container.lifecycle.preStop, "has a preStop");
      t.notMatch(preStop, /detach|rm |unpin/, "the preStop leaves the dataplane serving");
    },
  );

  t.test("admission and controller run as non-root with nothing to escalate", async t => {
    for (const role of ["admission", "controller"]) {
      const pod = defaults.get("Deployment", `${full}-${role}`).spec.template.spec;
      t.match(pod.securityContext, { runAsNonRoot: true, runAsUser: 65532 }, role);
      t.match(
        pod.containers[0].securityContext,
        { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } },
        role,
      );
      t.notOk(pod.hostNetwork, `${role} is not on the host network`);
      t.equal(envOf(pod.containers[0]).BLIXT_ROLE, role);
      t.equal(envOf(pod.containers[0]).PEPR_WATCH_MODE, role === "admission" ? "false" : "true");
    }
  });

  t.test("RBAC: least privilege per role", async t => {
    const admission = defaults.get("ClusterRole", `${full}-admission`);
    const controller = defaults.get("ClusterRole", `${full}-controller`);
    const agent = defaults.get("ClusterRole", `${full}-agent`);
    const gw = "gateway.networking.k8s.io";

    for (const rule of admission.rules as Rule[]) {
      t.same(
        rule.verbs.filter(v => WRITE_VERBS.includes(v)),
        [],
        `admission writes nothing (${rule.resources})`,
      );
    }
    // The webhook's lookups come from watches, with a live read where a watch is not current.
    for (const [group, resource] of [
      [gw, "gatewayclasses"],
      [gw, "gateways"],
      [gw, "referencegrants"],
      ["", "services"],
      ["", "namespaces"],
    ])
      t.same(
        verbs(admission, group, resource),
        ["get", "list", "watch"],
        `admission watches ${resource}, and reads one live when its watch is not current`,
      );
    t.equal((admission.rules as Rule[]).length, 2, "admission has nothing else");
    t.same(verbs(admission, "", "secrets"), [], "admission reads no Secrets");
    for (const resource of [
      "gatewayclasses",
      "gateways",
      "tcproutes",
      "udproutes",
      "referencegrants",
    ]) {
      t.same(
        verbs(controller, gw, resource).filter(v => ["get", "list", "watch"].includes(v)),
        ["get", "list", "watch"],
        `controller watches ${resource}`,
      );
    }
    for (const resource of [
      "gatewayclasses/status",
      "gateways/status",
      "listenersets/status",
      "tcproutes/status",
      "udproutes/status",
    ]) {
      t.ok(verbs(controller, gw, resource).includes("patch"), `controller patches ${resource}`);
    }
    t.same(
      verbs(controller, gw, "tcproutes").filter(v => WRITE_VERBS.includes(v)),
      [],
      "controller never rewrites a route's spec",
    );
    t.ok(
      verbs(controller, gw, "gateways/finalizers").includes("update"),
      "controller sets finalizers on Gateways",
    );
    t.same(verbs(controller, "blixt.dev", "dataplaneconfigs"), [
      "create",
      "delete",
      "get",
      "list",
      "patch",
      "update",
      "watch",
    ]);
    for (const resource of ["namespaces", "nodes"]) {
      t.same(
        verbs(controller, "", resource),
        ["get", "list", "watch"],
        `controller reads ${resource}`,
      );
    }
    // Each Gateway's headless Service and EndpointSlice: applied and deleted, never updated.
    const gatewayServiceVerbs = ["create", "delete", "get", "list", "patch", "watch"];
    t.same(verbs(controller, "", "services"), gatewayServiceVerbs);
    t.same(verbs(controller, "discovery.k8s.io", "endpointslices"), gatewayServiceVerbs);

    t.same(
      verbs(agent, "blixt.dev", "dataplaneconfigs"),
      ["get", "list", "watch"],
      "agent only reads DataplaneConfigs",
    );
    t.same(
      verbs(agent, "blixt.dev", "dataplaneconfigs/status"),
      ["get", "patch", "update"],
      "agent acknowledges in status",
    );
    t.same(verbs(agent, "", "nodes"), ["get", "list", "watch"]);
    t.same(verbs(agent, "", "secrets"), [], "agent reads no Secret cluster-wide");
    t.equal((agent.rules as Rule[]).length, 3, "agent has nothing else cluster-wide");
    t.same(
      verbs(controller, "", "secrets"),
      ["get"],
      "controller gets certificateRefs' Secrets by name: no list or watch cluster-wide",
    );
    t.same(verbs(controller, "", "pods"), [], "controller reads no Pods cluster-wide");

    // In the release namespace: the agent gets the certificate copies and holds its node Lease; the controller keeps the copies and reads the agent Pods.
    const agentRole = defaults.get("Role", `${full}-agent`);
    const controllerRole = defaults.get("Role", `${full}-controller`);
    for (const role of [agentRole, controllerRole])
      t.equal(
        role.metadata.namespace,
        NAMESPACE,
        `${role.metadata.name} is the release namespace's`,
      );
    t.same(
      (agentRole.rules as Rule[]).map(r => [r.apiGroups, r.resources, r.verbs]),
      [
        [[""], ["secrets"], ["get"]],
        [["coordination.k8s.io"], ["leases"], ["get", "list", "watch", "create", "patch"]],
      ],
      "agent: get Secrets and hold and watch Leases in its namespace, nothing else (no delete, no update: a Lease goes with its Pod)",
    );
    t.same(
      verbs(controllerRole, "", "secrets"),
      ["create", "delete", "get", "list", "update"],
      "controller writes the copies in the release namespace",
    );
    t.same(
      verbs(controllerRole, "", "pods"),
      ["get", "list", "watch"],
      "controller reads the agent Pods in the release namespace",
    );
    t.same((controllerRole.rules as Rule[]).flatMap(r => r.resources).sort(), [
      "leases",
      "pods",
      "secrets",
    ]);
    t.same(
      verbs(controllerRole, "coordination.k8s.io", "leases"),
      ["get", "list", "watch"],
      "controller reads the agents' node Leases, never writes them",
    );
    for (const sa of ["controller", "agent"]) {
      const binding = defaults.get("RoleBinding", `${full}-${sa}`);
      t.equal(binding.metadata.namespace, NAMESPACE);
      t.same(binding.subjects, [
        { kind: "ServiceAccount", name: `${full}-${sa}`, namespace: NAMESPACE },
      ]);
      t.same(binding.roleRef, {
        apiGroup: "rbac.authorization.k8s.io",
        kind: "Role",
        name: `${full}-${sa}`,
      });
    }
    const controllerEnv = envOf(
      defaults.get("Deployment", `${full}-controller`).spec.template.spec.containers[0],
    );
    t.equal(
      controllerEnv.BLIXT_AGENT_NAMESPACE,
      NAMESPACE,
      "the controller watches agent Pods, and keeps copies, in the release namespace",
    );

    for (const sa of ["admission", "controller", "agent"]) {
      const binding = defaults.get("ClusterRoleBinding", `${full}-${sa}`);
      t.same(binding.subjects, [
        { kind: "ServiceAccount", name: `${full}-${sa}`, namespace: NAMESPACE },
      ]);
      t.equal(binding.roleRef.name, `${full}-${sa}`);
      const pod = defaults
        .all("Deployment")
        .concat(defaults.all("DaemonSet"))
        .find(o => o.metadata.name === `${full}-${sa}`);
      t.equal(
        pod?.spec.template.spec.serviceAccountName,
        `${full}-${sa}`,
        `${sa} runs as its own ServiceAccount`,
      );
    }
    const store = defaults.get("Role", `${full}-pepr-store`);
    t.equal(store.metadata.namespace, "pepr-system", "Pepr's store namespace");
    t.same((store.rules as Rule[]).map(r => r.resources).flat(), ["peprstores"]);
  });

  t.test("address pools reach the controller as the file it reads", async t => {
    const withPools = await template(helm, { addressPools: POOLS });
    const configMap = withPools.get("ConfigMap", `${full}-controller-address-pools`);
    const controller = withPools.get("Deployment", `${full}-controller`).spec.template;
    const container = controller.spec.containers[0];
    const file = envOf(container).BLIXT_ADDRESS_POOLS_FILE as string;
    const mount = container.volumeMounts.find((m: any) => file.startsWith(`${m.mountPath}/`));
    t.ok(mount, `a volume is mounted where ${file} lives`);
    const volume = controller.spec.volumes.find((v: any) => v.name === mount.name);
    t.equal(volume.configMap.name, configMap.metadata.name);
    const key = file.slice(mount.mountPath.length + 1);
    t.same(
      parse(configMap.data[key]),
      {
        addressPools: [
          { name: "default", cidrs: ["198.18.100.0/24"] },
          { name: "team-a", cidrs: ["198.18.101.10-198.18.101.20"], namespaces: ["team-a"] },
        ],
      },
      "the controller's pool format",
    );
    t.same(
      parse(defaults.get("ConfigMap", `${full}-controller-address-pools`).data[key]),
      { addressPools: [] },
      "no pool by default",
    );
    t.not(
      controller.metadata.annotations["blixt.dev/address-pools-checksum"],
      defaults.get("Deployment", `${full}-controller`).spec.template.metadata.annotations[
        "blixt.dev/address-pools-checksum"
      ],
      "changing the pools rolls the controller",
    );
  });

  t.test("every label and annotation renders as a string, a checksum of digits too", async t => {
    // This pool's file hashes to 3004888582434106...: unquoted, YAML reads a number, and the
    // API server refuses the Deployment (an annotation value must be a string).
    const digits = await template(helm, {
      addressPools: [{ name: "pool-929", addresses: ["198.18.0.100-198.18.0.199"] }],
    });
    t.equal(
      digits.get("Deployment", `${full}-controller`).spec.template.metadata.annotations[
        "blixt.dev/address-pools-checksum"
      ],
      "3004888582434106",
      "the checksum is the string it was",
    );
    const bad: string[] = [];
    for (const o of [...digits.objects, ...defaults.objects]) {
      const metas = [o.metadata, (o.spec as any)?.template?.metadata].filter(Boolean);
      for (const meta of metas)
        for (const field of ["labels", "annotations"])
          for (const [key, value] of Object.entries(meta[field] ?? {}))
            if (typeof value !== "string")
              bad.push(`${o.kind} ${o.metadata.name} ${field}.${key}: ${String(value)}`);
    }
    t.same(bad, [], "no label or annotation value parses as anything but a string");
  });

  t.test(
    "the agent selector is the agent pods' labels, for the controller and the uninstall job",
    async t => {
      const labels = defaults.get("DaemonSet", `${full}-agent`).spec.template.metadata
        .labels as Record<string, string>;
      const controllerEnv = defaults.get("Deployment", `${full}-controller`).spec.template.spec
        .containers[0].env;
      const uninstallEnv = defaults.get("Job", `${full}-uninstall`).spec.template.spec.containers[0]
        .env;
      for (const env of [
        controllerEnv.find((e: any) => e.name === "BLIXT_AGENT_POD_SELECTOR"),
        uninstallEnv.find((e: any) => e.name === "AGENT_SELECTOR"),
      ]) {
        t.ok(env, "the selector is set");
        const terms = (env.value as string).split(",").map(term => term.split("="));
        t.ok(terms.length >= 2, env.value);
        for (const [key, value] of terms) t.equal(labels[key], value, `${env.name}: ${key}`);
      }
    },
  );

  t.test(
    "the webhook trusts the certificate the admission pods serve, at the path they accept",
    async t => {
      const webhook = defaults.get("ValidatingWebhookConfiguration", `${full}-admission`);
      const tls = defaults.get("Secret", `${full}-tls`);
      const cert = new X509Certificate(Buffer.from(tls.data["tls.crt"], "base64"));
      const apiPath = Buffer.from(
        defaults.get("Secret", `${full}-api-path`).data.value,
        "base64",
      ).toString();
      t.match(apiPath, /^[a-z0-9]{40}$/);
      const service = defaults.get("Service", `${full}-admission`);
      t.match(cert.subjectAltName, `DNS:${service.metadata.name}.${NAMESPACE}.svc`);
      for (const hook of webhook.webhooks) {
        const ca = new X509Certificate(Buffer.from(hook.clientConfig.caBundle, "base64"));
        t.ok(cert.verify(ca.publicKey), `${hook.name}: caBundle signs the serving certificate`);
        t.same(hook.clientConfig.service, {
          name: service.metadata.name,
          namespace: NAMESPACE,
          path: `/validate/${apiPath}`,
          port: 443,
        });
      }
      t.match(webhook.webhooks, [
        {
          failurePolicy: "Fail",
          rules: [{ apiGroups: ["blixt.dev"], resources: ["dataplaneconfigs"] }],
        },
        {
          failurePolicy: "Ignore",
          rules: [
            {
              apiGroups: ["gateway.networking.k8s.io"],
              resources: ["gateways", "tcproutes", "udproutes", "httproutes"],
            },
          ],
        },
      ]);
      const admission = defaults.get("Deployment", `${full}-admission`).spec.template;
      t.same(envOf(admission.spec.containers[0]).PEPR_API_PATH, {
        secretKeyRef: { name: `${full}-api-path`, key: "value" },
      });
      t.equal(
        admission.spec.volumes.find((v: any) => v.name === "tls").secret.secretName,
        tls.metadata.name,
      );
      t.equal(
        admission.metadata.annotations["blixt.dev/certificate-checksum"],
        tls.metadata.annotations["blixt.dev/certificate-checksum"],
        "the pods carry the certificate's checksum, so a renewed certificate restarts them",
      );
      t.equal(
        envOf(admission.spec.containers[0]).BLIXT_CONTROLLER_USERNAME,
        `system:serviceaccount:${NAMESPACE}:${full}-controller`,
        "only the controller's ServiceAccount may write DataplaneConfigs",
      );
      t.same(
        webhook.webhooks[0].matchConditions,
        [
          {
            name: "not-blixt-controller",
            expression: `request.userInfo.username != "system:serviceaccount:${NAMESPACE}:${full}-controller"`,
          },
        ],
        "the controller's own DataplaneConfig writes skip the webhook (it checks the rules itself)",
      );
      t.notOk(webhook.webhooks[1].matchConditions, "every Gateway API write is seen");
      t.match(
        defaults.get("Deployment", `${full}-controller`).spec.template.spec.tolerations,
        [
          { key: "node.kubernetes.io/unreachable", effect: "NoExecute", tolerationSeconds: 10 },
          { key: "node.kubernetes.io/not-ready", effect: "NoExecute", tolerationSeconds: 10 },
        ],
        "a controller on a failed node is replaced 10 s after the node is marked, not 300 s",
      );
      const again = await template(helm);
      t.not(
        again.get("Secret", `${full}-tls`).data["tls.crt"],
        tls.data["tls.crt"],
        "a render with no live Secret to reuse (install, helm template) issues a new certificate",
      );
      t.equal(
        tls.metadata.annotations["blixt.dev/certificate-checksum"],
        certificateChecksum(Buffer.from(tls.data["tls.crt"], "base64").toString()),
        "the chart's checksum is the one the controller computes when it renews",
      );
    },
  );

  t.test(
    "the controller renews the webhook certificate: its settings and exactly the rights it needs",
    async t => {
      const controller = defaults.get("Deployment", `${full}-controller`).spec.template.spec
        .containers[0];
      const env = envOf(controller);
      const tls = defaults.get("Secret", `${full}-tls`);
      const webhook = defaults.get("ValidatingWebhookConfiguration", `${full}-admission`);
      const admission = defaults.get("Deployment", `${full}-admission`);
      const service = defaults.get("Service", `${full}-admission`);
      t.match(env, {
        BLIXT_WEBHOOK_NAMESPACE: NAMESPACE,
        BLIXT_WEBHOOK_SECRET: tls.metadata.name,
        BLIXT_WEBHOOK_SERVICE: service.metadata.name,
        BLIXT_WEBHOOK_CONFIGURATION: webhook.metadata.name,
        BLIXT_WEBHOOK_DEPLOYMENT: admission.metadata.name,
        BLIXT_WEBHOOK_CERT_VALIDITY_DAYS: "365",
        BLIXT_WEBHOOK_CERT_RENEW_BEFORE_DAYS: "0",
        BLIXT_WEBHOOK_CERT_CHECK_SECONDS: "3600",
      });
      t.same(
        webhookCertificateSettings(env),
        {
          namespace: NAMESPACE,
          service: service.metadata.name,
          secret: tls.metadata.name,
          webhookConfiguration: webhook.metadata.name,
          deployment: admission.metadata.name,
          validityDays: 365,
          renewBeforeDays: 0,
          checkIntervalSeconds: 3600,
          metricsAddress: "0.0.0.0",
          metricsPort: 9090,
        },
        "the controller reads the chart's env as meant",
      );
      t.same(
        controller.ports.find((p: any) => p.name === "metrics"),
        { name: "metrics", containerPort: 9090 },
        "the controller's /metrics port",
      );
      const metricsOff = await template(helm, {
        controller: { metrics: { port: 0, bindAddress: "127.0.0.1" } },
      });
      const offContainer = metricsOff.get("Deployment", `${full}-controller`).spec.template.spec
        .containers[0];
      t.match(envOf(offContainer), {
        BLIXT_CONTROLLER_METRICS_PORT: "0",
        BLIXT_CONTROLLER_METRICS_ADDRESS: "127.0.0.1",
      });
      t.notOk(
        offContainer.ports.some((p: any) => p.name === "metrics"),
        "port 0: no metrics port",
      );
      const tuned = await template(helm, {
        admission: {
          certificate: { validityDays: 90, renewBeforeDays: 30, checkIntervalSeconds: 600 },
        },
      });
      t.match(
        envOf(tuned.get("Deployment", `${full}-controller`).spec.template.spec.containers[0]),
        {
          BLIXT_WEBHOOK_CERT_VALIDITY_DAYS: "90",
          BLIXT_WEBHOOK_CERT_RENEW_BEFORE_DAYS: "30",
          BLIXT_WEBHOOK_CERT_CHECK_SECONDS: "600",
        },
      );
      t.match(
        await templateError(helm, {
          admission: { certificate: { validityDays: 30, renewBeforeDays: 30 } },
        }),
        /admission.certificate.renewBeforeDays \(30\) must be less than admission.certificate.validityDays \(30\)/,
      );

      type NamedRule = Rule & { resourceNames?: string[] };
      const rulesFor = (role: K8sObject, group: string, resource: string) =>
        (role.rules as NamedRule[]).filter(
          r => r.apiGroups.includes(group) && r.resources.includes(resource),
        );
      const clusterRole = defaults.get("ClusterRole", `${full}-controller`);
      t.same(
        rulesFor(clusterRole, "admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        [
          {
            apiGroups: ["admissionregistration.k8s.io"],
            resources: ["validatingwebhookconfigurations"],
            resourceNames: [webhook.metadata.name],
            verbs: ["get", "patch"],
          },
        ],
        "get and patch blixt's webhook configuration, by name, nothing else",
      );
      const role = defaults.get("Role", `${full}-controller-webhook-certificate`);
      t.equal(role.metadata.namespace, NAMESPACE);
      t.same(
        role.rules,
        [
          {
            apiGroups: [""],
            resources: ["secrets"],
            resourceNames: [tls.metadata.name],
            verbs: ["get", "patch"],
          },
          {
            apiGroups: ["apps"],
            resources: ["deployments"],
            resourceNames: [admission.metadata.name],
            verbs: ["patch"],
          },
        ],
        "its one Secret and the admission Deployment, by name",
      );
      const binding = defaults.get("RoleBinding", `${full}-controller-webhook-certificate`);
      t.same(binding.subjects, [
        { kind: "ServiceAccount", name: `${full}-controller`, namespace: NAMESPACE },
      ]);
      t.same(binding.roleRef, {
        apiGroup: "rbac.authorization.k8s.io",
        kind: "Role",
        name: role.metadata.name,
      });
      for (const r of defaults.all("ClusterRole").concat(defaults.all("Role"))) {
        for (const rule of r.rules as NamedRule[]) {
          if (
            rule.apiGroups.includes("apps") ||
            rule.resources.includes("validatingwebhookconfigurations")
          ) {
            t.ok(
              rule.resourceNames?.length,
              `${r.kind}/${r.metadata.name}: ${rule.resources} only by name`,
            );
          }
        }
      }
    },
  );

  t.test("uninstall: a pre-delete Job with a privileged detach pod template", async t => {
    const job = defaults.get("Job", `${full}-uninstall`);
    t.equal(job.metadata.annotations["helm.sh/hook"], "pre-delete");
    t.same(
      job.spec.template.spec.containers[0].command,
      ["/usr/local/bin/blixt", "uninstall", "detach-all"],
      "the blixt command, not a script",
    );
    const detachPod = JSON.parse(
      defaults.get("ConfigMap", `${full}-uninstall`).data["detach-pod.json"],
    );
    t.same(detachPod.spec.containers[0].command, [
      "/usr/local/bin/blixt",
      "uninstall",
      "detach-node",
    ]);
    t.equal(
      envOf(detachPod.spec.containers[0]).BLIXT_PIN_DIR,
      "/sys/fs/bpf/blixt",
      "the agent's pin dir",
    );
    t.equal(detachPod.spec.containers[0].securityContext.privileged, true);
    t.ok(detachPod.spec.volumes.some((v: any) => v.hostPath?.path === "/sys/fs/bpf"));
    for (const kind of ["ServiceAccount", "Role", "RoleBinding", "ConfigMap"]) {
      const hookObject = defaults.get(kind, `${full}-uninstall`);
      t.ok(
        Number(hookObject.metadata.annotations["helm.sh/hook-weight"]) <
          Number(job.metadata.annotations["helm.sh/hook-weight"]),
        `${kind} exists before the Job`,
      );
    }
    const without = await template(helm, { uninstall: { detachDataplane: false } });
    t.same(without.all("Job"), [], "detachDataplane=false renders no hook");
  });

  t.test("variations", async t => {
    const renamed = await template(helm, {
      gatewayClass: { create: true, name: "l4" },
      image: { repository: "registry.example/blixt", tag: "v9", pullPolicy: "Always" },
    });
    t.equal(renamed.get("GatewayClass", "l4").spec.controllerName, "blixt.dev/gateway-controller");
    for (const o of [...renamed.all("Deployment"), ...renamed.all("DaemonSet")]) {
      t.equal(
        o.spec.template.spec.containers[0].image,
        "registry.example/blixt:v9",
        o.metadata.name,
      );
    }
    const noClass = await template(helm, { gatewayClass: { create: false } }, []);
    t.same(
      noClass.all("GatewayClass"),
      [],
      "gatewayClass.create=false renders without the Gateway API CRDs",
    );
    const inPepr = await execa(helm!, [
      "template",
      RELEASE,
      chartDir,
      "--namespace",
      "pepr-system",
      ...GATEWAY_API,
    ]);
    t.notMatch(
      inPepr.stdout,
      /kind: Namespace/,
      "installed into pepr-system, the chart makes no namespace",
    );
  });

  t.test("NOTES tell the user what to do next", async t => {
    const notes = async (...sets: string[]) => {
      // install --dry-run=client renders NOTES without a cluster; it cannot take --api-versions.
      const run = await execa(helm, [
        "install",
        RELEASE,
        chartDir,
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "--set",
        "gatewayClass.create=false",
        ...sets,
      ]);
      return run.stdout.slice(run.stdout.indexOf("NOTES:"));
    };
    const bare = await notes();
    t.match(bare, /standard-install\.yaml/, "how to install the Gateway API CRDs");
    t.match(bare, /no address pool is configured/, "warns that Gateways will get no address");
    t.match(bare, new RegExp(`rollout status daemonset/${full}-agent`));
    const withPools = await notes("--set-json", `addressPools=${JSON.stringify(POOLS)}`);
    t.notMatch(withPools, /no address pool/);
    t.match(withPools, /team-a: 198\.18\.101\.10-198\.18\.101\.20 \(namespaces: team-a\)/);
  });

  t.test("a cluster without the Gateway API CRDs gets told to install them", async t => {
    const message = await templateError(helm, {}, []);
    t.match(message, /Gateway API CRDs/);
    t.match(message, /standard-install\.yaml/);
  });

  t.test("the agent's relist interval reaches its env, and the schema bounds it", async t => {
    const agentEnv = (r: Rendered) =>
      envOf(r.get("DaemonSet", `${full}-agent`).spec.template.spec.containers[0]);
    t.equal(agentEnv(defaults).BLIXT_RELIST_SECONDS, "300", "default: every 5 minutes");
    t.equal(
      agentEnv(await template(helm, { agent: { relistSeconds: 0 } })).BLIXT_RELIST_SECONDS,
      "0",
      "0 turns it off",
    );
    t.match(
      await templateError(helm, { agent: { relistSeconds: -1 } }),
      /relistSeconds/,
      "a negative interval is refused, naming the value",
    );
  });

  t.test(
    "the map sizes reach the agent's env under the names it reads, and the schema bounds them",
    async t => {
      // The plain values (NODE_NAME and the like come from the downward API).
      const agentEnv = (r: Rendered) =>
        Object.fromEntries(
          Object.entries(
            envOf(r.get("DaemonSet", `${full}-agent`).spec.template.spec.containers[0]),
          ).filter(([, v]) => typeof v === "string"),
        ) as Record<string, string>;
      const env = agentEnv(defaults);
      t.same(
        agentSettings({ NODE_NAME: "n", ...env }).mapSizes,
        {
          services: 16384,
          backends: 65536,
          tableChunks: 32768,
          tableBackends: 131072,
          conntrack: 262144,
        },
        "the defaults, as the agent parses them (bpf/maps.h's sizes)",
      );
      for (const { name } of Object.values(MAP_SIZE_ENV)) t.ok(env[name], `${name} is set`);
      const small = agentEnv(await template(helm, { agent: { maps: { tableChunks: 100000 } } }));
      t.equal(
        agentSettings({ NODE_NAME: "n", ...small }).mapSizes.tableChunks,
        100000,
        "a value set reaches the agent",
      );
      t.match(
        await templateError(helm, { agent: { maps: { services: 20000 } } }),
        /services/,
        "more services than the service ids allow is refused, naming the value",
      );
    },
  );

  t.test("the node Lease's settings reach the agent's env, and the schema bounds them", async t => {
    const agentEnv = (r: Rendered) =>
      envOf(r.get("DaemonSet", `${full}-agent`).spec.template.spec.containers[0]);
    const env = agentEnv(defaults);
    t.equal(env.BLIXT_LEASE_DURATION_SECONDS, "2");
    t.equal(env.BLIXT_LEASE_RENEW_MILLISECONDS, "500");
    const set = agentEnv(
      await template(helm, {
        agent: { lease: { durationSeconds: 15, renewIntervalMilliseconds: 5000 } },
      }),
    );
    t.equal(set.BLIXT_LEASE_DURATION_SECONDS, "15");
    t.equal(set.BLIXT_LEASE_RENEW_MILLISECONDS, "5000");
    t.match(
      await templateError(helm, { agent: { lease: { durationSeconds: 0 } } }),
      /durationSeconds/,
      "a duration under 1 s is refused, naming the value",
    );
  });

  t.test(
    "the agent's conntrack timeouts reach its env, defaults Cilium's, and the schema bounds them",
    async t => {
      const agentEnv = (r: Rendered) =>
        envOf(r.get("DaemonSet", `${full}-agent`).spec.template.spec.containers[0]);
      const names = [
        "BLIXT_CT_TCP_NEW_TIMEOUT_SECONDS",
        "BLIXT_CT_TCP_ESTABLISHED_TIMEOUT_SECONDS",
        "BLIXT_CT_TCP_CLOSING_TIMEOUT_SECONDS",
        "BLIXT_CT_UDP_TIMEOUT_SECONDS",
      ];
      t.same(
        names.map(n => agentEnv(defaults)[n]),
        ["60", "21600", "10", "60"],
        "defaults",
      );
      const set = await template(helm, {
        agent: {
          conntrack: {
            tcpNewTimeoutSeconds: 30,
            tcpEstablishedTimeoutSeconds: 432000,
            tcpClosingTimeoutSeconds: 120,
            udpTimeoutSeconds: 4294967295,
          },
        },
      });
      t.same(
        names.map(n => agentEnv(set)[n]),
        ["30", "432000", "120", "4294967295"],
        "each value reaches its variable, a large one without an exponent",
      );
      t.match(
        await templateError(helm, { agent: { conntrack: { udpTimeoutSeconds: 0 } } }),
        /udpTimeoutSeconds/,
        "0 is refused, naming the value",
      );
      t.match(
        await templateError(helm, { agent: { conntrack: { tcpTimeoutSeconds: 5 } } }),
        /tcpTimeoutSeconds/,
        "a misspelt key is refused",
      );
    },
  );

  t.test("the schema rejects wrong values, naming the field", async t => {
    const cases: [string, Record<string, unknown>, RegExp][] = [
      [
        "a prefix longer than /32",
        { addressPools: [{ name: "p", addresses: ["198.18.0.0/33"] }] },
        /addressPools\/0\/addresses\/0/,
      ],
      [
        "an IPv6 pool (not yet)",
        { addressPools: [{ name: "p", addresses: ["2001:db8::/64"] }] },
        /addressPools\/0\/addresses\/0/,
      ],
      ["a pool without addresses", { addressPools: [{ name: "p" }] }, /addresses/],
      ["a misspelt top-level key", { adressPools: [] }, /adressPools/],
      ["an unknown log level", { logLevel: "loud" }, /logLevel/],
      ["a webhook timeout over 30 s", { admission: { timeoutSeconds: 31 } }, /timeoutSeconds/],
      ["a pin dir outside bpffs", { agent: { bpfPinDir: "/tmp/blixt" } }, /bpfPinDir/],
      ["an unknown attach mode", { agent: { attachMode: "fast" } }, /attachMode/],
      [
        "a negative renewBeforeDays",
        { admission: { certificate: { renewBeforeDays: -1 } } },
        /renewBeforeDays/,
      ],
      [
        "a check interval under 10 s",
        { admission: { certificate: { checkIntervalSeconds: 5 } } },
        /checkIntervalSeconds/,
      ],
      [
        "a misspelt certificate key",
        { admission: { certificate: { renewBefore: 30 } } },
        /renewBefore/,
      ],
      [
        "an agent metrics address that is no IP",
        { agent: { metricsBindAddress: "node-1" } },
        /metricsBindAddress/,
      ],
      [
        "a zero TLS handshake timeout",
        { agent: { tls: { handshakeTimeoutSeconds: 0 } } },
        /handshakeTimeoutSeconds/,
      ],
      [
        "a zero connection cap",
        { agent: { tls: { maxConnectionsPerListener: 0 } } },
        /maxConnectionsPerListener/,
      ],
      ["a misspelt agent TLS key", { agent: { tls: { idleTimeout: 60 } } }, /idleTimeout/],
      [
        "the controller's metrics on Pepr's port",
        { controller: { metrics: { port: 3000 } } },
        /controller\/metrics\/port/,
      ],
    ];
    for (const [what, values, field] of cases) {
      const message = await templateError(helm, values);
      t.match(message, /schema/i, `${what}: a schema error`);
      t.match(message, field, `${what}: names the field`);
    }
  });
}
