// SPDX-License-Identifier: Apache-2.0
// The agent's Kubernetes calls: list the DataplaneConfigs at start, write its own status
// entry, and read the Secrets of HTTPS listeners' certificateRefs.
//
// status.nodes is a list map keyed by node name, so each agent server-side-applies ONLY its
// entry, with a field manager of its own ("blixt-agent/<node>"): the API server merges the
// entries of different managers and never drops another node's. A JSON merge patch would
// replace the whole list, and one shared field manager would let each apply remove the
// entries it does not list (SSA deletes fields a manager stops applying). kubernetes-fluent-
// client's Apply has a fixed field manager and does not reach the status subresource, so this
// sends the apply request itself, with the client's own connection settings.
import { K8s, fetch } from "kubernetes-fluent-client";
import { k8sCfg } from "kubernetes-fluent-client/dist/fluent/utils.js";
import { FetchMethods } from "kubernetes-fluent-client/dist/fluent/shared-types.js";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1.js";
import { getSecretByName } from "../secret-read.js";
import type { NodeAck } from "./desired.js";

export const fieldManager = (nodeName: string): string => `blixt-agent/${nodeName}`.slice(0, 128);

/** The server-side apply of one node's status entry: where it goes and what it says. Pure. */
export function ackRequest(
  config: DataplaneConfig,
  ack: NodeAck,
): { path: string; query: Record<string, string>; body: object } {
  const namespace = config.metadata?.namespace;
  const name = config.metadata?.name;
  if (!namespace || !name)
    throw new Error(
      `DataplaneConfig without metadata.namespace/name cannot be acknowledged: ${JSON.stringify(config.metadata)}`,
    );
  return {
    path: `/apis/blixt.dev/v1alpha1/namespaces/${encodeURIComponent(namespace)}/dataplaneconfigs/${encodeURIComponent(name)}/status`,
    // force: this node's entry is this manager's alone; take it over from an older agent's manager.
    query: { fieldManager: fieldManager(ack.name), force: "true" },
    body: {
      apiVersion: "blixt.dev/v1alpha1",
      kind: "DataplaneConfig",
      metadata: { namespace, name },
      status: { nodes: [ack] },
    },
  };
}

/** Writes this node's status entry; throws naming the config and the API server's answer. */
export async function acknowledge(config: DataplaneConfig, ack: NodeAck): Promise<void> {
  const { path, query, body } = ackRequest(config, ack);
  const { opts, serverUrl } = await k8sCfg(FetchMethods.APPLY);
  const url = new URL(path, serverUrl);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const resp = await fetch(url, {
    ...opts,
    method: "PATCH",
    headers: { ...opts.headers, "Content-Type": "application/apply-patch+yaml" },
    body: JSON.stringify(body),
  });
  if (!resp.ok) {
    const detail =
      typeof resp.data === "object" && resp.data && "message" in resp.data
        ? (resp.data as { message: string }).message
        : resp.statusText;
    throw new Error(
      `DataplaneConfig ${config.metadata?.namespace}/${config.metadata?.name}: writing status.nodes[${ack.name}] failed: ${resp.status} ${detail}; check the agent's RBAC (patch dataplaneconfigs/status)`,
    );
  }
}

/** Every DataplaneConfig in the cluster, to converge to before reporting ready. */
export async function listDataplaneConfigs(): Promise<DataplaneConfig[]> {
  return (await listDataplaneConfigsAt()).items;
}

/** Every DataplaneConfig, with the list's resourceVersion (for the agent's relist). */
export async function listDataplaneConfigsAt(): Promise<{
  items: DataplaneConfig[];
  resourceVersion?: string;
}> {
  const list = await K8s(DataplaneConfig).Get();
  return { items: list.items, resourceVersion: list.metadata?.resourceVersion };
}

/**
 * A Secret an HTTPS listener refers to (the controller's copy, in the agent's namespace);
 * undefined when it does not exist. A name that is not one, or an answer that is not that
 * Secret, is an error naming it, and is never requested or taken.
 */
export async function readSecret(
  namespace: string,
  name: string,
): Promise<{ type?: string; data?: Record<string, string> } | undefined> {
  const read = await getSecretByName(namespace, name);
  if ("problem" in read)
    throw new Error(`Secret ${JSON.stringify(`${namespace}/${name}`)}: ${read.problem}; not read`);
  return read.secret;
}
