// SPDX-License-Identifier: Apache-2.0
// The reconcile loop: debounce, ordering, failure handling and restart stability, with the real
// compile step. The cluster here is an in-memory ClusterClient (test/lib/memory-cluster.ts);
// test/apiserver runs the same loop against a real kube-apiserver.
import t, { type Test } from "tap";
import type { KubernetesObject } from "kubernetes-fluent-client";
import { compile } from "../../capabilities/gateway/compile/index";
import type { CompileOutput, Snapshot } from "../../capabilities/gateway/compile/types";
import type { ControllerSettings } from "../../capabilities/gateway/config";
import { describeWrite, GATEWAY_FINALIZER, type Write } from "../../capabilities/gateway/plan";
import { Reconciler } from "../../capabilities/gateway/reconciler";
import { MemoryCluster } from "../lib/memory-cluster";

const ME = "blixt.dev/gateway-controller";

const settings: ControllerSettings = {
  addressPools: [{ name: "test", cidrs: ["198.18.100.0/29"] }],
  resyncSeconds: 3600,
  debounceMs: 5,
  maxBackoffSeconds: 0.02,
  writeConcurrency: 8,
  agentPodSelector: {},
};

const quietLog = () => {
  const lines: string[] = [];
  return {
    lines,
    log: {
      info: (m: string) => lines.push(m),
      warn: (m: string) => lines.push(m),
      error: (m: string) => lines.push(m),
    },
  };
};

function seed(cluster: MemoryCluster, gatewayNames: string[]): void {
  cluster.add("GatewayClass", {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "GatewayClass",
    metadata: { name: "blixt", generation: 1, uid: "gc" },
    spec: { controllerName: ME },
  } as KubernetesObject);
  cluster.add("Namespace", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: "default", labels: { "kubernetes.io/metadata.name": "default" } },
  });
  cluster.add("Node", {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: "node-1" },
    status: { conditions: [{ type: "Ready", status: "True" }] },
  } as KubernetesObject);
  gatewayNames.forEach((name, i) =>
    cluster.add("Gateway", {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: {
        namespace: "default",
        name,
        generation: 1,
        uid: `uid-${name}`,
        creationTimestamp: `2026-11-27T10:00:0${i}Z`,
      },
      spec: { gatewayClassName: "blixt", listeners: [{ name: "tcp", port: 80, protocol: "TCP" }] },
    } as unknown as KubernetesObject),
  );
}

/** A compile that counts its calls and can be awaited. */
function countingCompile() {
  const calls: Snapshot[] = [];
  let wake: () => void = () => {};
  return {
    calls,
    next: () => new Promise<void>(resolve => (wake = resolve)),
    compile: (snapshot: Snapshot): CompileOutput => {
      calls.push(snapshot);
      const out = compile(snapshot);
      queueMicrotask(wake);
      return out;
    },
  };
}

/** A reconciler over `cluster` that compiled after its first relist, and asks for no more. */
async function settledReconciler(
  t: Test,
  cluster: MemoryCluster,
  counting: ReturnType<typeof countingCompile>,
): Promise<Reconciler> {
  const reconciler = new Reconciler({
    client: cluster,
    compile: counting.compile,
    settings,
    controllerName: ME,
    log: quietLog().log,
  });
  t.teardown(() => reconciler.stop());
  await reconciler.resync();
  // The first pass's own writes may ask for another pass: wait until none is asked for.
  for (let seen = -1; seen !== counting.calls.length; ) {
    seen = counting.calls.length;
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  return reconciler;
}

t.test(
  "nothing compiles before the first relist; the relist compiles once and writes in order",
  async t => {
    const cluster = new MemoryCluster();
    seed(cluster, ["gw"]);
    const counting = countingCompile();
    const reconciler = new Reconciler({
      client: cluster,
      compile: counting.compile,
      settings,
      controllerName: ME,
      log: quietLog().log,
    });
    t.teardown(() => reconciler.stop());

    reconciler.observe("Gateway", cluster.find("Gateway", "default", "gw")!);
    await new Promise(resolve => setTimeout(resolve, 30));
    t.equal(counting.calls.length, 0, "a half-seen cluster drives no writes");

    const result = await reconciler.resync();
    t.equal(counting.calls.length, 1);
    t.same(result!.failed, []);
    t.same(
      cluster.executed.map(w => describeWrite(w).replace(/ default\//, " ")),
      [
        "addFinalizer Gateway gw",
        "applyDataplaneConfig DataplaneConfig gw",
        "applyGatewayService Service gw-blixt",
        "applyGatewayEndpointSlice EndpointSlice gw-blixt",
        "patchStatus GatewayClass blixt",
        "patchStatus Gateway gw",
      ],
    );
    const config = cluster.find("DataplaneConfig", "default", "gw")!;
    const address = (config.spec as { address?: string }).address;
    t.match(address, /^198\.18\.100\.[1-6]$/, "an address of the pool");
    const gateway = cluster.find("Gateway", "default", "gw")!;
    t.same(
      (gateway.status as { addresses?: unknown }).addresses,
      [{ type: "IPAddress", value: address }],
      "the status publishes the recorded address",
    );

    const again = await reconciler.reconcile();
    t.same(again.writes, [], "a second pass over the same cluster writes nothing");
  },
);

/** A TCPRoute on Gateway "gw" whose backendRefs name these Services. */
const routeTo = (name: string, services: string[]) =>
  ({
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "TCPRoute",
    metadata: { namespace: "default", name, generation: 1, uid: `uid-${name}` },
    spec: {
      parentRefs: [{ name: "gw" }],
      rules: [{ backendRefs: services.map(s => ({ name: s, port: 80 })) }],
    },
  }) as unknown as KubernetesObject;

t.test("a burst of watch events is coalesced into one compile", async t => {
  const cluster = new MemoryCluster();
  seed(cluster, ["gw"]);
  cluster.add(
    "TCPRoute",
    routeTo(
      "r",
      Array.from({ length: 20 }, (_, i) => `svc-${i}`),
    ),
  );
  const counting = countingCompile();
  const reconciler = new Reconciler({
    client: cluster,
    compile: counting.compile,
    settings,
    controllerName: ME,
    log: quietLog().log,
  });
  t.teardown(() => reconciler.stop());
  await reconciler.resync();
  const before = counting.calls.length;

  const compiled = counting.next();
  for (let i = 0; i < 20; i++) {
    reconciler.observe("Service", {
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: "default", name: `svc-${i}` },
    });
  }
  await compiled;
  await new Promise(resolve => setTimeout(resolve, 30));
  t.equal(counting.calls.length, before + 1);
  t.equal(
    counting.calls.at(-1)!.services.filter(s => s.metadata?.name?.startsWith("svc-")).length,
    20,
    "the one compile sees every event of the burst",
  );
});

/**
 * A reconciler over `cluster` whose every write takes `writeMs`, like an API server under load,
 * with the start of every compile and the end of every pass that wrote (its log line) timed.
 */
function timedReconciler(
  t: Test,
  cluster: MemoryCluster,
  writeMs: number,
  overrides: Partial<ControllerSettings>,
) {
  const compiles: number[] = [];
  /** the pass's start and end, for passes that wrote (they log) */
  const passes: { start: number; end: number }[] = [];
  const ends: number[] = [];
  const client = Object.create(cluster) as MemoryCluster;
  client.execute = async write => {
    await new Promise(resolve => setTimeout(resolve, writeMs));
    return cluster.execute(write);
  };
  const reconciler = new Reconciler({
    client,
    compile: snapshot => {
      compiles.push(performance.now());
      return compile(snapshot);
    },
    settings: { ...settings, ...overrides },
    controllerName: ME,
    log: {
      info: (m: string) => {
        if (!m.startsWith("reconciled:")) return;
        const end = performance.now();
        ends.push(end);
        passes.push({ start: compiles.at(-1)!, end });
      },
      warn: () => {},
      error: () => {},
    },
  });
  t.teardown(() => reconciler.stop());
  /** until no pass has started for `ms` */
  const idle = async (ms: number) => {
    for (let seen = -1; seen !== compiles.length; ) {
      seen = compiles.length;
      await sleep(ms);
    }
  };
  return { reconciler, compiles, ends, passes, idle };
}

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

/**
 * Routes applied as a `kubectl apply` would: `perTick` new TCPRoutes every `everyMs`, each
 * created in the cluster and its watch event given to the reconciler, until stopped.
 */
function applyRoutes(
  cluster: MemoryCluster,
  reconciler: Reconciler,
  everyMs: number,
  perTick = 1,
): { stop(): void; lastAt(): number } {
  let i = 0;
  let last = 0;
  const timer = setInterval(() => {
    for (let k = 0; k < perTick; k++, i++) {
      cluster.add("TCPRoute", routeTo(`r${i}`, ["backend"]));
      reconciler.observe("TCPRoute", routeTo(`r${i}`, ["backend"]));
    }
    last = performance.now();
  }, everyMs);
  return { stop: () => clearInterval(timer), lastAt: () => last };
}

t.test(
  "while watch events keep arriving, passes pause twice as long as the last one took; once quiet, the debounce window again",
  async t => {
    const cluster = new MemoryCluster();
    seed(cluster, ["gw"]);
    const { reconciler, compiles, passes, idle } = timedReconciler(t, cluster, 30, {
      debounceMs: 5,
      maxDebounceMs: 400,
    });
    await reconciler.resync();
    await sleep(300);
    // A kubectl apply of routes: one every 5 ms for 1.5 s, each a status write (30 ms) and a
    // change of the Gateway's attached routes.
    const burstStart = performance.now();
    // Two at a time, so that a slow timer on a busy machine still brings ten or more a pass.
    const routes = applyRoutes(cluster, reconciler, 5, 2);
    t.teardown(routes.stop);
    await sleep(1500);
    routes.stop();
    const burstEnd = performance.now();
    const statused = () =>
      cluster.objects
        .get("TCPRoute")!
        .every(r => (r as { status?: { parents?: unknown[] } }).status?.parents?.length);
    for (const deadline = Date.now() + 15_000; !statused() && Date.now() < deadline; )
      await sleep(20);
    t.ok(statused(), "every route has its status once the burst is over");
    await idle(600);
    const during = passes.filter(p => p.start >= burstStart && p.end < burstEnd);
    t.ok(during.length >= 3, `${during.length} passes during the burst`);
    // From the second pass on, each saw events arrive while it ran, as did the one before it.
    const pauses = during.slice(1, -1).map((p, i) => ({
      took: p.end - p.start,
      paused: during[i + 2].start - p.end,
    }));
    t.ok(pauses.length >= 1, "some pauses measured");
    for (const { took, paused } of pauses) {
      t.ok(
        paused >= Math.min(400, 2 * took) - 15 && paused <= 400 + 100,
        `paused ${paused.toFixed(0)} ms after a pass of ${took.toFixed(0)} ms (twice that, at most 400)`,
      );
    }

    // Quiet now: one change compiles after the debounce window, not a burst's pause.
    const before = compiles.length;
    const changed = performance.now();
    cluster.add("TCPRoute", routeTo("late", ["backend"]));
    reconciler.observe("TCPRoute", routeTo("late", ["backend"]));
    await sleep(150);
    t.ok(compiles.length > before, "a change in a quiet cluster compiles at once");
    t.ok(
      compiles[before] - changed < 100,
      `compiled ${(compiles[before] - changed).toFixed(0)} ms after`,
    );
  },
);

t.test("what moves traffic does not wait out a burst's pause", async t => {
  const triggers: [string, ((r: Reconciler) => void) | undefined][] = [
    ["nothing", undefined],
    ["agent liveness (schedule())", r => r.schedule()],
    [
      "an EndpointSlice change",
      r =>
        r.observe("EndpointSlice", {
          apiVersion: "discovery.k8s.io/v1",
          kind: "EndpointSlice",
          metadata: {
            namespace: "default",
            name: "backend-abcde",
            labels: { "kubernetes.io/service-name": "backend" },
          },
          endpoints: [{ addresses: ["198.18.5.1"] }],
        } as KubernetesObject),
    ],
  ];
  for (const [what, trigger] of triggers) {
    const cluster = new MemoryCluster();
    seed(cluster, ["gw"]);
    // A 100 ms window: a pause ends after 400 quiet ms, a change that moves traffic waits 100.
    const { reconciler, compiles, ends } = timedReconciler(t, cluster, 50, {
      debounceMs: 100,
      maxDebounceMs: 5000,
    });
    await reconciler.resync();
    await sleep(300);
    // Routes applied during every pass, until three passes in a row have seen them: the next
    // pass then waits twice the last one, some 300 ms or more.
    // One every 5 ms: fewer than the writes (8 at a time, 50 ms each) can take, so no pass is
    // left writing a backlog after the test.
    const routes = applyRoutes(cluster, reconciler, 5);
    t.teardown(routes.stop);
    const start = ends.length;
    while (ends.length < start + 3) await sleep(5);
    routes.stop();
    const ended = ends.at(-1)!;
    const compiledBefore = compiles.length;
    trigger?.(reconciler);
    await sleep(250);
    const after = ((compiles[compiledBefore] ?? Infinity) - ended).toFixed(0);
    if (trigger)
      t.ok(compiles.length > compiledBefore, `${what}: compiled ${after} ms after the pass`);
    else t.equal(compiles.length, compiledBefore, `${what}: no compile within 250 ms`);
    reconciler.stop();
  }
});

t.test("once configuration stops changing, a burst's pause ends after a quiet spell", async t => {
  const cluster = new MemoryCluster();
  seed(cluster, ["gw"]);
  const { reconciler, compiles, passes } = timedReconciler(t, cluster, 120, {
    debounceMs: 5,
    maxDebounceMs: 5000,
  });
  await reconciler.resync();
  await sleep(300);
  const routes = applyRoutes(cluster, reconciler, 20);
  t.teardown(routes.stop);
  const start = passes.length;
  while (passes.length < start + 3) await sleep(5);
  // The burst's last routes arrive while a pass runs: that pass ends busy, and the one after
  // it would wait twice its time.
  const compiled = compiles.length;
  while (compiles.length === compiled) await sleep(1);
  const running = passes.length;
  await sleep(300); // some 15 routes: a burst's ten or more
  routes.stop();
  const stopped = routes.lastAt();
  while (passes.length === running) await sleep(5);
  const last = passes.at(-1)!;
  t.ok(stopped < last.end, "the last routes came while the pass ran");
  const compiledBefore = compiles.length;
  for (const deadline = performance.now() + 5000; compiles.length === compiledBefore; ) {
    if (performance.now() > deadline) break;
    await sleep(5);
  }
  t.ok(compiles.length > compiledBefore, "the routes applied last are compiled");
  const waited = compiles[compiledBefore] - last.end;
  const pause = 2 * (last.end - last.start);
  t.ok(pause >= 500, `the pause would have been ${pause.toFixed(0)} ms`);
  t.ok(
    waited >= 200 && waited < pause - 150,
    `the next pass came ${waited.toFixed(0)} ms after all was quiet`,
  );
});

t.test("Services and EndpointSlices no route names compile nothing", async t => {
  const cluster = new MemoryCluster();
  seed(cluster, ["gw"]);
  cluster.add("TCPRoute", routeTo("r", ["backend"]));
  const counting = countingCompile();
  const reconciler = await settledReconciler(t, cluster, counting);
  const settle = () => new Promise(resolve => setTimeout(resolve, 30));
  const slice = (service: string, namespace = "default") => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      namespace,
      name: `${service}-abcde`,
      labels: { "kubernetes.io/service-name": service },
    },
    addressType: "IPv4",
    endpoints: [{ addresses: ["198.18.5.1"] }],
  });
  const service = (name: string) => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { namespace: "default", name },
  });
  const before = counting.calls.length;
  for (let i = 0; i < 50; i++) reconciler.observe("EndpointSlice", slice(`other-${i}`));
  reconciler.observe("Service", service("other-0"));
  reconciler.forget("EndpointSlice", slice("other-1"));
  reconciler.observe("EndpointSlice", slice("backend", "elsewhere"));
  await settle();
  t.equal(counting.calls.length, before, "no compile for Services no route names");
  t.equal(
    reconciler.store
      .list<KubernetesObject>("EndpointSlice")
      .filter(s => s.metadata?.name?.startsWith("other-")).length,
    49,
    "though the store keeps them (a route may name one later)",
  );

  let compiled = counting.next();
  reconciler.observe("EndpointSlice", slice("backend"));
  await compiled;
  t.equal(counting.calls.length, before + 1, "a named Service's EndpointSlice compiles");

  compiled = counting.next();
  reconciler.observe("TCPRoute", routeTo("r2", ["other-7"]));
  await compiled;
  await settle();
  const afterRoute = counting.calls.length;
  compiled = counting.next();
  reconciler.observe("EndpointSlice", slice("other-7"));
  await compiled;
  t.equal(
    counting.calls.length,
    afterRoute + 1,
    "once a route names a Service, its EndpointSlice compiles",
  );
});

t.test("an object at the version the store holds (a write's echo) compiles nothing", async t => {
  const cluster = new MemoryCluster();
  seed(cluster, ["gw"]);
  const counting = countingCompile();
  const reconciler = await settledReconciler(t, cluster, counting);
  const at = (resourceVersion: string) => {
    const gateway = structuredClone(cluster.find("Gateway", "default", "gw")!);
    gateway.metadata = { ...gateway.metadata, resourceVersion };
    return gateway;
  };
  let compiled = counting.next();
  const before = counting.calls.length;
  reconciler.observe("Gateway", at("7"));
  await compiled;
  t.equal(counting.calls.length, before + 1, "a new version compiles");
  reconciler.observe("Gateway", at("7"));
  await new Promise(resolve => setTimeout(resolve, 100));
  t.equal(counting.calls.length, before + 1, "the same version again does not");
  compiled = counting.next();
  reconciler.observe("Gateway", at("8"));
  await compiled;
  t.equal(counting.calls.length, before + 2, "the next version does");
});

t.test(
  "a failed write is logged by name, holds back its own Gateway's status and is retried",
  async t => {
    const cluster = new MemoryCluster();
    seed(cluster, ["gw", "other"]);
    const { lines, log } = quietLog();
    const counting = countingCompile();
    const reconciler = new Reconciler({
      client: cluster,
      compile: counting.compile,
      settings,
      controllerName: ME,
      log,
    });
    t.teardown(() => reconciler.stop());

    cluster.failNext = write => write.op === "applyDataplaneConfig" && write.name === "gw";
    const retried = counting.next().then(() => counting.next());
    const first = await reconciler.resync();
    t.same(
      first!.failed.map(f => describeWrite(f.write)),
      ["applyDataplaneConfig DataplaneConfig default/gw"],
    );
    t.same(
      first!.skipped.map(describeWrite),
      ["patchStatus Gateway default/gw"],
      "no status publishes an address that is not recorded",
    );
    t.ok(
      (cluster.find("Gateway", "default", "other")!.status as { addresses?: unknown }).addresses,
      "another Gateway's status is not held back",
    );
    t.ok(
      lines.some(
        l =>
          l ===
          "applyDataplaneConfig DataplaneConfig default/gw failed: 409 Conflict: the object has been modified; retrying it in 20 ms",
      ),
    );

    await retried;
    await new Promise(resolve => setTimeout(resolve, 30));
    t.ok(cluster.find("DataplaneConfig", "default", "gw"), "the retry wrote the DataplaneConfig");
    t.ok(
      (cluster.find("Gateway", "default", "gw")!.status as { addresses?: unknown }).addresses,
      "and then the status",
    );
  },
);

t.test(
  "a write to an object deleted meanwhile, or into a namespace being deleted, is dropped, not retried",
  async t => {
    const cluster = new MemoryCluster();
    seed(cluster, ["gw", "other"]);
    const { lines, log } = quietLog();
    const reconciler = new Reconciler({
      client: cluster,
      compile,
      settings,
      controllerName: ME,
      log,
    });
    t.teardown(() => reconciler.stop());

    cluster.failNext = write =>
      write.op === "patchStatus" && write.kind === "Gateway" && write.name === "other";
    cluster.failWith = {
      status: 404,
      statusText: "Not Found",
      data: { message: 'gateways.gateway.networking.k8s.io "other" not found' },
    };
    const first = await reconciler.resync();
    t.same(first!.failed, [], "a 404 on a status patch is no failure");
    t.same(first!.gone.map(describeWrite), ["patchStatus Gateway default/other"]);
    t.notOk(
      lines.some(l => l.includes("failed:")),
      "and logs no error",
    );
    t.ok(
      lines.some(l => l.includes("1 Gateway status patches of deleted objects")),
      "the pass's summary counts it",
    );
    t.notOk(
      reconciler.store.get("Gateway", "default", "other"),
      "the store forgets the object until the watch says more",
    );

    cluster.failNext = write => write.op === "applyDataplaneConfig" && write.name === "gw";
    cluster.failWith = {
      status: 403,
      statusText: "Forbidden",
      data: {
        message:
          'dataplaneconfigs "gw" is forbidden: unable to create new content in namespace default because it is being terminated',
      },
    };
    cluster.find("Gateway", "default", "gw")!.metadata!.generation = 2;
    reconciler.store.upsert("Gateway", structuredClone(cluster.find("Gateway", "default", "gw")!));
    cluster.objects.set("DataplaneConfig", []);
    reconciler.store.remove("DataplaneConfig", { metadata: { namespace: "default", name: "gw" } });
    const second = await reconciler.reconcile();
    t.same(second.failed, [], "a namespace being deleted is no failure either");
    t.same(second.gone.map(describeWrite), ["applyDataplaneConfig DataplaneConfig default/gw"]);
    t.same(
      second.skipped.map(describeWrite),
      ["patchStatus Gateway default/gw"],
      "and still holds back the status that would publish an unrecorded address",
    );
  },
);

t.test("a restarted controller keeps every Gateway's address", async t => {
  const cluster = new MemoryCluster();
  seed(cluster, ["a", "b", "c"]);
  const first = new Reconciler({
    client: cluster,
    compile,
    settings,
    controllerName: ME,
    log: quietLog().log,
  });
  t.teardown(() => first.stop());
  await first.resync();
  const addressOf = (name: string) =>
    (cluster.find("DataplaneConfig", "default", name)!.spec as { address?: string }).address;
  const before = ["a", "b", "c"].map(addressOf);
  t.equal(new Set(before).size, 3);

  // Gateway "a" goes away while the controller is down; its address must not move b or c.
  cluster.objects.set(
    "Gateway",
    cluster.objects.get("Gateway")!.filter(g => g.metadata?.name !== "a"),
  );
  const second = new Reconciler({
    client: cluster,
    compile,
    settings,
    controllerName: ME,
    log: quietLog().log,
  });
  t.teardown(() => second.stop());
  const result = await second.resync();
  t.same(result!.failed, []);
  t.same(["b", "c"].map(addressOf), before.slice(1));
  t.notOk(
    cluster.find("DataplaneConfig", "default", "a"),
    "the DataplaneConfig no Gateway needs is deleted",
  );
});

t.test(
  "a deleted Gateway releases its DataplaneConfig and its Service before its finalizer",
  async t => {
    const cluster = new MemoryCluster();
    seed(cluster, ["gw"]);
    const reconciler = new Reconciler({
      client: cluster,
      compile,
      settings,
      controllerName: ME,
      log: quietLog().log,
    });
    t.teardown(() => reconciler.stop());
    await reconciler.resync();
    t.same(cluster.find("Gateway", "default", "gw")!.metadata!.finalizers, [GATEWAY_FINALIZER]);

    cluster.find("Gateway", "default", "gw")!.metadata!.deletionTimestamp =
      "2026-11-27T11:00:00Z" as never;
    cluster.executed = [];
    await reconciler.resync();
    await reconciler.resync();
    t.same(
      cluster.executed.map(w => w.op),
      [
        "deleteDataplaneConfig",
        "deleteGatewayService",
        "deleteGatewayEndpointSlice",
        "removeFinalizer",
      ],
    );
    t.same(cluster.find("Gateway", "default", "gw")!.metadata!.finalizers, []);
    t.equal(cluster.find("Service", "default", "gw-blixt"), undefined, "its Service is gone");
  },
);

t.test(
  "the Secrets HTTPS listeners name are read at each reconcile and reach compile as SecretInfo",
  async t => {
    const cluster = new MemoryCluster();
    seed(cluster, []);
    cluster.add("Gateway", {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { namespace: "default", name: "web", generation: 1, uid: "uid-web" },
      spec: {
        gatewayClassName: "blixt",
        listeners: [
          {
            name: "https",
            port: 443,
            protocol: "HTTPS",
            tls: {
              mode: "Terminate",
              certificateRefs: [{ name: "cert" }, { name: "other", namespace: "certs" }],
            },
          },
        ],
      },
    } as unknown as KubernetesObject);
    cluster.secretInfos = [
      { namespace: "default", name: "cert", type: "kubernetes.io/tls", validTLS: true },
    ];
    const counting = countingCompile();
    const reconciler = new Reconciler({
      client: cluster,
      compile: counting.compile,
      settings,
      controllerName: ME,
      log: quietLog().log,
    });
    t.teardown(() => reconciler.stop());
    await reconciler.resync();
    t.same(cluster.secretReads.at(-1), [
      { namespace: "certs", name: "other" },
      { namespace: "default", name: "cert" },
    ]);
    t.same(counting.calls.at(-1)!.secrets, cluster.secretInfos);
  },
);

/** Resolves once `check` holds, polling every few ms; rejects after `ms`. */
async function until(check: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not reached within ${ms} ms`);
    await new Promise(resolve => setTimeout(resolve, 2));
  }
}

/**
 * How long a listener added to Gateway "fine" takes to reach its DataplaneConfig, with the
 * loop running on its own timers, while (when `broken`) Gateway "broken" has failed twice.
 */
async function timeToProgram(
  t: { teardown(fn: () => void): void },
  broken: boolean,
): Promise<{ ms: number; cluster: MemoryCluster }> {
  const cluster = new MemoryCluster();
  seed(cluster, broken ? ["broken", "fine"] : ["fine"]);
  if (broken)
    cluster.failAlways = write => write.op === "applyDataplaneConfig" && write.name === "broken";
  // The production backoff cap: a shared backoff would grow towards it.
  const reconciler = new Reconciler({
    client: cluster,
    compile,
    settings: { ...settings, maxBackoffSeconds: 300 },
    controllerName: ME,
    log: quietLog().log,
  });
  t.teardown(() => reconciler.stop());
  reconciler.start();
  await until(() => cluster.find("DataplaneConfig", "default", "fine") !== undefined, 2000);
  if (broken) {
    await until(
      () =>
        cluster.attempts.filter(w => w.op === "applyDataplaneConfig" && w.name === "broken")
          .length >= 2,
      3000,
    );
  }
  const gateway = cluster.find("Gateway", "default", "fine")! as KubernetesObject & {
    spec: { listeners: unknown[] };
  };
  gateway.metadata!.generation = 2;
  gateway.spec.listeners.push({ name: "udp", port: 53, protocol: "UDP" });
  const started = Date.now();
  reconciler.observe("Gateway", structuredClone(gateway));
  const listeners = () =>
    (
      (cluster.find("DataplaneConfig", "default", "fine")!.spec as { listeners?: unknown[] })
        .listeners ?? []
    ).length;
  await until(() => listeners() === 2, 10_000);
  return { ms: Date.now() - started, cluster };
}

t.test("a Gateway whose writes always fail does not slow another Gateway's change", async t => {
  const alone = await timeToProgram(t, false);
  const beside = await timeToProgram(t, true);
  t.ok(alone.ms < 500, `programmed in ${alone.ms} ms with no broken Gateway`);
  t.ok(
    beside.ms < 500,
    `programmed in ${beside.ms} ms beside a Gateway that failed twice (a shared backoff would wait 2 s)`,
  );
  t.notOk(
    beside.cluster.find("DataplaneConfig", "default", "broken"),
    "the broken Gateway's table is still refused",
  );
});

t.test(
  "a failing object is retried on its own backoff; a new generation of it is tried at once",
  async t => {
    const cluster = new MemoryCluster();
    seed(cluster, ["broken", "fine"]);
    cluster.failAlways = write => write.op === "applyDataplaneConfig" && write.name === "broken";
    const { lines, log } = quietLog();
    const reconciler = new Reconciler({
      client: cluster,
      compile,
      settings: { ...settings, maxBackoffSeconds: 300 },
      controllerName: ME,
      log,
    });
    t.teardown(() => reconciler.stop());
    const brokenAttempts = () =>
      cluster.attempts.filter(w => w.op === "applyDataplaneConfig" && w.name === "broken").length;
    const addressOf = (name: string) =>
      (cluster.find("DataplaneConfig", "default", name)?.spec as { address?: string } | undefined)
        ?.address;

    const first = await reconciler.resync();
    const fineAddress = addressOf("fine");
    t.same(
      first!.failed.map(f => describeWrite(f.write)),
      ["applyDataplaneConfig DataplaneConfig default/broken"],
    );
    t.ok(
      lines.some(
        l =>
          l ===
          "applyDataplaneConfig DataplaneConfig default/broken failed: 422 Unprocessable Entity: broken is refused by an admission policy; retrying it in 1 s",
      ),
      lines.join("\n"),
    );

    // Events for other objects run passes at once; none of them retries "broken" before its time.
    for (let i = 0; i < 10; i++) {
      reconciler.observe("Service", {
        apiVersion: "v1",
        kind: "Service",
        metadata: { namespace: "default", name: `svc-${i}` },
      });
      await new Promise(resolve => setTimeout(resolve, 20));
    }
    const during = await reconciler.reconcile();
    t.equal(brokenAttempts(), 1, "no retry inside its backoff");
    t.same(
      during.deferred.map(describeWrite),
      ["applyDataplaneConfig DataplaneConfig default/broken", "patchStatus Gateway default/broken"],
      "its writes wait for their retry",
    );
    t.same(during.failed, []);

    // Its timer retries it (and it fails again: 2 s next).
    await until(() => brokenAttempts() === 2, 3000);
    t.ok(
      lines.some(l => l.endsWith("; retrying it in 2 s")),
      "the backoff doubles for that object",
    );

    // A new generation of it (its spec changed) is handled at once, backoff or not.
    cluster.failAlways = undefined;
    const broken = cluster.find("Gateway", "default", "broken")!;
    broken.metadata!.generation = 2;
    const started = Date.now();
    reconciler.observe("Gateway", structuredClone(broken));
    await until(() => cluster.find("DataplaneConfig", "default", "broken") !== undefined, 3000);
    t.ok(
      Date.now() - started < 500,
      `its new generation was written after ${Date.now() - started} ms`,
    );
    t.equal(addressOf("fine"), fineAddress, "the other Gateway kept its address through all of it");
    t.not(addressOf("broken"), fineAddress, "and the late one got an address of its own");
  },
);

t.test(
  "a Secret that cannot be read is that listener's problem: the pass completes, the last copy stands, the read is retried",
  async t => {
    const cluster = new MemoryCluster();
    seed(cluster, ["tcp"]);
    cluster.add("Gateway", {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { namespace: "default", name: "web", generation: 1, uid: "uid-web" },
      spec: {
        gatewayClassName: "blixt",
        listeners: [
          {
            name: "https",
            port: 443,
            protocol: "HTTPS",
            tls: { mode: "Terminate", certificateRefs: [{ name: "cert" }] },
          },
        ],
      },
    } as unknown as KubernetesObject);
    cluster.secretInfos = [
      { namespace: "default", name: "cert", type: "kubernetes.io/tls", validTLS: true },
    ];
    const { lines, log } = quietLog();
    const counting = countingCompile();
    const reconciler = new Reconciler({
      client: cluster,
      compile: counting.compile,
      settings: { ...settings, maxBackoffSeconds: 300 },
      controllerName: ME,
      log,
    });
    t.teardown(() => reconciler.stop());
    await reconciler.resync();
    t.same(counting.calls.at(-1)!.secrets, cluster.secretInfos);

    // The API server stops answering for that Secret: the listener keeps what was read last.
    cluster.secretProblems.set(
      "default/cert",
      "reading it failed: 500 Internal Server Error: etcdserver: request timed out",
    );
    const reads = cluster.secretReads.length;
    const result = await reconciler.reconcile();
    t.same(result.failed, [], "the pass is not aborted");
    t.same(counting.calls.at(-1)!.secrets, cluster.secretInfos, "the copy last read stands");
    t.ok(
      lines.some(l =>
        l.includes(
          'Secret "default/cert": reading it failed: 500 Internal Server Error: etcdserver: request timed out; keeping the copy last read',
        ),
      ),
      lines.join("\n"),
    );
    await until(() => cluster.secretReads.length > reads + 1, 3000);
    t.pass("read again on its own, with backoff");

    // A Gateway appears while the other still fails: its change is made at once.
    const started = Date.now();
    cluster.find("Gateway", "default", "tcp")!.metadata!.generation = 2;
    (cluster.find("Gateway", "default", "tcp")!.spec as { listeners: unknown[] }).listeners.push({
      name: "udp",
      port: 53,
      protocol: "UDP",
    });
    reconciler.observe("Gateway", structuredClone(cluster.find("Gateway", "default", "tcp")!));
    await until(
      () =>
        (
          (cluster.find("DataplaneConfig", "default", "tcp")!.spec as { listeners?: unknown[] })
            .listeners ?? []
        ).length === 2,
      3000,
    );
    t.ok(
      Date.now() - started < 500,
      `another Gateway's change made after ${Date.now() - started} ms`,
    );
  },
);

t.test("a Gateway of another controller's class has its Secrets never read", async t => {
  const cluster = new MemoryCluster();
  seed(cluster, []);
  cluster.add("GatewayClass", {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "GatewayClass",
    metadata: { name: "other", generation: 1, uid: "gc-other" },
    spec: { controllerName: "example.com/other" },
  } as KubernetesObject);
  cluster.add("Gateway", {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "Gateway",
    metadata: { namespace: "default", name: "theirs", generation: 1, uid: "uid-theirs" },
    spec: {
      gatewayClassName: "other",
      listeners: [
        {
          name: "https",
          port: 443,
          protocol: "HTTPS",
          tls: {
            certificateRefs: [
              { name: "../../../../../apis/rbac.authorization.k8s.io/v1/clusterroles" },
            ],
          },
        },
      ],
    },
  } as unknown as KubernetesObject);
  const reconciler = new Reconciler({
    client: cluster,
    compile,
    settings,
    controllerName: ME,
    log: quietLog().log,
  });
  t.teardown(() => reconciler.stop());
  await reconciler.resync();
  t.same(cluster.secretReads.flat(), []);
});

t.test(
  "a spec change the watch reports before the status write's answer is reconciled at once",
  async t => {
    // The GatewayClassObservedGenerationBump race: the suite sees Accepted, updates the spec,
    // and the watch delivers that new generation while blixt still awaits its status write's
    // answer. The answer (an older resourceVersion) must not hide the new generation until
    // the next resync.
    const cluster = new MemoryCluster();
    seed(cluster, []);
    const gatewayClass = cluster.find("GatewayClass", undefined, "blixt")!;
    gatewayClass.metadata!.resourceVersion = "10";
    let reconciler: Reconciler | undefined;
    let raced = false;
    const execute = cluster.execute.bind(cluster);
    cluster.execute = async (write: Write) => {
      const answer = await execute(write);
      if (write.op !== "patchStatus" || write.kind !== "GatewayClass" || raced) return answer;
      raced = true;
      answer!.metadata!.resourceVersion = "11";
      gatewayClass.metadata = { ...gatewayClass.metadata, resourceVersion: "12", generation: 2 };
      gatewayClass.spec = { ...gatewayClass.spec, description: "bumped" };
      reconciler!.observe("GatewayClass", structuredClone(gatewayClass));
      return answer;
    };
    reconciler = new Reconciler({
      client: cluster,
      compile,
      settings,
      controllerName: ME,
      log: quietLog().log,
    });
    t.teardown(() => reconciler!.stop());
    await reconciler.resync();
    t.ok(raced, "the status write raced the spec change");
    const deadline = Date.now() + 2000;
    const observed = () =>
      (
        cluster.find("GatewayClass", undefined, "blixt")!.status as {
          conditions?: { observedGeneration?: number }[];
        }
      ).conditions?.[0]?.observedGeneration;
    while (observed() !== 2 && Date.now() < deadline)
      await new Promise(resolve => setTimeout(resolve, 10));
    t.equal(observed(), 2, "the new generation's status is written without waiting for a resync");
  },
);

t.test(
  "a pass writes stage by stage, a few writes at a time; a failed DataplaneConfig holds back only its Gateway",
  async t => {
    const cluster = new MemoryCluster();
    const names = Array.from({ length: 9 }, (_, i) => `gw-${i}`);
    seed(cluster, names);
    cluster.failAlways = w => w.op === "applyDataplaneConfig" && w.name === "gw-4";
    const execute = cluster.execute.bind(cluster);
    const events: string[] = [];
    let inFlight = 0;
    let most = 0;
    cluster.execute = async (write: Write) => {
      const what = `${write.op} ${write.name}`;
      inFlight++;
      most = Math.max(most, inFlight);
      events.push(`start ${what}`);
      await new Promise(resolve => setTimeout(resolve, 15));
      try {
        return await execute(write);
      } finally {
        inFlight--;
        events.push(`end ${what}`);
      }
    };
    const reconciler = new Reconciler({
      client: cluster,
      compile,
      settings: { ...settings, writeConcurrency: 3, maxBackoffSeconds: 300 },
      controllerName: ME,
      log: quietLog().log,
    });
    t.teardown(() => reconciler.stop());
    const result = await reconciler.resync();

    t.equal(most, 3, "three writes in flight at most, and that many at once");
    const position = (event: string) => events.indexOf(event);
    const lastEnd = (op: string) =>
      Math.max(...events.flatMap((e, i) => (e.startsWith(`end ${op} `) ? [i] : [])));
    const firstStart = (op: string) =>
      Math.min(...events.flatMap((e, i) => (e.startsWith(`start ${op} `) ? [i] : [])));
    t.ok(
      lastEnd("addFinalizer") < firstStart("applyDataplaneConfig"),
      "every finalizer is on before the first DataplaneConfig is written",
    );
    t.ok(
      lastEnd("applyDataplaneConfig") < firstStart("patchStatus"),
      "every DataplaneConfig is written before the first status",
    );
    t.ok(position("start addFinalizer gw-0") < position("start addFinalizer gw-8"), "plan order");
    t.same(
      result!.failed.map(f => `${f.write.op} ${f.write.name}`),
      ["applyDataplaneConfig gw-4"],
    );
    t.same(
      result!.skipped.map(w => `${w.op} ${w.name}`),
      ["patchStatus gw-4"],
      "the Gateway whose DataplaneConfig failed publishes no status",
    );
    for (const name of names.filter(n => n !== "gw-4"))
      t.ok(cluster.find("Gateway", "default", name)!.status, `${name} has its status`);
  },
);
