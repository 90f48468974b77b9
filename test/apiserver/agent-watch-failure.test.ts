// SPDX-License-Identifier: Apache-2.0
// The node agent's watch, against a real kube-apiserver: when the watch fails (here its
// connection is cut, as a network fault or an API server restart cuts it), the agent relists
// at once and keeps retrying, so a DataplaneConfig changed, created or deleted while the watch
// was down is in its view seconds after the API server is reachable again. The periodic relist
// and the watcher's own reconnect are both set an hour away, so only the relist on the watch's
// failure can bring the change in time. The agent reaches the API server through a TCP proxy
// the test cuts; the test's own writes go straight to the API server. And when the watcher
// resumes at an old resourceVersion (its reconnect's list failed), the events it replays do
// not take the agent's view back in time.
import t from "tap";
import { createServer, connect, type Socket } from "node:net";
import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { execa } from "execa";
import { K8s, kind } from "kubernetes-fluent-client";
import { parse, stringify } from "yaml";
import { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1.js";
import { Agent } from "../../capabilities/agent/loop.js";
import { listDataplaneConfigsAt, watchDataplaneConfigs } from "../../capabilities/agent/kube.js";
import { AgentMetrics } from "../../capabilities/agent/metrics.js";
import { Relister } from "../../capabilities/agent/relist.js";
import type { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { as, findBinaries, serviceAccountKubeconfig, startApiServer } from "../lib/apiserver.js";
import { dataplaneConfig } from "../agent/fixtures.js";

/** A loopback TCP proxy to `port` whose connections can be cut and refused, then allowed again. */
async function cuttableProxy(port: number) {
  const open = new Set<Socket>();
  let cut = false;
  const server = createServer(client => {
    if (cut) return void client.destroy();
    const upstream = connect(port, "127.0.0.1");
    for (const s of [client, upstream]) {
      open.add(s);
      s.on("close", () => open.delete(s));
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("the proxy has no port");
  return {
    port: address.port,
    cut() {
      cut = true;
      for (const s of open) s.destroy();
    },
    restore() {
      cut = false;
    },
    close: () =>
      new Promise<void>(resolve => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A copy of `kubeconfig` that reaches the API server through the proxy on `port`. */
async function throughProxy(kubeconfig: string, port: number, out: string): Promise<string> {
  const config = parse(await readFile(kubeconfig, "utf8"));
  config.clusters[0].cluster.server = `https://127.0.0.1:${port}`;
  await writeFile(out, stringify(config), { mode: 0o600 });
  return out;
}

const newAgent = () =>
  new Agent({
    nodeName: "n1",
    dataplane: {} as Dataplane,
    mode: "tc",
    acknowledge: async () => {},
  });

const until = async (what: () => boolean, ms: number) => {
  const deadline = Date.now() + ms;
  while (!what() && Date.now() < deadline) await new Promise(r => setTimeout(r, 50));
  return what();
};

const binaries = findBinaries();
if ("missing" in binaries) {
  t.fail(`the real kube-apiserver is needed: ${binaries.missing}`);
} else {
  t.test(
    "a change made while the agent's watch is cut is in its view at once when it is back",
    async t => {
      const server = await startApiServer(t, binaries);
      const proxy = await cuttableProxy(server.port);
      t.teardown(() => proxy.close());
      // The agent's calls (process.env.KUBECONFIG) go through the proxy; the test's writes do not.
      const direct = server.kubeconfig;
      process.env.KUBECONFIG = await throughProxy(
        direct,
        proxy.port,
        join(server.dir, "via-proxy.kubeconfig"),
      );
      // The test's writes run kubectl on the direct kubeconfig. Switching process.env.KUBECONFIG
      // for them (as()) would let an agent call made meanwhile (a relist retry, every 300 ms
      // while the proxy is cut) go around the proxy and see what it must not see yet.
      const kubectlDirect = (args: string[], input?: string) =>
        execa(join(dirname(binaries.kubeApiserver), "kubectl"), ["--kubeconfig", direct, ...args], {
          input,
        });
      const apply = async (c: DataplaneConfig) => {
        const { generation: _drop, ...metadata } = c.metadata ?? {};
        await kubectlDirect(
          ["apply", "--server-side", "--force-conflicts", "--field-manager=test", "-f", "-"],
          JSON.stringify({ ...c, metadata }),
        );
      };
      await apply(dataplaneConfig("kept", "192.0.2.10", []));
      await apply(dataplaneConfig("removed", "192.0.2.11", []));

      const agent = newAgent();
      agent.replaceAll((await listDataplaneConfigsAt()).items);
      const metrics = new AgentMetrics({
        stats: async () => ({ services: [], reasons: {} }) as never,
        conntrackEntries: async () => 0,
        listener: () => undefined,
        ready: () => true,
        iface: "lo",
        mode: "tc",
      });
      const logged: string[] = [];
      const relister = new Relister({
        list: listDataplaneConfigsAt,
        agent,
        // BLIXT_RELIST_SECONDS=3600: the periodic relist never runs in this test.
        intervalMs: 3_600_000,
        retryMs: 300,
        onRelist: (reason, ok) => metrics.observeRelist(reason, ok),
        log: {
          info: (_, message) => logged.push(message),
          error: (fields, message) => logged.push(`${message} ${JSON.stringify(fields)}`),
        },
      });
      // Wired as the agent role wires it (capabilities/agent/index.ts).
      const watch = watchDataplaneConfigs(
        {
          changed: c => relister.watchEvent(c) && agent.observe(c),
          deleted: c => relister.watchEvent(c) && agent.forget(c),
          failed: (event, detail) => relister.watchFailed(event, detail),
        },
        // The watcher's own reconnect check and relist an hour away, too.
        { resyncDelaySec: 3600, lastSeenLimitSeconds: 3600, relistIntervalSec: 3600 },
      );
      t.teardown(async () => {
        watch.close();
        await relister.stop();
      });
      relister.start();
      await watch.start();

      const view = () =>
        agent
          .held()
          .map(c => `${c.metadata?.name}=${c.spec?.address}`)
          .sort()
          .join(",");
      const waitForView = async (want: string, ms: number) => {
        const deadline = Date.now() + ms;
        while (view() !== want && Date.now() < deadline) await new Promise(r => setTimeout(r, 50));
        return view();
      };

      await apply(dataplaneConfig("kept", "192.0.2.12", []));
      t.equal(
        await waitForView("kept=192.0.2.12,removed=192.0.2.11", 5_000),
        "kept=192.0.2.12,removed=192.0.2.11",
        "before the cut, the watch delivers a change",
      );

      proxy.cut();
      const failedAt = Date.now();
      while (!logged.some(l => l.includes("watch failed")) && Date.now() - failedAt < 10_000)
        await new Promise(r => setTimeout(r, 50));
      t.match(
        logged.join("\n"),
        /the DataplaneConfig watch failed \((network_error|list_error|watch_error)\); relisting every DataplaneConfig now/,
        "the watch's failure is logged, naming the watcher's event",
      );

      // While the watch is down: one changed, one deleted, one created.
      await apply(dataplaneConfig("kept", "192.0.2.20", []));
      await kubectlDirect(["-n", "default", "delete", "dataplaneconfig", "removed"]);
      await apply(dataplaneConfig("created", "192.0.2.30", []));
      await new Promise(r => setTimeout(r, 1_000));
      t.equal(view(), "kept=192.0.2.12,removed=192.0.2.11", "the cut agent cannot see them yet");

      proxy.restore();
      const restoredAt = Date.now();
      const want = "created=192.0.2.30,kept=192.0.2.20";
      t.equal(await waitForView(want, 10_000), want, "the relist brought all three");
      t.ok(
        Date.now() - restoredAt < 5_000,
        `within seconds of the API server being reachable again (${Date.now() - restoredAt} ms), not at the periodic relist an hour away`,
      );
      const text = await metrics.registry.metrics();
      t.match(
        text,
        /blixt_agent_relist_errors_total\{reason="watch"\} [1-9]/,
        "the relist the failure started is counted (it failed: the proxy was still cut)",
      );
      t.match(text, /blixt_agent_relists_total\{reason="retry"\} [1-9]/, "its retry succeeded");
      t.notMatch(text, /reason="periodic"/, "no periodic relist ran");
    },
  );

  t.test(
    "events a resumed watch replays from an old resourceVersion do not take the view back",
    async t => {
      const server = await startApiServer(t, binaries);
      const proxy = await cuttableProxy(server.port);
      t.teardown(() => proxy.close());
      const direct = server.kubeconfig;
      const write = <T>(body: () => Promise<T>) => as(direct, body);
      const apply = (c: DataplaneConfig) =>
        write(async () => {
          const { generation: _drop, ...metadata } = c.metadata ?? {};
          await K8s(DataplaneConfig).Apply({ ...c, metadata } as never, { force: true });
        });
      // The agent's identity may watch, and list until the test takes that away: its watcher's
      // next list then fails and it resumes the watch at its first list's resourceVersion.
      const user = "system:serviceaccount:blixt-system:agent";
      const rule = (verb: string) => ({
        apiGroups: ["blixt.dev"],
        resources: ["dataplaneconfigs"],
        verbs: [verb],
      });
      for (const verb of ["watch", "list"])
        await write(async () => {
          await K8s(kind.ClusterRole).Apply({
            metadata: { name: `dpc-${verb}` },
            rules: [rule(verb)],
          });
          await K8s(kind.ClusterRoleBinding).Apply({
            metadata: { name: `dpc-${verb}` },
            roleRef: {
              apiGroup: "rbac.authorization.k8s.io",
              kind: "ClusterRole",
              name: `dpc-${verb}`,
            },
            subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: user }],
          });
        });
      process.env.KUBECONFIG = await throughProxy(
        await write(() => serviceAccountKubeconfig(server, "blixt-system", "agent")),
        proxy.port,
        join(server.dir, "agent-via-proxy.kubeconfig"),
      );

      await apply(dataplaneConfig("a", "192.0.2.1", []));
      const agent = newAgent();
      agent.replaceAll((await listDataplaneConfigsAt()).items);
      const relister = new Relister({ list: listDataplaneConfigsAt, agent, intervalMs: 0 });
      // Every event the watcher delivers, and those the agent applied.
      const delivered: string[] = [];
      const applied: string[] = [];
      const record = (what: "changed" | "deleted", c: DataplaneConfig, apply: () => void) => {
        const line = `${what} ${c.metadata?.name}@${c.metadata?.resourceVersion}`;
        delivered.push(line);
        if (!relister.watchEvent(c)) return;
        applied.push(line);
        apply();
      };
      const watch = watchDataplaneConfigs(
        {
          changed: c => record("changed", c, () => agent.observe(c)),
          deleted: c => record("deleted", c, () => agent.forget(c)),
          failed: () => {},
        },
        // Reconnects 1 s after a failure, as the agent's own watch does 5 s after one.
        { resyncDelaySec: 1, lastSeenLimitSeconds: 3600, relistIntervalSec: 3600 },
      );
      t.teardown(async () => {
        watch.close();
        await relister.stop();
      });
      await watch.start();

      await apply(dataplaneConfig("a", "192.0.2.2", []));
      await apply(dataplaneConfig("b", "192.0.2.3", []));
      await write(() => K8s(DataplaneConfig).InNamespace("default").Delete("b"));
      t.ok(
        await until(() => delivered.some(l => l.startsWith("deleted b@")), 10_000),
        "the watch delivered a's change and b's creation and deletion",
      );
      const before = delivered.length;
      const appliedBefore = applied.length;
      const view = () =>
        agent
          .held()
          .map(c => `${c.metadata?.name}=${c.spec?.address}`)
          .sort()
          .join(",");
      t.equal(view(), "a=192.0.2.2", "the agent holds a's newest version");

      await write(() => K8s(kind.ClusterRoleBinding).Delete("dpc-list"));
      await new Promise(r => setTimeout(r, 1_000));
      proxy.cut();
      await new Promise(r => setTimeout(r, 500));
      proxy.restore();
      t.ok(
        await until(() => delivered.slice(before).some(l => l.startsWith("deleted b@")), 15_000),
        `the resumed watch replayed the old events: ${delivered.slice(before).join(", ")}`,
      );
      const replayedAndApplied = applied
        .slice(appliedBefore)
        .filter(l => delivered.slice(0, before).includes(l));
      t.same(replayedAndApplied, [], "none of them was applied again");
      t.equal(view(), "a=192.0.2.2", "the agent's view never went back");
    },
  );
}
