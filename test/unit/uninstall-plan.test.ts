// SPDX-License-Identifier: Apache-2.0
// `blixt uninstall` (the chart's pre-delete cleanup), its pure part: which nodes get a detach
// pod, what the pods look like, and when the wait is over.
import t from "tap";
import { CommanderError } from "commander";
import type { kind } from "kubernetes-fluent-client";
import {
  detachPods,
  devicesRunningBlixt,
  nodesOf,
  parseSelector,
  progressOf,
} from "../../cli/uninstall/plan.js";
import { uninstallCommand } from "../../cli/uninstall/index.js";

const template = {
  metadata: { labels: { "app.kubernetes.io/component": "detach" } },
  spec: {
    hostNetwork: true,
    containers: [
      { name: "detach", image: "blixt.dev/blixt:dev", command: ["blixt", "dataplane", "detach"] },
    ],
  },
} as kind.Pod;

const agentOn = (node?: string) =>
  ({ spec: { nodeName: node, containers: [] } }) as unknown as kind.Pod;

t.test("one node per agent pod, unscheduled pods skipped, sorted", async t => {
  t.same(nodesOf([agentOn("node-b"), agentOn("node-a"), agentOn(undefined), agentOn("node-b")]), [
    "node-a",
    "node-b",
  ]);
  t.same(nodesOf([]), []);
});

t.test("a detach pod per node, pinned to it, from the chart's template", async t => {
  const longNode = "n".repeat(253);
  const pods = detachPods(template, "blixt-system", "gw-blixt-detach", ["node-a", longNode]);
  t.equal(pods.length, 2);
  t.equal(pods[0].spec?.nodeName, "node-a");
  t.equal(pods[0].spec?.restartPolicy, "Never", "a failed detach is reported, not retried forever");
  t.equal(pods[0].metadata?.namespace, "blixt-system");
  t.equal(pods[0].metadata?.annotations?.["blixt.dev/node"], "node-a");
  t.same(pods[0].metadata?.labels, template.metadata?.labels);
  t.same(pods[0].spec?.containers, template.spec?.containers);
  t.equal(pods[0].spec?.hostNetwork, true);
  t.not(pods[0].metadata?.name, pods[1].metadata?.name, "distinct names per node");
  for (const pod of pods)
    t.ok(pod.metadata!.name!.length <= 63, `${pod.metadata?.name} is a valid short name`);
  t.same(
    detachPods(template, "ns", "p", ["node-a"])[0].metadata?.name,
    detachPods(template, "ns", "p", ["node-a"])[0].metadata?.name,
    "stable across runs",
  );
  t.equal(template.spec?.nodeName, undefined, "the template is not modified");
  t.throws(
    () => detachPods({ spec: { containers: [] } } as kind.Pod, "ns", "p", ["n"]),
    /spec\.containers is empty/,
  );
});

t.test("progress: done when every pod ended; failures name the node and why", async t => {
  const pod = (node: string, status: kind.Pod["status"]) =>
    ({
      metadata: { name: `p-${node}`, annotations: { "blixt.dev/node": node } },
      spec: { containers: [] },
      status,
    }) as unknown as kind.Pod;
  t.same(progressOf([pod("a", { phase: "Succeeded" }), pod("b", { phase: "Succeeded" })]), {
    done: true,
    failures: [],
    pending: [],
  });
  const running = progressOf([
    pod("a", { phase: "Succeeded" }),
    pod("b", { phase: "Running" }),
    pod("c", undefined),
  ]);
  t.equal(running.done, false);
  t.same(running.pending, ["node b: Running", "node c: not created"]);
  const failed = progressOf([
    pod("a", {
      phase: "Failed",
      containerStatuses: [
        {
          name: "detach",
          image: "",
          imageID: "",
          ready: false,
          restartCount: 0,
          state: { terminated: { exitCode: 2, message: "no such pin dir\n" } },
        },
      ],
    }),
    pod("b", { phase: "Succeeded" }),
  ]);
  t.equal(failed.done, true);
  t.same(failed.failures, ["node a: detach pod p-a exit 2: no such pin dir"]);
});

t.test("the agent selector", async t => {
  t.same(parseSelector("app.kubernetes.io/name=blixt,app.kubernetes.io/component=agent"), {
    "app.kubernetes.io/name": "blixt",
    "app.kubernetes.io/component": "agent",
  });
  t.throws(() => parseSelector("app"), /term "app" is not key=value/);
  t.throws(() => parseSelector(" , "), /selects nothing/);
});

t.test("the devices to detach: those running a blixt program, and only those", async t => {
  t.same(
    devicesRunningBlixt([
      {
        xdp: [
          { devname: "eth0", name: "blixt_xdp_ingre" },
          { devname: "eth9", name: "other_xdp" },
        ],
        tc: [
          { devname: "eth0", name: "blixt_tc_egress" },
          { devname: "veth1", name: "blixt_tc_ingres" },
          { devname: "cni0", name: "cilium_stuff" },
        ],
      },
    ]),
    ["eth0", "veth1"],
  );
  t.same(devicesRunningBlixt([{ xdp: [], tc: [] }]), []);
  t.same(devicesRunningBlixt(null), [], "bpftool printed nothing");
});

/** Parses `blixt uninstall ARGS` in-process with ENV as the environment; what commander printed, or threw. */
async function parseUninstall(
  args: string[],
  env: Record<string, string>,
): Promise<{ error?: CommanderError; stderr: string; stdout: string; options?: unknown }> {
  const cmd = uninstallCommand();
  const output: { stderr: string; stdout: string; options?: unknown } = { stderr: "", stdout: "" };
  for (const c of [cmd, ...cmd.commands]) {
    c.exitOverride().configureOutput({
      writeErr: s => void (output.stderr += s),
      writeOut: s => void (output.stdout += s),
    });
    // Parse only: the actions would talk to Kubernetes or the kernel.
    if (c !== cmd) c.action(options => void (output.options = options));
  }
  const saved = { ...process.env };
  for (const name of [
    "NAMESPACE",
    "AGENT_SELECTOR",
    "POD_TEMPLATE",
    "NAME_PREFIX",
    "TIMEOUT_SECONDS",
    "BLIXT_PIN_DIR",
    "NODE_NAME",
  ])
    delete process.env[name];
  Object.assign(process.env, env);
  try {
    await cmd.parseAsync(args, { from: "user" });
    return output;
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    return { error, ...output };
  } finally {
    for (const name of Object.keys(process.env)) if (!(name in saved)) delete process.env[name];
    Object.assign(process.env, saved);
  }
}

t.test(
  "blixt uninstall: options from the chart's environment; what it does not pass is a usage error naming the option",
  async t => {
    const env = {
      NAMESPACE: "blixt-system",
      POD_TEMPLATE: "/etc/blixt-uninstall/detach-pod.json",
      NAME_PREFIX: "gw-detach",
    };
    const missing = await parseUninstall(["detach-all"], env);
    t.equal(missing.error?.code, "commander.missingMandatoryOptionValue");
    t.match(missing.stderr, /--agent-selector/);
    const badTimeout = await parseUninstall(["detach-all"], {
      ...env,
      AGENT_SELECTOR: "a=b",
      TIMEOUT_SECONDS: "soon",
    });
    t.equal(badTimeout.error?.code, "commander.invalidArgument");
    t.match(badTimeout.stderr, /"soon" is not a number of seconds/);
    t.same(
      (await parseUninstall(["detach-all"], { ...env, AGENT_SELECTOR: "a=b" })).options,
      {
        namespace: "blixt-system",
        agentSelector: "a=b",
        podTemplate: env.POD_TEMPLATE,
        namePrefix: "gw-detach",
        timeoutSeconds: 120,
      },
      "everything the chart passes, from the environment",
    );
    t.same(
      (
        await parseUninstall(
          ["detach-all", "--agent-selector", "x=y", "--timeout-seconds", "30"],
          env,
        )
      ).options,
      {
        namespace: "blixt-system",
        agentSelector: "x=y",
        podTemplate: env.POD_TEMPLATE,
        namePrefix: "gw-detach",
        timeoutSeconds: 30,
      },
      "or from flags",
    );
    const emptyPinDir = await parseUninstall(["detach-node"], { BLIXT_PIN_DIR: " " });
    t.equal(
      emptyPinDir.error?.code,
      "commander.invalidArgument",
      "an empty pin directory is refused, never removed",
    );
    t.match(emptyPinDir.stderr, /--pin-dir.*is empty/);
    t.same(
      (await parseUninstall(["detach-node"], {})).options,
      { pinDir: "/sys/fs/bpf/blixt", nodeName: "this node" },
      "detach-node needs nothing",
    );
    t.same(
      (await parseUninstall(["detach-node"], { BLIXT_PIN_DIR: "/sys/fs/bpf/x", NODE_NAME: "n1" }))
        .options,
      { pinDir: "/sys/fs/bpf/x", nodeName: "n1" },
    );
    const help = await parseUninstall(["--help"], {});
    t.equal(help.error?.exitCode, 0);
    t.match(help.stdout, /detach-all/);
    t.match(help.stdout, /detach-node/);
  },
);
