// SPDX-License-Identifier: Apache-2.0
// One module, three roles. Pepr decides once per process (when its library loads) which kind
// of binding it keeps, so each role is loaded in a fresh Node process with that role's env.
import t from "tap";
import { execa } from "execa";
import { fileURLToPath } from "node:url";
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
  if (!line) throw new Error(`role process printed no bindings (exit ${child.exitCode}):\n${child.stderr}\n${child.stdout}`);
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

const watched = [
  "DataplaneConfig", "EndpointSlice", "Gateway", "GatewayClass", "HTTPRoute", "Namespace",
  "Node", "Pod", "ReferenceGrant", "Service", "TCPRoute", "UDPRoute",
];

t.test("admission role: only the admission capability, only Validate bindings", async t => {
  const capabilities = await loaded.admission;
  t.same(capabilities, [
    {
      name: "gateway-admission",
      bindings: ["DataplaneConfig CREATEORUPDATE validate", "Gateway CREATEORUPDATE validate", "HTTPRoute CREATEORUPDATE validate", "TCPRoute CREATEORUPDATE validate", "UDPRoute CREATEORUPDATE validate"],
    },
  ]);
});

t.test("controller role: only the controller capability, a create/update and a delete watch per kind", async t => {
  const capabilities = await loaded.controller;
  t.same(capabilities.map(c => c.name), ["gateway-controller"]);
  t.same(
    capabilities[0].bindings,
    watched.flatMap(kind => [`${kind} CREATEORUPDATE watch`, `${kind} DELETE watch`]).sort(),
  );
});

t.test("agent role: only the node agent's capability, watching DataplaneConfigs", async t => {
  const capabilities = await loaded.agent;
  t.same(capabilities, [{ name: "dataplane-agent", bindings: ["DataplaneConfig CREATEORUPDATE watch", "DataplaneConfig DELETE watch"] }]);
});

t.test("pepr build sees every role's bindings", async t => {
  const capabilities = await loaded.build;
  const names = capabilities.map(c => c.name);
  t.same(names, ["gateway-admission", "gateway-controller", "dataplane-agent"]);
});

t.test("role resolution", async t => {
  t.same(resolveRoles({}), ["admission"], "Pepr's admission Deployment needs no BLIXT_ROLE");
  t.same(resolveRoles({ PEPR_WATCH_MODE: "true" }), ["controller"], "nor does its watcher Deployment");
  t.same(resolveRoles({ BLIXT_ROLE: "agent", PEPR_WATCH_MODE: "true" }), ["agent"]);
  t.same(resolveRoles({ PEPR_MODE: "build", BLIXT_ROLE: "agent" }), ["admission", "controller", "agent"]);
  t.same(resolveRoles({ PEPR_MODE: "dev" }), ["admission", "controller"]);
  t.throws(() => resolveRoles({ BLIXT_ROLE: "gateway" }), /BLIXT_ROLE="gateway" is not a role; set it to one of admission, controller, agent/);
  t.throws(() => resolveRoles({ BLIXT_ROLE: "agent" }), /BLIXT_ROLE=agent needs PEPR_WATCH_MODE="true"/);
  t.throws(() => resolveRoles({ BLIXT_ROLE: "admission", PEPR_WATCH_MODE: "true" }), /BLIXT_ROLE=admission needs PEPR_WATCH_MODE unset/);
});
