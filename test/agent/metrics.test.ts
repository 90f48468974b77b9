// SPDX-License-Identifier: Apache-2.0
// /metrics, /healthz and /readyz of the node agent, with real traffic: the netns lab's client
// talks to a Gateway address the agent programmed from a DataplaneConfig, and the per-listener,
// per-reason, conntrack and apply figures must move. Acknowledgements go to a recording
// function (no API server here).
import t from "tap";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { Agent } from "../../capabilities/agent/loop.js";
import { AgentMetrics, serveMetrics } from "../../capabilities/agent/metrics.js";
import { Lab, countByBackend } from "../lib/lab.js";
import { dataplaneConfig } from "./fixtures.js";

// Per process, so two runs of this file at once get separate namespaces, subnets and pins.
const lab = new Lab({ name: `agentm-${process.pid}`, backends: 2 });
let server: Server | undefined;
let agent: Agent | undefined;
t.teardown(async () => {
  server?.close();
  await agent?.stop();
  await lab.down();
});

/** The value of one sample, or 0 when the series is absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map(x => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return 0;
}

t.test("metrics move with traffic; health and readiness answer", async t => {
  await lab.up();
  await lab.startServers({ tcp: [8080], udp: [5353] });
  const dp = new Dataplane({ pinDir: lab.pinDir, netns: lab.gatewayNs });
  await dp.load();
  await dp.attach(lab.gatewayIface, "xdp");

  const vip = lab.vip(0);
  const config = dataplaneConfig(
    "metrics",
    vip,
    [
      {
        name: "web",
        port: 8080,
        protocol: "TCP",
        backends: [
          { weight: 1, endpoints: lab.backendIps.map(ip => [ip, 8080] as [string, number]) },
        ],
      },
      {
        name: "dns",
        port: 5353,
        protocol: "UDP",
        backends: [{ weight: 1, endpoints: [[lab.backendIps[0], 5353]] }],
      },
      { name: "closed", port: 9000, protocol: "TCP", rejectWeight: 1 },
      {
        // b0 on this node; b1 on a node with no agent entry in the config's status.
        name: "elsewhere",
        port: 7000,
        protocol: "TCP",
        backends: [
          {
            weight: 1,
            endpoints: [
              [lab.backendIps[0], 8080, "lab-node"],
              [lab.backendIps[1], 8080, "node-gone"],
            ],
          },
        ],
      },
    ],
    { node: "lab-node" },
  );

  let metrics: AgentMetrics | undefined;
  const scrapeErrors: unknown[] = [];
  agent = new Agent({
    nodeName: "lab-node",
    dataplane: dp,
    mode: "xdp",
    resyncMs: 0,
    acknowledge: async () => {},
    onApply: r => metrics?.observeApply(r),
  });
  const a = agent;
  metrics = new AgentMetrics(
    {
      stats: () => dp.stats(),
      arpCounters: () => dp.arpCounters(),
      conntrackEntries: async () => (await dp.conntrack()).length,
      conntrackCounters: () => dp.conntrackCounters(),
      listener: s => a.listener(s),
      unavailableEndpoints: () => a.unavailableEndpoints(),
      ready: () => a.ready,
      iface: lab.gatewayIface,
      mode: "xdp",
    },
    e => scrapeErrors.push(e),
  );
  server = await serveMetrics({ metrics, ready: () => a.ready, port: 0, host: "127.0.0.1" });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const get = async (path: string) => {
    const r = await fetch(base + path);
    return { status: r.status, text: await r.text(), type: r.headers.get("content-type") };
  };

  t.equal((await get("/healthz")).status, 200, "healthz answers while starting");
  t.equal((await get("/readyz")).status, 503, "not ready before the first converge");

  agent.observe(config);
  const applied = await agent.converge();
  t.ok(applied.ok, applied.error ?? "applied");
  t.equal((await get("/readyz")).status, 200, "ready once the maps converged");

  const web = {
    gateway: "metrics",
    listener: "web",
    namespace: "default",
    protocol: "TCP",
    port: "8080",
    address: vip,
  };
  const dns = { gateway: "metrics", listener: "dns", protocol: "UDP", port: "5353" };
  const closed = { gateway: "metrics", listener: "closed", port: "9000" };
  const before = await get("/metrics");
  t.match(before.type, /text\/plain/);
  t.equal(sample(before.text, "blixt_agent_applies_total"), 1, "one apply counted");
  t.equal(sample(before.text, "blixt_agent_apply_errors_total"), 0);
  t.equal(
    sample(before.text, "blixt_agent_map_commands_total"),
    applied.commands,
    "its map commands counted",
  );
  t.ok(applied.commands > 0, "and there were some");
  t.equal(
    sample(before.text, "blixt_agent_apply_duration_seconds_count"),
    1,
    "its latency observed",
  );
  t.equal(sample(before.text, "blixt_agent_attach_info", { interface: "cl", mode: "xdp" }), 1);
  t.equal(sample(before.text, "blixt_agent_ready"), 1);

  const tcp = await lab.tcp(vip, 8080, 20);
  t.same(
    tcp.filter(o => !o.ok),
    [],
    "every connection answered through the VIP",
  );
  t.same(Object.keys(countByBackend(tcp)).sort(), ["b0", "b1"], "by both backends");
  const udp = await lab.udp(vip, 5353, 5);
  t.ok(
    udp.every(o => o.ok),
    "every UDP request answered",
  );
  const refused = await lab.tcp(vip, 9000, 3);
  t.ok(
    refused.every(o => !o.ok),
    "a listener with no backend refuses",
  );
  await lab.tcp(vip, 9999, 2); // no listener on this port of a Gateway address

  const after = await get("/metrics");
  t.ok(
    sample(after.text, "blixt_listener_packets_total", web) >=
      sample(before.text, "blixt_listener_packets_total", web) + 20 * 3,
    "TCP packets counted per listener",
  );
  t.ok(
    sample(after.text, "blixt_listener_bytes_total", web) >
      sample(before.text, "blixt_listener_bytes_total", web),
    "bytes counted",
  );
  t.equal(
    sample(after.text, "blixt_listener_new_flows_total", web) -
      sample(before.text, "blixt_listener_new_flows_total", web),
    20,
    "one new flow per connection",
  );
  t.equal(
    sample(after.text, "blixt_listener_new_flows_total", dns) -
      sample(before.text, "blixt_listener_new_flows_total", dns),
    5,
    "one new flow per UDP socket",
  );
  t.ok(
    sample(after.text, "blixt_listener_rejects_total", closed) >= 3,
    "rejects counted on the listener with no backend",
  );
  t.ok(
    sample(after.text, "blixt_dataplane_packets_by_reason_total", { reason: "dnat" }) > 0,
    "translated packets by reason",
  );
  t.ok(
    sample(after.text, "blixt_dataplane_packets_by_reason_total", { reason: "refused_rst" }) >= 2,
    "refusals on a port no listener has, by reason",
  );
  t.ok(
    sample(after.text, "blixt_conntrack_entries") >= 2 * 25,
    "conntrack entries: forward and reverse per flow",
  );
  t.ok(
    sample(after.text, "blixt_conntrack_events_total", { event: "new" }) -
      sample(before.text, "blixt_conntrack_events_total", { event: "new" }) >=
      25,
    "conntrack counters: a new flow per connection and UDP socket",
  );
  t.ok(
    sample(after.text, "blixt_conntrack_events_total", { event: "confirmed" }) >
      sample(before.text, "blixt_conntrack_events_total", { event: "confirmed" }),
    "flows the backends answered are confirmed",
  );
  t.match(
    after.text,
    /blixt_conntrack_events_total\{event="expired"\} \d+/,
    "every counter is exported, even at 0",
  );
  t.match(after.text, /blixt_arp_total\{result="replied"\} \d+/, "ARP answers are counted");

  // An endpoint on a node no agent has acknowledged from: its share is refused in the kernel,
  // never sent to it, and counted; once that node's agent has an entry, it is not.
  const elsewhere = { gateway: "metrics", listener: "elsewhere", port: "7000", address: vip };
  t.equal(sample(after.text, "blixt_listener_unavailable_endpoints", elsewhere), 1);
  t.equal(
    sample(after.text, "blixt_listener_unavailable_endpoints", web),
    0,
    "a listener with every endpoint reachable has no series",
  );
  const split = await lab.tcp(vip, 7000, 40);
  t.same(Object.keys(countByBackend(split)), ["b0"], "only the local endpoint answers");
  const refusedShare = split.filter(o => !o.ok).length;
  t.ok(
    refusedShare >= 5 && refusedShare <= 35,
    `about half the connections are refused (${refusedShare} of 40)`,
  );
  const acknowledged = Object.assign(Object.create(Object.getPrototypeOf(config)), config, {
    status: { nodes: [{ name: "node-gone", observedGeneration: 1 }] },
  });
  a.observe(acknowledged);
  t.ok((await a.converge()).ok);
  t.equal(
    sample((await get("/metrics")).text, "blixt_listener_unavailable_endpoints", elsewhere),
    0,
    "no longer counted once node-gone's agent has an entry",
  );
  t.same(scrapeErrors, [], "no scrape error");
  t.equal((await get("/nope")).status, 404);
});
