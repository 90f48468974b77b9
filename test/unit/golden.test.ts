// SPDX-License-Identifier: Apache-2.0
/**
 * Golden files of the compile step: test/golden/<case>.in.yaml (objects, in the format of
 * `blixt compile -f`) → <case>.out.yaml (statuses, DataplaneConfigs, allocations).
 * BLIXT_UPDATE_GOLDEN=1 rewrites the .out files; review their diff like code.
 */
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { compile } from "../../capabilities/gateway/compile/index.js";
import { loadSnapshot, renderOutput } from "../../capabilities/gateway/compile/documents.js";
import type { Snapshot } from "../../capabilities/gateway/compile/types.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "golden");
const update = process.env.BLIXT_UPDATE_GOLDEN === "1";
// A case without a CompileEnvironment `now` still compiles to the same bytes every run.
const FIXED_NOW = "2026-01-01T00:00:00Z";

const cases = readdirSync(dir)
  .filter(f => f.endsWith(".in.yaml"))
  .map(f => f.slice(0, -".in.yaml".length))
  .sort();

t.ok(cases.length > 0, "there are golden cases");

/** Every list of the snapshot reversed: the output must not depend on the order objects arrive in. */
function reversed(snapshot: Snapshot): Snapshot {
  const out = { ...snapshot } as Record<string, unknown>;
  for (const [k, v] of Object.entries(out)) if (Array.isArray(v)) out[k] = [...v].reverse();
  return out as unknown as Snapshot;
}

for (const name of cases) {
  t.test(name, async t => {
    const inPath = join(dir, `${name}.in.yaml`);
    const outPath = join(dir, `${name}.out.yaml`);
    const load = () =>
      loadSnapshot([{ name: inPath, text: readFileSync(inPath, "utf8") }], FIXED_NOW);
    const { snapshot, errors } = load();
    t.same(errors, [], "the input reads cleanly");
    const actual = renderOutput(compile(snapshot), "yaml");
    if (update) {
      writeFileSync(outPath, actual);
      t.pass(`rewrote ${name}.out.yaml`);
    } else {
      let expected: string;
      try {
        expected = readFileSync(outPath, "utf8");
      } catch {
        t.fail(`${name}.out.yaml is missing; run with BLIXT_UPDATE_GOLDEN=1 and review it`);
        return;
      }
      t.equal(actual, expected, `${name}.out.yaml matches (BLIXT_UPDATE_GOLDEN=1 rewrites it)`);
    }
    t.equal(
      renderOutput(compile(load().snapshot), "yaml"),
      actual,
      "compiling again gives the same bytes",
    );
    t.equal(
      renderOutput(compile(reversed(load().snapshot)), "yaml"),
      actual,
      "input order does not change the output",
    );
  });
}
