// SPDX-License-Identifier: Apache-2.0
/**
 * The compile step against broken objects: every golden input, mutated at random (a fixed seed,
 * so a failure replays), must compile without throwing, render, and keep every condition
 * message within the CRDs' 32,768 characters. The API server's schema stops much of this; the
 * compile step must not rely on it (objects from older CRDs, `blixt compile -f` on any file).
 */
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { compile } from "../../capabilities/gateway/compile/index.js";
import { loadSnapshot, renderOutput } from "../../capabilities/gateway/compile/documents.js";
import type { Snapshot } from "../../capabilities/gateway/compile/types.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "golden");
const MESSAGE_LIMIT = 32_768;
const ROUNDS_PER_CASE = Number(process.env.BLIXT_FUZZ_ROUNDS ?? 60);

/** mulberry32: a small seeded generator, so every run mutates the same way. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every [container, key] pair below `root`, so a mutation can land anywhere. */
function slots(root: Json): [Record<string, Json> | Json[], string | number][] {
  const out: [Record<string, Json> | Json[], string | number][] = [];
  const walk = (node: Json) => {
    if (Array.isArray(node)) {
      node.forEach((child, i) => {
        out.push([node, i]);
        walk(child);
      });
    } else if (node && typeof node === "object") {
      for (const [k, child] of Object.entries(node)) {
        out.push([node, k]);
        walk(child);
      }
    }
  };
  walk(root);
  return out;
}

function mutate(root: Json, random: () => number): string {
  const all = slots(root);
  if (all.length === 0) return "nothing to mutate";
  const [container, key] = all[Math.floor(random() * all.length)];
  const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)];
  const long = (n: number) =>
    Array.from({ length: n }, () => pick([..."abcxyz-./_%0123456789"])).join("");
  const current = (container as Record<string, Json>)[key as string];
  const kinds: [string, () => Json | undefined][] = [
    ["deleted", () => undefined],
    ["null", () => null],
    ["a number", () => pick([-1, 0, 65536, 2 ** 40, 1.5, Number.MAX_SAFE_INTEGER])],
    ["a string", () => pick(["", "../../x", "TCP", "UDP", long(300), "a".repeat(70_000)])],
    ["a boolean", () => random() < 0.5],
    ["an empty list", () => []],
    ["an empty object", () => ({})],
    ["a list of itself", () => [current, current]],
    [
      "repeated 64 times with long names",
      () =>
        Array.isArray(current)
          ? Array.from({ length: 64 }, (_, i) =>
              current.length > 0 && current[0] && typeof current[0] === "object"
                ? { ...(current[0] as object), name: `${long(200)}-${i}` }
                : long(250),
            )
          : current,
    ],
  ];
  const [what, make] = pick(kinds);
  const value = make();
  if (Array.isArray(container) && value === undefined) container.splice(key as number, 1);
  else if (value === undefined) delete (container as Record<string, Json>)[key as string];
  else (container as Record<string, Json>)[key as string] = value;
  return `${String(key)} ${what}`;
}

function longMessages(output: unknown): string[] {
  const found: string[] = [];
  const walk = (node: unknown, path: string) => {
    if (Array.isArray(node)) node.forEach((c, i) => walk(c, `${path}[${i}]`));
    else if (node && typeof node === "object") {
      for (const [k, v] of Object.entries(node)) {
        if (k === "message" && typeof v === "string" && v.length > MESSAGE_LIMIT) {
          found.push(`${path}.message: ${v.length} characters`);
        }
        walk(v, `${path}.${k}`);
      }
    }
  };
  walk(output, "");
  return found;
}

const cases = readdirSync(dir)
  .filter(f => f.endsWith(".in.yaml"))
  .sort();

t.ok(cases.length > 0, "there are golden inputs to mutate");

cases.forEach((file, caseIndex) => {
  t.test(file, async t => {
    const text = readFileSync(join(dir, file), "utf8");
    const base = loadSnapshot([{ name: file, text }], "2026-01-01T00:00:00Z").snapshot;
    const random = prng(0xb11c + caseIndex);
    const failures: string[] = [];
    for (let round = 0; round < ROUNDS_PER_CASE; round++) {
      const snapshot = structuredClone(base) as unknown as Json;
      const done: string[] = [];
      const count = 1 + Math.floor(random() * 4);
      for (let i = 0; i < count; i++) done.push(mutate(snapshot, random));
      try {
        const output = compile(snapshot as unknown as Snapshot);
        renderOutput(output, "yaml");
        for (const m of longMessages(output))
          failures.push(`round ${round} (${done.join("; ")}): ${m}`);
      } catch (error) {
        failures.push(
          `round ${round} (${done.join("; ")}): threw ${error instanceof Error ? error.stack : String(error)}`,
        );
      }
    }
    t.same(
      failures.slice(0, 5),
      [],
      `${ROUNDS_PER_CASE} mutated inputs compile, render, and keep messages short`,
    );
  });
});
