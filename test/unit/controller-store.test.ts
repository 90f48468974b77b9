// SPDX-License-Identifier: Apache-2.0
// The controller's store: what it keeps of Secrets and Nodes, and the snapshot it hands compile.
import t from "tap";
import { secretDigest } from "../../capabilities/gateway/certificate-copies";
import { execa } from "execa";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  certificateSecretRefs,
  compareResourceVersions,
  nodeInfos,
  secretInfo,
  SnapshotStore,
  tlsPairParses,
} from "../../capabilities/gateway/store";

async function keyPair(dir: string, name: string) {
  await execa("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-subj",
    `/CN=${name}`,
    "-days",
    "1",
    "-keyout",
    join(dir, `${name}.key`),
    "-out",
    join(dir, `${name}.crt`),
  ]);
  const [cert, key] = await Promise.all([
    readFile(join(dir, `${name}.crt`)),
    readFile(join(dir, `${name}.key`)),
  ]);
  return { cert: cert.toString("base64"), key: key.toString("base64") };
}

t.test(
  "a TLS Secret is reduced to whether its certificate and key parse and belong together",
  async t => {
    const dir = await mkdtemp(join(tmpdir(), "blixt-controller-store-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const a = await keyPair(dir, "a");
    const b = await keyPair(dir, "b");
    t.equal(tlsPairParses(a.cert, a.key), true);
    t.equal(tlsPairParses(a.cert, b.key), false, "a key of another certificate");
    t.equal(tlsPairParses(Buffer.from("not a certificate").toString("base64"), a.key), false);
    t.equal(tlsPairParses(a.cert, undefined), false);

    const info = secretInfo({
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        namespace: "default",
        name: "cert",
        creationTimestamp: new Date("2026-11-27T10:00:00Z"),
      },
      type: "kubernetes.io/tls",
      data: { "tls.crt": a.cert, "tls.key": a.key },
    });
    t.same(info, {
      namespace: "default",
      name: "cert",
      type: "kubernetes.io/tls",
      validTLS: true,
      creationTimestamp: "2026-11-27T10:00:00Z",
      digest: secretDigest("kubernetes.io/tls", { "tls.crt": a.cert, "tls.key": a.key }),
    });
    t.notOk(JSON.stringify(info).includes(a.key), "no key bytes are kept");
  },
);

t.test(
  "certificateRefs: Secrets only, of blixt's Gateways only, defaulted to the Gateway's namespace, each once",
  async t => {
    const gateway = (
      namespace: string,
      refs: unknown[],
      gatewayClassName = "blixt",
      name = "gw",
    ) => ({
      metadata: { namespace, name },
      spec: {
        gatewayClassName,
        listeners: [{ name: "https", tls: { certificateRefs: refs } }, { name: "tcp" }],
      },
    });
    const classes = [
      { metadata: { name: "blixt" }, spec: { controllerName: "blixt.dev/gateway-controller" } },
      { metadata: { name: "other" }, spec: { controllerName: "example.com/other" } },
    ];
    t.same(
      certificateSecretRefs(
        [
          gateway("a", [
            { name: "cert" },
            { name: "cert", kind: "Secret", group: "" },
            { name: "x", kind: "ConfigMap" },
            { name: "core", group: "core", kind: "Secret" },
          ]),
          gateway("b", [{ name: "shared", namespace: "certs" }]),
          gateway(
            "c",
            [{ name: "../../../../../apis/rbac.authorization.k8s.io/v1/clusterroles" }],
            "other",
            "foreign",
          ),
          gateway("d", [{ name: "their-cert" }], "missing-class"),
        ],
        classes,
        "blixt.dev/gateway-controller",
      ),
      [
        { namespace: "a", name: "cert" },
        { namespace: "a", name: "core" },
        { namespace: "certs", name: "shared" },
      ],
      "a Gateway of another controller's class (or of no class) has its refs left alone",
    );

    const listenerSet = (namespace: string, parent: Record<string, string>, name: string) => ({
      metadata: { namespace, name: `set-${name}` },
      spec: {
        parentRef: parent,
        listeners: [{ name: "https", tls: { certificateRefs: [{ name }] } }],
      },
    });
    t.same(
      certificateSecretRefs(
        [gateway("a", []), gateway("c", [], "other", "foreign")],
        classes,
        "blixt.dev/gateway-controller",
        [
          listenerSet("team", { name: "gw", namespace: "a" }, "ours"),
          listenerSet("a", { name: "gw" }, "same-namespace"),
          listenerSet("c", { name: "foreign" }, "theirs"),
          listenerSet("a", { name: "gone" }, "orphan"),
          listenerSet("a", { name: "gw", kind: "Other" }, "other-kind"),
        ],
      ),
      [
        { namespace: "a", name: "same-namespace" },
        { namespace: "team", name: "ours" },
      ],
      "a ListenerSet's refs, defaulted to its own namespace, only when its parent is a Gateway of blixt's",
    );
  },
);

t.test("a node's agent is ready only when a ready agent Pod runs on it", async t => {
  const node = (name: string, ready: string) => ({
    metadata: { name },
    status: { conditions: [{ type: "Ready", status: ready }] },
  });
  const pod = (nodeName: string, ready: string, deleting = false) => ({
    metadata: { name: `agent-${nodeName}`, ...(deleting ? { deletionTimestamp: new Date() } : {}) },
    spec: { nodeName, containers: [] },
    status: { conditions: [{ type: "Ready", status: ready }] },
  });
  t.same(
    nodeInfos(
      [node("n3", "True"), node("n1", "True"), node("n2", "False"), node("n4", "True")],
      [pod("n1", "True"), pod("n3", "False"), pod("n4", "True", true)],
    ),
    [
      { name: "n1", ready: true, agentReady: true },
      { name: "n2", ready: false, agentReady: false },
      { name: "n3", ready: true, agentReady: false },
      { name: "n4", ready: true, agentReady: false },
    ],
  );
  t.same(
    nodeInfos(
      [node("n1", "True"), node("n2", "True")],
      [pod("n1", "True"), pod("n2", "True")],
      new Set(["n2"]),
    ),
    [
      { name: "n1", ready: true, agentReady: true },
      { name: "n2", ready: true, agentReady: false },
    ],
    "an agent whose node Lease lapsed is not ready, whatever its Pod and node still say",
  );
});

t.test("the snapshot is sorted, so the same cluster gives the same compile input", async t => {
  const one = new SnapshotStore();
  const two = new SnapshotStore();
  const services = ["b", "a", "c"].map(name => ({
    apiVersion: "v1",
    kind: "Service",
    metadata: { namespace: "default", name },
  }));
  services.forEach(s => one.upsert("Service", s));
  [...services].reverse().forEach(s => two.upsert("Service", s));
  const input = {
    controllerName: "c",
    now: "2026-11-27T10:00:00Z",
    addressPools: [],
    allocations: {},
  };
  t.same(one.snapshot(input), two.snapshot(input));
  t.same(
    one.snapshot(input).services.map(s => s.metadata?.name),
    ["a", "b", "c"],
  );
  one.remove("Service", services[0]);
  t.same(
    one.snapshot(input).services.map(s => s.metadata?.name),
    ["a", "c"],
  );
});

t.test(
  "an object's late ADDED after its DELETED does not bring it back; a new object of that name does",
  async t => {
    const store = new SnapshotStore();
    const grant = (uid: string) => ({
      apiVersion: "gateway.networking.k8s.io/v1beta1",
      kind: "ReferenceGrant",
      metadata: { namespace: "web", name: "allow-gateways", uid },
    });
    const held = () => store.get("ReferenceGrant", "web", "allow-gateways");

    // The delete stream is ahead of the create stream.
    store.remove("ReferenceGrant", grant("uid-1"));
    store.upsert("ReferenceGrant", grant("uid-1"));
    t.equal(held(), undefined, "the deleted grant stays deleted");

    // A relist taken before the delete landed is just as stale.
    store.replace("ReferenceGrant", [grant("uid-1")]);
    t.equal(held(), undefined, "a stale relist does not resurrect it either");

    // The same name, created again, is a new object.
    store.upsert("ReferenceGrant", grant("uid-2"));
    t.same(held(), grant("uid-2"), "a new grant of the same name is kept");
    store.remove("ReferenceGrant", grant("uid-1"));
    t.same(held(), grant("uid-2"), "a late delete of the old one leaves the new one alone");

    // Once a relist no longer carries the old uid, its tombstone is dropped.
    store.replace("ReferenceGrant", [grant("uid-2")]);
    store.upsert("ReferenceGrant", {
      ...grant("uid-1"),
      metadata: { namespace: "web", name: "other", uid: "uid-1" },
    });
    t.ok(store.get("ReferenceGrant", "web", "other"), "tombstones do not grow without bound");
  },
);

t.test("a relist is older than every event that landed while it was in flight", async t => {
  const store = new SnapshotStore();
  const gateway = (name: string, uid: string, generation = 1) => ({
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "Gateway",
    metadata: { namespace: "infra", name, uid, generation },
  });
  store.upsert("Gateway", gateway("old", "uid-old"));
  store.upsert("Gateway", gateway("kept", "uid-kept"));
  store.upsert("Gateway", gateway("changed", "uid-changed"));

  const since = store.listStarted();
  // While the lists are in flight: one Gateway is created, one deleted, one changed.
  store.upsert("Gateway", gateway("new", "uid-new"));
  store.remove("Gateway", gateway("old", "uid-old"));
  store.upsert("Gateway", gateway("changed", "uid-changed", 2));
  // The list was taken before all of that.
  store.replace(
    "Gateway",
    [gateway("old", "uid-old"), gateway("kept", "uid-kept", 3), gateway("changed", "uid-changed")],
    since,
  );
  store.listDone(since);

  t.ok(
    store.get("Gateway", "infra", "new"),
    "a Gateway created after the list began is not dropped",
  );
  t.equal(
    store.get("Gateway", "infra", "old"),
    undefined,
    "one deleted after it began is not brought back",
  );
  t.equal(
    store.get<{ metadata: { generation: number } }>("Gateway", "infra", "changed")?.metadata
      .generation,
    2,
    "a change after it began is kept",
  );
  t.equal(
    store.get<{ metadata: { generation: number } }>("Gateway", "infra", "kept")?.metadata
      .generation,
    3,
    "what no event touched comes from the list",
  );

  // The next relist, with nothing in flight, is the truth again.
  const next = store.listStarted();
  store.replace("Gateway", [gateway("kept", "uid-kept", 3)], next);
  store.listDone(next);
  t.same(
    store.list<{ metadata: { name: string } }>("Gateway").map(g => g.metadata.name),
    ["kept"],
  );
});

t.test("resourceVersions compare as KEP-5504 integers, or not at all", async t => {
  t.equal(compareResourceVersions("9", "10"), -1, "shorter is older, whatever the digits");
  t.ok(compareResourceVersions("1200", "1199")! > 0);
  t.equal(compareResourceVersions("77", "77"), 0);
  for (const [a, b] of [
    ["010", "9"],
    ["", "9"],
    [undefined, "9"],
    ["abc", "9"],
    ["9", "1e3"],
  ] as const)
    t.equal(compareResourceVersions(a, b), undefined, `${a} vs ${b}: not comparable`);
});

t.test("an older copy of an object never replaces a newer one held", async t => {
  const store = new SnapshotStore();
  const gatewayClass = (uid: string, resourceVersion: string | undefined, generation: number) => ({
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "GatewayClass",
    metadata: { name: "blixt", uid, generation, resourceVersion },
  });
  const generation = () =>
    store.get<{ metadata: { generation: number } }>("GatewayClass", undefined, "blixt")?.metadata
      .generation;

  // The watch reports the spec change (rv 12) before the status write's answer (rv 11) lands.
  store.upsert("GatewayClass", gatewayClass("uid-1", "12", 2));
  store.upsert("GatewayClass", gatewayClass("uid-1", "11", 1));
  t.equal(generation(), 2, "the write's older answer does not hide the newer generation");
  store.upsert("GatewayClass", gatewayClass("uid-1", "13", 2));
  t.equal(
    store.get<{ metadata: { resourceVersion: string } }>("GatewayClass", undefined, "blixt")
      ?.metadata.resourceVersion,
    "13",
    "a newer copy replaces it",
  );

  store.upsert("GatewayClass", gatewayClass("uid-2", "5", 1));
  t.equal(generation(), 1, "an object recreated under the same name replaces the old one");
  store.upsert("GatewayClass", gatewayClass("uid-2", undefined, 3));
  t.equal(generation(), 3, "without comparable versions the latest report wins, as before");

  // A relist older than the copy held (taken before a write whose answer is recorded) keeps it.
  store.upsert("GatewayClass", gatewayClass("uid-2", "30", 4));
  const since = store.listStarted();
  store.listDone(since);
  const next = store.listStarted();
  store.replace("GatewayClass", [gatewayClass("uid-2", "29", 3)], next);
  store.listDone(next);
  t.equal(generation(), 4, "a stale list does not bring back an older copy");
});
