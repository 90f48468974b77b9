// SPDX-License-Identifier: Apache-2.0
// `helm uninstall` leaves nothing of blixt on the node: its chart's pre-delete hook detaches the
// programs from the node's interface and its pods' interfaces and removes the pins, the programs are freed, the pods
// are gone, and a Gateway address it served no longer answers. CRDs stay, as Helm keeps them.
//
// Destructive: blixt is not installed afterwards. hack/test.sh runs it last, and only on a
// cluster it brought up itself; by hand: BLIXT_CLUSTER=1 BLIXT_UNINSTALL=1 npx tap test/uninstall/
import t from "tap";
import { execa } from "execa";
import { existsSync } from "node:fs";
import {
  apply,
  clusterSh,
  clusterSkipReason,
  echoBackend,
  freshNamespace,
  gatewayAddress,
  helm,
  kubectlRun,
  listObjects,
  tcpEchoOnce,
  waitFor,
  waitForCondition,
  waitForDeployment,
} from "../lib/cluster.js";

const skip =
  clusterSkipReason() ??
  (process.env.BLIXT_UNINSTALL === "1"
    ? undefined
    : "uninstalls blixt: set BLIXT_UNINSTALL=1 (hack/test.sh does, last, on a cluster it started)");
const PIN_DIR = "/sys/fs/bpf/blixt";
const system = "blixt-system";

if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(8 * 60 * 1000);
  t.test(
    "helm uninstall detaches the dataplane and leaves nothing of blixt on the node",
    async t => {
      const namespace = await freshNamespace(t, "blixt-e2e-uninstall");
      const port = 7700;
      await apply(`
${echoBackend({ namespace, name: "tcp-echo", protocol: "TCP", port: 3000 })}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bye, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners: [{name: tcp, protocol: TCP, port: ${port}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: ${namespace}}
spec:
  parentRefs: [{name: bye}]
  rules: [{backendRefs: [{name: tcp-echo, port: 3000}]}]
`);
      await waitForDeployment(namespace, "tcp-echo");
      await waitForCondition("gateway", "bye", namespace, "Programmed", { status: "True" });
      const address = await gatewayAddress(namespace, "bye");
      await waitFor(`TCP ${address}:${port}`, () => tcpEchoOnce(address, port), {
        timeoutMs: 30_000,
      });

      // What blixt put on the node: programs attached to its interface, and pins.
      const attached = async () => {
        const { stdout } = await execa(clusterSh, ["node", "bpftool", "-j", "net", "show"]);
        const net = JSON.parse(stdout) as {
          xdp?: { devname: string; id: number; name?: string }[];
          tc?: { devname: string; id: number; name?: string }[];
        }[];
        return net
          .flatMap(n => [...(n.xdp ?? []), ...(n.tc ?? [])])
          .filter(p => (p.name ?? "").startsWith("blixt_"));
      };
      const before = await attached();
      t.ok(
        before.length > 0,
        `blixt programs attached before: ${before.map(p => `${p.devname}/${p.name}#${p.id}`).join(", ")}`,
      );
      t.ok(
        before.some(p => (p.name ?? "").startsWith("blixt_tc_pod")),
        "and to the pods' interfaces (clients inside the cluster)",
      );
      t.ok(existsSync(PIN_DIR), `${PIN_DIR} exists before`);

      await helm("uninstall", "blixt", "-n", system, "--wait", "--timeout", "5m");

      t.same(await attached(), [], "no blixt program is attached to any interface of the node");
      t.notOk(existsSync(PIN_DIR), `${PIN_DIR} is removed`);
      for (const program of before) {
        // Detached and unpinned, nothing holds the program: the kernel frees it.
        const shown = await waitFor(
          `program ${program.id} freed`,
          async () =>
            (await execa("bpftool", ["prog", "show", "id", String(program.id)], { reject: false }))
              .exitCode !== 0
              ? true
              : undefined,
          { timeoutMs: 30_000 },
        );
        t.ok(shown, `program ${program.name}#${program.id} is freed`);
      }
      // helm deletes the workloads; their pods go with the garbage collector, a little later.
      const left = await waitFor(
        "blixt's pods gone",
        async () =>
          (await listObjects("pod", system, "app.kubernetes.io/instance=blixt")).length === 0
            ? []
            : undefined,
        { timeoutMs: 120_000 },
      ).catch(async () =>
        (await listObjects("pod", system, "app.kubernetes.io/instance=blixt")).map(
          p => p.metadata.name,
        ),
      );
      t.same(left, [], "no blixt pod is left");
      const gatewayClass = await kubectlRun(["get", "gatewayclass", "blixt"]);
      t.not(gatewayClass.exitCode, 0, "the chart's GatewayClass is gone");
      await t.rejects(tcpEchoOnce(address, port), `${address}:${port} is no longer served`);
    },
  );
}
