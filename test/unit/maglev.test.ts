// SPDX-License-Identifier: Apache-2.0
import t from "tap";
import {
  buildMaglevTable,
  maglevTableSize,
  MAGLEV_MAX_SIZE,
  MAGLEV_MIN_SIZE,
  type MaglevBackend,
} from "../../capabilities/dataplane/maglev.js";

const backendsOf = (n: number, weight = 1): MaglevBackend[] =>
  Array.from({ length: n }, (_, i) => ({ key: `10.0.${i >> 8}.${i & 255}:8080`, weight }));

function slotCounts(table: Int32Array, n: number): number[] {
  const counts = new Array<number>(n).fill(0);
  for (const i of table) counts[i]++;
  return counts;
}

const isPrime = (n: number) => {
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return n > 1;
};

t.test("maglevTableSize: a prime ≥ 100 × backends, within floor and cap", async t => {
  for (const n of [0, 1, 2, 10, 11, 57, 100, 400, 655]) {
    const size = maglevTableSize(n);
    t.ok(isPrime(size), `size for ${n} backends (${size}) is prime`);
    t.ok(
      size >= Math.max(100 * n, MAGLEV_MIN_SIZE),
      `size for ${n} backends (${size}) ≥ 100 × ${n} and ≥ the floor`,
    );
    t.ok(size <= MAGLEV_MAX_SIZE, `size for ${n} backends (${size}) ≤ the cap`);
  }
  t.equal(maglevTableSize(0), maglevTableSize(1), "the floor applies to tiny services");
  t.equal(maglevTableSize(5000), MAGLEV_MAX_SIZE, "large services are capped");
  t.ok(isPrime(MAGLEV_MAX_SIZE), "the cap is prime");
  t.throws(() => maglevTableSize(-1), /non-negative integer/);
});

t.test("every slot is filled with a valid backend index", async t => {
  for (const n of [1, 2, 3, 7, 20]) {
    const backends = backendsOf(n);
    const table = buildMaglevTable(backends, maglevTableSize(n));
    t.ok(
      table.every(i => i >= 0 && i < n),
      `${n} backends: all ${table.length} slots hold an index in [0, ${n})`,
    );
  }
});

t.test("weights are respected within 1 % of the table", async t => {
  const cases: { name: string; weights: number[] }[] = [
    { name: "equal", weights: [1, 1, 1, 1, 1] },
    { name: "80/20", weights: [80, 20] },
    { name: "1/99", weights: [1, 99] },
    { name: "mixed", weights: [1, 2, 3, 4, 10, 0, 7] },
    { name: "large backendRef weights", weights: [1000000, 1, 500000] },
  ];
  for (const { name, weights } of cases) {
    const backends = weights.map((weight, i) => ({ key: `192.0.2.${i}:53`, weight }));
    const size = maglevTableSize(backends.length);
    const counts = slotCounts(buildMaglevTable(backends, size), backends.length);
    const total = weights.reduce((a, b) => a + b, 0);
    for (const [i, w] of weights.entries()) {
      const expected = (size * w) / total;
      t.ok(
        Math.abs(counts[i] - expected) <= 0.01 * size,
        `${name}: backend ${i} weight ${w} has ${counts[i]} slots, expected ≈ ${expected.toFixed(1)}`,
      );
    }
  }
});

t.test("weight 0 is never chosen", async t => {
  const backends = [
    { key: "a:1", weight: 0 },
    { key: "b:1", weight: 3 },
    { key: "c:1", weight: 0 },
    { key: "d:1", weight: 1 },
  ];
  const table = buildMaglevTable(backends, maglevTableSize(4));
  const counts = slotCounts(table, 4);
  t.same([counts[0], counts[2]], [0, 0], "weight-0 backends own no slot");
  t.ok(counts[1] > 0 && counts[3] > 0, "weighted backends own slots");
});

t.test("no backend with weight > 0 is an error the caller turns into a reject", async t => {
  t.throws(() => buildMaglevTable([], 1009), /no backend has a weight > 0/);
  t.throws(
    () => buildMaglevTable([{ key: "a:1", weight: 0 }], 1009),
    /no backend has a weight > 0/,
  );
});

t.test("bad input names what is wrong", async t => {
  t.throws(() => buildMaglevTable(backendsOf(2), 16383), /size 16383 must be prime/);
  t.throws(() => buildMaglevTable([{ key: "a:1", weight: -1 }], 1009), /backend "a:1".*weight -1/);
  t.throws(
    () =>
      buildMaglevTable(
        [
          { key: "a:1", weight: 1 },
          { key: "a:1", weight: 2 },
        ],
        1009,
      ),
    /key "a:1" appears twice/,
  );
});

t.test("the table depends on keys and weights, not on input order", async t => {
  const backends = [
    { key: "10.1.0.1:80", weight: 5 },
    { key: "10.1.0.2:80", weight: 1 },
    { key: "10.1.0.3:80", weight: 0 },
    { key: "10.1.0.4:80", weight: 2 },
    { key: "10.1.0.5:80", weight: 2 },
  ];
  const size = maglevTableSize(backends.length);
  // Compare backend keys per slot: indices differ by construction when the order differs.
  const keysPerSlot = (bs: MaglevBackend[]) =>
    Array.from(buildMaglevTable(bs, size), i => bs[i].key);
  const reference = keysPerSlot(backends);
  const reversed = [...backends].reverse();
  const shuffled = [backends[3], backends[0], backends[4], backends[2], backends[1]];
  t.same(keysPerSlot(reversed), reference, "reversed input gives the same table");
  t.same(keysPerSlot(shuffled), reference, "shuffled input gives the same table");
  t.same(keysPerSlot(backends), reference, "a second build gives the same table");
});

t.test("removing one of N backends moves only its slots plus at most 1 % of the table", async t => {
  for (const n of [3, 5, 10, 40]) {
    const backends = backendsOf(n);
    const size = maglevTableSize(n);
    const before = Array.from(buildMaglevTable(backends, size), i => backends[i].key);
    for (const removed of [0, Math.floor(n / 2), n - 1]) {
      const rest = backends.filter((_, i) => i !== removed);
      // Same size: the agent keeps M while the service exists, so slots are comparable.
      const after = Array.from(buildMaglevTable(rest, size), i => rest[i].key);
      let moved = 0;
      for (let s = 0; s < size; s++)
        if (before[s] !== backends[removed].key && before[s] !== after[s]) moved++;
      t.ok(
        moved <= 0.01 * size,
        `${n} backends, remove #${removed}: ${moved} of ${size} other slots moved (≤ ${Math.floor(0.01 * size)})`,
      );
    }
  }
});

t.test("adding a weight-0 backend changes nothing", async t => {
  const backends = backendsOf(4);
  const size = maglevTableSize(5);
  const before = Array.from(buildMaglevTable(backends, size), i => backends[i].key);
  const withIdle = [...backends, { key: "10.9.9.9:8080", weight: 0 }];
  const after = Array.from(buildMaglevTable(withIdle, size), i => withIdle[i].key);
  t.same(after, before);
});
