// SPDX-License-Identifier: Apache-2.0
// attach/detach on a real veth inside a network namespace of this file's own: idempotent,
// switching between XDP and TC ingress in place, and leaving nothing behind on detach.
import t from "tap";
import { execa } from "execa";
import { loadedDataplane } from "./fixture.js";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { bpftoolJson, hasTc, xdpMode } from "../../capabilities/dataplane/bpftool.js";

const NETNS = `blixt-pkt-attach-${process.pid}`;
const DEV = "bxa0";

t.test("attach and detach", async t => {
  t.teardown(() => execa("ip", ["netns", "del", NETNS], { reject: false }));
  await execa("ip", ["netns", "add", NETNS]);
  const inNs = (...argv: string[]) => execa("nsenter", [`--net=/var/run/netns/${NETNS}`, ...argv]);
  await inNs("ip", "link", "add", DEV, "type", "veth", "peer", "name", `${DEV}p`);
  await inNs("ip", "link", "set", DEV, "up");
  await inNs("ip", "link", "set", `${DEV}p`, "up");

  const loaded = await loadedDataplane(t, "attach");
  const dp = new Dataplane({ pinDir: loaded.pinDir, netns: NETNS, xdpMode: "native" });
  const opts = { netns: NETNS };
  const progId = async (name: string) =>
    (
      (await bpftoolJson(["prog", "show", "pinned", `${dp.pinDir}/progs/${name}`], "prog id")) as {
        id: number;
      }
    ).id;
  const xdpProgId = async () => {
    const out = (await bpftoolJson(["net", "show", "dev", DEV], "net show", opts)) as {
      xdp: { devname: string; id: number }[];
    }[];
    return out[0].xdp.find(x => x.devname === DEV)?.id;
  };

  t.test("xdp mode: XDP ingress + TC egress, twice", async t => {
    await dp.attach(DEV, "xdp");
    await dp.attach(DEV, "xdp");
    t.equal(await xdpMode(DEV, opts), "native", "native XDP on the veth");
    t.equal(await xdpProgId(), await progId("blixt_xdp_ingress"), "the pinned XDP program");
    t.ok(await hasTc(DEV, "egress", opts), "TC egress for reverse NAT");
    t.notOk(await hasTc(DEV, "ingress", opts), "no TC ingress");
  });

  t.test("a reload then attach swaps in the new program in place", async t => {
    const before = await progId("blixt_xdp_ingress");
    await dp.load();
    const after = await progId("blixt_xdp_ingress");
    t.not(after, before, "new program pinned");
    t.equal(await xdpProgId(), before, "device still runs the old one until attach");
    await dp.attach(DEV, "xdp");
    t.equal(await xdpProgId(), after, "replaced in place");
  });

  t.test("tc mode replaces XDP", async t => {
    await dp.attach(DEV, "tc");
    await dp.attach(DEV, "tc");
    t.equal(await xdpMode(DEV, opts), undefined, "XDP removed");
    t.ok(await hasTc(DEV, "ingress", opts), "TC ingress");
    t.ok(await hasTc(DEV, "egress", opts), "TC egress");
    const { stdout } = await inNs("tc", "filter", "show", "dev", DEV, "ingress");
    t.equal(
      stdout.match(/blixt_tc_ingress/g)?.length,
      1,
      "exactly one blixt filter after two attaches",
    );
  });

  t.test("generic XDP when asked", async t => {
    const generic = new Dataplane({ pinDir: dp.pinDir, netns: NETNS, xdpMode: "generic" });
    await generic.attach(DEV, "xdp");
    t.equal(await xdpMode(DEV, opts), "generic");
    t.notOk(await hasTc(DEV, "ingress", opts), "TC ingress removed");
  });

  t.test("detach leaves nothing, and is idempotent", async t => {
    await dp.detach(DEV);
    await dp.detach(DEV);
    t.equal(await xdpMode(DEV, opts), undefined);
    t.notOk(await hasTc(DEV, "ingress", opts));
    t.notOk(await hasTc(DEV, "egress", opts));
  });

  t.test("errors name the command and bpftool's complaint", async t => {
    await t.rejects(
      dp.attach("nosuchdev0", "xdp"),
      /attaching XDP \(native\) to nosuchdev0: `nsenter --net=\/var\/run\/netns\/.* bpftool net attach xdpdrv pinned .* dev nosuchdev0 overwrite` failed: .+/,
    );
  });
});
