// SPDX-License-Identifier: Apache-2.0
// Faults while traffic flows: one long TCP connection and a steady UDP flow (one source port)
// run through a Gateway while, one after another, the node agent's pod is deleted (its
// DaemonSet starts a new one), the controller's pod, one webhook pod, blixt is upgraded by
// `helm upgrade` with a changed value (every pod rolls; the webhook keeps its live certificate),
// and the node's kubelet restarts. The pinned maps outlive the agent and the dataplane does not
// depend on the controller, so the TCP connection keeps working, UDP replies keep coming from
// the same backend, and status converges again. The times are figures (TAP comments, and
// bench/REPORT.md through recordFigure), never asserted: speed belongs to bench/.
//
// This file restarts blixt's own pods, so anything else using the cluster at the same time
// (other e2e files, a conformance run) sees a short pause in status updates.
import t, { type Test } from "tap";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import {
  apply,
  clusterSh,
  clusterSkipReason,
  echoBackend,
  findCondition,
  freshNamespace,
  gatewayAddress,
  getObject,
  helm,
  kubectl,
  kubectlRun,
  listObjects,
  recordFigure,
  restartCounts,
  tcpEcho,
  UdpFlow,
  waitFor,
  waitForCondition,
  waitForDeployment,
  type KubeObject,
} from "../lib/cluster.js";

const skip = clusterSkipReason();
if (skip) {
  t.plan(0, skip);
} else {
  t.setTimeout(12 * 60 * 1000);
  t.test("traffic survives restarts of every blixt pod, a helm upgrade and a kubelet restart", run);
}

const system = "blixt-system";
const agentPods = "app.kubernetes.io/instance=blixt,app.kubernetes.io/component=agent";
const controllerPods = "app.kubernetes.io/instance=blixt,app.kubernetes.io/component=controller";
const admissionPods = "app.kubernetes.io/instance=blixt,app.kubernetes.io/component=admission";
const blixtPods = "app.kubernetes.io/instance=blixt";

/** Events in ms since the flows started, so a silence in the UDP flow can be placed against them. */
const timeline: string[] = [];
let epoch = Date.now();
const mark = (event: string) => timeline.push(`${Date.now() - epoch} ms: ${event}`);

/** A UDP flow sending every 100 ms in the background, recording who answered and the longest silence. */
function steadyUdp(flow: UdpFlow) {
  const record = { sent: 0, answered: 0, pods: new Set<string>(), longestGapMs: 0 };
  let lastReply = Date.now();
  let running = true;
  const done = (async () => {
    while (running) {
      record.sent++;
      const reply = await flow.exchange(`tick-${record.sent}`, 200);
      const now = Date.now();
      if (reply !== undefined) {
        record.answered++;
        record.pods.add((JSON.parse(reply) as { pod: string }).pod);
        record.longestGapMs = Math.max(record.longestGapMs, now - lastReply);
        if (now - lastReply > 1000)
          mark(`UDP replies resume after ${now - lastReply} ms of silence`);
        lastReply = now;
      }
      await sleep(100);
    }
    record.longestGapMs = Math.max(record.longestGapMs, Date.now() - lastReply);
  })();
  return {
    record,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

const readyPod = (pods: KubeObject[], except: string) =>
  pods.find(
    p =>
      p.metadata.name !== except &&
      (p.status?.conditions ?? []).some(c => c.type === "Ready" && c.status === "True"),
  );

/** Gateway Programmed True for its current generation. */
async function converged(namespace: string, name: string): Promise<KubeObject | undefined> {
  const gateway = await getObject("gateway", name, namespace);
  const programmed = findCondition(gateway?.status?.conditions, "Programmed");
  return programmed?.status === "True" &&
    programmed.observedGeneration === gateway?.metadata.generation
    ? gateway
    : undefined;
}

async function run(t: Test) {
  const namespace = await freshNamespace(t, "blixt-e2e-faults");
  const port = 7500;
  await apply(`
${echoBackend({ namespace, name: "tcp-echo", protocol: "TCP", port: 3000 })}
---
${echoBackend({ namespace, name: "udp-echo", protocol: "UDP", port: 8080, replicas: 2 })}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: faults, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port}}
  - {name: udp, protocol: UDP, port: ${port}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: tcp, namespace: ${namespace}}
spec:
  parentRefs: [{name: faults, sectionName: tcp}]
  rules: [{backendRefs: [{name: tcp-echo, port: 3000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: udp, namespace: ${namespace}}
spec:
  parentRefs: [{name: faults, sectionName: udp}]
  rules: [{backendRefs: [{name: udp-echo, port: 8080}]}]
`);
  await waitForDeployment(namespace, "tcp-echo");
  await waitForDeployment(namespace, "udp-echo");
  await waitForCondition("gateway", "faults", namespace, "Programmed", { status: "True" });
  const address = await gatewayAddress(namespace, "faults");

  const { client } = await waitFor(`TCP ${address}:${port}`, () => tcpEcho(address, port), {
    timeoutMs: 30_000,
  });
  t.teardown(() => client.close());
  const flow = await UdpFlow.open(address, port);
  t.teardown(() => flow.close());
  const first = await flow.echo("first", 20);
  if (!first) throw new Error(`no UDP reply from ${address}:${port}`);
  const udpBackend = first.pod;
  epoch = Date.now();
  const udp = steadyUdp(flow);
  t.teardown(() => udp.stop());

  await t.test("the agent's pod is deleted", async t => {
    const [oldAgent] = await listObjects("pod", system, agentPods);
    const started = Date.now();
    // The dataplane keeps running while the agent restarts, so the address must stay announced
    // (in-kernel ARP answers): withdrawn, clients' neighbour entries expire and traffic stops.
    const announcing = { running: true, withdrawn: [] as string[] };
    const sampler = (async () => {
      while (announcing.running) {
        const config = await getObject("dataplaneconfig", "faults", namespace).catch(
          () => undefined,
        );
        if (config && !config.spec?.announcingNode)
          announcing.withdrawn.push(
            `generation ${config.metadata.generation} at ${Date.now() - started} ms`,
          );
        await sleep(250);
      }
    })();
    mark(`delete agent ${oldAgent.metadata.name}`);
    await kubectl("-n", system, "delete", "pod", oldAgent.metadata.name, "--wait=false");
    const newAgent = await waitFor(
      "a new agent pod Ready",
      async () => readyPod(await listObjects("pod", system, agentPods), oldAgent.metadata.name),
      { timeoutMs: 180_000 },
    );
    const agentReadyMs = Date.now() - started;
    mark(`agent ${newAgent.metadata.name} Ready`);
    await recordFigure(t, "agent pod deleted → new agent Ready", agentReadyMs);
    t.equal(
      await client.request("PING"),
      "PONG",
      "the long TCP connection still answers after the agent restarted",
    );
    await waitFor("Gateway Programmed for its generation", () => converged(namespace, "faults"), {
      timeoutMs: 120_000,
    });
    await recordFigure(t, "agent pod deleted → Gateway Programmed again", Date.now() - started);
    announcing.running = false;
    await sampler;
    const { withdrawn } = announcing;
    t.equal(
      withdrawn.length,
      0,
      `DataplaneConfig ${namespace}/faults keeps spec.announcingNode while the only node's agent restarts`,
      {
        withdrawnFrom: withdrawn[0],
        withdrawnUntil: withdrawn.at(-1),
        samples: withdrawn.length,
      },
    );
  });

  await t.test("the controller's pod is deleted", async t => {
    const [oldController] = await listObjects("pod", system, controllerPods);
    const generationBefore =
      (await getObject("gateway", "faults", namespace))?.metadata.generation ?? 0;
    const started = Date.now();
    mark(`delete controller ${oldController.metadata.name}`);
    await kubectl("-n", system, "delete", "pod", oldController.metadata.name, "--wait=false");
    // A change made while the controller is away must be picked up by the new one.
    await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: faults, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port}}
  - {name: udp, protocol: UDP, port: ${port}}
  - {name: tcp-extra, protocol: TCP, port: ${port + 1}}
`);
    await waitFor(
      "a new controller pod Ready",
      async () =>
        readyPod(await listObjects("pod", system, controllerPods), oldController.metadata.name),
      { timeoutMs: 180_000 },
    );
    await recordFigure(t, "controller pod deleted → new controller Ready", Date.now() - started);
    const gateway = await waitFor(
      "Gateway Programmed for its new generation",
      () => converged(namespace, "faults"),
      { timeoutMs: 180_000 },
    );
    mark(`Gateway Programmed for generation ${gateway.metadata.generation}`);
    await recordFigure(
      t,
      "controller pod deleted, Gateway changed meanwhile → Programmed for the new generation",
      Date.now() - started,
    );
    t.ok(
      (gateway.metadata.generation ?? 0) > generationBefore,
      "the Gateway changed while the controller was away",
    );
    t.ok(
      gateway.status?.listeners?.some(l => l.name === "tcp-extra"),
      "and the new controller reports the listener added meanwhile",
    );
    t.equal(
      await client.request("PING"),
      "PONG",
      "the long TCP connection still answers after the controller restarted",
    );
  });

  await t.test("a webhook pod is deleted", async t => {
    const [oldWebhook] = await listObjects("pod", system, admissionPods);
    const started = Date.now();
    mark(`delete webhook ${oldWebhook.metadata.name}`);
    await kubectl("-n", system, "delete", "pod", oldWebhook.metadata.name, "--wait=false");
    // The other replica keeps answering: a write that needs the webhook (a DataplaneConfig
    // by anyone but the controller is denied, failurePolicy Fail) is judged, not refused.
    const denied = await kubectlRun([
      "-n",
      namespace,
      "patch",
      "dataplaneconfig",
      "faults",
      "--type=merge",
      "-p",
      '{"spec":{"gatewayGeneration":999}}',
    ]);
    t.not(
      denied.exitCode,
      0,
      "a DataplaneConfig write by someone else is still denied while a webhook pod restarts",
    );
    t.match(
      denied.stderr,
      /denied the request: .*written only by blixt's controller/,
      "by the webhook itself, not by an unreachable one",
    );
    const newWebhook = await waitFor(
      "a new webhook pod Ready",
      async () =>
        readyPod(await listObjects("pod", system, admissionPods), oldWebhook.metadata.name),
      { timeoutMs: 180_000 },
    );
    mark(`webhook ${newWebhook.metadata.name} Ready`);
    await recordFigure(t, "webhook pod deleted → new webhook pod Ready", Date.now() - started);
    t.equal(await client.request("PING"), "PONG", "the long TCP connection still answers");
  });

  await t.test("no webhook pod runs", async t => {
    // The controller's own DataplaneConfig writes skip the webhook (its matchConditions; the
    // controller checks the same rules itself), so it programs a change while no webhook pod
    // answers, as when both sit on a failed node; anyone else's write is refused (Fail).
    const deployment = "blixt-admission";
    const replicas = await kubectl(
      "-n",
      system,
      "get",
      "deployment",
      deployment,
      "-o",
      "jsonpath={.spec.replicas}",
    );
    mark("admission scaled to 0");
    await kubectl("-n", system, "scale", "deployment", deployment, "--replicas=0");
    t.teardown(async () => {
      await kubectl("-n", system, "scale", "deployment", deployment, `--replicas=${replicas}`);
      await kubectl("-n", system, "rollout", "status", "deployment", deployment, "--timeout=180s");
    });
    await waitFor(
      "no webhook pod left",
      async () => ((await listObjects("pod", system, admissionPods)).length ? undefined : true),
      { timeoutMs: 120_000 },
    );
    const refused = await kubectlRun([
      "-n",
      namespace,
      "patch",
      "dataplaneconfig",
      "faults",
      "--type=merge",
      "-p",
      '{"spec":{"gatewayGeneration":999}}',
    ]);
    t.not(refused.exitCode, 0, "a DataplaneConfig write by someone else is refused");
    t.match(
      refused.stderr,
      /failed calling webhook/,
      "because no webhook answers (failurePolicy Fail)",
    );
    // One more listener: the controller must rewrite the table. (The helm step after this one
    // removes both extra listeners, and waits for that new generation.)
    await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: faults, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port}}
  - {name: udp, protocol: UDP, port: ${port}}
  - {name: tcp-extra, protocol: TCP, port: ${port + 1}}
  - {name: tcp-no-webhook, protocol: TCP, port: ${port + 2}}
`);
    const ports = async () => {
      const config = await getObject("dataplaneconfig", "faults", namespace);
      const listeners = (config?.spec as { listeners?: { port: number }[] } | undefined)?.listeners;
      return (listeners ?? []).map(l => l.port);
    };
    await waitFor(
      "the DataplaneConfig with the added listener",
      async () => ((await ports()).includes(port + 2) ? true : undefined),
      { timeoutMs: 60_000, describe: async () => `listener ports ${(await ports()).join(",")}` },
    );
    t.pass("the controller rewrote the DataplaneConfig with no webhook pod running");
    await waitFor(
      "the Gateway Programmed for its new generation",
      () => converged(namespace, "faults"),
      {
        timeoutMs: 60_000,
      },
    );
    t.pass("and the Gateway is Programmed for its generation");
    t.equal(await client.request("PING"), "PONG", "the long TCP connection still answers");
  });

  await t.test("blixt is upgraded with helm to a changed value", async t => {
    const podsBefore = new Set(
      (await listObjects("pod", system, blixtPods)).map(p => p.metadata.name),
    );
    const generationBefore =
      (await getObject("gateway", "faults", namespace))?.metadata.generation ?? 0;
    const started = Date.now();
    mark("helm upgrade --set logLevel=debug");
    // Every role reads logLevel, so every pod rolls, the agent too.
    await helm(
      "upgrade",
      "blixt",
      "charts/blixt",
      "-n",
      system,
      "--reuse-values",
      "--set",
      "logLevel=debug",
      "--wait",
      "--timeout",
      "5m",
    );
    t.teardown(() =>
      helm(
        "upgrade",
        "blixt",
        "charts/blixt",
        "-n",
        system,
        "--reuse-values",
        "--set",
        "logLevel=info",
        "--wait",
        "--timeout",
        "5m",
      ),
    );
    mark("helm upgrade done");
    await recordFigure(
      t,
      "helm upgrade (changed value, every pod rolled) → release ready",
      Date.now() - started,
    );
    const podsAfter = (await listObjects("pod", system, blixtPods)).filter(
      p => !p.metadata.deletionTimestamp,
    );
    t.same(
      podsAfter.filter(p => podsBefore.has(p.metadata.name)).map(p => p.metadata.name),
      [],
      "every blixt pod was replaced",
    );
    t.equal(
      await client.request("PING"),
      "PONG",
      "the long TCP connection still answers after the upgrade",
    );
    // The new controller must take changes: a listener is removed again.
    await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: faults, namespace: ${namespace}}
spec:
  gatewayClassName: blixt
  listeners:
  - {name: tcp, protocol: TCP, port: ${port}}
  - {name: udp, protocol: UDP, port: ${port}}
`);
    const gateway = await waitFor(
      "Gateway Programmed for its new generation",
      async () => {
        const g = await converged(namespace, "faults");
        return g && (g.metadata.generation ?? 0) > generationBefore ? g : undefined;
      },
      { timeoutMs: 180_000 },
    );
    await recordFigure(
      t,
      "helm upgrade → Gateway changed after it Programmed again",
      Date.now() - started,
    );
    t.same(gateway.status?.listeners?.map(l => l.name).sort(), ["tcp", "udp"]);
  });

  await t.test("the node's kubelet restarts", async t => {
    const restartsBefore = await restartCounts(system, blixtPods);
    const started = Date.now();
    mark("restart kubelet");
    await execa(clusterSh, ["restart", "kubelet"]);
    mark("kubelet back, node Ready");
    await recordFigure(t, "kubelet restart → node Ready", Date.now() - started);
    t.equal(
      await client.request("PING"),
      "PONG",
      "the long TCP connection still answers after the kubelet restarted",
    );
    // The kubelet finds its pods running and leaves them be.
    await waitFor(
      "every blixt pod Ready again",
      async () => {
        const pods = await listObjects("pod", system, blixtPods);
        return pods.length > 0 &&
          pods.every(p =>
            (p.status?.conditions ?? []).some(c => c.type === "Ready" && c.status === "True"),
          )
          ? pods
          : undefined;
      },
      { timeoutMs: 120_000 },
    );
    const restartsAfter = await restartCounts(system, blixtPods);
    // Pods the upgrade was still terminating may have gone meanwhile; every other pod is the same pod.
    const kept = Object.keys(restartsAfter).filter(name => name in restartsBefore);
    t.same(
      Object.keys(restartsAfter).filter(name => !(name in restartsBefore)),
      [],
      "no blixt pod was replaced",
    );
    t.same(
      Object.fromEntries(kept.map(name => [name, restartsAfter[name]])),
      Object.fromEntries(kept.map(name => [name, restartsBefore[name]])),
      "no blixt container restarted",
    );
    await waitFor("Gateway Programmed for its generation", () => converged(namespace, "faults"), {
      timeoutMs: 120_000,
    });
    await recordFigure(t, "kubelet restart → Gateway Programmed", Date.now() - started);
  });

  await t.test("the UDP flow throughout", async t => {
    await sleep(1000);
    await udp.stop();
    const { sent, answered, pods, longestGapMs } = udp.record;
    t.comment(`figure: UDP ${answered}/${sent} datagrams answered`);
    await recordFigure(
      t,
      "longest silence of the UDP flow (a datagram every 100 ms) across all the faults",
      longestGapMs,
    );
    t.comment(`timeline:\n${timeline.join("\n")}`);
    t.same([...pods], [udpBackend], `every reply came from the same backend, ${udpBackend}`);
    t.ok(answered > 0, "replies kept coming");
    const last = await flow.echo("last", 10);
    t.equal(last?.pod, udpBackend, "and the flow still reaches it at the end");
  });
}
