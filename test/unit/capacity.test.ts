// SPDX-License-Identifier: Apache-2.0
// The capacity planner's arithmetic (capabilities/agent/capacity.ts); its effect on real maps
// is test/agent/capacity.test.ts.
import t from "tap";
import { admissionOrder } from "../../capabilities/agent/loop.js";
import { admitByCapacity, serviceUsage } from "../../capabilities/agent/capacity.js";
import { desiredState } from "../../capabilities/agent/desired.js";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";

const backend = (i: number, weight = 1) => ({ ip: `10.0.${i >> 8}.${i & 255}`, port: 80, weight });

t.test("what one service takes", async t => {
  t.same(
    serviceUsage({ backends: [backend(1)], rejectWeight: 0 }),
    {
      services: 1,
      backends: 1,
      tableChunks: 16,
      tableBackends: 1,
    },
    "one backend: the smallest table, 16,381 slots in 16 chunks",
  );
  t.same(
    serviceUsage({ backends: Array.from({ length: 17 }, (_, i) => backend(i)), rejectWeight: 0 })
      .tableChunks,
    17,
    "17 backends: 17,000 slots and more",
  );
  t.same(
    serviceUsage({ backends: [backend(1), backend(2, 0), backend(1)], rejectWeight: 2 }),
    { services: 1, backends: 1, tableChunks: 16, tableBackends: 2 },
    "a listed duplicate merges; a weight-0 backend is no member and has no table place; the rejected share has a place but no member entry",
  );
  t.same(serviceUsage({ backends: [], rejectWeight: 0 }).tableChunks, 0, "no weight: no table");
});

t.test("configs are admitted oldest first, the same on every node", async t => {
  const c = (name: string, created?: string) =>
    ({ metadata: { namespace: "ns", name, creationTimestamp: created } }) as DataplaneConfig;
  t.same(
    admissionOrder([
      c("b", "2026-01-02T00:00:00Z"),
      c("a", "2026-01-03T00:00:00Z"),
      c("c", "2026-01-02T00:00:00Z"),
      c("z"),
    ]),
    ["ns/z", "ns/b", "ns/c", "ns/a"],
    "by creation time, then by name; one without a time first",
  );
});

t.test("a table services share counts once, in whichever config needs it first", async t => {
  // Two Gateways of five listeners each, every listener sending to the same two backends: one
  // table of 16 chunks serves all ten services. Room for two tables (one for the rewrite).
  const config = (name: string, created: string, backends = [backend(1), backend(2)]) =>
    ({
      apiVersion: "blixt.dev/v1alpha1",
      kind: "DataplaneConfig",
      metadata: { namespace: "ns", name, generation: 1, creationTimestamp: created },
      spec: {
        gatewayName: name,
        gatewayGeneration: 1,
        address: `198.18.9.${name.charCodeAt(0)}`,
        listeners: Array.from({ length: 5 }, (_, i) => ({
          name: `l${i}`,
          port: 1000 + i,
          protocol: "TCP",
          rejectWeight: 0,
          backends: [
            { weight: 1, endpoints: backends.map(b => ({ address: b.ip, port: b.port })) },
          ],
        })),
      },
    }) as DataplaneConfig;
  const limits = { services: 100, backends: 100, tableChunks: 32, tableBackends: 100 };
  const empty = { states: new Map(), actual: { services: [], addresses: [] } };
  const configs = [config("a", "2026-01-01T00:00:00Z"), config("b", "2026-01-02T00:00:00Z")];
  const admitted = admitByCapacity(
    desiredState(configs, "node-a"),
    admissionOrder(configs),
    limits,
    empty,
    "node-a",
  );
  t.equal(admitted.services.length, 10, "all ten services fit");
  t.same([...admitted.problems.keys()], [], "and no config is refused");

  const third = config("c", "2026-01-03T00:00:00Z", [backend(3), backend(4)]);
  const more = [...configs, third];
  const refused = admitByCapacity(
    desiredState(more, "node-a"),
    admissionOrder(more),
    limits,
    empty,
    "node-a",
  );
  t.match(
    refused.problems.get("ns/c"),
    /it needs 16 Maglev table chunks and 0 of 32 are free \(map blixt_mg_chunks, 16 kept/,
    "a config of another backend set needs a table of its own, and there is no room for it",
  );
  t.equal(refused.services.length, 10, "the two that share still apply");
});
