// SPDX-License-Identifier: Apache-2.0
// serviceTable keeps the tables it built lately: services with the same weighted backend set get
// one table object, built once, and anything that changes the table changes the key.
import t from "tap";
import { buildMaglevTable, maglevTableSize } from "../../capabilities/dataplane/maglev.js";
import {
  serviceTable,
  TABLE_CACHE_BYTES,
  type Backend,
} from "../../capabilities/dataplane/tables.js";

const backends = (n: number, base = 1): Backend[] =>
  Array.from({ length: n }, (_, i) => ({ ip: `198.18.7.${base + i}`, port: 8080, weight: 1 }));

t.test("one table per backend set, equal to a fresh build", async t => {
  const first = serviceTable(backends(3), 0);
  // The same set in another order, one backend listed twice with its weight split.
  const again = serviceTable(
    [
      { ip: "198.18.7.3", port: 8080, weight: 1 },
      { ip: "198.18.7.2", port: 8080, weight: 1 },
      { ip: "198.18.7.1", port: 8080, weight: 0 },
      { ip: "198.18.7.1", port: 8080, weight: 1 },
    ],
    0,
  );
  t.equal(again, first, "the same object: built once");
  const fresh = buildMaglevTable(
    ["198.18.7.1:8080", "198.18.7.2:8080", "198.18.7.3:8080"].map(key => ({ key, weight: 1 })),
    maglevTableSize(3),
  );
  t.same([...first.slots], [...fresh], "the cached slots are the Maglev table of the set");
});

t.test("weights, the rejected share and remote backends are part of the key", async t => {
  const base = serviceTable(backends(3), 0);
  const weighted = serviceTable(
    backends(3).map((b, i) => (i === 0 ? { ...b, weight: 2 } : b)),
    0,
  );
  const rejecting = serviceTable(backends(3), 1);
  const remote = serviceTable(
    backends(3).map((b, i) => (i === 0 ? { ...b, remote: true } : b)),
    0,
  );
  for (const [name, other] of [
    ["a weight", weighted],
    ["a rejected share", rejecting],
    ["a remote backend", remote],
  ] as const)
    t.not(other, base, `${name} makes another table`);
  t.same(rejecting.backends.at(-1), "reject");
  t.same(remote.backends[0], { ip: "198.18.7.1", port: 8080, remote: true });
  t.not(
    [...weighted.slots].join(),
    [...base.slots].join(),
    "the weighted table differs in its slots",
  );
});

t.test("the cache holds a bounded number of bytes, oldest out first", async t => {
  const first = serviceTable(backends(2, 100), 0);
  const perTable = first.slots.byteLength;
  // Enough other sets of the same size to push the first one out.
  for (let i = 0; i <= TABLE_CACHE_BYTES / perTable; i++)
    serviceTable([{ ip: `198.19.${i >> 8}.${i & 255}`, port: 80, weight: 1 }], 0);
  const rebuilt = serviceTable(backends(2, 100), 0);
  t.not(rebuilt, first, "evicted: built again");
  t.same([...rebuilt.slots], [...first.slots], "to the same table");
});
