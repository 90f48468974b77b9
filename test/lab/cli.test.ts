// SPDX-License-Identifier: Apache-2.0
// The `blixt dataplane` command, run as a process the way a person runs it: usage errors, the
// BPF object built when a fresh clone has none, and a service programmed and inspected through
// it in the netns lab, attached in the mode the node agent would pick.
import t, { type Test } from "tap";
import { execa } from "execa";
import { appendFile, cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Lab, countByBackend } from "../lib/lab.js";

const BLIXT = fileURLToPath(new URL("../../bin/blixt.js", import.meta.url));
const BPF = fileURLToPath(new URL("../../bpf", import.meta.url));
const blixt = (...args: string[]) => execa("node", [BLIXT, ...args], { reject: false });
const blixtWith = (env: Record<string, string>, ...args: string[]) =>
  execa("node", [BLIXT, ...args], { reject: false, env });

/** bpf/'s sources without the object, as a fresh clone has them. */
async function bpfSources(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "blixt-cli-bpf-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const f of await readdir(BPF))
    if (/\.(c|h)$/.test(f) || f === "Makefile") await cp(join(BPF, f), join(dir, f));
  return dir;
}

t.test("bad arguments: a one-line error naming the argument, exit code 2", async t => {
  const cases: { args: string[]; names: RegExp }[] = [
    {
      args: ["dataplane", "set", "--vip", "198.18.1", "--port", "80", "--proto", "tcp"],
      names: /--vip/,
    },
    {
      args: ["dataplane", "set", "--vip", "198.18.1.1", "--port", "70000", "--proto", "tcp"],
      names: /--port/,
    },
    {
      args: ["dataplane", "set", "--vip", "198.18.1.1", "--port", "80", "--proto", "sctp"],
      names: /--proto/,
    },
    {
      args: [
        "dataplane",
        "set",
        "--vip",
        "198.18.1.1",
        "--port",
        "80",
        "--proto",
        "tcp",
        "--backend",
        "198.18.1.2",
      ],
      names: /--backend/,
    },
    {
      args: [
        "dataplane",
        "set",
        "--vip",
        "198.18.1.1",
        "--port",
        "80",
        "--proto",
        "tcp",
        "--backend",
        "198.18.1.2:80@-1",
      ],
      names: /--backend/,
    },
    {
      args: [
        "dataplane",
        "set",
        "--vip",
        "198.18.1.1",
        "--port",
        "80",
        "--proto",
        "tcp",
        "--reject-weight",
        "x",
      ],
      names: /--reject-weight/,
    },
    { args: ["dataplane", "set", "--port", "80", "--proto", "tcp"], names: /--vip/ },
    // Commander alone keeps the last of a repeated option; blixt refuses it.
    {
      args: [
        "dataplane",
        "set",
        "--vip",
        "198.18.1.1",
        "--port",
        "80",
        "--port",
        "81",
        "--proto",
        "tcp",
      ],
      names: /--port.*given more than once/,
    },
    {
      args: [
        "dataplane",
        "delete",
        "--vip",
        "198.18.1.1",
        "--vip",
        "198.18.1.2",
        "--port",
        "80",
        "--proto",
        "tcp",
      ],
      names: /--vip.*given more than once/,
    },
    {
      args: ["dataplane", "list", "--pin-dir", "/sys/fs/bpf/a", "--pin-dir", "/sys/fs/bpf/b"],
      names: /--pin-dir.*given more than once/,
    },
    {
      args: ["compile", "-f", "x.yaml", "-o", "json", "-o", "yaml"],
      names: /--output.*given more than once/,
    },
    { args: ["dataplane", "attach"], names: /--iface/ },
    { args: ["dataplane", "attach", "--iface", "eth0", "--mode", "dpdk"], names: /--mode/ },
    { args: ["dataplane", "list", "--colour"], names: /--colour/ },
    { args: ["dataplane", "frobnicate"], names: /frobnicate/ },
  ];
  // Each run starts node and tsx; run them side by side.
  const runs = await Promise.all(cases.map(({ args }) => blixt(...args)));
  for (const [i, { args, names }] of cases.entries()) {
    const r = runs[i];
    t.equal(r.exitCode, 2, `${args.join(" ")}: exit code 2`);
    const lines = r.stderr.trim().split("\n");
    t.equal(lines.length, 1, `${args.join(" ")}: one line (${r.stderr.trim()})`);
    t.match(lines[0], names, `${args.join(" ")}: names the argument`);
  }
});

t.test(
  "a command needing the maps says what to run when nothing is loaded: a usage error, exit code 2",
  async t => {
    const r = await blixt(
      "dataplane",
      "list",
      "--pin-dir",
      "/sys/fs/bpf/blixt-cli-test-nothing-here",
    );
    t.equal(r.exitCode, 2);
    t.equal(r.stderr.trim().split("\n").length, 1, `one line (${r.stderr.trim()})`);
    t.match(
      r.stderr,
      /--pin-dir.*no blixt maps pinned under \/sys\/fs\/bpf\/blixt-cli-test-nothing-here; run `blixt dataplane attach/,
    );
  },
);

t.test("attach says which command builds the BPF object when it cannot be built", async t => {
  const dir = await bpfSources(t);
  await appendFile(join(dir, "blixt.c"), "\nthis is not C;\n");
  const r = await blixtWith(
    { BLIXT_BPF_DIR: dir },
    "dataplane",
    "attach",
    "--iface",
    "cli-no-such-device",
    "--pin-dir",
    "/sys/fs/bpf/blixt-cli-test-nobuild",
  );
  t.equal(r.exitCode, 1, "the build failed, not the command line");
  t.match(
    r.stderr,
    new RegExp(`blixt.o is missing and \`make -s -C ${dir}\` failed: .*error.*npm run build:bpf`),
    r.stderr,
  );
});

t.test("a service programmed and inspected through the CLI carries UDP traffic", async t => {
  const lab = new Lab({ name: "cli", backends: 2 });
  t.teardown(() => lab.down());
  await lab.up();
  await lab.startServers({ udp: [5353] });
  const pin = ["--pin-dir", lab.pinDir];
  const ok = async (...args: string[]) => {
    const r = await blixt(...args);
    t.equal(r.exitCode, 0, `blixt ${args.join(" ")} succeeds${r.exitCode ? `: ${r.stderr}` : ""}`);
    return r.stdout;
  };

  // A fresh clone: no bpf/blixt.o. attach builds it, and with no --mode picks as the node agent
  // does: TC on the lab's veth, where an XDP_TX reply would be lost.
  const fresh = await bpfSources(t);
  const attach = await blixtWith(
    { BLIXT_BPF_DIR: fresh },
    "dataplane",
    "attach",
    "--iface",
    lab.gatewayIface,
    "--netns",
    lab.gatewayNs,
    ...pin,
  );
  t.equal(attach.exitCode, 0, `attach succeeds${attach.exitCode ? `: ${attach.stderr}` : ""}`);
  t.match(
    attach.stderr,
    new RegExp(`blixt.o was missing: built it \\(make -s -C ${fresh}\\)`),
    "it built the missing object",
  );
  t.match(attach.stdout, /attached blixt \(tc\) to cl/, "the default mode is auto: TC on a veth");
  t.match(attach.stdout, /mode tc: auto: a veth, .*XDP_TX.*so TC ingress/, "and it says why");
  const vip = lab.vip(0);
  const [b0, b1] = lab.backendIps;
  await ok(
    "dataplane",
    "set",
    "--vip",
    vip,
    "--port",
    "53",
    "--proto",
    "udp",
    "--backend",
    `${b0}:5353@3`,
    "--backend",
    `${b1}:5353`,
    ...pin,
  );

  const listed = JSON.parse(await ok("dataplane", "list", "--json", ...pin));
  t.same(
    listed.map((s: { backends: { ip: string; weight: number }[] }) => ({
      ...s,
      backends: [...s.backends].sort((a, b) => b.weight - a.weight),
    })),
    [
      {
        vip,
        port: 53,
        proto: "udp",
        rejectWeight: 0,
        backends: [
          { ip: b0, port: 5353, weight: 3 },
          { ip: b1, port: 5353, weight: 1 },
        ],
      },
    ],
    "list --json shows the service as set",
  );
  const table = await ok("dataplane", "list", ...pin);
  t.match(table, /SERVICE\s+BACKEND\s+WEIGHT\s+SHARE/, "list prints a table");
  t.match(
    table,
    new RegExp(`${vip}:53/udp\\s+${b0}:5353\\s+3\\s+75\\.0%`),
    "with each backend's share",
  );

  const outcomes = await lab.udp(vip, 53, 100);
  t.same(
    outcomes.filter(o => !o.ok),
    [],
    "100 UDP requests through the VIP answered",
  );
  t.ok(
    (countByBackend(outcomes)[lab.backendName(0)] ?? 0) > 50,
    "the weight-3 backend took most of them",
  );

  // Each request comes from a fresh socket, but the kernel may hand a closed socket's port to
  // a later one: that request is the same 5-tuple, a conntrack hit, not a new flow.
  const flows = new Set(outcomes.flatMap(o => (o.ok ? [o.peer] : []))).size;
  const stats = JSON.parse(await ok("dataplane", "stats", "--json", ...pin));
  t.equal(
    stats.services[0].newFlows,
    flows,
    `stats --json counts one new flow per distinct client port (${flows})`,
  );
  t.match(await ok("dataplane", "stats", ...pin), /NEW FLOWS/, "stats prints a table");
  const ct = JSON.parse(await ok("dataplane", "conntrack", "--json", ...pin));
  t.ok(
    ct.filter((e: { direction: string }) => e.direction === "forward").length >= flows,
    "conntrack --json lists the flows",
  );
  t.match(
    await ok("dataplane", "conntrack", ...pin),
    /PROTO\s+STATE\s+DIRECTION\s+SOURCE.*IDLE/,
    "conntrack prints a table, with each entry's state and idle time",
  );

  await ok("dataplane", "delete", "--vip", vip, "--port", "53", "--proto", "udp", ...pin);
  t.same(JSON.parse(await ok("dataplane", "list", "--json", ...pin)), [], "delete removes it");
  await ok("dataplane", "detach", "--iface", lab.gatewayIface, "--netns", lab.gatewayNs, ...pin);
});
