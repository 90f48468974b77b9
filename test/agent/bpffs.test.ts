// SPDX-License-Identifier: Apache-2.0
// The agent's bpffs check on real mounts (root): a plain directory gets bpffs mounted, bpffs is
// taken as it is, and a mount of another filesystem is refused with what to do.
import t from "tap";
import { execa } from "execa";
import { mkdtemp, rm, statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BPF_FS_MAGIC, ensureBpffs } from "../../capabilities/agent/node.js";

const root = await mkdtemp(join(tmpdir(), "blixt-bpffs-"));
t.teardown(async () => {
  for (const dir of ["plain", "tmpfs"]) {
    await execa("umount", [join(root, dir)], { reject: false });
  }
  await rm(root, { recursive: true, force: true });
});

t.test("a directory that is no mount point gets bpffs, and a second call keeps it", async t => {
  const dir = join(root, "plain");
  await ensureBpffs(dir);
  t.equal((await statfs(dir)).type, BPF_FS_MAGIC, "bpffs is mounted there");
  await ensureBpffs(dir);
  const mounts = (await execa("findmnt", ["-n", "-o", "FSTYPE", dir])).stdout.trim().split("\n");
  t.same(mounts, ["bpf"], "mounted once, not stacked");
});

t.test("another filesystem mounted there is refused, naming the path and the fix", async t => {
  const dir = join(root, "tmpfs");
  await execa("mkdir", ["-p", dir]);
  await execa("mount", ["-t", "tmpfs", "tmpfs", dir]);
  await t.rejects(
    ensureBpffs(dir),
    /tmpfs is a mount of another filesystem \(f_type 0x1021994\), not bpffs.*mount -t bpf bpf/,
  );
});
