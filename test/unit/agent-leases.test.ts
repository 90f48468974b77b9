// SPDX-License-Identifier: Apache-2.0
// Failover without the controller: which agents are live as one agent sees their Leases, who
// announces an address then, and the renewal loop. Clocks are injected; the Kubernetes side
// (apply, watch) runs for real in test/kind/failover.test.ts.
import t from "tap";
import type { V1Lease } from "@kubernetes/client-node";
import {
  AnnounceDeadline,
  aloneIn,
  YieldKeeper,
  yieldAction,
  type YieldEntry,
  announcerOf,
  LeaseHolder,
  leaseName,
  leaseObject,
  leaseSettings,
  LiveNodes,
  LivenessNotifier,
  microTime,
  returnGraceMs,
} from "../../capabilities/agent/leases";
import { desiredState } from "../../capabilities/agent/desired";
import { rendezvousPick } from "../../capabilities/rendezvous";
import { announcingNode } from "../../capabilities/gateway/compile/addresses";
import type { DataplaneConfig } from "../../capabilities/generated/dataplaneconfig-v1alpha1";

/** A clock the test moves: monotonic ms and wall ms together. */
function clock(start = Date.parse("2026-12-05T04:00:00Z")) {
  let mono = 1_000_000;
  let wall = start;
  return {
    now: () => mono,
    wall: () => wall,
    advance(ms: number) {
      mono += ms;
      wall += ms;
    },
  };
}

/** A current view of the Leases of `nodes`, each renewed now by clock `c`. */
function currentView(
  c: ReturnType<typeof clock>,
  nodes: string[],
  onReturn?: (awayMs: number, graceMs: number) => void,
): LiveNodes {
  const view = new LiveNodes(c.now, c.wall, undefined, onReturn);
  for (const node of nodes) view.observe(lease(node, microTime(new Date(c.wall()))));
  view.current = true;
  return view;
}

const lease = (node: string, renewTime: string, durationSeconds = 2) => ({
  metadata: { name: leaseName(node) },
  spec: { holderIdentity: node, leaseDurationSeconds: durationSeconds, renewTime },
});

t.test("a Lease is live for its duration after this agent saw it renewed", async t => {
  const c = clock();
  const view = new LiveNodes(c.now, c.wall);
  t.equal(view.liveness(), undefined, "nothing is judged before the first list");
  view.observe(lease("a", microTime(new Date(c.wall()))));
  view.observe(lease("b", microTime(new Date(c.wall() - 1500))));
  view.observe(lease("dead", microTime(new Date(c.wall() - 3_600_000))));
  view.current = true;
  t.same(
    [...view.liveness()!.live].sort(),
    ["a", "b"],
    "a Lease last renewed an hour ago is not live",
  );
  t.same([...view.liveness()!.lapsed], ["dead"], "but lapsed: its node's addresses may be taken");
  t.equal(view.nextLapseMs(), 500, "b lapses first, 0.5 s on");

  c.advance(600);
  t.same([...view.liveness()!.live], ["a"], "b lapsed: its age at first sight counts");
  // a renews: the same renewTime seen again is no renewal, a new one is.
  view.observe(lease("a", microTime(new Date(c.wall() - 600))));
  c.advance(1500);
  t.same([...view.liveness()!.live], [], "a's unchanged renewTime did not extend it");
  view.observe(lease("a", microTime(new Date(c.wall()))));
  t.same(
    [...view.liveness()!.live].sort(),
    ["a", "b"],
    "a new one did; b's deadline passed while the watch said nothing for 2.1 s (a stall), so it counts as seen with a's renewal",
  );

  // Another node's clock may be far off: only this agent's own clock counts after first sight.
  view.observe(lease("b", "2020-01-01T00:00:00.000000Z"));
  t.same(
    [...view.liveness()!.live].sort(),
    ["a", "b"],
    "a renewal with a skewed renewTime still counts",
  );

  view.forget(lease("b", ""));
  t.same([...view.liveness()!.live], ["a"], "a deleted Lease is not live");
  t.notOk(
    view.liveness()!.lapsed.has("b"),
    "nor lapsed: a node without a Lease keeps its addresses",
  );
  view.replace([lease("c", microTime(new Date(c.wall())))]);
  t.same([...view.liveness()!.live], ["c"], "a relist drops what it does not list");
});

t.test("a silent watch lapses no one; a renewal seen after a deadline does", async t => {
  const c = clock();
  const view = new LiveNodes(c.now, c.wall);
  view.observe(lease("a", microTime(new Date(c.wall()))));
  c.advance(300);
  view.observe(lease("b", microTime(new Date(c.wall()))));
  view.current = true;
  // The watch goes silent (no error): nobody is seen renewing any more.
  c.advance(5000);
  t.same(view.liveness(), { live: new Set(), lapsed: new Set() }, "aged out, but not lapsed");
  // With renewals flowing, a stops: b renews every 500 ms, a's deadline passes.
  const d = clock();
  const flowing = new LiveNodes(d.now, d.wall);
  flowing.observe(lease("a", microTime(new Date(d.wall()))));
  flowing.observe(lease("b", microTime(new Date(d.wall()))));
  flowing.current = true;
  for (let i = 1; i <= 4; i++) {
    d.advance(500);
    flowing.observe(lease("b", microTime(new Date(d.wall()))));
  }
  t.same([...flowing.liveness()!.lapsed], ["a"], "b renewed at a's deadline: a lapsed");
  t.same([...flowing.liveness()!.live], ["b"]);
});

t.test("a watch that stalls and speaks again: its burst lapses no one", async t => {
  const c = clock();
  const bridges: string[] = [];
  const view = new LiveNodes(c.now, c.wall, (ms, nodes) => bridges.push(`${ms} ms: ${nodes}`));
  const renew = (node: string) => view.observe(lease(node, microTime(new Date(c.wall()))));
  const live = () => [...view.liveness()!.live].sort();
  const lapsed = () => [...view.liveness()!.lapsed].sort();
  for (const node of ["a", "b", "c"]) renew(node);
  view.current = true;
  for (let i = 0; i < 4; i++) {
    c.advance(500);
    for (const node of ["a", "b", "c"]) renew(node);
  }
  // The API server stalls for 4 s (its watch stays open, without an error), then delivers the
  // renewals it held back, one at a time.
  c.advance(4000);
  t.same(live(), [], "during the stall every Lease aged out");
  t.same(lapsed(), [], "and none lapsed");
  renew("a");
  t.same(live(), ["a", "b", "c"], "a's renewal, first of the burst, proves nobody lapsed");
  t.same(lapsed(), []);
  c.advance(5);
  renew("b");
  t.same(live(), ["a", "b", "c"]);
  // c died during the stall: it gets one duration from the burst, then lapses.
  for (let i = 0; i < 3; i++) {
    c.advance(500);
    renew("a");
    renew("b");
  }
  t.same(live(), ["a", "b", "c"], "1.5 s after the burst c is still live");
  c.advance(500);
  renew("a");
  t.same(lapsed(), ["c"], "a duration after the burst, with renewals flowing, c lapsed");
  // Another stall: c, lapsed before it, stays lapsed; a and b are bridged again.
  c.advance(3000);
  renew("a");
  t.same(live(), ["a", "b"]);
  t.same(lapsed(), ["c"], "a Lease that lapsed before the silence is not brought back by it");
  t.same(bridges, ["4000 ms: a,b,c", "3000 ms: a,b"], "each bridge is told, with whose Leases");

  // A slow API server: the only other live agent's renewals come every 1.3 s (each silence
  // longer than half a duration); d, dead, is bridged once per renewal and so still lapses.
  const d = clock();
  const slow = new LiveNodes(d.now, d.wall);
  slow.observe(lease("a", microTime(new Date(d.wall()))));
  slow.observe(lease("d", microTime(new Date(d.wall()))));
  slow.current = true;
  let lapsedAt: number | undefined;
  for (let i = 1; i <= 6 && lapsedAt === undefined; i++) {
    d.advance(1300);
    slow.observe(lease("a", microTime(new Date(d.wall()))));
    if (slow.liveness()!.lapsed.has("d")) lapsedAt = i * 1300;
  }
  t.equal(lapsedAt, 3900, "d lapsed at a's third renewal, 3.9 s after its last (one bridge)");
  t.same([...slow.liveness()!.live], ["a"]);
});

t.test("after a watch failure nothing is judged, and every node gets a duration back", async t => {
  const c = clock();
  const view = currentView(c, ["a", "b"]);
  view.current = false;
  t.equal(view.liveness(), undefined, "a view that is not current judges nothing");
  c.advance(1_500); // the watch failed and relisted; nobody's renewals could be seen meanwhile
  view.current = true;
  t.same(
    [...view.liveness()!.live].sort(),
    ["a", "b"],
    "coming back, renewals missed while away are not lapses",
  );
  c.advance(2001);
  t.same(
    [...view.liveness()!.live].sort(),
    ["a", "b"],
    "one duration later both are still live: the return grace is three durations",
  );
  view.observe(lease("a", microTime(new Date(c.wall()))));
  c.advance(3000);
  view.observe(lease("a", microTime(new Date(c.wall()))));
  t.equal(view.nextLapseMs(), 999, "b's grace ends 6 s after the return");
  c.advance(1000);
  view.observe(lease("a", microTime(new Date(c.wall()))));
  t.same(
    [...view.liveness()!.live],
    ["a"],
    "three durations on, a node not seen renewing is not live",
  );
  t.same(
    [...view.liveness()!.lapsed],
    ["b"],
    "and lapsed, as a renewal of a was seen after its end",
  );
});

t.test(
  "after a long outage the return grace is as long as the view saw nothing, up to a minute",
  async t => {
    t.equal(returnGraceMs(2000, 1500), 6000, "a short failure: three durations");
    t.equal(returnGraceMs(2000, 42_000), 42_000, "42 s without a renewal: 42 s");
    t.equal(returnGraceMs(2000, 600_000), 60_000, "ten minutes away: a minute");
    t.equal(returnGraceMs(30_000, 42_000), 90_000, "three long durations are more than the outage");
    t.equal(
      returnGraceMs(2000, Number.POSITIVE_INFINITY),
      6000,
      "never saw a renewal: three durations",
    );

    // The API server stopped for 40 s; the nodes reach it again one after another (each node's
    // kube-proxy must see its address back): b renews 9 s after a and the view came back.
    const c = clock();
    const returns: [number, number][] = [];
    const view = currentView(c, ["a", "b"], (away, grace) => returns.push([away, grace]));
    t.same(returns, [], "the first current view is no return");
    c.advance(30_000); // the watch silent until its connection is found dead
    view.current = false;
    c.advance(10_000);
    // The relist that brings the view back holds a's first renewal: a reached the API server
    // first. The outage still counts from the last renewal seen before it.
    view.replace([
      lease("a", microTime(new Date(c.wall()))),
      lease("b", microTime(new Date(c.wall() - 40_000))),
    ]);
    view.current = true;
    t.same(returns, [[40_000, 40_000]], "the return is reported: 40 s away, 40 s of grace");
    for (let i = 0; i < 18; i++) {
      c.advance(500);
      view.observe(lease("a", microTime(new Date(c.wall()))));
    }
    t.same([...view.liveness()!.lapsed], [], "9 s on, a renewing alone: b is not lapsed");
    view.observe(lease("b", microTime(new Date(c.wall()))));
    t.same([...view.liveness()!.live].sort(), ["a", "b"], "b's late renewal keeps it live");

    // A node that died while the API server was away lapses when that grace is over.
    const d = clock();
    const dead = currentView(d, ["a", "b"]);
    dead.current = false;
    d.advance(40_000);
    dead.current = true;
    let lapsedAt: number | undefined;
    for (let ms = 500; ms <= 60_000 && lapsedAt === undefined; ms += 500) {
      d.advance(500);
      dead.observe(lease("a", microTime(new Date(d.wall()))));
      if (dead.liveness()!.lapsed.has("b")) lapsedAt = ms;
    }
    t.equal(lapsedAt, 40_000, "b, dead, lapses 40 s after the return: as long as it was away");
  },
);

t.test(
  "who announces: the controller's choice unless its Lease lapsed, then the rendezvous pick",
  async t => {
    const seen = (live: string[], lapsed: string[] = []) => ({
      live: new Set(live),
      lapsed: new Set(lapsed),
    });
    t.equal(announcerOf("198.18.0.10", "b", seen(["a", "b", "c"]), "a"), "b");
    t.equal(announcerOf("198.18.0.10", "b", undefined, "a"), "b", "unknown liveness: the choice");
    t.equal(
      announcerOf("198.18.0.10", "b", seen(["c"], ["a", "b"]), "a"),
      "b",
      "an agent that does not see its own Lease live trusts nothing it sees",
    );
    t.equal(
      announcerOf("198.18.0.10", "b", seen(["a", "c"]), "a"),
      "b",
      "a node with no Lease at all (an older agent, mid-upgrade) keeps its addresses",
    );
    const without = seen(["a", "c"], ["b"]);
    const pick = rendezvousPick("198.18.0.10", ["a", "c"]);
    t.equal(announcerOf("198.18.0.10", "b", without, "a"), pick);
    t.equal(announcerOf("198.18.0.10", "b", without, "c"), pick, "every agent picks the same node");
    t.equal(
      pick,
      announcingNode(
        "198.18.0.10",
        ["a", "c"].map(name => ({ name, ready: true, agentReady: true })),
        "b",
      ),
      "and it is the node the controller moves the address to once b is gone",
    );
    // Spread: over many addresses, each live node takes some of a lapsed node's addresses.
    const taken = new Map<string, number>();
    for (let i = 1; i <= 200; i++) {
      const to = announcerOf(`198.18.1.${i}`, "b", without, "a")!;
      taken.set(to, (taken.get(to) ?? 0) + 1);
    }
    t.same([...taken.keys()].sort(), ["a", "c"]);
    t.ok(Math.min(...taken.values()) > 60, `both take a share: ${JSON.stringify([...taken])}`);
  },
);

t.test("the desired state announces what this node took over", async t => {
  const config = (name: string, address: string, announcingNode: string) =>
    ({
      apiVersion: "blixt.dev/v1alpha1",
      kind: "DataplaneConfig",
      metadata: { namespace: "infra", name, generation: 1, creationTimestamp: new Date(0) },
      spec: {
        gatewayName: name,
        gatewayGeneration: 1,
        address,
        announcingNode,
        listeners: [{ name: "tcp", port: 80, protocol: "TCP", rejectWeight: 0, backends: [] }],
      },
    }) as unknown as DataplaneConfig;
  const configs = [config("one", "198.18.0.10", "b"), config("two", "198.18.0.11", "a")];
  t.same(desiredState(configs, "a").announced, ["198.18.0.11"], "without Leases: the spec");
  const pick = rendezvousPick("198.18.0.10", ["a", "c"]);
  const other = pick === "a" ? "c" : "a";
  const seen = (live: string[], lapsed: string[]) => ({
    live: new Set(live),
    lapsed: new Set(lapsed),
  });
  t.same(
    desiredState(configs, pick!, undefined, seen(["a", "c"], ["b"])).announced,
    pick === "a" ? ["198.18.0.10", "198.18.0.11"] : ["198.18.0.10"],
    `b lapsed: ${pick} takes 198.18.0.10 over`,
  );
  t.same(
    desiredState(configs, other, undefined, seen(["a", "c"], ["b"])).announced,
    other === "a" ? ["198.18.0.11"] : [],
    `${other} does not`,
  );
  t.same(
    desiredState(configs, "b", undefined, seen(["a", "b"], [])).announced,
    ["198.18.0.10"],
    "b keeps what the controller gave it, a keeps its own",
  );
  t.same(
    desiredState(configs, "b", undefined, seen(["b"], ["a"])).announced,
    ["198.18.0.10", "198.18.0.11"],
    "b, the only live node it sees, announces a's address too",
  );
});

t.test("the notifier calls only when the live set changes, and at a lapse", async t => {
  const c = clock();
  const view = new LiveNodes(c.now, c.wall);
  const calls: string[] = [];
  const notifier = new LivenessNotifier(view, live => calls.push(LivenessNotifier.describe(live)));
  t.teardown(() => notifier.stop());
  view.observe(lease("a", microTime(new Date(c.wall()))));
  view.current = true;
  notifier.check();
  view.observe(lease("a", microTime(new Date(c.wall() + 1))));
  notifier.check();
  t.same(calls, ["live: a; lapsed: -"], "a renewal that changes nothing calls nothing");
  view.current = false;
  notifier.check();
  t.same(calls, ["live: a; lapsed: -", "unknown"]);

  // A real timer: a Lease of 1 s that is not renewed ages out, and the notifier says so.
  const real = new LiveNodes();
  const seen: string[] = [];
  const timed = new LivenessNotifier(real, liveness =>
    seen.push(LivenessNotifier.describe(liveness)),
  );
  t.teardown(() => timed.stop());
  real.observe(lease("x", microTime(new Date()), 1));
  real.current = true;
  timed.check();
  await new Promise(resolve => setTimeout(resolve, 1100));
  t.same(
    seen,
    ["live: x; lapsed: -", "live: -; lapsed: -"],
    "the deadline is noticed without any event (no renewal seen since: not lapsed yet)",
  );
  real.observe(lease("y", microTime(new Date()), 1));
  timed.check();
  t.same(
    seen.at(-1),
    "live: x,y; lapsed: -",
    "a renewal after 1.1 s of silence: a stalled watch, x counts as seen once more",
  );
  await new Promise(resolve => setTimeout(resolve, 1100));
  real.observe(lease("y", microTime(new Date()), 1));
  timed.check();
  t.same(seen.at(-1), "live: y; lapsed: x", "x not renewed since: y's next renewal lapses it");
});

t.test("renewals: the Lease written, held while renewed, lost and got back", async t => {
  const c = clock();
  const written: V1Lease[] = [];
  let fail = false;
  const lines: string[] = [];
  let regained = 0;
  const holder = new LeaseHolder({
    namespace: "blixt-system",
    nodeName: "node-a",
    onRegained: () => regained++,
    owner: { name: "blixt-agent-x1", uid: "u-1" },
    settings: { durationSeconds: 2, renewMs: 500 },
    log: { info: (_f, m) => lines.push(`info ${m}`), error: (_f, m) => lines.push(`error ${m}`) },
    write: async lease => {
      if (fail) throw new Error("connect ECONNREFUSED");
      written.push(lease);
    },
    now: c.now,
  });
  t.notOk(holder.held(), "not held before the first renewal");
  await holder.renew();
  t.ok(holder.held());
  const lease0 = written[0];
  t.equal(lease0.metadata?.name, "blixt-agent-node-a");
  t.equal(lease0.metadata?.namespace, "blixt-system");
  t.equal(lease0.spec?.holderIdentity, "node-a");
  t.equal(lease0.spec?.leaseDurationSeconds, 2);
  t.match(String(lease0.spec?.renewTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, "MicroTime");
  t.same(lease0.metadata?.ownerReferences, [
    { apiVersion: "v1", kind: "Pod", name: "blixt-agent-x1", uid: "u-1" },
  ]);

  fail = true;
  c.advance(1500);
  await holder.renew();
  c.advance(400);
  await holder.renew();
  t.ok(holder.held(), "still held within the duration of the last renewal");
  c.advance(200);
  t.notOk(holder.held(), "lapsed 2 s after the last renewal");
  t.equal(lines.filter(l => l.startsWith("error")).length, 1, "the loss is logged once");
  t.equal(regained, 0, "not regained while failing");
  fail = false;
  await holder.renew();
  t.ok(holder.held());
  t.match(lines.at(-1), /renewed again/);
  t.equal(regained, 1, "regained once: the agent relists what its watches may have missed");
  await holder.renew();
  t.equal(regained, 1, "a plain renewal is not a regain");
});

t.test("a renewal that hangs fails after its timeout, and the next one runs", async t => {
  const lines: string[] = [];
  let calls = 0;
  const holder = new LeaseHolder({
    namespace: "blixt-system",
    nodeName: "node-a",
    settings: { durationSeconds: 2, renewMs: 500 },
    timeoutMs: 50,
    log: {
      info: (_f, m) => lines.push(`info ${m}`),
      error: (f, m) => lines.push(`error ${m} ${JSON.stringify(f)}`),
    },
    write: () => {
      calls++;
      // The first request never answers (a connection to an API server gone away).
      return calls === 1 ? new Promise<void>(() => undefined) : Promise.resolve();
    },
  });
  const started = performance.now();
  await holder.renew();
  const took = performance.now() - started;
  t.ok(
    took >= 45 && took < 1000,
    `the hung renewal ended after its timeout (${Math.round(took)} ms)`,
  );
  t.notOk(holder.held(), "and counts as failed");
  t.match(lines[0], /renewing the node Lease failed.*no answer within 50 ms/);
  await holder.renew();
  t.ok(holder.held(), "the next renewal, on a fresh request, holds the Lease again");
  t.match(lines.at(-1), /renewed again/);
});

t.test("the announce deadline: one Lease duration ahead, moved every renew interval", async t => {
  let mono = 5_000_000_000n;
  const written: bigint[] = [];
  let fail = false;
  const lines: string[] = [];
  const deadline = new AnnounceDeadline({
    settings: { durationSeconds: 2, renewMs: 100 },
    log: { info: (_f, m) => lines.push(`info ${m}`), error: (_f, m) => lines.push(`error ${m}`) },
    write: async untilNs => {
      if (fail) throw new Error("bpftool: map update failed");
      written.push(untilNs);
    },
    now: () => mono,
  });
  await deadline.start();
  t.same(written, [7_000_000_000n], "written once at start, before the first interval");
  mono += 100_000_000n;
  await new Promise(resolve => setTimeout(resolve, 350));
  t.ok(written.length >= 3, `moved every renew interval (${written.length} writes in 350 ms)`);
  t.equal(written.at(-1), 7_100_000_000n, "always now + the duration");

  fail = true;
  await new Promise(resolve => setTimeout(resolve, 250));
  t.equal(lines.filter(l => l.startsWith("error")).length, 1, "a failing write is logged once");
  t.match(lines[0], /stops answering ARP/);
  fail = false;
  await new Promise(resolve => setTimeout(resolve, 150));
  t.match(lines.at(-1), /moved again/, "and its recovery once");

  await deadline.stop();
  const after = written.length;
  await new Promise(resolve => setTimeout(resolve, 250));
  t.equal(written.length, after, "nothing written after stop(): the deadline runs out");
});

t.test(
  "alone (no other agent's Lease): no deadline, so a one-node cluster keeps ARP through an agent restart",
  async t => {
    t.notOk(aloneIn(undefined, "a"), "the Leases not listed yet: not alone");
    t.ok(aloneIn(new Set(), "a"), "no Lease at all");
    t.ok(aloneIn(new Set(["a"]), "a"), "only its own");
    t.notOk(aloneIn(new Set(["a", "b"]), "a"), "another node's Lease, live or not");

    const c = clock();
    const view = new LiveNodes(c.now, c.wall);
    t.equal(view.nodes(), undefined, "unknown before the view was ever current");
    view.replace([lease("a", new Date(c.wall()).toISOString())]);
    view.current = true;
    t.same([...view.nodes()!], ["a"]);
    view.observe(lease("b", new Date(c.wall()).toISOString()));
    c.advance(60_000);
    t.same(
      [...view.nodes()!].sort(),
      ["a", "b"],
      "a Lease long lapsed still counts: its node exists",
    );

    let nodes: ReadonlySet<string> | undefined = new Set(["a"]);
    const written: bigint[] = [];
    const deadline = new AnnounceDeadline({
      settings: { durationSeconds: 2, renewMs: 100 },
      log: { info: () => {}, error: () => {} },
      write: async untilNs => void written.push(untilNs),
      now: () => 1_000_000_000n,
      nodes: () => nodes,
      self: "a",
    });
    await deadline.move();
    nodes = new Set(["a", "b"]);
    await deadline.move();
    nodes = undefined;
    await deadline.move();
    t.same(
      written,
      [0n, 3_000_000_000n, 3_000_000_000n],
      "alone: 0 (none); another node: now + duration; unknown: a deadline",
    );
  },
);

t.test(
  "yields: forgotten once not announced, kept while untrusted, announced again after the grace",
  async t => {
    const e: YieldEntry = {
      address: "198.19.253.100",
      atNs: 10_000_000_000n,
      mac: "02:42:c6:13:fd:03",
    };
    const grace = 6_000_000_000n;
    const act = (announced: boolean, trustedSinceNs: bigint | undefined, nowNs: bigint) =>
      yieldAction(e, { announced, trustedSinceNs, nowNs, graceNs: grace });
    t.equal(act(false, 0n, 20_000_000_000n), "forget", "no longer announced here: forgotten");
    t.equal(act(true, undefined, 99_000_000_000n), "keep", "cut off: stays yielded however long");
    t.equal(
      act(true, 0n, 15_000_000_000n),
      "keep",
      "trusted all along, within the grace of the announcement: the agent's view may be catching up",
    );
    t.equal(act(true, 0n, 16_000_000_000n), "announce-again", "trusted past the grace");
    t.equal(
      act(true, 30_000_000_000n, 35_000_000_000n),
      "keep",
      "back from a partition: the grace counts from getting the Lease back, not from the yield",
    );
    t.equal(act(true, 30_000_000_000n, 36_000_000_000n), "announce-again");

    let nowNs = 10_500_000_000n;
    let trusted = false;
    let entries: YieldEntry[] = [e, { ...e, address: "198.19.253.101" }];
    let announced = ["198.19.253.100"];
    const forgotten: string[] = [];
    const again: string[] = [];
    const lines: string[] = [];
    const keeper = new YieldKeeper({
      settings: { durationSeconds: 2, renewMs: 500 },
      log: { info: (_f, m) => lines.push(m), error: (_f, m) => lines.push(`error ${m}`) },
      list: async () => entries,
      announced: async () => announced,
      forget: async a => {
        forgotten.push(a);
        entries = entries.filter(x => x.address !== a);
      },
      announceAgain: async a => {
        again.push(a);
        entries = entries.filter(x => x.address !== a);
      },
      trusted: () => trusted,
      now: () => nowNs,
    });
    await keeper.check();
    t.same(forgotten, ["198.19.253.101"], "a yield of an address no longer announced is forgotten");
    t.equal(keeper.yielded(), 1, "one address yielded and kept");
    t.equal(lines.filter(l => /stopped answering ARP/.test(l)).length, 1, "said once");
    nowNs += 5_000_000_000n;
    await keeper.check();
    t.equal(lines.filter(l => /stopped answering ARP/.test(l)).length, 1, "not said again");
    t.same(again, [], "untrusted: never announced again");
    trusted = true;
    await keeper.check();
    t.same(again, [], "trusted again just now: not yet, its DataplaneConfig watch may lag");
    nowNs += 5_000_000_000n;
    await keeper.check();
    t.same(again, [], "5 s later: still within the grace (3 Lease durations)");
    nowNs += 1_000_000_000n;
    await keeper.check();
    t.same(again, ["198.19.253.100"], "trusted for the whole grace: announced again");
    t.match(lines.at(-1), /announcing it again/);
    await keeper.check();
    t.equal(keeper.yielded(), 0, "nothing yielded any more");
    announced = [];
    entries = [{ ...e, atNs: nowNs }];
    trusted = false;
    const failing = new YieldKeeper({
      settings: { durationSeconds: 2, renewMs: 500 },
      log: { info: () => {}, error: (_f, m) => lines.push(`error ${m}`) },
      list: async () => {
        throw new Error("bpftool: no such map");
      },
      announced: async () => announced,
      forget: async () => {},
      announceAgain: async () => {},
      trusted: () => trusted,
    });
    await failing.check();
    t.match(
      lines.at(-1),
      /^error checking the yielded addresses failed/,
      "a failed check is logged, not thrown",
    );
  },
);

t.test("a node that announces nothing reads no yields once it found none", async t => {
  let mayAnnounce = false;
  let entries: YieldEntry[] = [];
  let lists = 0;
  const keeper = new YieldKeeper({
    settings: { durationSeconds: 2, renewMs: 500 },
    log: { info: () => {}, error: () => {} },
    list: async () => {
      lists++;
      return entries;
    },
    announced: async () => [],
    forget: async a => {
      entries = entries.filter(x => x.address !== a);
    },
    announceAgain: async () => {},
    trusted: () => true,
    mayAnnounce: () => mayAnnounce,
  });
  // Yields left from when the node announced: read, and forgotten, though it announces nothing now.
  entries = [{ address: "198.19.253.100", atNs: 1n, mac: "02:00:00:00:00:02" }];
  await keeper.check();
  t.equal(lists, 1, "a first look reads the map");
  t.same(entries, [], "and forgets the yield of an address no longer announced");
  await keeper.check();
  t.equal(lists, 2, "the next look reads it again: the last one had found a yield");
  for (let i = 0; i < 5; i++) await keeper.check();
  t.equal(lists, 2, "then, nothing announced and nothing found: no more reads");
  mayAnnounce = true;
  await keeper.check();
  await keeper.check();
  t.equal(lists, 4, "announcing again: every look reads the map");
});

t.test("settings: defaults, bounds, and a renew interval that fits the duration", async t => {
  t.same(leaseSettings({}), { durationSeconds: 2, renewMs: 500 });
  t.same(
    leaseSettings({ BLIXT_LEASE_DURATION_SECONDS: "15", BLIXT_LEASE_RENEW_MILLISECONDS: "5000" }),
    { durationSeconds: 15, renewMs: 5000 },
  );
  t.throws(
    () => leaseSettings({ BLIXT_LEASE_DURATION_SECONDS: "0" }),
    /BLIXT_LEASE_DURATION_SECONDS="0" must be an integer in 1\.\.3600/,
  );
  t.throws(
    () => leaseSettings({ BLIXT_LEASE_RENEW_MILLISECONDS: "1500" }),
    /at most half of BLIXT_LEASE_DURATION_SECONDS=2.*agent\.lease/,
  );
  t.equal(leaseName("a".repeat(300)).length, 253, "a long node name gives a valid name");
  t.notOk(leaseObject("ns", "n", 2, new Date()).metadata?.ownerReferences, "no owner: none");
});
