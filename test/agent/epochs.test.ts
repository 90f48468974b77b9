// SPDX-License-Identifier: Apache-2.0
// Service epochs on real pinned maps, driven by the node agent: an established flow skips the
// full check only while its service's epoch is the one its entry was stamped with
// (bpf/README.md, "The fast path"), so the agent must move a service's epoch after every change
// to it that can fail such a check (a backend out), as the change's last write, and never hand
// out an epoch twice.
import t from "tap";
import * as bpftool from "../../capabilities/dataplane/bpftool.js";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { Agent } from "../../capabilities/agent/loop.js";
import { applyLines, dropsBackend, type ServiceState } from "../../capabilities/dataplane/lines.js";
import { desiredState, diffState } from "../../capabilities/agent/desired.js";
import {
  EPOCH_COUNTER,
  decodeEpoch,
  encodeIndexKey,
  encodeServiceKey,
  encodeTableKey,
  hex,
  type MapName,
} from "../../capabilities/dataplane/maps.js";
import { dataplaneConfig } from "./fixtures.js";

const pinDir = `/sys/fs/bpf/blixt-test-agent-epochs-${process.pid}`;
const VIP = "198.18.211.1";
const config = (web: string[], dns: string[], generation: number) =>
  dataplaneConfig(
    "epochs",
    VIP,
    [
      {
        name: "web",
        port: 80,
        protocol: "TCP",
        backends: [{ weight: 1, endpoints: web.map(ip => [ip, 8080] as [string, number]) }],
      },
      {
        name: "dns",
        port: 53,
        protocol: "UDP",
        backends: [{ weight: 1, endpoints: dns.map(ip => [ip, 53] as [string, number]) }],
      },
    ],
    { node: "node-a", generation },
  );

async function epochs(dp: Dataplane): Promise<{ counter: number; web: number; dns: number }> {
  const snapshot = await dp.readMaps({ chunks: false });
  const idOf = (port: number) => snapshot.actual.services.find(s => s.port === port)!.svcId;
  const read = async (index: number) =>
    decodeEpoch(
      (await bpftool.mapLookup(dp.mapPin("blixt_svc_epoch"), hex(encodeIndexKey(index))))!.value!,
    );
  return {
    counter: await read(EPOCH_COUNTER),
    web: await read(idOf(80)),
    dns: await read(idOf(53)),
  };
}

t.test(
  "the agent moves a service's epoch on every change that can fail a flow's check, and only then",
  async t => {
    const dp = new Dataplane({ pinDir });
    t.teardown(() => dp.unpin());
    await dp.load();
    const newAgent = () =>
      new Agent({
        nodeName: "node-a",
        dataplane: dp,
        mode: "tc",
        resyncMs: 0,
        acknowledge: async () => {},
      });
    const agent = newAgent();
    t.teardown(() => agent.stop());

    agent.replaceAll([config(["10.71.0.1", "10.71.0.2"], ["10.71.1.1"], 1)]);
    t.ok((await agent.converge()).ok);
    const first = await epochs(dp);
    t.ok(
      first.web > 0 && first.dns > 0 && first.web !== first.dns,
      `each service has an epoch of its own (${first.web}, ${first.dns})`,
    );
    t.equal(
      first.counter,
      Math.max(first.web, first.dns),
      "the counter holds the last one handed out",
    );

    const idle = await agent.converge();
    t.equal(idle.commands, 0, "a pass with nothing to change writes nothing");
    t.same(await epochs(dp), first, "and moves no epoch");

    agent.replaceAll([config(["10.71.0.1", "10.71.0.3"], ["10.71.1.1"], 2)]);
    t.ok((await agent.converge()).ok);
    const second = await epochs(dp);
    t.ok(second.web > first.counter, "the changed service gets an epoch never handed out before");
    t.equal(
      second.dns,
      first.dns,
      "the unchanged service keeps its epoch: its flows stay on the fast path",
    );

    // Backends only added (a Deployment scaled up) or weights changed: every flow's check still
    // holds, so the agent's pass leaves the epoch (and writes no epoch line at all).
    agent.replaceAll([config(["10.71.0.1", "10.71.0.3", "10.71.0.4"], ["10.71.1.1"], 3)]);
    const grown = await agent.converge();
    t.ok(grown.ok);
    t.equal(grown.changes, 1, "the web service was rewritten");
    t.same(await epochs(dp), second, "a backend added moves no epoch");

    agent.replaceAll([config(["10.71.0.1"], ["10.71.1.1"], 4)]);
    t.ok((await agent.converge()).ok);
    const shrunk = await epochs(dp);
    t.ok(shrunk.web > second.counter, "a backend removed (scaled down) moves it");
    t.equal(shrunk.dns, first.dns, "and only that service's");

    // A new agent on the same pins (a restart): its first pass changes no table but has every flow
    // checked once, since the agent before may have stopped half-way through a batch.
    await agent.stop();
    const restarted = newAgent();
    t.teardown(() => restarted.stop());
    restarted.replaceAll([config(["10.71.0.1"], ["10.71.1.1"], 4)]);
    const pass = await restarted.converge();
    t.ok(pass.ok);
    t.equal(pass.changes, 0, "nothing to reprogram after a restart");
    const third = await epochs(dp);
    t.ok(
      third.web > shrunk.counter && third.dns > shrunk.counter,
      "yet every service has a new epoch",
    );
    t.equal((await restarted.converge()).commands, 0, "once: the next pass writes nothing");
  },
);

t.test(
  "in a batch, the counter is written first and a service's epoch after everything else of its change",
  async t => {
    const dp = new Dataplane({ pinDir: `${pinDir}-order` });
    t.teardown(() => dp.unpin());
    await dp.load();
    await dp.setService({
      vip: VIP,
      port: 80,
      proto: "tcp",
      backends: [
        { ip: "10.71.0.1", port: 8080, weight: 1 },
        { ip: "10.71.0.2", port: 8080, weight: 1 },
      ],
      rejectWeight: 0,
    });
    await dp.setService({
      vip: VIP,
      port: 81,
      proto: "tcp",
      backends: [{ ip: "10.71.0.1", port: 8080, weight: 1 }],
      rejectWeight: 0,
    });
    const snapshot = await dp.readMaps();
    // Port 80 loses a backend, port 81 is removed.
    const desired = desiredState(
      [
        dataplaneConfig("order", VIP, [
          {
            name: "web",
            port: 80,
            protocol: "TCP",
            backends: [{ weight: 1, endpoints: [["10.71.0.1", 8080]] }],
          },
        ]),
      ],
      "node-a",
    );
    const diff = diffState(desired, snapshot.actual);
    const pin = (m: MapName) => dp.mapPin(m);
    for (const tolerant of [false, true]) {
      const lines = applyLines(pin, diff, snapshot, tolerant);
      const epochLines = lines
        .map((l, i) => [l, i] as const)
        .filter(([l]) => l.includes(pin("blixt_svc_epoch")));
      const counterKey = `key hex ${hex(encodeIndexKey(EPOCH_COUNTER)).join(" ")}`;
      t.ok(
        lines[0].includes(pin("blixt_svc_epoch")) && lines[0].includes(counterKey),
        `${tolerant ? "tolerant" : "plain"}: the counter is the first line`,
      );
      t.equal(epochLines.length, 3, "counter, the removed service, the changed one");
      const web = snapshot.states.get(`${VIP}:80/tcp`)!.value.svcId;
      const webEpoch = epochLines.find(([l]) =>
        l.includes(`key hex ${hex(encodeIndexKey(web)).join(" ")}`),
      )!;
      // The service's own entries (its stats and entry): a table (its backend list, members and
      // chunks) may be shared, and goes once no service uses it.
      const ownMaps = [pin("blixt_svc_stats"), pin("blixt_services")];
      const lastOfWeb = Math.max(
        ...lines.map((l, i) =>
          ownMaps.some(m => l.includes(m)) && l.includes(hex(encodeIndexKey(web)).join(" "))
            ? i
            : -1,
        ),
      );
      const switchLine = lines.findIndex(
        l => l.includes(pin("blixt_services")) && l.startsWith("map update"),
      );
      const oldTableId = snapshot.states.get(`${VIP}:80/tcp`)!.value.tableId;
      const members = (op: string, tableId?: number) =>
        lines.flatMap((l, i) =>
          l.startsWith(op) &&
          l.includes(pin("blixt_backends")) &&
          (tableId === undefined || l.includes(`key hex ${hex(encodeIndexKey(tableId)).join(" ")}`))
            ? [i]
            : [],
        );
      const written = members("map update");
      t.ok(
        written.length === 1 && written[0] < switchLine,
        "the new table's one member is written before the switch",
      );
      const oldMembersGone = members("map delete", oldTableId);
      t.ok(
        switchLine >= 0 && oldMembersGone.length === 2 && oldMembersGone[0] > switchLine,
        "the old table's two members go after the switch",
      );
      t.ok(
        webEpoch[1] > switchLine && webEpoch[1] >= lastOfWeb,
        "and the service's epoch after the switch, and after everything else of its own",
      );
      const oldTable = snapshot.states.get(`${VIP}:80/tcp`)!.value.tableId;
      const oldChunk = hex(encodeTableKey({ tableId: oldTable, index: 0 })).join(" ");
      const oldTableGone = lines.findIndex(
        l =>
          l.startsWith("map delete") && l.includes(pin("blixt_mg_chunks")) && l.includes(oldChunk),
      );
      t.ok(oldTableGone > switchLine, "the old table goes after the switch away from it");
      const removed = snapshot.states.get(`${VIP}:81/tcp`)!.value.svcId;
      const deleteLine = lines.findIndex(
        l => l.startsWith("map delete") && l.includes(pin("blixt_services")),
      );
      const removedEpoch = epochLines.find(([l]) =>
        l.includes(`key hex ${hex(encodeIndexKey(removed)).join(" ")}`),
      )!;
      t.equal(
        removedEpoch[1],
        deleteLine + 1,
        "a removed service's epoch moves right after its entry goes",
      );
    }
    await bpftool.batch(applyLines(pin, diff, snapshot), "applying");
    t.same(
      (await dp.readMaps()).actual.services.map(s => s.port),
      [80],
      "and the batch applies",
    );
  },
);

t.test("dropsBackend: a backend with weight that has none after, and nothing else", async t => {
  const state = (backends: { ip: string; weight: number }[]): ServiceState => ({
    value: { svcId: 1, tableId: 1, tableSize: 16381, rejectWeight: 0 },
    backends: backends.map(b => ({ ...b, port: 8080 })),
    tableBackends: [],
  });
  const to = (backends: { ip: string; weight: number }[]) =>
    backends.map(b => ({ ...b, port: 8080 }));
  const a = { ip: "10.71.0.1", weight: 1 };
  const b = { ip: "10.71.0.2", weight: 1 };
  t.notOk(dropsBackend(state([a]), to([a, b])), "one added");
  t.notOk(dropsBackend(state([a, b]), to([a, { ...b, weight: 3 }])), "a weight changed");
  t.notOk(dropsBackend(state([a, { ...b, weight: 0 }]), to([a])), "one of weight 0 removed");
  t.ok(dropsBackend(state([a, b]), to([a])), "one removed");
  t.ok(dropsBackend(state([a, b]), to([a, { ...b, weight: 0 }])), "one's weight set to 0");
  t.ok(dropsBackend(state([a]), [{ ip: "10.71.0.1", port: 8081, weight: 1 }]), "its port changed");
});

t.test(
  "a removal that stopped between the service's entry and its epoch: the next agent's first pass moves the epoch",
  async t => {
    const dp = new Dataplane({ pinDir: `${pinDir}-dead` });
    t.teardown(() => dp.unpin());
    await dp.load();
    const spec = {
      vip: VIP,
      port: 80,
      proto: "tcp" as const,
      backends: [{ ip: "10.71.0.1", port: 8080, weight: 1 }],
      rejectWeight: 0,
    };
    await dp.setService(spec);
    await dp.setService({ ...spec, port: 81 });
    const { actual, epoch: counter } = await dp.readMaps({ chunks: false });
    const dead = actual.services.find(s => s.port === 80)!.svcId;
    const read = async (id: number) =>
      decodeEpoch(
        (await bpftool.mapLookup(dp.mapPin("blixt_svc_epoch"), hex(encodeIndexKey(id))))!.value!,
      );
    const before = await read(dead);
    // What an agent killed right after the entry's delete line leaves: the epoch as it was, so an
    // established flow of the removed service would still skip the check.
    await bpftool.batch(
      [bpftool.mapDeleteLine(dp.mapPin("blixt_services"), hex(encodeServiceKey(spec)))],
      "removing a service's entry alone",
    );
    t.equal(await read(dead), before);

    const agent = new Agent({
      nodeName: "node-a",
      dataplane: dp,
      mode: "tc",
      resyncMs: 0,
      acknowledge: async () => {},
    });
    t.teardown(() => agent.stop());
    agent.replaceAll([
      dataplaneConfig("dead", VIP, [
        {
          name: "other",
          port: 81,
          protocol: "TCP",
          backends: [{ weight: 1, endpoints: [["10.71.0.1", 8080]] }],
        },
      ]),
    ]);
    t.ok((await agent.converge()).ok);
    t.ok(
      (await read(dead)) > counter,
      "the id no service uses has an epoch never handed out before",
    );
    const next = await agent.converge();
    t.equal(next.commands, 0, "only the first pass sweeps: the next writes nothing");
  },
);
