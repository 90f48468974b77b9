// SPDX-License-Identifier: Apache-2.0
// One module, three roles. Pepr decides once per process (when its library loads) which kind
// of binding it keeps, so each role is loaded in a fresh Node process with that role's env.
import t from "tap";
import { execa } from "execa";
import { fileURLToPath } from "node:url";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveRoles } from "../../capabilities/roles";

const root = fileURLToPath(new URL("../..", import.meta.url));
const MARK = "BINDINGS:";

/** Loads the role module in a clean process and lists the bindings of each capability. */
async function bindingsInProcess(env: Record<string, string>) {
  const script = `
    const { capabilitiesFor, resolveRoles } = await import(${JSON.stringify(`${root}capabilities/roles.ts`)});
    const module = capabilitiesFor(resolveRoles(process.env));
    const shown = module.capabilities.map(c => ({
      name: c.name,
      bindings: c.bindings.map(b => [b.kind.kind, b.event, b.isValidate ? "validate" : b.isMutate ? "mutate" : "watch"].join(" ")).sort(),
    }));
    console.log(${JSON.stringify(MARK)} + JSON.stringify(shown));
  `;
  const child = await execa("node", ["--import=tsx", "--input-type=module", "-e", script], {
    cwd: root,
    env: { LOG_LEVEL: "warn", ...env },
    extendEnv: false,
    reject: false,
  });
  const line = child.stdout.split("\n").find(l => l.startsWith(MARK));
  if (!line)
    throw new Error(
      `role process printed no bindings (exit ${child.exitCode}):\n${child.stderr}\n${child.stdout}`,
    );
  return JSON.parse(line.slice(MARK.length)) as { name: string; bindings: string[] }[];
}

const PATH = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
// Started together: each process spends most of its time loading Pepr.
const loaded = {
  admission: bindingsInProcess({ ...PATH, BLIXT_ROLE: "admission" }),
  controller: bindingsInProcess({ ...PATH, BLIXT_ROLE: "controller", PEPR_WATCH_MODE: "true" }),
  agent: bindingsInProcess({ ...PATH, BLIXT_ROLE: "agent", PEPR_WATCH_MODE: "true" }),
  build: bindingsInProcess({ ...PATH, PEPR_MODE: "build" }),
};
for (const pending of Object.values(loaded)) pending.catch(() => {}); // reported by the test that awaits it

t.test("admission role: only the admission capability, only Validate bindings", async t => {
  const capabilities = await loaded.admission;
  t.same(capabilities, [
    {
      name: "gateway-admission",
      bindings: [
        "DataplaneConfig CREATEORUPDATE validate",
        "Gateway CREATEORUPDATE validate",
        "HTTPRoute CREATEORUPDATE validate",
        "TCPRoute CREATEORUPDATE validate",
        "UDPRoute CREATEORUPDATE validate",
      ],
    },
  ]);
});

t.test("controller role: only the controller capability, with no Pepr bindings", async t => {
  // The controller opens one watch per kind itself (gateway/controller.ts controllerWatches),
  // from its start: Pepr would open one per binding, two per kind.
  const capabilities = await loaded.controller;
  t.same(capabilities, [{ name: "gateway-controller", bindings: [] }]);
});

t.test("agent role: only the node agent's capability, with no Pepr bindings", async t => {
  // The agent watches DataplaneConfigs itself (kube.ts watchDataplaneConfigs), from its start.
  const capabilities = await loaded.agent;
  t.same(capabilities, [{ name: "dataplane-agent", bindings: [] }]);
});

t.test("pepr build sees every role's bindings", async t => {
  const capabilities = await loaded.build;
  const names = capabilities.map(c => c.name);
  t.same(names, ["gateway-admission", "gateway-controller", "dataplane-agent"]);
});

t.test("role resolution", async t => {
  t.same(resolveRoles({}), ["admission"], "Pepr's admission Deployment needs no BLIXT_ROLE");
  t.same(
    resolveRoles({ PEPR_WATCH_MODE: "true" }),
    ["controller"],
    "nor does its watcher Deployment",
  );
  t.same(resolveRoles({ BLIXT_ROLE: "agent", PEPR_WATCH_MODE: "true" }), ["agent"]);
  t.same(resolveRoles({ PEPR_MODE: "build", BLIXT_ROLE: "agent" }), [
    "admission",
    "controller",
    "agent",
  ]);
  t.same(resolveRoles({ PEPR_MODE: "dev" }), ["admission", "controller"]);
  t.throws(
    () => resolveRoles({ BLIXT_ROLE: "gateway" }),
    /BLIXT_ROLE="gateway" is not a role; set it to one of admission, controller, agent/,
  );
  t.throws(
    () => resolveRoles({ BLIXT_ROLE: "agent" }),
    /BLIXT_ROLE=agent needs PEPR_WATCH_MODE="true"/,
  );
  t.throws(
    () => resolveRoles({ BLIXT_ROLE: "admission", PEPR_WATCH_MODE: "true" }),
    /BLIXT_ROLE=admission needs PEPR_WATCH_MODE unset/,
  );
});

// What each role's process asks to listen on, from the real module entry (pepr.ts) in a fresh
// process. A preload records every net.Server#listen call instead of binding, so the test opens
// no port on this machine; the process is given a serving key, so Pepr's HTTPS server would
// start wherever the role lets it.
const LISTEN = "LISTEN:";
const recordListens = `
  import net from "node:net";
  import { writeSync } from "node:fs";
  net.Server.prototype.listen = function (...args) {
    writeSync(1, ${JSON.stringify(LISTEN)} + JSON.stringify(args.filter(a => typeof a !== "function")) + "\\n");
    return this;
  };
`;
async function listensOf(env: Record<string, string>, key: { key: string; cert: string }) {
  const child = execa(
    "node",
    [
      "--import=tsx",
      "--import",
      `data:text/javascript,${encodeURIComponent(recordListens)}`,
      `${root}pepr.ts`,
    ],
    {
      cwd: root,
      env: {
        ...PATH,
        LOG_LEVEL: "warn",
        SSL_KEY_PATH: key.key,
        SSL_CERT_PATH: key.cert,
        KUBECONFIG: "/nonexistent",
        ...env,
      },
      extendEnv: false,
      reject: false,
      all: true,
      // Loading the module is slow on a busy machine; this bounds a process that never gets there.
      timeout: 120_000,
    },
  );
  // The admission and controller roles run until stopped: the module asks to listen while it
  // loads, so the first listen call ends the wait. The agent role's process exits by itself.
  child.stdout?.on("data", (chunk: Buffer) => {
    if (String(chunk).includes(LISTEN)) setTimeout(() => child.kill(), 500);
  });
  const done = await child;
  const listens = done.stdout
    .split("\n")
    .filter(l => l.startsWith(LISTEN))
    .map(l => JSON.parse(l.slice(LISTEN.length)) as unknown[]);
  return { listens, output: done.all ?? "" };
}

t.test(
  "Pepr's HTTPS server (3000): the admission and controller roles start it, the agent role does not",
  async t => {
    const dir = await mkdtemp(join(tmpdir(), "blixt-roles-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const key = { key: join(dir, "tls.key"), cert: join(dir, "tls.crt") };
    await execa("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-subj",
      "/CN=roles",
      "-days",
      "1",
      "-keyout",
      key.key,
      "-out",
      key.cert,
    ]);
    const [admission, controller, agent] = await Promise.all([
      listensOf({ BLIXT_ROLE: "admission", PEPR_API_PATH: "roles-test" }, key),
      listensOf(
        { BLIXT_ROLE: "controller", PEPR_WATCH_MODE: "true", BLIXT_CONTROLLER_METRICS_PORT: "0" },
        key,
      ),
      // Without NODE_NAME the agent's own start fails at once (and says so); Pepr's server, had it
      // been built, would have been asked to listen before that, in the module's constructor.
      listensOf({ BLIXT_ROLE: "agent", PEPR_WATCH_MODE: "true" }, key),
    ]);
    t.ok(
      admission.listens.some(args => args[0] === 3000),
      `the admission webhook serves on 3000: ${JSON.stringify(admission.listens)}`,
    );
    t.ok(
      controller.listens.some(args => args[0] === 3000),
      `the controller's probes use Pepr's /healthz on 3000: ${JSON.stringify(controller.listens)}`,
    );
    t.match(agent.output, /NODE_NAME is not set/, "the agent process got as far as its own start");
    t.same(
      agent.listens,
      [],
      "the agent role listens on nothing before its own start (no Pepr server, no port 3000)",
    );
  },
);
