// SPDX-License-Identifier: Apache-2.0
// Which links are pods' (capabilities/agent/pod-interfaces.ts), and the scan's bookkeeping over
// a list of links that changes between scans; the lab (test/lab/hairpin.test.ts) runs the same
// class over a node's real links with real attaches.
import t from "tap";
import {
  LinkEvents,
  PodInterfaces,
  podLinks,
  type Link,
} from "../../capabilities/agent/pod-interfaces.js";

t.test("pod links: a prefix matches, never the uplink or lo", async t => {
  const links: Link[] = [
    { ifname: "lo", ifindex: 1 },
    { ifname: "eth0", ifindex: 2 },
    { ifname: "veth1a2b", ifindex: 3 },
    { ifname: "cali77", ifindex: 4 },
    { ifname: "vethup", ifindex: 5 },
    { ifname: "cni0", ifindex: 6 },
  ];
  t.same(
    podLinks(links, ["veth"], "vethup").map(l => l.ifname),
    ["veth1a2b"],
    "the uplink is left out even when its name matches",
  );
  t.same(
    podLinks(links, ["veth", "cali"], "eth0").map(l => l.ifname),
    ["veth1a2b", "cali77", "vethup"],
  );
  t.same(podLinks(links, [], "eth0"), [], "no prefix: no pod interface");
});

t.test("the scan attaches what is new, retries what failed, forgets what went", async t => {
  let links: Link[] = [
    { ifname: "eth0", ifindex: 2 },
    { ifname: "veth1", ifindex: 10 },
  ];
  const attaches: string[] = [];
  const errors: string[] = [];
  let failing = new Set<string>();
  const pods = new PodInterfaces({
    prefixes: ["veth"],
    uplink: "eth0",
    list: async () => links,
    attach: async name => {
      if (failing.has(name)) throw new Error(`tc: cannot find device "${name}"`);
      attaches.push(name);
    },
    log: { info: () => {}, error: (f, m) => errors.push(`${String(f.interface)}: ${m}`) },
  });

  t.same(await pods.sync(), { attached: ["veth1"], failed: [], gone: 0 });
  t.same(await pods.sync(), { attached: [], failed: [], gone: 0 }, "nothing new, nothing done");

  links = [...links, { ifname: "veth2", ifindex: 11 }];
  failing = new Set(["veth2"]);
  t.same(await pods.sync(), { attached: [], failed: ["veth2"], gone: 0 });
  t.equal(pods.failures(), 1, "a failure on an interface still there is counted");
  t.match(errors, [/^veth2: attaching to a pod's interface failed/], "and logged, naming it");
  failing = new Set();
  t.same(await pods.sync(), { attached: ["veth2"], failed: [], gone: 0 }, "tried again next scan");
  t.equal(pods.count(), 2);

  // A pod whose interface went away between the listing and the attach: not a failure.
  links = [...links, { ifname: "veth3", ifindex: 12 }];
  failing = new Set(["veth3"]);
  const vanish = pods.sync();
  links = links.filter(l => l.ifname !== "veth3");
  t.same(await vanish, { attached: [], failed: [], gone: 0 });
  t.equal(pods.failures(), 1, "an interface gone mid-attach is no failure");

  links = [
    { ifname: "eth0", ifindex: 2 },
    { ifname: "veth2", ifindex: 13 },
  ];
  t.same(
    await pods.sync(),
    { attached: ["veth2"], failed: [], gone: 2 },
    "veth1 gone; veth2 has a new ifindex (another pod): forgotten and attached anew",
  );
  t.equal(pods.count(), 1);
  t.same(attaches, ["veth1", "veth2", "veth2"]);

  const off = new PodInterfaces({
    prefixes: [],
    uplink: "eth0",
    list: async () => t.fail("no listing when turned off") as never,
    attach: async () => {},
    log: { info: () => {}, error: () => {} },
  });
  t.same(await off.sync(), { attached: [], failed: [], gone: 0 }, "turned off: nothing listed");
});

t.test("triggers in a burst run one sync now and one after it, not one each", async t => {
  let lists = 0;
  let release!: () => void;
  const gate = new Promise<void>(resolve => (release = resolve));
  const pods = new PodInterfaces({
    prefixes: ["veth"],
    uplink: "eth0",
    list: async () => {
      lists++;
      await gate;
      return [{ ifname: "veth1", ifindex: 10 }];
    },
    attach: async () => {},
    log: { info: () => {}, error: () => {} },
  });
  for (let i = 0; i < 5; i++) pods.trigger();
  release();
  await pods.settled();
  t.equal(lists, 2, "the first sync, then one for the four that came while it ran");
  t.equal(pods.count(), 1);
});

t.test("link events: a line is an event; a monitor that ends is started again", async t => {
  let events = 0;
  const errors: string[] = [];
  // Prints two events, then ends: the restart runs it again and reports one event for the gap.
  const monitor = new LinkEvents({
    argv: ["sh", "-c", "echo 1: veth1; echo 2: veth2"],
    onEvent: () => events++,
    log: { info: () => {}, error: (_f, m) => errors.push(m) },
    restartMs: 20,
  });
  monitor.start();
  const deadline = Date.now() + 5000;
  while (events < 5 && Date.now() < deadline) await new Promise(r => setTimeout(r, 10));
  await monitor.stop();
  t.ok(events >= 5, `events from the first run and the restarted ones (${events})`);
  t.match(errors[0], /the link event monitor ended; starting it again/, "the end is logged");
  const after = events;
  await new Promise(r => setTimeout(r, 100));
  t.equal(events, after, "stopped: no more events, no restart");
});
