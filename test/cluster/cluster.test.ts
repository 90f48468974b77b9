// SPDX-License-Identifier: Apache-2.0
// Smoke test of the local cluster itself (hack/cluster.sh): the node is Ready, the Gateway
// API CRDs are Established, and a pod from the registry-free echo image runs and answers
// on its pod IP and through a ClusterIP Service, from inside the node's network namespace.
// Runs only with BLIXT_CLUSTER=1 (it needs root and the cached cluster binaries: build them
// once with `hack/cluster.sh build`). It uses a running cluster, or brings one up and takes
// it down again afterwards (BLIXT_CLUSTER_KEEP=1 leaves it running).
import t from "tap";
import { execa } from "execa";
import { fileURLToPath } from "node:url";

if (process.env.BLIXT_CLUSTER !== "1") {
  t.plan(0, "set BLIXT_CLUSTER=1 to run the local cluster smoke test (root, hack/cluster.sh)");
} else {
  // A cold `up` after a build is about a minute; the first build itself is not done here.
  t.setTimeout(10 * 60 * 1000);
  await smoke();
}

async function smoke() {
  const clusterSh = fileURLToPath(new URL("../../hack/cluster.sh", import.meta.url));
  const cluster = (args: string[], input?: string) =>
    execa(clusterSh, args, { input, reject: false, timeout: 9 * 60 * 1000 });
  const kubectl = async (...args: string[]) => {
    const result = await cluster(["kubectl", ...args]);
    if (result.exitCode !== 0)
      throw new Error(`kubectl ${args.join(" ")} failed: ${result.stderr}`);
    return result.stdout;
  };
  // Unique per run, so a leftover from an aborted run never collides.
  const namespace = `blixt-cluster-smoke-${process.pid}`;

  const running = (await cluster(["status"])).exitCode === 0;
  if (!running) {
    const up = await cluster(["up"]);
    t.equal(up.exitCode, 0, "hack/cluster.sh up succeeds", { stderr: up.stderr.slice(-4000) });
    if (up.exitCode !== 0) return;
  }
  t.teardown(async () => {
    if (!running && process.env.BLIXT_CLUSTER_KEEP !== "1") await cluster(["down"]);
    else
      await cluster([
        "kubectl",
        "delete",
        "namespace",
        namespace,
        "--wait=false",
        "--ignore-not-found",
      ]);
  });

  t.test("the node is Ready", async t => {
    const node = JSON.parse(await kubectl("get", "node", "blixt-node", "-o", "json"));
    const ready = node.status.conditions.find((c: { type: string }) => c.type === "Ready");
    t.equal(ready?.status, "True", `node blixt-node Ready (${ready?.reason}: ${ready?.message})`);
    t.equal(
      node.status.nodeInfo.kubeletVersion,
      "v1.36.3",
      "the kubelet reports the pinned version",
    );
    t.match(
      node.status.nodeInfo.containerRuntimeVersion,
      /^containerd:\/\/v?2\.4\.2/,
      "containerd 2.4.2 runs the pods",
    );
  });

  t.test("the Gateway API v1.6.3 standard CRDs are Established", async t => {
    for (const kind of [
      "gatewayclasses",
      "gateways",
      "tcproutes",
      "udproutes",
      "referencegrants",
      "httproutes",
    ]) {
      const crd = JSON.parse(
        await kubectl("get", "crd", `${kind}.gateway.networking.k8s.io`, "-o", "json"),
      );
      const established = crd.status.conditions.find(
        (c: { type: string }) => c.type === "Established",
      );
      t.equal(established?.status, "True", `${kind} Established`);
      t.equal(
        crd.metadata.annotations["gateway.networking.k8s.io/bundle-version"],
        "v1.6.3",
        `${kind} is v1.6.3`,
      );
      t.ok(
        crd.spec.versions.some(
          (v: { name: string; served: boolean }) => v.name === "v1" && v.served,
        ),
        `${kind} serves gateway.networking.k8s.io/v1`,
      );
    }
  });

  t.test("a pod runs and answers on its pod IP and its Service", async t => {
    const manifest = `
apiVersion: v1
kind: Namespace
metadata: {name: ${namespace}}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: ${namespace}, labels: {app: echo}}
spec:
  containers:
  - name: echo
    image: blixt.local/echo:v1
    imagePullPolicy: Never
    ports: [{containerPort: 8080, protocol: TCP}, {containerPort: 8080, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: ${namespace}}
spec:
  selector: {app: echo}
  ports: [{name: tcp, port: 80, targetPort: 8080, protocol: TCP}]
`;
    const applied = await cluster(["kubectl", "apply", "-f", "-"], manifest);
    t.equal(applied.exitCode, 0, "the namespace, pod and service apply", {
      stderr: applied.stderr,
    });
    const ready = await cluster([
      "kubectl",
      "-n",
      namespace,
      "wait",
      "--for=condition=Ready",
      "pod/echo",
      "--timeout=120s",
    ]);
    t.equal(ready.exitCode, 0, "pod echo becomes Ready", { stderr: ready.stderr });
    if (ready.exitCode !== 0) {
      t.comment(await kubectl("-n", namespace, "describe", "pod", "echo").catch(e => String(e)));
      return;
    }
    const podIP = await kubectl(
      "-n",
      namespace,
      "get",
      "pod",
      "echo",
      "-o",
      "jsonpath={.status.podIP}",
    );
    // POD_CIDR in hack/cluster/lib.sh: 198.19.224.0/20.
    t.match(podIP, /^198\.19\.(22[4-9]|23[0-9])\.\d+$/, "the pod has an address from the pod CIDR");

    const message = `hello from ${namespace}`;
    const tcp = await cluster(["node", "socat", "-t", "2", "-", `TCP:${podIP}:8080`], message);
    t.equal(tcp.stdout, message, "TCP to the pod IP echoes", { stderr: tcp.stderr });
    const udp = await cluster(["node", "socat", "-t", "2", "-", `UDP:${podIP}:8080`], message);
    t.equal(udp.stdout, message, "UDP to the pod IP echoes", { stderr: udp.stderr });

    const clusterIP = await kubectl(
      "-n",
      namespace,
      "get",
      "service",
      "echo",
      "-o",
      "jsonpath={.spec.clusterIP}",
    );
    const viaService = await cluster(
      ["node", "socat", "-t", "2", "-", `TCP:${clusterIP}:80`],
      message,
    );
    t.equal(
      viaService.stdout,
      message,
      `TCP to the Service's ClusterIP ${clusterIP}:80 reaches the pod`,
      {
        stderr: viaService.stderr,
      },
    );

    const logs = await kubectl("-n", namespace, "logs", "echo");
    t.match(logs, /serving TCP and UDP on port 8080/, "kubectl logs reaches the kubelet");
  });
}
