// SPDX-License-Identifier: Apache-2.0
// The admission webhook's lookups from watches (capabilities/gateway/admission-cache.ts),
// against a real kube-apiserver with an audit log: once the five watches have listed, a
// route's lookups (its Gateway, the GatewayClass, its Service, ReferenceGrants, a Namespace)
// are answered without one request to the API server; an object the watch has not delivered
// is read live and found; a deleted one is gone from both. The gating itself (no cached answer
// before the first list or after a watch failure, and the live read in its place) is checked on
// WatchedObjects and cachedAdmissionLookup directly.
import t from "tap";
import { setTimeout as sleep } from "node:timers/promises";
import { K8s, kind } from "kubernetes-fluent-client";
import { WatchPhase } from "kubernetes-fluent-client/dist/fluent/shared-types.js";
import type { V1Namespace, V1Service } from "@kubernetes/client-node";
import {
  AdmissionWatches,
  cachedAdmissionLookup,
  WatchedObjects,
} from "../../capabilities/gateway/admission-cache.js";
import { kubeAdmissionLookup, type AdmissionLookup } from "../../capabilities/gateway/admission.js";
import { ReferenceGrant } from "../../capabilities/generated/referencegrant-v1beta1.js";
import { Gateway } from "../../capabilities/generated/gateway-v1.js";
import { GatewayClass } from "../../capabilities/generated/gatewayclass-v1.js";
import { findBinaries, readAuditLog, startApiServer } from "../lib/apiserver.js";

const object = (namespace: string | undefined, name: string, rv = "1") => ({
  metadata: { ...(namespace ? { namespace } : {}), name, resourceVersion: rv },
});

t.test("WatchedObjects answers only while its watch is current", async t => {
  const cache = new WatchedObjects<ReturnType<typeof object>>("Service");
  cache.observe(object("a", "s"), WatchPhase.Added);
  t.equal(cache.get("a", "s"), undefined, "before the first complete list: read live");
  t.equal(cache.inNamespace("a"), undefined, "and no namespace listing either");
  cache.listed();
  t.same(cache.get("a", "s")?.metadata.name, "s", "after it: from the cache");
  t.equal(cache.get("b", "s"), undefined, "another namespace's object is not this one");
  cache.observe(object("a", "s", "2"), WatchPhase.Modified);
  t.equal(cache.get("a", "s")?.metadata.resourceVersion, "2", "a change replaces it");
  t.same(cache.inNamespace("b"), [], "a current cache lists an empty namespace as empty");
  cache.stale();
  t.equal(cache.get("a", "s"), undefined, "after a watch failure: read live again");
  cache.listed();
  cache.observe(object("a", "s"), WatchPhase.Deleted);
  t.equal(cache.get("a", "s"), undefined, "a deletion removes it");
  t.equal(cache.size, 0);
});

t.test("cachedAdmissionLookup reads live exactly where the cache cannot answer", async t => {
  const live: string[] = [];
  const liveLookup: AdmissionLookup = {
    gateway: async (_, name) => (live.push(`gateway ${name}`), object("a", name) as never),
    gatewayClass: async name => (live.push(`class ${name}`), undefined),
    service: async (_, name) => (live.push(`service ${name}`), undefined),
    referenceGrants: async ns => (live.push(`grants ${ns}`), []),
    namespace: async name => (live.push(`namespace ${name}`), undefined),
  };
  const caches = {
    gateways: new WatchedObjects<Gateway>("Gateway"),
    gatewayClasses: new WatchedObjects<GatewayClass>("GatewayClass"),
    services: new WatchedObjects<V1Service>("Service"),
    referenceGrants: new WatchedObjects<ReferenceGrant>("ReferenceGrant"),
    namespaces: new WatchedObjects<V1Namespace>("Namespace"),
  };
  const lookup = cachedAdmissionLookup(caches, liveLookup);
  caches.gateways.observe(object("a", "g", "7") as Gateway, WatchPhase.Added);
  t.equal((await lookup.gateway("a", "g"))?.metadata?.resourceVersion, "1", "not listed: live");
  await lookup.referenceGrants("a");
  t.same(live, ["gateway g", "grants a"], "both read live");
  for (const cache of Object.values(caches)) cache.listed();
  live.length = 0;
  t.equal((await lookup.gateway("a", "g"))?.metadata?.resourceVersion, "7", "listed: cached");
  t.same(await lookup.referenceGrants("a"), [], "an empty namespace, from the cache");
  t.same(live, [], "no live read for either");
  await lookup.gateway("a", "other");
  t.same(live, ["gateway other"], "a miss is read live");
  caches.gateways.stale();
  await lookup.gateway("a", "g");
  t.same(live, ["gateway other", "gateway g"], "after a watch failure, live again");
});

const binaries = findBinaries();
if ("missing" in binaries) {
  t.fail(`the real kube-apiserver is needed: ${binaries.missing}`);
} else {
  t.test("lookups come from the watches once they have listed", async t => {
    const server = await startApiServer(t, binaries, { audit: true });
    await K8s(GatewayClass).Apply({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "GatewayClass",
      metadata: { name: "blixt" },
      spec: { controllerName: "blixt.dev/gateway-controller" },
    });
    const gatewayOf = (name: string): Gateway => ({
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { namespace: "default", name },
      spec: { gatewayClassName: "blixt", listeners: [{ name: "l", protocol: "TCP", port: 9000 }] },
    });
    await K8s(Gateway).Apply(gatewayOf("g"));
    await K8s(kind.Service).Apply({
      apiVersion: "v1",
      kind: "Service",
      metadata: { namespace: "default", name: "echo" },
      spec: { ports: [{ port: 3000 }] },
    });

    const logs: string[] = [];
    const watches = new AdmissionWatches(kubeAdmissionLookup, {
      info: m => logs.push(m),
      warn: m => logs.push(m),
    });
    t.teardown(() => watches.close());
    watches.start();
    const caches = [
      watches.gateways,
      watches.gatewayClasses,
      watches.services,
      watches.referenceGrants,
      watches.namespaces,
    ];
    const deadline = Date.now() + 10_000;
    while (caches.some(c => !c.synced) && Date.now() < deadline) await sleep(20);
    t.same(
      caches.filter(c => !c.synced).map(c => c.kind),
      [],
      "every watch has listed",
    );
    t.match(logs.join("\n"), /1 Gateway object\(s\) cached from the watch/, "and said so");

    const reads = async () =>
      (await readAuditLog(server)).filter(e => e.verb === "get" || e.verb === "list").length;
    const before = await reads();
    const lookup = watches.lookup;
    t.equal((await lookup.gateway("default", "g"))?.metadata?.name, "g");
    t.equal((await lookup.gatewayClass("blixt"))?.metadata?.name, "blixt");
    t.equal((await lookup.service("default", "echo"))?.spec?.ports?.[0]?.port, 3000);
    t.same(await lookup.referenceGrants("default"), [], "no ReferenceGrant, from the cache");
    t.equal((await lookup.namespace("default"))?.metadata?.name, "default");
    // The audit log is written before the API server answers: a read made above is in it now.
    t.equal((await reads()) - before, 0, "five lookups, not one read of the API server");

    // A change reaches the cache through the watch.
    await K8s(Gateway).Apply({
      ...gatewayOf("g"),
      spec: {
        gatewayClassName: "blixt",
        listeners: [{ name: "l", protocol: "TCP", port: 9001 }],
      },
    });
    const changed = Date.now() + 5_000;
    while (watches.gateways.get("default", "g")?.spec?.listeners?.[0]?.port !== 9001) {
      if (Date.now() > changed) break;
      await sleep(20);
    }
    t.equal(
      (await lookup.gateway("default", "g"))?.spec?.listeners?.[0]?.port,
      9001,
      "the changed Gateway, from the watch",
    );

    // What the cache does not hold is read live: found when it exists, undefined when not.
    t.equal(await lookup.gateway("default", "new"), undefined, "absent live too: undefined");
    t.equal(await lookup.service("other", "echo"), undefined, "another namespace: undefined");
    await K8s(Gateway).Apply(gatewayOf("new"));
    t.equal(
      (await lookup.gateway("default", "new"))?.metadata?.name,
      "new",
      "a Gateway created a moment ago is found (from the watch or live)",
    );

    await K8s(Gateway).InNamespace("default").Delete("g");
    const gone = Date.now() + 5_000;
    while (watches.gateways.get("default", "g") && Date.now() < gone) await sleep(20);
    t.equal(await lookup.gateway("default", "g"), undefined, "a deleted Gateway is gone");
  });
}
