// SPDX-License-Identifier: Apache-2.0
// The blixt command as the image ships it: cli/blixt.ts bundled by esbuild into one file, with
// the flags hack/image/stage-app.sh uses. In one bundle every module shares one import.meta.url,
// so a module that runs itself "when it is the entry point" runs inside every blixt command; the
// chart's uninstall hook runs this bundle, so each subcommand must do what it says and no more.
import t from "tap";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { execa } from "execa";

const repo = resolve(import.meta.dirname, "../..");
// Inside the checkout, so the bundle's external imports resolve to node_modules as in /app.
mkdirSync(join(repo, "dist"), { recursive: true });
const dir = mkdtempSync(join(repo, "dist", "cli-bundle-test-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const bundle = join(dir, "blixt.mjs");
await execa(
  "npx",
  [
    "--no-install",
    "esbuild",
    "cli/blixt.ts",
    "--bundle",
    "--platform=node",
    "--format=esm",
    "--target=node22",
    "--packages=external",
    "--log-level=warning",
    `--outfile=${bundle}`,
  ],
  { cwd: repo },
);

const blixt = (...args: string[]) =>
  execa(process.execPath, [bundle, ...args], { cwd: dir, reject: false });

t.test("blixt uninstall runs its own command, and only that", async t => {
  const help = await blixt("uninstall", "detach-node", "--help");
  t.equal(help.exitCode, 0, help.stderr);
  t.match(help.stdout, /^Usage: blixt uninstall detach-node[^]*--pin-dir/);
  t.equal(help.stdout.match(/^Usage:/gm)?.length, 1, "one usage, no other command's");
  t.equal(help.stderr, "", "and no error");

  const usage = await blixt("uninstall", "detach-all");
  t.equal(usage.exitCode, 2, "a usage error exits 2");
  t.match(
    usage.stderr,
    /^error: required option '--namespace <ns>' not specified\n?$/,
    "in one line naming the option",
  );
});
