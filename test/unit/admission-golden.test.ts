// SPDX-License-Identifier: Apache-2.0
/**
 * Admission warnings agree with the compiled status, on every golden case: for each Gateway
 * and route of a case, the webhook (its lookups served from the case's objects, as the API
 * server would answer them) warns about exactly the conditions the controller will write
 * that are not as they should be (Accepted or ResolvedRefs False, Conflicted True), with the
 * same reason and message; an object whose conditions are all fine gets no warning.
 *
 * The webhook reads no Secrets, so a listener whose certificate Secret is missing, not of
 * type kubernetes.io/tls or unparseable is the one thing it cannot predict; those conditions
 * are left out here, and counted so the exclusion cannot grow unnoticed.
 */
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import type { KubernetesObject } from "kubernetes-fluent-client";
import {
  gatewayAdmissionView,
  routeAdmissionView,
  type AdmissionLookup,
} from "../../capabilities/gateway/admission";
import {
  conditionWarning,
  gatewayWarnings,
  routeWarnings,
  type RouteLike,
} from "../../capabilities/gateway/admission-rules";
import { loadSnapshot } from "../../capabilities/gateway/compile/documents";
import { compile } from "../../capabilities/gateway/compile/index";
import type {
  Condition,
  Gateway,
  RouteKind,
  Snapshot,
} from "../../capabilities/gateway/compile/types";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "golden");
const cases = readdirSync(dir)
  .filter(f => f.endsWith(".in.yaml"))
  .map(f => f.slice(0, -".in.yaml".length))
  .sort();

/** The webhook's reads, answered from the case's objects. */
function lookupOf(snapshot: Snapshot): AdmissionLookup {
  const find = <T extends KubernetesObject>(
    list: T[],
    namespace: string | undefined,
    name: string,
  ): T | undefined =>
    list.find(
      o =>
        o.metadata?.name === name &&
        (namespace === undefined || o.metadata?.namespace === namespace),
    );
  return {
    gateway: async (namespace, name) => find(snapshot.gateways, namespace, name),
    gatewayClass: async name => find(snapshot.gatewayClasses, undefined, name),
    service: async (namespace, name) => find(snapshot.services, namespace, name),
    referenceGrants: async namespace =>
      snapshot.referenceGrants.filter(g => g.metadata?.namespace === namespace),
    namespace: async name => find(snapshot.namespaces, undefined, name),
  };
}

const unwelcome = (c: Condition) =>
  c.type === "Conflicted" ? c.status !== "False" : c.status !== "True";
const dependsOnSecretContent = (c: Condition) =>
  c.type === "ResolvedRefs" &&
  c.reason === "InvalidCertificateRef" &&
  /: Secret \S+ (not found|is of type|does not hold)/.test(c.message);

let secretConditionsLeftOut = 0;

for (const name of cases) {
  t.test(name, async t => {
    const inPath = join(dir, `${name}.in.yaml`);
    const { snapshot } = loadSnapshot(
      [{ name: inPath, text: readFileSync(inPath, "utf8") }],
      "2026-01-01T00:00:00Z",
    );
    const output = compile(snapshot);
    const lookup = lookupOf(snapshot);

    for (const gateway of snapshot.gateways as Gateway[]) {
      const where = `Gateway ${gateway.metadata?.namespace}/${gateway.metadata?.name}`;
      const compiled = output.gateways.find(
        g => g.namespace === gateway.metadata?.namespace && g.name === gateway.metadata?.name,
      );
      const expected: string[] = [];
      for (const c of compiled?.status.conditions ?? [])
        if (c.type === "Accepted" && unwelcome(c)) expected.push(conditionWarning(where, c));
      for (const listener of compiled?.status.listeners ?? []) {
        for (const c of listener.conditions) {
          if (!["Accepted", "Conflicted", "ResolvedRefs"].includes(c.type) || !unwelcome(c))
            continue;
          if (dependsOnSecretContent(c)) secretConditionsLeftOut++;
          else expected.push(conditionWarning(`${where}: listener "${listener.name}"`, c));
        }
      }
      t.same(
        gatewayWarnings(gateway, await gatewayAdmissionView(gateway, lookup)),
        expected,
        `${where}: warnings as compiled`,
      );
    }

    const routes: [RouteKind, KubernetesObject[]][] = [
      ["TCPRoute", snapshot.tcpRoutes],
      ["UDPRoute", snapshot.udpRoutes],
      ["HTTPRoute", snapshot.httpRoutes],
    ];
    for (const [kind, list] of routes) {
      for (const route of list as RouteLike[]) {
        const where = `${kind} ${route.metadata?.namespace}/${route.metadata?.name}`;
        const compiled = output.routes.find(
          r =>
            r.kind === kind &&
            r.namespace === route.metadata?.namespace &&
            r.name === route.metadata?.name,
        );
        const expected: string[] = [];
        let resolvedRefs: Condition | undefined;
        // The webhook predicts the status of Gateway parents only: a ListenerSet parent's
        // depends on every ListenerSet of its Gateway, which it does not look up.
        const gatewayParents = (compiled?.status.parents ?? []).filter(
          p => p.controllerName === snapshot.controllerName && p.parentRef.kind === "Gateway",
        );
        for (const parent of gatewayParents) {
          const ref = parent.parentRef;
          const parentWhere = `${where}: parentRef ${ref.namespace}/${ref.name}${ref.sectionName !== undefined ? ` sectionName "${ref.sectionName}"` : ""}${ref.port !== undefined ? ` port ${ref.port}` : ""}`;
          for (const c of parent.conditions) {
            if (!unwelcome(c)) continue;
            if (c.type === "ResolvedRefs") resolvedRefs ??= c;
            else expected.push(conditionWarning(parentWhere, c));
          }
        }
        if (resolvedRefs) expected.push(conditionWarning(where, resolvedRefs));
        t.same(
          routeWarnings(kind, route, await routeAdmissionView(kind, route, lookup)),
          expected,
          `${where}: warnings as compiled`,
        );
      }
    }
  });
}

t.test(
  "only the certificate Secrets' content is left out, and only where a case has such listeners",
  async t => {
    // http-and-https-listeners: a garbled, an Opaque and two missing Secrets (one on a second Gateway).
    t.equal(secretConditionsLeftOut, 4);
  },
);
