// SPDX-License-Identifier: Apache-2.0
// hack/conformance.sh --gateway-api-dir DIR: the suite comes from a local gateway-api tree (a
// change under review), not the pinned module, and blixt's own harness files stay as they are.
// The tree here is made from the pinned modules in Go's module cache, laid out as a checkout
// (the conformance module in conformance/), plus one test that exists only in that tree.
// Building the harness against it recompiles the gateway-api packages: about 1-2 minutes.
import { execa } from "execa";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";

const root = join(import.meta.dirname, "..", "..");
const script = join(root, "hack", "conformance.sh");
const harnessGoMod = join(root, "test", "conformance", "go.mod");
const harnessGoSum = join(root, "test", "conformance", "go.sum");

const PROBE = `// A test that exists only in this local tree.
package tests

import (
	"testing"

	confsuite "sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

func init() {
	ConformanceTests = append(ConformanceTests, BlixtLocalTreeProbe)
}

var BlixtLocalTreeProbe = confsuite.ConformanceTest{
	ShortName:   "BlixtLocalTreeProbe",
	Description: "A test only the local tree has.",
	Features:    []features.FeatureName{features.SupportGateway, features.SupportTCPRoute},
	Test:        func(t *testing.T, suite *confsuite.ConformanceTestSuite) {},
}
`;

async function pinnedModuleDir(module: string): Promise<string> {
  const harness = join(root, "test", "conformance");
  await execa("go", ["mod", "download", module], { cwd: harness });
  const { stdout } = await execa("go", ["list", "-m", "-f", "{{.Dir}}", module], { cwd: harness });
  return stdout.trim();
}

// The build is the slow part; on a loaded machine it has taken longer than the default timeout.
t.setTimeout(10 * 60 * 1000);

t.test("a directory that is not a gateway-api checkout is refused, naming the option", async t => {
  const dir = await mkdtemp(join(tmpdir(), "blixt-not-gateway-api-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, "go.mod"), "module example.com/other\n");
  const run = await execa(script, ["catalogue", "--gateway-api-dir", dir], { reject: false });
  t.not(run.exitCode, 0, "exit status");
  t.match(run.stderr, `--gateway-api-dir ${dir}: its go.mod is not module sigs.k8s.io/gateway-api`);
});

t.test(
  "the catalogue comes from the local tree, and blixt's harness files are untouched",
  async t => {
    const work = await mkdtemp(join(tmpdir(), "blixt-gateway-api-tree-"));
    t.teardown(() => rm(work, { recursive: true, force: true }));
    const tree = join(work, "gateway-api");
    await cp(await pinnedModuleDir("sigs.k8s.io/gateway-api"), tree, { recursive: true });
    await cp(
      await pinnedModuleDir("sigs.k8s.io/gateway-api/conformance"),
      join(tree, "conformance"),
      {
        recursive: true,
      },
    );
    await execa("chmod", ["-R", "u+w", tree]);
    await writeFile(join(tree, "conformance", "tests", "blixt-local-tree-probe.go"), PROBE);
    const goMod = await readFile(harnessGoMod, "utf8");
    const goSum = await readFile(harnessGoSum, "utf8");
    const cache = join(work, "cache");
    await mkdir(cache);

    const run = await execa(script, ["catalogue", "--gateway-api-dir", tree], {
      reject: false,
      env: { BLIXT_CACHE: cache },
    });
    t.equal(run.exitCode, 0, run.stderr);
    t.match(run.stderr, `suite: the local gateway-api tree ${tree} (not a git checkout)`);
    const path = run.stdout.trim().split("\n").at(-1) ?? "";
    t.match(path, /catalogue-local-[0-9a-f]{12}\.json$/);
    const catalogue = JSON.parse(await readFile(path, "utf8")) as {
      name: string;
      profiles: Record<string, string>;
    }[];
    const probe = catalogue.find(entry => entry.name === "BlixtLocalTreeProbe");
    t.same(probe?.profiles, { "GATEWAY-TCP": "core" }, "the tree's own test is in the catalogue");
    t.ok(
      catalogue.some(entry => entry.name === "TCPRouteInvalidNonTCPListener"),
      "the tree's other tests too",
    );
    t.equal(await readFile(harnessGoMod, "utf8"), goMod, "test/conformance/go.mod unchanged");
    t.equal(await readFile(harnessGoSum, "utf8"), goSum, "test/conformance/go.sum unchanged");

    const pinned = await execa(script, ["catalogue"], { env: { BLIXT_CACHE: cache } });
    const pinnedCatalogue = JSON.parse(
      await readFile(pinned.stdout.trim().split("\n").at(-1) ?? "", "utf8"),
    ) as { name: string }[];
    t.notOk(
      pinnedCatalogue.some(entry => entry.name === "BlixtLocalTreeProbe"),
      "the pinned suite's catalogue does not have it",
    );
  },
);
