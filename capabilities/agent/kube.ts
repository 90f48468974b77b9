// SPDX-License-Identifier: Apache-2.0
// The agent's Kubernetes calls: watch and list the DataplaneConfigs, write its own status
// entry, read the Secrets of HTTPS listeners' certificateRefs, renew its node Lease and watch
// every agent's (leases.ts; the controller follows the Leases through here too).
//
// status.nodes is a list map keyed by node name, so each agent server-side-applies ONLY its
// entry, with a field manager of its own ("blixt-agent/<node>"): the API server merges the
// entries of different managers and never drops another node's. A JSON merge patch would
// replace the whole list, and one shared field manager would let each apply remove the
// entries it does not list (SSA deletes fields a manager stops applying). kubernetes-fluent-
// client's Apply has a fixed field manager and does not reach the status subresource, so this
// sends the apply request itself, on the keep-alive connections of kube-connections.ts.
import { K8s, RegisterKind, WatchEvent, type WatchCfg } from "kubernetes-fluent-client";
import { V1Lease } from "@kubernetes/client-node";
import { WatchPhase } from "kubernetes-fluent-client/dist/fluent/shared-types.js";
import {
  applyCustomObject,
  customObjectsApi,
  REQUEST_TIMEOUT_MS,
  type CustomKind,
} from "../kube-connections.js";
import { DataplaneConfig } from "../generated/dataplaneconfig-v1alpha1.js";
import { errorMessage } from "../error-message.js";
import { getSecretByName } from "../secret-read.js";
import type { NodeAck } from "./desired.js";
import {
  LEASE_LABEL,
  LEASE_LABEL_VALUE,
  LivenessNotifier,
  type LiveNodes,
  type Liveness,
} from "./leases.js";

RegisterKind(V1Lease, {
  group: "coordination.k8s.io",
  version: "v1",
  kind: "Lease",
  plural: "leases",
});

const DATAPLANE_CONFIG_KIND = {
  group: "blixt.dev",
  version: "v1alpha1",
  plural: "dataplaneconfigs",
};

export const fieldManager = (nodeName: string): string => `blixt-agent/${nodeName}`.slice(0, 128);

/** The server-side apply of one node's status entry: where it goes and what it says. Pure. */
export function ackRequest(
  config: DataplaneConfig,
  ack: NodeAck,
): {
  fieldManager: string;
  body: {
    apiVersion: string;
    kind: string;
    metadata: { namespace: string; name: string };
    status: { nodes: NodeAck[] };
  };
} {
  const namespace = config.metadata?.namespace;
  const name = config.metadata?.name;
  if (!namespace || !name)
    throw new Error(
      `DataplaneConfig without metadata.namespace/name cannot be acknowledged: ${JSON.stringify(config.metadata)}`,
    );
  return {
    fieldManager: fieldManager(ack.name),
    body: {
      apiVersion: "blixt.dev/v1alpha1",
      kind: "DataplaneConfig",
      metadata: { namespace, name },
      status: { nodes: [ack] },
    },
  };
}

/**
 * Writes this node's status entry, on the process's keep-alive connections. Throws an Error
 * naming the config and the API server's answer, with the answer's `status` (404: the config
 * is gone).
 */
export async function acknowledge(config: DataplaneConfig, ack: NodeAck): Promise<void> {
  const request = ackRequest(config, ack);
  try {
    await applyCustomObject(DATAPLANE_CONFIG_KIND, request.body, {
      fieldManager: request.fieldManager,
      // this node's entry is this manager's alone: take it over from an older agent's manager
      force: true,
      status: true,
    });
  } catch (error) {
    const answer = error as { status?: number; statusText?: string; data?: unknown };
    if (typeof answer?.status !== "number") throw error;
    const detail =
      typeof answer.data === "object" && answer.data && "message" in answer.data
        ? (answer.data as { message: string }).message
        : answer.statusText;
    throw Object.assign(
      new Error(
        `DataplaneConfig ${config.metadata?.namespace}/${config.metadata?.name}: writing status.nodes[${ack.name}] failed: ${answer.status} ${detail}; check the agent's RBAC (patch dataplaneconfigs/status)`,
      ),
      { status: answer.status },
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
 * The agent's watch settings: Pepr 1.1.4's watch defaults (reconnect check every 5 s, a watch
 * silent for 300 s is rebuilt, the watcher's own relist every 600 s), except that it never
 * gives up reconnecting (Pepr gives up after 5 failed attempts and throws).
 */
export const AGENT_WATCH_CFG: Readonly<WatchCfg> = {
  resyncDelaySec: 5,
  lastSeenLimitSeconds: 300,
  relistIntervalSec: 600,
};

/**
 * The watcher's events after which it may have missed changes: a cut connection or a failed
 * reconnect, a watch or list the API server refused, 410 Gone (the resourceVersion is too
 * old), an event that could not be decoded, and giving up.
 */
export const WATCH_FAILURES = [
  WatchEvent.NETWORK_ERROR,
  WatchEvent.WATCH_ERROR,
  WatchEvent.LIST_ERROR,
  WatchEvent.OLD_RESOURCE_VERSION,
  WatchEvent.DATA_ERROR,
  WatchEvent.GIVE_UP,
] as const;
export type WatchFailure = (typeof WATCH_FAILURES)[number];

export interface DataplaneConfigWatchHandlers {
  /** ADDED or MODIFIED */
  changed(config: DataplaneConfig): void;
  deleted(config: DataplaneConfig): void;
  /** one of WATCH_FAILURES, with what the watcher said */
  failed(event: WatchFailure, detail: string): void;
}

/**
 * A watch of every DataplaneConfig (kubernetes-fluent-client's Watcher, which Pepr's Watch
 * binding also uses but whose failure events it keeps to itself). Call start() on it, close()
 * to end it.
 */
export function watchDataplaneConfigs(
  handlers: DataplaneConfigWatchHandlers,
  cfg: Readonly<WatchCfg> = AGENT_WATCH_CFG,
) {
  const watcher = K8s(DataplaneConfig).Watch(
    (config, phase) => {
      if (phase === WatchPhase.Deleted) handlers.deleted(config);
      else if (phase === WatchPhase.Added || phase === WatchPhase.Modified)
        handlers.changed(config);
    },
    // The Watcher fills in defaults on the object it is given.
    { ...cfg },
  );
  for (const event of WATCH_FAILURES)
    watcher.events.on(event, (detail: unknown) => handlers.failed(event, errorMessage(detail)));
  return watcher;
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

const LEASE_KIND: CustomKind = { group: "coordination.k8s.io", version: "v1", plural: "leases" };

/**
 * Server-side applies this node's Lease (a renewal; the first one creates it) on the process's
 * kept-alive connections: through kubernetes-fluent-client each renewal, two a second, made a
 * TCP connection and a TLS handshake. A renewal with no answer after `timeoutMs` is abandoned,
 * its connection closed (one to an API server that went away is not waited on). The field
 * manager is the one kubernetes-fluent-client's Apply used, so the Lease keeps one owner.
 */
export async function applyLease(lease: V1Lease, timeoutMs = REQUEST_TIMEOUT_MS): Promise<void> {
  await applyCustomObject(
    LEASE_KIND,
    lease,
    { fieldManager: "pepr", force: true },
    customObjectsApi(timeoutMs),
  );
}

/** The Lease watch's settings: it reconnects forever and is rebuilt after 30 s of silence. */
const LEASE_WATCH_CFG: Readonly<WatchCfg> = {
  resyncDelaySec: 1,
  // Renewals arrive every renew interval: a watch silent for this long is dead.
  lastSeenLimitSeconds: 30,
  relistIntervalSec: 600,
};

export interface LeaseWatchHandlers {
  changed(lease: V1Lease): void;
  deleted(lease: V1Lease): void;
  /** the watch lost its connection or was refused: the view is not current until `relisted` */
  failed(detail: string): void;
  /** the watch (re)connected after listing: the view is current again */
  connected(): void;
}

/** A watch of the agent Leases in `namespace`. Call start() on it, close() to end it. */
export function watchLeases(namespace: string, handlers: LeaseWatchHandlers) {
  const watcher = K8s(V1Lease)
    .InNamespace(namespace)
    .WithLabel(LEASE_LABEL, LEASE_LABEL_VALUE)
    .Watch(
      (lease, phase) => {
        if (phase === WatchPhase.Deleted) handlers.deleted(lease);
        else if (phase === WatchPhase.Added || phase === WatchPhase.Modified)
          handlers.changed(lease);
      },
      { ...LEASE_WATCH_CFG },
    );
  for (const event of [
    WatchEvent.NETWORK_ERROR,
    WatchEvent.WATCH_ERROR,
    WatchEvent.LIST_ERROR,
    WatchEvent.RECONNECT,
  ])
    watcher.events.on(event, (detail: unknown) => handlers.failed(errorMessage(detail)));
  watcher.events.on(WatchEvent.CONNECT, () => handlers.connected());
  return watcher;
}

/**
 * Keeps `view` current from a watch of the agent Leases in `namespace` (the agent's and the
 * controller's one way of following them): `changed` is called when the live or lapsed nodes
 * change, `watchFailed` when a current view stops being current. start() and close() it.
 */
export function followLeases(
  namespace: string,
  view: LiveNodes,
  changed: (liveness: Liveness | undefined, before: string) => void,
  watchFailed: (detail: string) => void,
) {
  const notifier = new LivenessNotifier(view, changed);
  const watcher = watchLeases(namespace, {
    changed: lease => {
      view.observe(lease);
      notifier.check();
    },
    deleted: lease => {
      view.forget(lease);
      notifier.check();
    },
    failed: detail => {
      if (view.current) watchFailed(detail);
      view.current = false;
      notifier.check();
    },
    connected: () => {
      view.current = true;
      notifier.check();
    },
  });
  return {
    start: () => watcher.start(),
    close: () => {
      notifier.stop();
      watcher.close();
    },
  };
}
