// SPDX-License-Identifier: Apache-2.0
// What a hostile or broken object can do to the controller, against a real kube-apiserver
// (v1.36.3) with the Gateway API v1.6.3 CRDs: a certificateRefs name that walks out of the
// Secrets path, another controller's entries in a route's status, and a Gateway whose writes
// the API server always refuses (a ValidatingAdmissionPolicy). The subtests share one server,
// in this order, each in its own namespace.
import t from "tap";
import { execa } from "execa";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GenericKind, K8s, kind, type KubernetesObject } from "kubernetes-fluent-client";
import { compile } from "../../capabilities/gateway/compile/index";
import { CONTROLLER_NAME } from "../../capabilities/gateway/compile/types";
import type { ControllerSettings } from "../../capabilities/gateway/config";
import {
  kubeClusterClient,
  kubeRouteStatusIO,
  writeRouteParents,
  type RouteObject,
  type RouteParentStatus,
} from "../../capabilities/gateway/kube";
import { KINDS } from "../../capabilities/gateway/kinds";
import { Reconciler, type ReconcileResult } from "../../capabilities/gateway/reconciler";
import {
  findBinaries,
  readAuditLog,
  startApiServer,
  type ApiServer,
  type AuditEvent,
} from "../lib/apiserver";

const { GatewayClass, Gateway, TCPRoute, DataplaneConfig } = {
  GatewayClass: KINDS.GatewayClass.model,
  Gateway: KINDS.Gateway.model,
  TCPRoute: KINDS.TCPRoute.model,
  DataplaneConfig: KINDS.DataplaneConfig.model,
};
const OTHER_CONTROLLER = "example.com/other-gateway-controller";
const settings: ControllerSettings = {
  addressPools: [{ name: "test", cidrs: ["198.18.100.0/24"] }],
  resyncSeconds: 3600,
  // Passes run when a test calls them, unless a test says otherwise.
  debounceMs: 600_000,
  maxBackoffSeconds: 300,
  writeConcurrency: 8,
  agentPodSelector: { "app.kubernetes.io/name": "blixt", "app.kubernetes.io/component": "agent" },
};

type Condition = { type: string; status: string; reason: string; message?: string };

function recordingLog() {
  const lines: string[] = [];
  const push = (m: string) => void lines.push(m);
  return { lines, log: { info: push, warn: push, error: push } };
}

const gatewayObject = (
  namespace: string,
  name: string,
  gatewayClassName: string,
  listeners: unknown[],
) => ({
  apiVersion: "gateway.networking.k8s.io/v1",
  kind: "Gateway",
  metadata: { namespace, name },
  spec: { gatewayClassName, listeners },
});

async function until(
  what: string,
  check: () => Promise<boolean> | boolean,
  ms: number,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise(resolve => setTimeout(resolve, 20));
  }
}

/** The audit events of the requests made while `work` ran, between two marker requests. */
async function requestsDuring(
  server: ApiServer,
  work: () => Promise<unknown>,
): Promise<AuditEvent[]> {
  const marker = async (name: string) =>
    K8s(kind.ConfigMap)
      .InNamespace("default")
      .Get(name)
      .catch(() => undefined);
  await marker("audit-marker-start");
  await work();
  await marker("audit-marker-end");
  const events = await readAuditLog(server);
  const last = (suffix: string) => events.map(e => e.requestURI.endsWith(suffix)).lastIndexOf(true);
  const start = last("/configmaps/audit-marker-start");
  const end = last("/configmaps/audit-marker-end");
  return events.slice(start + 1, end);
}

const binaries = findBinaries();
if ("missing" in binaries) {
  t.plan(0, binaries.missing);
} else {
  t.test("controller hardening against a real API server", async t => {
    const server = await startApiServer(t, binaries, { audit: true });
    await K8s(GatewayClass).Apply({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "GatewayClass",
      metadata: { name: "blixt" },
      spec: { controllerName: CONTROLLER_NAME },
    });
    await K8s(GatewayClass).Apply({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "GatewayClass",
      metadata: { name: "other" },
      spec: { controllerName: OTHER_CONTROLLER },
    });
    await K8s(kind.Node).Apply({ apiVersion: "v1", kind: "Node", metadata: { name: "node-1" } });
    await K8s(kind.Node).PatchStatus({
      metadata: { name: "node-1" },
      status: {
        conditions: [{ type: "Ready", status: "True", reason: "KubeletReady", message: "ready" }],
      },
    } as never);
    const namespace = async (name: string) =>
      K8s(kind.Namespace).Apply({ apiVersion: "v1", kind: "Namespace", metadata: { name } });

    await t.test(
      "certificateRefs names that would leave the Secrets path are never requested, and the pass completes",
      async t => {
        const ns = "tls";
        await namespace(ns);
        const dir = await mkdtemp(join(tmpdir(), "blixt-apiserver-tls-"));
        t.teardown(() => rm(dir, { recursive: true, force: true }));
        await execa("openssl", [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-subj",
          "/CN=tls",
          "-days",
          "1",
          "-keyout",
          join(dir, "tls.key"),
          "-out",
          join(dir, "tls.crt"),
        ]);
        const [crt, key] = await Promise.all([
          readFile(join(dir, "tls.crt")),
          readFile(join(dir, "tls.key")),
        ]);
        await K8s(kind.Secret).Apply({
          apiVersion: "v1",
          kind: "Secret",
          metadata: { namespace: ns, name: "site" },
          type: "kubernetes.io/tls",
          data: { "tls.crt": crt.toString("base64"), "tls.key": key.toString("base64") },
        });

        // A GET of the first would list every ClusterRole; the second is a create-only
        // resource, whose 405 aborted every pass of the previous code.
        const clusterRoles = "../../../../../apis/rbac.authorization.k8s.io/v1/clusterroles";
        const tokenReviews = "../../../../../apis/authentication.k8s.io/v1/tokenreviews";
        const https = (name: string, port: number, secret: string) => ({
          name,
          port,
          protocol: "HTTPS",
          tls: { mode: "Terminate", certificateRefs: [{ kind: "Secret", name: secret }] },
        });
        await K8s(Gateway).Apply(
          gatewayObject(ns, "web", "blixt", [
            https("good", 443, "site"),
            https("roles", 8443, clusterRoles),
            https("reviews", 9443, tokenReviews),
          ]) as never,
        );
        await K8s(Gateway).Apply(
          gatewayObject(ns, "plain", "blixt", [
            { name: "tcp", port: 5432, protocol: "TCP" },
          ]) as never,
        );
        // Not blixt's: nothing of it is read, not even a valid-looking name.
        await K8s(Gateway).Apply(
          gatewayObject(ns, "theirs", "other", [
            https(
              "https",
              443,
              "../../../../../apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            ),
            https("https2", 8443, "their-cert"),
          ]) as never,
        );

        const { lines, log } = recordingLog();
        const reconciler = new Reconciler({
          client: kubeClusterClient(settings.agentPodSelector, CONTROLLER_NAME),
          compile,
          settings,
          controllerName: CONTROLLER_NAME,
          log,
        });
        t.teardown(() => reconciler.stop());
        let result: ReconcileResult | undefined;
        const requests = await requestsDuring(
          server,
          async () => (result = await reconciler.resync()),
        );

        const secretReads = requests.filter(e => e.objectRef?.resource === "secrets");
        t.same(
          secretReads.map(e => `${e.verb} ${e.requestURI}`),
          [`get /api/v1/namespaces/${ns}/secrets/site`],
          "the one valid Secret of blixt's Gateways is read, and nothing else of Secrets",
        );
        const strays = requests.filter(
          e =>
            /rbac\.authorization|authentication\.k8s\.io|\.\./.test(e.requestURI) ||
            ["clusterroles", "clusterrolebindings", "tokenreviews"].includes(
              e.objectRef?.resource ?? "",
            ),
        );
        t.same(
          strays.map(e => `${e.verb} ${e.requestURI}`),
          [],
          "no request leaves the Secrets path",
        );
        // Object reads only: a discovery GET such as /openapi/v3 (no objectRef) names no object.
        const gets = requests.filter(
          e => e.verb === "get" && e.objectRef !== undefined && e.objectRef.resource !== "secrets",
        );
        t.same(
          gets.map(e => e.requestURI),
          [],
          "and no other single object is read",
        );

        t.ok(
          result && result.writes.length > 0 && result.failed.length === 0,
          `the pass compiles and writes (log: ${lines.join(" | ")})`,
        );
        const plain = (await K8s(DataplaneConfig)
          .InNamespace(ns)
          .Get("plain")
          .catch(() => undefined)) as
          | (KubernetesObject & { spec: { address?: string } })
          | undefined;
        t.match(
          plain?.spec.address,
          /^198\.18\.100\.\d+$/,
          "the other Gateway got its table and address",
        );
        const listeners = (
          (await K8s(Gateway).InNamespace(ns).Get("web")) as unknown as {
            status: { listeners: { name: string; conditions: Condition[] }[] };
          }
        ).status.listeners;
        const resolved = (name: string) =>
          listeners.find(l => l.name === name)?.conditions.find(c => c.type === "ResolvedRefs");
        t.match(resolved("good"), { status: "True" }, "the listener with a valid Secret is served");
        t.match(
          resolved("roles"),
          { status: "False", reason: "InvalidCertificateRef" },
          "the traversal names are that listener's condition",
        );
        t.match(resolved("reviews"), { status: "False", reason: "InvalidCertificateRef" });
        t.ok(
          lines.some(
            l => l.includes("name is not a DNS-1123 subdomain") && l.includes("; not read"),
          ),
          "and the log says why they were not read",
        );
      },
    );

    await t.test(
      "another controller's entries in a route's status.parents survive blixt's writes",
      async t => {
        const ns = "routes";
        await namespace(ns);
        await K8s(Gateway).Apply(
          gatewayObject(ns, "l4", "blixt", [
            {
              name: "tcp",
              port: 5432,
              protocol: "TCP",
              allowedRoutes: { kinds: [{ kind: "TCPRoute" }] },
            },
          ]) as never,
        );
        await K8s(Gateway).Apply(
          gatewayObject(ns, "theirs", "other", [
            { name: "tcp", port: 5432, protocol: "TCP" },
          ]) as never,
        );
        const service = {
          apiVersion: "v1",
          kind: "Service",
          metadata: { namespace: ns, name: "pg" },
          spec: { ports: [{ name: "pg", port: 5432, protocol: "TCP", targetPort: 5432 }] },
        };
        await K8s(kind.Service).Apply(service as never);

        const { lines, log } = recordingLog();
        const reconciler = new Reconciler({
          client: kubeClusterClient(settings.agentPodSelector, CONTROLLER_NAME),
          compile,
          settings,
          controllerName: CONTROLLER_NAME,
          log,
        });
        t.teardown(() => reconciler.stop());
        t.same((await reconciler.resync())?.failed, []);

        // The other controller writes its entry as a controller of that kind would: read, add
        // its own entry to what it read, merge-patch. Blixt is not told (a watch lags).
        const foreignEntry = (status: string, message: string): RouteParentStatus => ({
          parentRef: {
            group: "gateway.networking.k8s.io",
            kind: "Gateway",
            namespace: ns,
            name: "theirs",
          },
          controllerName: OTHER_CONTROLLER,
          conditions: [
            {
              type: "Accepted",
              status,
              reason: status === "True" ? "Accepted" : "NotAllowedByListeners",
              message,
              lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
              observedGeneration: 1,
            },
          ],
        });
        const foreignWrite = async (entry: RouteParentStatus) => {
          const route = (await K8s(TCPRoute).InNamespace(ns).Get("db")) as unknown as RouteObject;
          const parents = [
            ...(route.status?.parents ?? []).filter(p => p.controllerName !== OTHER_CONTROLLER),
            entry,
          ];
          await K8s(TCPRoute).PatchStatus({
            metadata: { namespace: ns, name: "db" },
            status: { parents },
          } as never);
        };
        const parents = async () =>
          ((await K8s(TCPRoute).InNamespace(ns).Get("db")) as unknown as RouteObject).status
            ?.parents ?? [];
        const byController = async () =>
          Object.fromEntries((await parents()).map(p => [p.controllerName, p]));

        // Foreign first, then blixt (whose view of the route predates the foreign write).
        await K8s(TCPRoute).Apply({
          apiVersion: "gateway.networking.k8s.io/v1",
          kind: "TCPRoute",
          metadata: { namespace: ns, name: "db" },
          spec: {
            parentRefs: [{ name: "l4", sectionName: "tcp" }, { name: "theirs" }],
            rules: [{ backendRefs: [{ name: "pg", port: 5432 }] }],
          },
        } as never);
        reconciler.observe(
          "TCPRoute",
          (await K8s(TCPRoute).InNamespace(ns).Get("db")) as KubernetesObject,
        );
        await foreignWrite(foreignEntry("True", "first"));
        t.same((await reconciler.reconcile()).failed, [], lines.slice(-2).join(" | "));
        let entries = await byController();
        t.match(
          entries[CONTROLLER_NAME],
          {
            conditions: [
              { type: "Accepted", status: "True" },
              { type: "ResolvedRefs", status: "True" },
            ],
          },
          "blixt wrote its entry",
        );
        t.match(
          entries[OTHER_CONTROLLER],
          { conditions: [{ message: "first" }] },
          "foreign first, then blixt: the foreign entry survives",
        );

        // Blixt first (above), then the foreign controller changes its entry, then blixt writes
        // again (its Service is gone) from a view that has the foreign entry's older copy.
        await foreignWrite(foreignEntry("False", "second"));
        await K8s(kind.Service).InNamespace(ns).Delete("pg");
        reconciler.forget("Service", service as KubernetesObject);
        const again = await reconciler.reconcile();
        t.same(again.failed, []);
        t.ok(
          again.writes.some(w => w.op === "patchStatus" && w.kind === "TCPRoute"),
          "blixt had a route status to write",
        );
        entries = await byController();
        t.match(
          entries[CONTROLLER_NAME],
          {
            conditions: [
              { type: "Accepted" },
              { type: "ResolvedRefs", status: "False", reason: "BackendNotFound" },
            ],
          },
          "blixt's entry changed",
        );
        t.match(
          entries[OTHER_CONTROLLER],
          { conditions: [{ status: "False", message: "second" }] },
          "blixt first, then foreign, then blixt: the foreign entry is as its controller left it",
        );
        t.equal((await parents()).length, 2);

        // The foreign controller writes between blixt's read and its write: the API server
        // refuses blixt's stale write (409), blixt reads again, and both entries stand.
        const ours = entries[CONTROLLER_NAME] as RouteParentStatus;
        const changed: RouteParentStatus = {
          ...ours,
          conditions: (ours.conditions as Condition[]).map(c =>
            c.type === "ResolvedRefs" ? { ...c, message: "changed by this test" } : c,
          ),
        };
        let reads = 0;
        const replies: number[] = [];
        const written = await writeRouteParents(
          { kind: "TCPRoute", namespace: ns, name: "db" },
          [changed],
          CONTROLLER_NAME,
          {
            async read(...args) {
              const route = await kubeRouteStatusIO.read(...args);
              if (++reads === 1) await foreignWrite(foreignEntry("True", "third"));
              return route;
            },
            async replaceStatus(...args) {
              try {
                const route = await kubeRouteStatusIO.replaceStatus(...args);
                replies.push(200);
                return route;
              } catch (error) {
                replies.push((error as { status: number }).status);
                throw error;
              }
            },
          },
        );
        t.same(replies, [409, 200], "the stale write was refused, the fresh one made");
        t.equal(reads, 2);
        entries = await byController();
        t.match(
          entries[OTHER_CONTROLLER],
          { conditions: [{ status: "True", message: "third" }] },
          "the concurrent foreign write is not lost",
        );
        t.match(
          entries[CONTROLLER_NAME],
          { conditions: [{}, { message: "changed by this test" }] },
          "and blixt's write is made",
        );
        t.same(written.status?.parents, await parents());
      },
    );

    await t.test(
      "a Gateway whose writes the API server always refuses does not slow another Gateway's change",
      async t => {
        const ns = "backoff";
        await namespace(ns);
        // The API server refuses every write of the DataplaneConfig "broken", as a policy of a
        // cluster's administrators could.
        const policy = {
          group: "admissionregistration.k8s.io",
          version: "v1",
          kind: "ValidatingAdmissionPolicy",
          plural: "validatingadmissionpolicies",
        };
        const binding = {
          ...policy,
          kind: "ValidatingAdmissionPolicyBinding",
          plural: "validatingadmissionpolicybindings",
        };
        await K8s(GenericKind, { kindOverride: policy }).Apply({
          apiVersion: "admissionregistration.k8s.io/v1",
          kind: "ValidatingAdmissionPolicy",
          metadata: { name: "refuse-broken" },
          spec: {
            failurePolicy: "Fail",
            matchConstraints: {
              resourceRules: [
                {
                  apiGroups: ["blixt.dev"],
                  apiVersions: ["*"],
                  operations: ["CREATE", "UPDATE"],
                  resources: ["dataplaneconfigs"],
                },
              ],
            },
            validations: [
              {
                expression: "object.metadata.name != 'broken'",
                message: "this test refuses the DataplaneConfig named broken",
              },
            ],
          },
        } as never);
        await K8s(GenericKind, { kindOverride: binding }).Apply({
          apiVersion: "admissionregistration.k8s.io/v1",
          kind: "ValidatingAdmissionPolicyBinding",
          metadata: { name: "refuse-broken" },
          spec: { policyName: "refuse-broken", validationActions: ["Deny"] },
        } as never);
        const probe = {
          apiVersion: "blixt.dev/v1alpha1",
          kind: "DataplaneConfig",
          metadata: { namespace: "default", name: "broken" },
          spec: { gatewayName: "probe", gatewayGeneration: 1 },
        };
        await until(
          "the admission policy to refuse",
          async () => {
            const refused = await K8s(DataplaneConfig)
              .Apply(probe as never)
              .then(
                () => false,
                (e: { status?: number }) => e.status === 422 || e.status === 403,
              );
            if (!refused) await K8s(DataplaneConfig).InNamespace("default").Delete("broken");
            return refused;
          },
          30_000,
        );

        const { lines, log } = recordingLog();
        // On its own timers now, with the chart's default debounce.
        const reconciler = new Reconciler({
          client: kubeClusterClient(settings.agentPodSelector, CONTROLLER_NAME),
          compile,
          settings: { ...settings, debounceMs: 250 },
          controllerName: CONTROLLER_NAME,
          log,
        });
        t.teardown(() => reconciler.stop());
        const tcp = (port: number) => ({ name: `tcp-${port}`, port, protocol: "TCP" });
        await K8s(Gateway).Apply(gatewayObject(ns, "fine", "blixt", [tcp(80)]) as never);
        reconciler.start();
        const tableListeners = async () =>
          (
            (await K8s(DataplaneConfig)
              .InNamespace(ns)
              .Get("fine")
              .catch(() => undefined)) as { spec: { listeners?: unknown[] } } | undefined
          )?.spec.listeners?.length ?? 0;
        await until("the first table of fine", async () => (await tableListeners()) === 1, 30_000);

        /** Adds a listener to "fine" and tells the reconciler, as the watch would; ms until its table has it. */
        const change = async (listeners: number) => {
          const updated = (await K8s(Gateway).Apply(
            gatewayObject(
              ns,
              "fine",
              "blixt",
              Array.from({ length: listeners }, (_, i) => tcp(80 + i)),
            ) as never,
          )) as KubernetesObject;
          const started = Date.now();
          reconciler.observe("Gateway", updated);
          await until(
            `fine's table with ${listeners} listeners`,
            async () => (await tableListeners()) === listeners,
            30_000,
          );
          return Date.now() - started;
        };
        const alone = await change(2);

        const failures = () =>
          lines.filter(l =>
            l.startsWith(`applyDataplaneConfig DataplaneConfig ${ns}/broken failed`),
          ).length;
        reconciler.observe(
          "Gateway",
          (await K8s(Gateway).Apply(
            gatewayObject(ns, "broken", "blixt", [tcp(80)]) as never,
          )) as KubernetesObject,
        );
        // Three failures in a row (at 0, 1 and 3 s): a shared backoff would now wait 4 s.
        await until("three refused writes of broken", () => failures() >= 3, 30_000);
        const beside = await change(3);

        t.ok(alone < 1500, `fine's change programmed in ${alone} ms with no broken Gateway`);
        t.ok(
          beside < 1500,
          `and in ${beside} ms beside a Gateway refused three times (the previous code waited out the shared backoff)`,
        );
        t.match(
          lines.find(l => l.startsWith(`applyDataplaneConfig DataplaneConfig ${ns}/broken failed`)),
          /this test refuses the DataplaneConfig named broken; retrying it in 1 s$/,
        );
        t.equal(failures(), 3, "broken was not retried before its time");
        const brokenStatus = (await K8s(Gateway).InNamespace(ns).Get("broken")) as unknown as {
          status?: { addresses?: unknown[] };
        };
        t.same(
          brokenStatus.status?.addresses ?? [],
          [],
          "no status publishes an address broken's table does not record",
        );
      },
    );
  });
}
