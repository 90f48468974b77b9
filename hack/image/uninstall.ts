// SPDX-License-Identifier: Apache-2.0
/**
 * The chart's pre-delete hook (runs in blixt's image as /app/dist/uninstall.mjs): detaches the
 * dataplane on every node an agent runs on, then removes its own pods. Logic in
 * ./uninstall-plan.ts; this file only talks to Kubernetes.
 *
 * env: NAMESPACE, AGENT_SELECTOR ("k=v,..."), POD_TEMPLATE (path to the pod template JSON),
 *      NAME_PREFIX, TIMEOUT_SECONDS (default 120)
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { K8s, kind } from "kubernetes-fluent-client";
import { detachPods, nodesOf, parseSelector, progressOf } from "./uninstall-plan.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`uninstall: env ${name} is empty; the chart's pre-delete Job must set it`);
  return value;
}

async function main(): Promise<void> {
  const namespace = required("NAMESPACE");
  const agentLabels = parseSelector(required("AGENT_SELECTOR"));
  const template = JSON.parse(readFileSync(required("POD_TEMPLATE"), "utf8")) as kind.Pod;
  const prefix = required("NAME_PREFIX");
  const timeoutMs = Number(process.env.TIMEOUT_SECONDS ?? "120") * 1000;

  let agents = K8s(kind.Pod).InNamespace(namespace);
  for (const [key, value] of Object.entries(agentLabels)) agents = agents.WithLabel(key, value);
  const nodes = nodesOf((await agents.Get()).items);
  if (!nodes.length) {
    console.log(`uninstall: no agent pod in ${namespace} matches ${JSON.stringify(agentLabels)}; nothing to detach`);
    return;
  }
  console.log(`uninstall: detaching the dataplane on ${nodes.length} node(s): ${nodes.join(", ")}`);

  const pods = detachPods(template, namespace, prefix, nodes);
  const cleanup = async (): Promise<void> => {
    await Promise.allSettled(pods.map(pod => K8s(kind.Pod).InNamespace(namespace).Delete(pod.metadata!.name!)));
  };
  try {
    for (const pod of pods) {
      // A pod left by an interrupted earlier run would hide this run's result.
      await K8s(kind.Pod).InNamespace(namespace).Delete(pod.metadata!.name!).catch(() => undefined);
      await K8s(kind.Pod).Apply(pod, { force: true });
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const current = await Promise.all(
        pods.map(pod => K8s(kind.Pod).InNamespace(namespace).Get(pod.metadata!.name!).catch(() => pod)),
      );
      const progress = progressOf(current);
      if (progress.done) {
        if (progress.failures.length) {
          throw new Error(`uninstall: detach failed on ${progress.failures.length} node(s):\n  ${progress.failures.join("\n  ")}`);
        }
        console.log(`uninstall: dataplane detached on every node`);
        return;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `uninstall: detach pods still running after ${timeoutMs / 1000}s:\n  ${progress.pending.join("\n  ")}\n` +
            `raise uninstall.timeoutSeconds, or remove the pins by hand on those nodes`,
        );
      }
      await sleep(2000);
    }
  } finally {
    await cleanup();
  }
}

main().catch(err => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
