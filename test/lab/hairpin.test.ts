// SPDX-License-Identifier: Apache-2.0
// Clients inside the cluster ("hairpin"), with real traffic (test/lib/twonodes.ts): a pod behind
// gw1 connects to the Gateway address. The agent's pod-interface scan (capabilities/agent/
// pod-interfaces.ts, over gw1's real links) attaches blixt_tc_pod_ingress and blixt_tc_egress to
// the node's end of the pod's interface and to nothing else; the pod's packets are DNATed to the
// backend, on gw1 or behind gw2 alike, which sees the pod's own address; every reply reaches the
// pod from VIP:port; nothing is encapsulated. A pod that comes back with a new interface is
// served again after the next periodic scan, or at once on the kernel's link event for it
// (`ip monitor link`, as the agent runs it).
import t from "tap";
import {
  B1,
  B2,
  LINE_PORT,
  POD,
  POD_LINK,
  REQUESTS_JS,
  TwoNodes,
  UDP_PORT,
  VIP,
  type Outcome,
} from "../lib/twonodes.js";
import { LinkEvents, PodInterfaces } from "../../capabilities/agent/pod-interfaces.js";
import { bpftoolJson } from "../../capabilities/dataplane/bpftool.js";

const lab = new TwoNodes(`bhp${process.pid % 100000}`);
const COUNT = 20;

async function requests(proto: "tcp" | "udp", port: number, count = COUNT): Promise<Outcome[]> {
  const r = await lab.runInPod(["-e", REQUESTS_JS, proto, VIP, String(port), String(count)]);
  return JSON.parse(String(r.stdout)) as Outcome[];
}

t.teardown(() => lab.down());

t.test("a pod on a gateway node reaches the Gateway address", async t => {
  await lab.up();
  const { gw1 } = lab;
  await lab.configure([
    { port: 80, proto: "tcp", backends: [{ ip: B1, port: LINE_PORT }] },
    { port: 81, proto: "tcp", backends: [{ ip: B2, port: LINE_PORT }] },
    { port: 53, proto: "udp", backends: [{ ip: B1, port: UDP_PORT }] },
    { port: 54, proto: "udp", backends: [{ ip: B2, port: UDP_PORT }] },
  ]);
  await lab.attach("xdp", "xdp");
  const logged: string[] = [];
  const pods = new PodInterfaces({
    prefixes: ["veth"],
    uplink: "eth0",
    list: () => gw1.links(),
    attach: name => gw1.attachPod(name),
    log: { info: (_f, m) => logged.push(m), error: (_f, m) => logged.push(m) },
  });

  const first = await pods.sync();
  t.same(first.attached, [POD_LINK], "the scan attaches to the pod's interface only");
  t.same(first.failed, []);
  const shown = (await bpftoolJson(["net", "show"], "listing", { netns: lab.ns.gw1 })) as {
    tc?: { devname: string; kind: string; name: string }[];
  }[];
  const onPod = (shown[0]?.tc ?? [])
    .filter(p => p.devname === POD_LINK)
    .map(p => p.name.split(":")[0]);
  t.same(onPod.sort(), ["blixt_tc_egress", "blixt_tc_pod_ingress"].sort(), "both programs on it");
  t.same((await pods.sync()).attached, [], "a second scan attaches nothing new");

  const before1 = (await gw1.stats()).reasons;
  for (const [proto, port, backend, where] of [
    ["tcp", 80, "b1", "on the pod's node"],
    ["tcp", 81, "b2", "behind the other node"],
    ["udp", 53, "b1", "on the pod's node"],
    ["udp", 54, "b2", "behind the other node"],
  ] as const) {
    const outcomes = await requests(proto, port);
    t.same(
      outcomes.filter(o => !o.ok),
      [],
      `${proto} ${port}: all ${COUNT} answered`,
    );
    const ok = outcomes.flatMap(o => (o.ok ? [o] : []));
    t.same(
      [...new Set(ok.map(o => o.answer.split(" ")[0]))],
      [backend],
      `${proto} ${port}: by the backend ${where}`,
    );
    t.same(
      [...new Set(ok.map(o => o.answer.split(" ")[1].split(":")[0]))],
      [POD],
      `${proto} ${port}: which saw the pod's own address`,
    );
    t.same(
      [...new Set(ok.map(o => o.from))],
      [`${VIP}:${port}`],
      `${proto} ${port}: every reply from VIP:port`,
    );
  }
  const after1 = (await gw1.stats()).reasons;
  t.ok(
    after1.dnat_in_cluster - before1.dnat_in_cluster >= 4 * COUNT,
    `gw1 DNATed the pod's packets (dnat_in_cluster ${after1.dnat_in_cluster - before1.dnat_in_cluster})`,
  );
  t.equal(after1.encap - before1.encap, 0, "and encapsulated none");
  t.ok(after1.reverse_nat - before1.reverse_nat >= 4 * COUNT, "gw1 reverse-NATed the replies");

  await t.test("a pod that comes back with a new interface: the periodic scan", async t => {
    await lab.addPod();
    const failed = (await requests("tcp", 80, 2)).filter(o => !o.ok).length;
    t.equal(failed, 2, "before the scan the new interface runs nothing: no answer");
    const again = await pods.sync();
    t.same(again.attached, [POD_LINK], "the scan sees the new ifindex and attaches");
    t.equal(again.gone, 1, "and the old interface of that name is forgotten");
    t.same(
      (await requests("tcp", 81)).filter(o => !o.ok),
      [],
      "then every request is answered",
    );
  });

  await t.test("and again: the kernel's link events find it, with no scan", async t => {
    const events = new LinkEvents({
      argv: ["nsenter", `--net=/var/run/netns/${lab.ns.gw1}`, "ip", "-o", "monitor", "link"],
      onEvent: () => pods.trigger(),
      log: { info: () => {}, error: (_f, m) => logged.push(m) },
    });
    events.start();
    t.teardown(() => events.stop());
    // ip monitor subscribes a moment after it starts: a link event before then would be missed.
    await new Promise(resolve => setTimeout(resolve, 500));
    const before = logged.length;
    await lab.addPod();
    let found = false;
    for (const deadline = Date.now() + 5000; !found && Date.now() < deadline; ) {
      await new Promise(resolve => setTimeout(resolve, 50));
      await pods.settled();
      found = logged.slice(before).some(m => m.startsWith("pod interfaces:"));
    }
    t.ok(found, "the new interface was attached to on its link event");
    t.same(
      (await requests("tcp", 81)).filter(o => !o.ok),
      [],
      "every request from the pod is answered",
    );
    t.same((await pods.sync()).attached, [], "a scan after it finds nothing left to do");
  });
  t.equal(pods.failures(), 0, "no attach failed");
});
