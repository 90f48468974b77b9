// SPDX-License-Identifier: Apache-2.0
/**
 * `blixt uninstall detach-all`, the chart's pre-delete hook Job: detaches the dataplane on every
 * node an agent runs on, then removes its own pods. Logic in ./plan.ts; this file only talks
 * to Kubernetes.
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { K8s, kind } from "kubernetes-fluent-client";
import { detachPods, nodesOf, parseSelector, progressOf } from "./plan.js";

export interface DetachAllOptions {
  namespace: string;
  /** "k=v,...": the agent pods' labels. */
  agentSelector: string;
  /** Path to the detach pod template (JSON) the chart renders. */
  podTemplate: string;
  namePrefix: string;
  timeoutSeconds: number;
}

export async function detachAll(options: DetachAllOptions): Promise<void> {
  const { namespace, namePrefix: prefix } = options;
  const agentLabels = parseSelector(options.agentSelector);
  const template = JSON.parse(readFileSync(options.podTemplate, "utf8")) as kind.Pod;
  const timeoutMs = options.timeoutSeconds * 1000;

  let agents = K8s(kind.Pod).InNamespace(namespace);
  for (const [key, value] of Object.entries(agentLabels)) agents = agents.WithLabel(key, value);
  const nodes = nodesOf((await agents.Get()).items);
  if (!nodes.length) {
    console.log(
      `uninstall: no agent pod in ${namespace} matches ${JSON.stringify(agentLabels)}; nothing to detach`,
    );
    return;
  }
  console.log(`uninstall: detaching the dataplane on ${nodes.length} node(s): ${nodes.join(", ")}`);

  const pods = detachPods(template, namespace, prefix, nodes);
  const cleanup = async (): Promise<void> => {
    await Promise.allSettled(
      pods.map(pod => K8s(kind.Pod).InNamespace(namespace).Delete(pod.metadata!.name!)),
    );
  };
  try {
    for (const pod of pods) {
      // A pod left by an interrupted earlier run would hide this run's result.
      await K8s(kind.Pod)
        .InNamespace(namespace)
        .Delete(pod.metadata!.name!)
        .catch(() => undefined);
      await K8s(kind.Pod).Apply(pod, { force: true });
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const current = await Promise.all(
        pods.map(pod =>
          K8s(kind.Pod)
            .InNamespace(namespace)
            .Get(pod.metadata!.name!)
            .catch(() => pod),
        ),
      );
      const progress = progressOf(current);
      if (progress.done) {
        if (progress.failures.length) {
          throw new Error(
            `uninstall: detach failed on ${progress.failures.length} node(s):\n  ${progress.failures.join("\n  ")}`,
          );
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
