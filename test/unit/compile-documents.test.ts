// SPDX-License-Identifier: Apache-2.0
// Offline input of the compile step: Secrets given as objects are checked for a certificate
// and key that really parse (a real pair made by openssl, not a fixture string).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { loadSnapshot, tlsPairParses } from "../../capabilities/gateway/compile/documents.js";
import { compile } from "../../capabilities/gateway/compile/index.js";

const NOW = "2026-01-01T00:00:00Z";

t.test("Secrets as objects: validTLS comes from parsing tls.crt and tls.key", async t => {
  const dir = t.testdir({});
  await execa("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=gw.example.com",
    "-keyout",
    join(dir, "tls.key"),
    "-out",
    join(dir, "tls.crt"),
  ]);
  const crt = readFileSync(join(dir, "tls.crt"), "utf8");
  const key = readFileSync(join(dir, "tls.key"), "utf8");
  t.ok(tlsPairParses(crt, key));
  t.notOk(
    tlsPairParses(crt, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"),
  );
  t.notOk(tlsPairParses(undefined, key));

  const b64 = (s: string) => Buffer.from(s).toString("base64");
  const text = [
    "apiVersion: gateway.networking.k8s.io/v1",
    "kind: GatewayClass",
    "metadata: { name: blixt }",
    "spec: { controllerName: blixt.dev/gateway-controller }",
    "---",
    "apiVersion: gateway.networking.k8s.io/v1",
    "kind: Gateway",
    "metadata: { name: web, namespace: infra }",
    "spec:",
    "  gatewayClassName: blixt",
    "  listeners:",
    "    - { name: good, protocol: HTTPS, port: 443, tls: { certificateRefs: [{ name: good }] } }",
    "    - { name: truncated, protocol: HTTPS, port: 8443, tls: { certificateRefs: [{ name: truncated }] } }",
    "---",
    "apiVersion: v1",
    "kind: Secret",
    "metadata: { name: good, namespace: infra }",
    "type: kubernetes.io/tls",
    `data: { tls.crt: ${b64(crt)}, tls.key: ${b64(key)} }`,
    "---",
    "apiVersion: v1",
    "kind: Secret",
    "metadata: { name: truncated, namespace: infra }",
    "type: kubernetes.io/tls",
    `data: { tls.crt: ${b64(crt.slice(0, 200))}, tls.key: ${b64(key)} }`,
  ].join("\n");
  const { snapshot, errors } = loadSnapshot([{ name: "secrets.yaml", text }], NOW);
  t.same(errors, []);
  t.same(
    snapshot.secrets.map(s => [s.name, s.type, s.validTLS]),
    [
      ["good", "kubernetes.io/tls", true],
      ["truncated", "kubernetes.io/tls", false],
    ],
  );
  const listeners = compile(snapshot).gateways[0].status.listeners;
  t.match(
    listeners.find(l => l.name === "good")?.conditions.find(c => c.type === "ResolvedRefs"),
    { status: "True" },
  );
  t.match(
    listeners.find(l => l.name === "truncated")?.conditions.find(c => c.type === "ResolvedRefs"),
    {
      status: "False",
      reason: "InvalidCertificateRef",
      message: /infra\/truncated does not hold a parseable certificate/,
    },
  );
});

t.test("the CompileEnvironment document is checked field by field", async t => {
  const env = (body: string) =>
    loadSnapshot(
      [
        {
          name: "env.yaml",
          text: `apiVersion: blixt.dev/v1alpha1\nkind: CompileEnvironment\n${body}\n`,
        },
      ],
      NOW,
    );
  t.same(env("now: 2026-02-03T04:05:06Z").snapshot.now, "2026-02-03T04:05:06Z");
  t.same(env("allocations: { a/b: 198.18.0.1 }").snapshot.allocations, { "a/b": "198.18.0.1" });
  t.match(env("now: yesterday").errors, [/now must be an RFC 3339 time/]);
  t.match(env("addressPools: { name: x }").errors, [/addressPools must be a list/]);
  t.match(env("allocations: [1]").errors, [/allocations must be a mapping/]);
  t.match(env("controllerName: 7").errors, [/controllerName must be a string/]);
});
