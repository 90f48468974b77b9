// SPDX-License-Identifier: Apache-2.0
// blixt's admission webhook through the real apiserver: a DataplaneConfig written by a user
// (not the controller) is denied with a message that says what to do instead, and a TCPRoute
// to a Service that does not exist is admitted with a warning predicting its condition, which
// kubectl prints on stderr; the condition then appears.
import t, { type Test } from "tap";
import {
  apply,
  clusterSkipReason,
  freshNamespace,
  getObject,
  kubectlRun,
  routeParentConditions,
  waitFor,
  waitForCondition,
} from "../lib/cluster.js";

const skip = clusterSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(5 * 60 * 1000);
  t.test("admission through the apiserver", run);
}

async function run(t: Test) {
  const namespace = await freshNamespace(t, "blixt-e2e-admission");
  const port = 7300;
  await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: admission, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners: [{name: tcp, protocol: TCP, port: ${port}}]
`);
  // The controller's own table for this Gateway: a spec the CRD schema accepts, so only the
  // webhook stands between a user and the dataplane.
  const compiled = await waitFor(`DataplaneConfig ${namespace}/admission`, () =>
    getObject("dataplaneconfig", "admission", namespace),
  );

  await t.test("a DataplaneConfig created by a user is denied", async t => {
    const result = await kubectlRun(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "blixt.dev/v1alpha1",
        kind: "DataplaneConfig",
        metadata: { name: "forged", namespace },
        spec: compiled.spec,
      }),
    );
    t.not(result.exitCode, 0, "kubectl apply fails");
    t.match(result.stderr, /denied the request/, "the webhook denied it", {
      stderr: result.stderr,
    });
    t.match(
      result.stderr,
      `DataplaneConfig ${namespace}/forged: spec is written only by blixt's controller`,
      "the message names the object and who may write it",
    );
    t.match(result.stderr, /change the Gateway and its routes instead/, "and says what to do");
    t.equal(
      await getObject("dataplaneconfig", "forged", namespace),
      undefined,
      "nothing was stored",
    );
  });

  await t.test("a user's change to the controller's DataplaneConfig is denied", async t => {
    const result = await kubectlRun([
      "-n",
      namespace,
      "patch",
      "dataplaneconfig",
      "admission",
      "--type=merge",
      "-p",
      JSON.stringify({ spec: { address: "198.18.0.99" } }),
    ]);
    t.not(result.exitCode, 0, "kubectl patch fails");
    t.match(
      result.stderr,
      `DataplaneConfig ${namespace}/admission: spec is written only by blixt's controller`,
      "with the webhook's message",
      { stderr: result.stderr },
    );
    const after = await getObject("dataplaneconfig", "admission", namespace);
    t.same(after?.spec, compiled.spec, "the table is unchanged");
  });

  await t.test("a TCPRoute to a missing Service is admitted with a warning", async t => {
    const result = await kubectlRun(
      ["apply", "-f", "-"],
      `
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: dangling, namespace: ${namespace}}
spec:
  parentRefs: [{name: admission}]
  rules: [{backendRefs: [{name: missing, port: 3000}]}]
`,
    );
    t.equal(result.exitCode, 0, "kubectl apply succeeds", { stderr: result.stderr });
    const warning = result.stderr.split("\n").find(line => line.startsWith("Warning: "));
    t.ok(warning, "kubectl prints a Warning: line", { stderr: result.stderr });
    t.match(
      warning ?? "",
      `Service "missing" not found in namespace "${namespace}"`,
      "naming the Service and namespace",
    );
    t.match(
      warning ?? "",
      /ResolvedRefs will be False \(BackendNotFound\)/,
      "and the condition it predicts",
    );
    const condition = await waitForCondition("tcproute", "dangling", namespace, "ResolvedRefs", {
      status: "False",
      reason: "BackendNotFound",
      conditions: r => routeParentConditions(r, "admission"),
    });
    t.pass(`the route then reports ResolvedRefs False BackendNotFound: ${condition.message}`);
  });
}
