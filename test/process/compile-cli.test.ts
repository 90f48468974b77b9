// SPDX-License-Identifier: Apache-2.0
// `blixt compile` as a person runs it: a real process through the `blixt` entry point.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import t from "tap";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const golden = join(root, "test", "golden");
const blixt = (...args: string[]) =>
  execa("node", ["--import=tsx", join(root, "cli", "blixt.ts"), "compile", ...args], {
    cwd: root,
    reject: false,
  });

t.test("prints the golden output for a golden input", async t => {
  const input = join(golden, "conformance-tcproute-weighted-routing.in.yaml");
  const r = await blixt("-f", input);
  t.equal(r.exitCode, 0, r.stderr);
  t.equal(
    r.stdout + "\n",
    readFileSync(join(golden, "conformance-tcproute-weighted-routing.out.yaml"), "utf8"),
  );
  const json = await blixt("-f", input, "-o", "json");
  t.equal(json.exitCode, 0);
  t.match(JSON.parse(json.stdout), {
    dataplaneConfigs: [{ spec: { address: "198.18.100.1", listeners: [{ port: 9300 }] } }],
  });
});

t.test("reads a directory of files and ignores kinds it has no use for, saying so", async t => {
  const dir = t.testdir({
    "a-env.yaml": [
      "apiVersion: blixt.dev/v1alpha1",
      "kind: CompileEnvironment",
      "now: 2026-01-01T00:00:00Z",
      "addressPools: [{ name: p, cidrs: [198.18.5.0/29] }]",
      "nodes: [{ name: n1, ready: true, agentReady: true }]",
    ].join("\n"),
    "b-gateway.yaml": [
      "apiVersion: gateway.networking.k8s.io/v1",
      "kind: GatewayClass",
      "metadata: { name: blixt }",
      "spec: { controllerName: blixt.dev/gateway-controller }",
      "---",
      "apiVersion: gateway.networking.k8s.io/v1",
      "kind: Gateway",
      "metadata: { name: gw }",
      "spec: { gatewayClassName: blixt, listeners: [{ name: tcp, protocol: TCP, port: 80 }] }",
      "---",
      "apiVersion: apps/v1",
      "kind: Deployment",
      "metadata: { name: echo, namespace: default }",
      "---",
    ].join("\n"),
    "notes.txt": "not read",
  });
  const r = await blixt("-f", dir);
  t.equal(r.exitCode, 0, r.stderr);
  t.match(
    r.stdout,
    /namespace: default\n\s+name: gw\n/,
    "a Gateway without namespace lands in default, as kubectl would put it",
  );
  t.match(r.stdout, /default\/gw: 198\.18\.5\.1/);
  t.match(r.stderr, /ignored 1 object.*apps\/v1 Deployment default\/echo/);
});

t.test("unreadable input: one line per problem naming file and object, exit code 2", async t => {
  const dir = t.testdir({
    "broken.yaml": "apiVersion: v1\nkind: Service\nmetadata: { name: a\n",
    "nameless.yaml":
      "apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {}\nspec: {}\n---\n- just\n- a list\n",
    "env.yaml": "apiVersion: blixt.dev/v1alpha1\nkind: CompileEnvironment\nnodes: {}\n",
  });
  const r = await blixt(
    "-f",
    join(dir, "broken.yaml"),
    join(dir, "nameless.yaml"),
    join(dir, "env.yaml"),
    join(dir, "missing.yaml"),
  );
  t.equal(r.exitCode, 2);
  t.equal(r.stdout, "", "nothing is printed as output when the input is unreadable");
  const lines = r.stderr.trim().split("\n");
  t.equal(lines.length, 5, r.stderr);
  t.match(lines, [
    /missing\.yaml: cannot read: ENOENT/,
    /broken\.yaml:\d+: malformed YAML in document 1: /,
    /nameless\.yaml: document 1 \(TCPRoute\): metadata\.name is required/,
    /nameless\.yaml: document 2: not a Kubernetes object/,
    /env\.yaml: document 1 \(CompileEnvironment\): nodes must be a list/,
  ]);
});

t.test("an unknown output format is a usage error", async t => {
  const r = await blixt("-f", join(golden, "conformance-udproute-simple.in.yaml"), "-o", "xml");
  t.equal(r.exitCode, 2);
  t.match(r.stderr, /xml/);
});
