// SPDX-License-Identifier: Apache-2.0
// The Go harness around the upstream conformance suite compiles against the pinned suite
// (go vet builds every package it imports) and its own Go tests pass: the catalogue puts
// each upstream test in the right profile at the right level. TestConformance itself skips
// here (it needs -gateway-class and a cluster; hack/conformance.sh runs it).
// Cold, the compile of the suite and its Kubernetes dependencies takes about 3 minutes.
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";

const harness = join(import.meta.dirname);

t.test("go vet passes on the harness", async t => {
  const vet = await execa("go", ["vet", "./..."], { cwd: harness, reject: false, all: true });
  t.equal(vet.exitCode, 0, vet.all || "go vet ./... in test/conformance");
});

t.test("the harness's Go tests pass, and the suite run skips without a cluster", async t => {
  const run = await execa("go", ["test", "-count=1", "-v", "./..."], {
    cwd: harness,
    reject: false,
    all: true,
  });
  t.equal(run.exitCode, 0, run.all);
  t.match(run.all, /--- PASS: TestCatalogueSupportLevels/);
  t.match(run.all, /--- PASS: TestCatalogueHasNoTestOutsideTheProfiles/);
  t.match(run.all, /--- SKIP: TestConformance/);
});
