// SPDX-License-Identifier: Apache-2.0
// An in-memory ClusterClient (the reconcile loop's only I/O seam): it answers the controller's
// writes the way the API server would, for the fields the controller reads back. The unit tests
// of the loop (test/unit/controller-reconciler.test.ts) and bench/reconcile.ts run on it;
// test/apiserver runs the same loop against a real kube-apiserver.
import type { KubernetesObject, Operation } from "kubernetes-fluent-client";
import type { SecretInfo } from "../../capabilities/gateway/compile/types";
import type { Write } from "../../capabilities/gateway/plan";
import type { ClusterClient, SecretRead } from "../../capabilities/gateway/reconciler";
import { WATCHED_KINDS, type SecretRef, type WatchedKind } from "../../capabilities/gateway/store";

/** Applies writes the way the API server would, for the fields the controller touches. */
export class MemoryCluster implements ClusterClient {
  objects = new Map<WatchedKind, KubernetesObject[]>(WATCHED_KINDS.map(k => [k, []]));
  executed: Write[] = [];
  failNext: ((write: Write) => boolean) | undefined;
  /** what failNext's write throws; a 409 unless set */
  failWith: unknown;
  /** writes that fail every time (a broken object), with a 422 */
  failAlways: ((write: Write) => boolean) | undefined;
  attempts: Write[] = [];

  add(kind: WatchedKind, object: KubernetesObject): void {
    this.objects.get(kind)!.push(structuredClone(object));
  }
  find(kind: WatchedKind, namespace: string | undefined, name: string) {
    return this.objects
      .get(kind)!
      .find(o => o.metadata?.name === name && o.metadata?.namespace === namespace) as
      | (KubernetesObject & { status?: Record<string, unknown>; spec?: Record<string, unknown> })
      | undefined;
  }
  secretInfos: SecretInfo[] = [];
  secretReads: SecretRef[][] = [];
  /** refs ("ns/name") whose read fails with this problem */
  secretProblems = new Map<string, string>();
  async secrets(refs: SecretRef[]): Promise<SecretRead[]> {
    this.secretReads.push(refs);
    return refs.map(ref => {
      const problem = this.secretProblems.get(`${ref.namespace}/${ref.name}`);
      if (problem) return { ...ref, problem, retry: true };
      const secret = this.secretInfos.find(
        s => ref.namespace === s.namespace && ref.name === s.name,
      );
      return secret ? { ...ref, secret } : { ...ref };
    });
  }
  async list(kind: WatchedKind) {
    return structuredClone(this.objects.get(kind)!);
  }
  async execute(write: Write) {
    this.attempts.push(write);
    if (this.failAlways?.(write)) {
      throw {
        status: 422,
        statusText: "Unprocessable Entity",
        data: { message: `${write.name} is refused by an admission policy` },
      };
    }
    if (this.failNext?.(write)) {
      this.failNext = undefined;
      throw (
        this.failWith ?? {
          status: 409,
          statusText: "Conflict",
          data: { message: "the object has been modified" },
        }
      );
    }
    this.executed.push(write);
    switch (write.op) {
      case "applyDataplaneConfig": {
        const list = this.objects.get("DataplaneConfig")!;
        const index = list.findIndex(
          o => o.metadata?.name === write.name && o.metadata?.namespace === write.namespace,
        );
        const stored = structuredClone(write.object) as KubernetesObject;
        if (index >= 0) list[index] = stored;
        else list.push(stored);
        return structuredClone(stored);
      }
      case "applyGatewayService":
      case "applyGatewayEndpointSlice": {
        const kind = write.op === "applyGatewayService" ? "Service" : "EndpointSlice";
        const list = this.objects.get(kind)!;
        const index = list.findIndex(
          o => o.metadata?.name === write.name && o.metadata?.namespace === write.namespace,
        );
        // A server-side apply keeps what others set and takes the fields it sends.
        const stored = {
          ...(index >= 0 ? list[index] : {}),
          ...structuredClone(write.object),
        } as KubernetesObject;
        if (index >= 0) list[index] = stored;
        else list.push(stored);
        return structuredClone(stored);
      }
      case "deleteGatewayService":
      case "deleteGatewayEndpointSlice": {
        const kind = write.op === "deleteGatewayService" ? "Service" : "EndpointSlice";
        this.objects.set(
          kind,
          this.objects
            .get(kind)!
            .filter(
              o => !(o.metadata?.name === write.name && o.metadata?.namespace === write.namespace),
            ),
        );
        return undefined;
      }
      case "deleteDataplaneConfig": {
        const list = this.objects.get("DataplaneConfig")!;
        this.objects.set(
          "DataplaneConfig",
          list.filter(
            o => !(o.metadata?.name === write.name && o.metadata?.namespace === write.namespace),
          ),
        );
        return undefined;
      }
      case "patchStatus": {
        const object = this.find(write.kind, write.namespace, write.name)!;
        const status: Record<string, unknown> = { ...(object.status ?? {}) };
        for (const [field, value] of Object.entries(write.status)) {
          if (value === null) delete status[field];
          else status[field] = value;
        }
        object.status = status;
        return structuredClone(object);
      }
      case "addFinalizer":
      case "removeFinalizer": {
        const gateway = this.find("Gateway", write.namespace, write.name)!;
        applyJSONPatch(gateway, write.patch);
        return structuredClone(gateway);
      }
    }
  }
}

/** RFC 6902 test/add/remove, enough for finalizer patches; a failed test throws like the API server. */
function applyJSONPatch(target: object, patch: Operation[]): void {
  for (const operation of patch) {
    const path = operation.path.split("/").slice(1);
    const last = path.pop()!;
    let parent = target as Record<string, unknown>;
    for (const segment of path) parent = parent[segment] as Record<string, unknown>;
    if (operation.op === "test") {
      if (JSON.stringify(parent?.[last]) !== JSON.stringify(operation.value))
        throw {
          status: 422,
          statusText: "Unprocessable Entity",
          data: { message: `test failed at ${operation.path}` },
        };
    } else if (operation.op === "add") {
      if (Array.isArray(parent) && last === "-") parent.push(operation.value);
      else parent[last] = operation.value;
    } else if (operation.op === "remove") {
      if (Array.isArray(parent)) parent.splice(Number(last), 1);
      else delete parent[last];
    }
  }
}
