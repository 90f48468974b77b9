// SPDX-License-Identifier: Apache-2.0
// The capacity planner's arithmetic (capabilities/agent/capacity.ts); its effect on real maps
// is test/agent/capacity.test.ts.
import t from "tap";
import { admissionOrder } from "../../capabilities/agent/loop.js";
import { serviceUsage } from "../../capabilities/agent/capacity.js";
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
    { services: 1, backends: 2, tableChunks: 16, tableBackends: 2 },
    "a listed duplicate merges; a weight-0 backend has an entry but no table place; the rejected share has one",
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
