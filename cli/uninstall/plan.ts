// SPDX-License-Identifier: Apache-2.0
/**
 * Pure logic of `blixt uninstall`, the chart's pre-delete cleanup (./detach-all.ts and
 * ./detach-node.ts are its I/O).
 *
 * The node agent's preStop leaves the dataplane serving, so an agent restart or upgrade drops
 * no connection. Uninstall is the one time the programs and pinned maps must go: before Helm
 * deletes the agent, a hook Job runs one "detach" pod, from a template the chart renders, on
 * every node an agent pod runs on, and waits for all of them. A Job runs on one node and a
 * hook DaemonSet is not waited for by Helm, hence pods pinned to nodes by `nodeName`.
 */
import { createHash } from "node:crypto";
import type { kind } from "kubernetes-fluent-client";

type Pod = kind.Pod;

/** The nodes to clean: every node an agent pod is bound to, once, in a stable order. */
export function nodesOf(agentPods: Pod[]): string[] {
  const nodes = new Set<string>();
  for (const pod of agentPods) if (pod.spec?.nodeName) nodes.add(pod.spec.nodeName);
  return [...nodes].sort();
}

/**
 * One detach pod per node, from the chart's template. Node names can be 253 characters, pod
 * names too, so a short hash keeps `<prefix>-<hash>` a valid name whatever the node is called.
 */
export function detachPods(
  template: Pod,
  namespace: string,
  namePrefix: string,
  nodes: string[],
): Pod[] {
  if (!template.spec?.containers?.length) {
    throw new Error(
      "uninstall pod template: spec.containers is empty; the chart must render a detach container",
    );
  }
  return nodes.map(node => {
    const suffix = createHash("sha256").update(node).digest("hex").slice(0, 10);
    return {
      ...template,
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        ...template.metadata,
        name: `${namePrefix.slice(0, 52)}-${suffix}`,
        namespace,
        annotations: { ...template.metadata?.annotations, "blixt.dev/node": node },
      },
      // nodeName skips the scheduler: the pod runs on that node even if it is cordoned.
      spec: { ...template.spec, nodeName: node, restartPolicy: "Never" },
    } as Pod;
  });
}

export interface DetachProgress {
  done: boolean;
  /** One line per node whose detach failed, naming the node and what its pod said. */
  failures: string[];
  pending: string[];
}

/** Where the detach pods stand; `done` once every pod has ended, failed or not. */
export function progressOf(pods: Pod[]): DetachProgress {
  const failures: string[] = [];
  const pending: string[] = [];
  for (const pod of pods) {
    const node = pod.metadata?.annotations?.["blixt.dev/node"] ?? pod.spec?.nodeName ?? "?";
    const phase = pod.status?.phase;
    if (phase === "Succeeded") continue;
    if (phase === "Failed") {
      const terminated = pod.status?.containerStatuses?.[0]?.state?.terminated;
      const why = terminated
        ? `exit ${terminated.exitCode}${terminated.message ? `: ${terminated.message.trim()}` : ""}`
        : (pod.status?.message ?? "failed");
      failures.push(`node ${node}: detach pod ${pod.metadata?.name} ${why}`);
      continue;
    }
    pending.push(`node ${node}: ${phase ?? "not created"}`);
  }
  return { done: pending.length === 0, failures, pending };
}

/** "a=b,c=d" → {a: "b", c: "d"}; the agent selector the chart passes. */
export function parseSelector(selector: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const term of selector
    .split(",")
    .map(t => t.trim())
    .filter(Boolean)) {
    const [key, value, ...rest] = term.split("=");
    if (!key || value === undefined || rest.length) {
      throw new Error(`agent selector "${selector}": term "${term}" is not key=value`);
    }
    labels[key] = value;
  }
  if (!Object.keys(labels).length)
    throw new Error(`agent selector "${selector}" selects nothing; give key=value pairs`);
  return labels;
}

/** One entry of `bpftool -j net show`: the XDP and TC programs attached per device. */
export interface NetShow {
  xdp?: { devname?: string; name?: string }[];
  tc?: { devname?: string; name?: string }[];
}

/**
 * The devices running one of blixt's programs, by program name (bpftool shows at most 15
 * characters: "blixt_xdp_ingre"). Other programs on the same devices are not blixt's to touch.
 */
export function devicesRunningBlixt(netShow: NetShow[] | null): string[] {
  const devices = new Set<string>();
  for (const entry of netShow ?? []) {
    for (const program of [...(entry.xdp ?? []), ...(entry.tc ?? [])]) {
      if (program.devname && program.name?.startsWith("blixt_")) devices.add(program.devname);
    }
  }
  return [...devices].sort();
}
