// SPDX-License-Identifier: Apache-2.0
// What each uninstall pod runs (`blixt uninstall detach-node`), on the real kernel: blixt's real
// programs attached to a veth in a network namespace of this file's own, then the detach run
// inside that namespace, as the pod runs in its node's. Afterwards no device runs a blixt
// program and the pins are gone. Needs root and bpf/blixt.o (make -C bpf).
import t from "tap";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { resolve } from "node:path";
import { execa } from "execa";
import { Dataplane } from "../../capabilities/dataplane/dataplane.js";
import { devicesRunningBlixt, type NetShow } from "../../cli/uninstall/plan.js";

const repo = resolve(import.meta.dirname, "../..");
const objDir = resolve(repo, "bpf");
const netns = "blixt-chart-detach";
const pinDir = "/sys/fs/bpf/blixt-chart-detach";
const [deviceA, deviceB] = ["bcdetach0", "bcdetach1"];

const inNetns = (file: string, args: string[], env: Record<string, string> = {}) =>
  execa("nsenter", [`--net=/var/run/netns/${netns}`, file, ...args], {
    cwd: repo,
    env,
    reject: false,
  });

async function blixtDevices(): Promise<string[]> {
  const shown = await inNetns("bpftool", ["-j", "net", "show"]);
  return devicesRunningBlixt(JSON.parse(shown.stdout) as NetShow[]);
}

if (process.getuid?.() !== 0) {
  t.pass("detach on the real kernel", { skip: "needs root (network namespaces, bpffs)" });
} else if (!existsSync(resolve(objDir, "blixt.o"))) {
  t.pass("detach on the real kernel", { skip: "no bpf/blixt.o: run make -C bpf first" });
} else {
  t.teardown(async () => {
    await execa("ip", ["netns", "del", netns], { reject: false });
    await rm(pinDir, { recursive: true, force: true });
  });
  await execa("ip", ["netns", "del", netns], { reject: false });
  await rm(pinDir, { recursive: true, force: true });
  await execa("ip", ["netns", "add", netns]);
  await execa("ip", ["-n", netns, "link", "add", deviceA, "type", "veth", "peer", "name", deviceB]);
  for (const device of [deviceA, deviceB])
    await execa("ip", ["-n", netns, "link", "set", device, "up"]);

  t.test("the uninstall pod leaves no blixt program attached and no pin", async t => {
    const dataplane = new Dataplane({ pinDir, netns, objDir });
    await dataplane.load();
    await dataplane.attach(deviceA, "tc");
    await dataplane.attach(deviceB, "xdp");
    t.same(await blixtDevices(), [deviceA, deviceB].sort(), "blixt runs on both devices before");
    t.ok(existsSync(`${pinDir}/maps`), "maps pinned before");

    // As the chart passes them: through the environment.
    const run = await inNetns(process.execPath, ["bin/blixt.js", "uninstall", "detach-node"], {
      ...process.env,
      BLIXT_PIN_DIR: pinDir,
      NODE_NAME: "test-node",
    } as Record<string, string>);
    t.equal(run.exitCode, 0, run.stderr);
    t.match(run.stdout, `test-node: detached blixt from ${deviceA}`);
    t.same(await blixtDevices(), [], "no device runs blixt after");
    t.notOk(existsSync(pinDir), "the pin directory is gone");

    const again = await inNetns(
      process.execPath,
      ["bin/blixt.js", "uninstall", "detach-node", "--pin-dir", pinDir],
      {
        ...process.env,
      } as Record<string, string>,
    );
    t.equal(again.exitCode, 0, `a second run (a retried hook) succeeds: ${again.stderr}`);
    t.match(again.stdout, /no device ran blixt/);
  });
}
