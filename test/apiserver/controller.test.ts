// SPDX-License-Identifier: Apache-2.0
// The controller's reconcile against a real kube-apiserver (v1.36.3) with the Gateway API
// v1.6.3 CRDs: what it writes must pass the API server's own validation, round-trip to the
// same status (so a second pass writes nothing), and release a deleted Gateway's table.
import t from "tap";
import { execa } from "execa";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { K8s, kind, type KubernetesObject } from "kubernetes-fluent-client";
import { routeAdmissionView, kubeAdmissionLookup } from "../../capabilities/gateway/admission";
import { routeWarnings } from "../../capabilities/gateway/admission-rules";
import { compile } from "../../capabilities/gateway/compile/index";
import { CONTROLLER_NAME } from "../../capabilities/gateway/compile/types";
import { kubeClusterClient } from "../../capabilities/gateway/kube";
import { KINDS } from "../../capabilities/gateway/kinds";
import { GATEWAY_FINALIZER } from "../../capabilities/gateway/plan";
import { Reconciler } from "../../capabilities/gateway/reconciler";
import { findBinaries, startApiServer } from "../lib/apiserver";

const binaries = findBinaries();
if ("missing" in binaries) {
  t.plan(0, binaries.missing);
} else {
  t.test("reconcile against a real API server", async t => {
    await startApiServer(t, binaries);
    const ns = "default";
    const { GatewayClass, Gateway, TCPRoute, DataplaneConfig } = {
      GatewayClass: KINDS.GatewayClass.model,
      Gateway: KINDS.Gateway.model,
      TCPRoute: KINDS.TCPRoute.model,
      DataplaneConfig: KINDS.DataplaneConfig.model,
    };

    await K8s(GatewayClass).Apply({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "GatewayClass",
      metadata: { name: "blixt" },
      spec: { controllerName: CONTROLLER_NAME },
    });
    await K8s(Gateway).Apply({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { namespace: ns, name: "l4" },
      spec: {
        gatewayClassName: "blixt",
        listeners: [
          {
            name: "tcp",
            port: 5432,
            protocol: "TCP",
            allowedRoutes: { kinds: [{ kind: "TCPRoute" }] },
          },
          {
            name: "udp",
            port: 53,
            protocol: "UDP",
            allowedRoutes: { kinds: [{ kind: "UDPRoute" }] },
          },
        ],
      },
    } as never);
    await K8s(kind.Service).Apply({
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: ns, name: "pg" },
      spec: { ports: [{ name: "pg", port: 5432, protocol: "TCP", targetPort: 5432 }] },
    });
    await K8s(kind.EndpointSlice).Apply({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { namespace: ns, name: "pg-1", labels: { "kubernetes.io/service-name": "pg" } },
      addressType: "IPv4",
      ports: [{ name: "pg", port: 5432, protocol: "TCP" }],
      endpoints: [
        { addresses: ["198.19.224.5"], conditions: { ready: true } },
        { addresses: ["198.19.224.6"], conditions: { ready: false } },
      ],
    });
    await K8s(kind.Node).Apply({ apiVersion: "v1", kind: "Node", metadata: { name: "node-1" } });
    await K8s(kind.Node).PatchStatus({
      metadata: { name: "node-1" },
      status: {
        conditions: [{ type: "Ready", status: "True", reason: "KubeletReady", message: "ready" }],
      },
    } as never);
    const route = {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "TCPRoute",
      metadata: { namespace: ns, name: "db" },
      spec: {
        parentRefs: [{ name: "l4", sectionName: "tcp" }],
        rules: [{ backendRefs: [{ name: "pg", port: 5432 }] }],
      },
    };
    await K8s(TCPRoute).Apply(route as never);

    // Passes run only when the test calls resync(): no timer-driven pass races the assertions.
    const log = {
      lines: [] as string[],
      info(m: string) {
        this.lines.push(m);
      },
      warn(m: string) {
        this.lines.push(m);
      },
      error(m: string) {
        this.lines.push(m);
      },
    };
    const settings = {
      addressPools: [{ name: "test", cidrs: ["198.18.100.0/24"] }],
      resyncSeconds: 3600,
      debounceMs: 600_000,
      maxBackoffSeconds: 1,
      writeConcurrency: 8,
      agentPodSelector: {
        "app.kubernetes.io/name": "blixt",
        "app.kubernetes.io/component": "agent",
      },
    };
    const reconciler = new Reconciler({
      client: kubeClusterClient(settings.agentPodSelector, CONTROLLER_NAME),
      compile,
      settings,
      controllerName: CONTROLLER_NAME,
      log,
    });
    t.teardown(() => reconciler.stop());

    const first = await reconciler.resync();
    t.same(
      first?.failed,
      [],
      `every write accepted by the API server (log: ${log.lines.join(" | ")})`,
    );

    const gatewayClass = (await K8s(GatewayClass).Get("blixt")) as KubernetesObject & {
      status: { conditions: { type: string; status: string }[] };
    };
    t.match(gatewayClass.status.conditions, [{ type: "Accepted", status: "True" }]);

    type Condition = { type: string; status: string; reason: string; observedGeneration?: number };
    const gateway = (await K8s(Gateway).InNamespace(ns).Get("l4")) as KubernetesObject & {
      status: {
        conditions: Condition[];
        addresses: { value: string }[];
        listeners: { name: string; attachedRoutes: number }[];
      };
    };
    t.ok(
      gateway.metadata?.finalizers?.includes(GATEWAY_FINALIZER),
      "the Gateway carries blixt's finalizer",
    );
    t.match(
      gateway.status.conditions.find(c => c.type === "Accepted"),
      { status: "True", observedGeneration: 1 },
    );
    t.same(gateway.status.listeners.map(l => [l.name, l.attachedRoutes]).sort(), [
      ["tcp", 1],
      ["udp", 0],
    ]);
    const address = gateway.status.addresses?.[0]?.value;
    t.match(address, /^198\.18\.100\.\d+$/);

    const tcpRoute = (await K8s(TCPRoute).InNamespace(ns).Get("db")) as KubernetesObject & {
      status: {
        parents: { controllerName: string; parentRef: { name: string }; conditions: Condition[] }[];
      };
    };
    t.equal(tcpRoute.status.parents.length, 1);
    t.equal(tcpRoute.status.parents[0].controllerName, CONTROLLER_NAME);
    t.match(tcpRoute.status.parents[0].conditions, [
      { type: "Accepted", status: "True" },
      { type: "ResolvedRefs", status: "True" },
    ]);

    const config = (await K8s(DataplaneConfig).InNamespace(ns).Get("l4")) as KubernetesObject & {
      spec: {
        address: string;
        listeners: {
          name: string;
          port: number;
          protocol: string;
          backends: { endpoints: { address: string; port: number }[] }[];
        }[];
      };
    };
    t.equal(
      config.spec.address,
      address,
      "the DataplaneConfig records the address the status publishes",
    );
    t.equal(
      config.metadata?.ownerReferences?.[0]?.uid,
      gateway.metadata?.uid,
      "owned by its Gateway",
    );
    const tcp = config.spec.listeners.find(l => l.name === "tcp")!;
    t.match(tcp, { port: 5432, protocol: "TCP" });
    t.same(
      tcp.backends.flatMap(b => b.endpoints),
      [{ address: "198.19.224.5", port: 5432 }],
      "only the ready endpoint",
    );

    // The Gateway's headless Service and its EndpointSlice, as the API server stored them.
    const service = await K8s(kind.Service).InNamespace(ns).Get("l4-blixt");
    t.match(service, {
      metadata: {
        labels: { "gateway.networking.k8s.io/gateway-name": "l4" },
        ownerReferences: [{ kind: "Gateway", uid: gateway.metadata?.uid, controller: true }],
      },
      spec: { clusterIP: "None" },
    });
    t.same(
      service.spec?.ports?.map(p => `${p.name} ${p.port}/${p.protocol}`),
      ["udp-53 53/UDP", "tcp-5432 5432/TCP"],
      "one port per listener",
    );
    const slice = await K8s(kind.EndpointSlice).InNamespace(ns).Get("l4-blixt");
    t.same(
      slice.endpoints?.map(e => e.addresses),
      [[address]],
      "its EndpointSlice holds the Gateway's address",
    );

    const second = await reconciler.resync();
    t.same(
      second?.writes,
      [],
      "what the API server stored reads back as what blixt wants: nothing to write",
    );

    // A restarted controller over the same cluster keeps the address and writes nothing.
    const restarted = new Reconciler({
      client: kubeClusterClient(settings.agentPodSelector, CONTROLLER_NAME),
      compile,
      settings,
      controllerName: CONTROLLER_NAME,
      log,
    });
    t.teardown(() => restarted.stop());
    t.same((await restarted.resync())?.writes, []);

    // A ready node agent appears: the address gets its announcing node, and Programmed turns
    // True only once that agent acknowledges the DataplaneConfig generation carrying it.
    const programmed = async () =>
      (
        (await K8s(Gateway).InNamespace(ns).Get("l4")) as unknown as {
          status: { conditions: Condition[] };
        }
      ).status.conditions.find(c => c.type === "Programmed");
    t.match(await programmed(), { status: "False", reason: "Pending" }, "no agent yet");
    await K8s(kind.ServiceAccount).Apply({
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: { namespace: ns, name: "default" },
    });
    await K8s(kind.Pod).Apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { namespace: ns, name: "blixt-agent-node-1", labels: settings.agentPodSelector },
      spec: { nodeName: "node-1", containers: [{ name: "agent", image: "blixt.dev/blixt:test" }] },
    });
    await K8s(kind.Pod).PatchStatus({
      metadata: { namespace: ns, name: "blixt-agent-node-1" },
      status: { phase: "Running", conditions: [{ type: "Ready", status: "True" }] },
    } as never);
    t.same((await restarted.resync())?.failed, []);
    t.match(
      await programmed(),
      { status: "False", reason: "Pending", message: /is being updated/ },
      "statuses were computed against the table before it was written",
    );
    t.same((await restarted.resync())?.failed, []);
    const announced = (await K8s(DataplaneConfig).InNamespace(ns).Get("l4")) as KubernetesObject & {
      spec: { announcingNode?: string };
    };
    t.equal(announced.spec.announcingNode, "node-1");
    t.match(
      await programmed(),
      { status: "False", reason: "Pending", message: /waiting for node agents/ },
      "written is not programmed",
    );

    await K8s(DataplaneConfig).PatchStatus({
      metadata: { namespace: ns, name: "l4" },
      status: {
        nodes: [{ name: "node-1", observedGeneration: announced.metadata?.generation, mode: "tc" }],
      },
    } as never);
    t.same((await restarted.resync())?.failed, []);
    t.match(
      await programmed(),
      { status: "True", reason: "Programmed" },
      "the agent applied it: traffic flows",
    );

    // A listener whose Secret stops being allowed (its ReferenceGrant is deleted) leaves the
    // Gateway with no listener that can carry traffic: the table must still be writable (an
    // empty listener list) and the status must say RefNotPermitted, not stay as it was.
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
    await K8s(kind.Namespace).Apply({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: "certs" },
    });
    await K8s(kind.Secret).Apply({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { namespace: "certs", name: "site" },
      type: "kubernetes.io/tls",
      data: { "tls.crt": crt.toString("base64"), "tls.key": key.toString("base64") },
    });
    const ReferenceGrant = KINDS.ReferenceGrant.model;
    await K8s(ReferenceGrant).Apply({
      apiVersion: "gateway.networking.k8s.io/v1beta1",
      kind: "ReferenceGrant",
      metadata: { namespace: "certs", name: "gateways" },
      spec: {
        from: [{ group: "gateway.networking.k8s.io", kind: "Gateway", namespace: ns }],
        to: [{ group: "", kind: "Secret" }],
      },
    } as never);
    await K8s(Gateway).Apply({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { namespace: ns, name: "tls" },
      spec: {
        gatewayClassName: "blixt",
        listeners: [
          {
            name: "https",
            port: 443,
            protocol: "HTTPS",
            tls: { certificateRefs: [{ kind: "Secret", name: "site", namespace: "certs" }] },
          },
        ],
      },
    } as never);
    const httpsListener = async () =>
      (
        (await K8s(Gateway).InNamespace(ns).Get("tls")) as unknown as {
          status: { listeners: { name: string; conditions: Condition[] }[] };
        }
      ).status.listeners[0];
    const tlsListeners = async () =>
      (
        (await K8s(DataplaneConfig).InNamespace(ns).Get("tls")) as unknown as {
          spec: { listeners?: { name: string }[] };
        }
      ).spec.listeners;
    t.same((await restarted.resync())?.failed, []);
    t.match(
      (await httpsListener()).conditions.find(c => c.type === "ResolvedRefs"),
      { status: "True" },
      "granted",
    );
    t.match(await tlsListeners(), [{ name: "https" }]);
    await K8s(ReferenceGrant).InNamespace("certs").Delete("gateways");
    const revoked = await restarted.resync();
    t.same(
      revoked?.failed,
      [],
      `the table without listeners is accepted (log: ${log.lines.slice(-3).join(" | ")})`,
    );
    t.same(revoked?.skipped, [], "and no status waits on it");
    t.match(
      (await httpsListener()).conditions.find(c => c.type === "ResolvedRefs"),
      { status: "False", reason: "RefNotPermitted" },
    );
    t.equal(await tlsListeners(), undefined, "no listener left in the table");
    t.same(
      (await restarted.resync())?.failed,
      [],
      "the statuses catch up with the table just written",
    );
    t.same((await restarted.resync())?.writes, [], "and that reads back as what blixt wants");
    await K8s(Gateway).InNamespace(ns).Delete("tls");
    await restarted.resync();
    await restarted.resync();

    // A ListenerSet the Gateway takes, and one whose Gateway takes none: their statuses, as the
    // CRD's validation stores them, read back as what blixt wants.
    const ListenerSet = KINDS.ListenerSet.model;
    await K8s(Gateway).Apply({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { namespace: ns, name: "sets" },
      spec: {
        gatewayClassName: "blixt",
        allowedListeners: { namespaces: { from: "Same" } },
        listeners: [{ name: "tcp", protocol: "TCP", port: 6000 }],
      },
    } as never);
    for (const [name, parent] of [
      ["taken", "sets"],
      ["refused", "l4"],
    ])
      await K8s(ListenerSet).Apply({
        apiVersion: "gateway.networking.k8s.io/v1",
        kind: "ListenerSet",
        metadata: { namespace: ns, name },
        spec: {
          parentRef: { name: parent },
          listeners: [{ name: "tcp", protocol: "TCP", port: 6001 }],
        },
      } as never);
    t.same((await restarted.resync())?.failed, []);
    await restarted.resync();
    type SetStatus = {
      status?: { conditions?: Condition[]; listeners?: { name: string; attachedRoutes: number }[] };
    };
    const taken = (await K8s(ListenerSet).InNamespace(ns).Get("taken")) as SetStatus;
    t.match(taken.status?.conditions, [
      { type: "Accepted", status: "True", reason: "Accepted" },
      { type: "Programmed" },
    ]);
    t.match(taken.status?.listeners, [{ name: "tcp", attachedRoutes: 0 }]);
    const refused = (await K8s(ListenerSet).InNamespace(ns).Get("refused")) as SetStatus;
    t.match(refused.status?.conditions, [
      { type: "Accepted", status: "False", reason: "NotAllowed" },
      { type: "Programmed", status: "False", reason: "NotAllowed" },
    ]);
    const sets = (await K8s(Gateway).InNamespace(ns).Get("sets")) as {
      status?: { attachedListenerSets?: number };
    };
    t.equal(sets.status?.attachedListenerSets, 1, "the Gateway counts the one it takes");
    t.same(
      (await restarted.resync())?.writes,
      [],
      "the ListenerSets' statuses read back as what blixt wants",
    );
    await K8s(ListenerSet).InNamespace(ns).Delete("taken");
    await K8s(ListenerSet).InNamespace(ns).Delete("refused");
    await K8s(Gateway).InNamespace(ns).Delete("sets");
    await restarted.resync();
    await restarted.resync();

    // Admission's lookups against the same server: a route to a missing Service.
    const dangling = {
      ...route,
      metadata: { namespace: ns, name: "dangling" },
      spec: { ...route.spec, rules: [{ backendRefs: [{ name: "nope", port: 1 }] }] },
    };
    t.same(
      routeWarnings(
        "TCPRoute",
        dangling,
        await routeAdmissionView("TCPRoute", dangling, kubeAdmissionLookup),
      ),
      [
        'TCPRoute default/dangling: ResolvedRefs will be False (BackendNotFound): backendRefs[0] "nope": Service "nope" not found in namespace "default"',
      ],
    );

    await K8s(Gateway).InNamespace(ns).Delete("l4");
    const deleting = await restarted.resync();
    t.same(
      deleting?.writes.map(w => w.op).filter(op => op !== "patchStatus"),
      ["deleteDataplaneConfig", "deleteGatewayService", "deleteGatewayEndpointSlice"],
      "first the table goes, and the Gateway's Service",
    );
    const released = await restarted.resync();
    t.same(
      released?.writes.map(w => w.op).filter(op => op !== "patchStatus"),
      ["removeFinalizer"],
      "then the Gateway is let go",
    );
    const gone = await K8s(Gateway)
      .InNamespace(ns)
      .Get("l4")
      .then(
        () => 200,
        (e: { status?: number }) => e.status,
      );
    t.equal(gone, 404, "and the API server deletes it");
  });
}
