// SPDX-License-Identifier: Apache-2.0
// `blixt dataplane ...`: drive the node's dataplane by hand (the lab, the demo, debugging a
// node), through the same Dataplane class, write path and attach-mode rule the node agent uses.
import { access } from "node:fs/promises";
import { isIPv4 } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError, Option } from "commander";
import { execa } from "execa";
import { linkInfo } from "../capabilities/dataplane/bpftool.js";
import {
  DEFAULT_PIN_DIR,
  Dataplane,
  OBJECT_FILE,
  type ConntrackEntry,
  type DataplaneStats,
} from "../capabilities/dataplane/dataplane.js";
import { modeReason, pickMode } from "../capabilities/dataplane/mode.js";
import type { Backend, Proto, ServiceSpec } from "../capabilities/dataplane/tables.js";
import { repeatable } from "./options.js";

// ---- pure: argument parsing ---------------------------------------------------------------------

export function parseIPv4(value: string): string {
  if (!isIPv4(value)) throw new InvalidArgumentError(`"${value}" is not an IPv4 address.`);
  return value;
}

export function parsePort(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 65535)
    throw new InvalidArgumentError(`"${value}" is not a port (1-65535).`);
  return n;
}

export function parseWeight(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 0xffffffff)
    throw new InvalidArgumentError(`"${value}" is not a weight (an integer 0-4294967295).`);
  return n;
}

/** "IP:PORT[@WEIGHT]", weight 1 when left out (the Gateway API default for a backendRef). */
export function parseBackend(value: string): Backend {
  const m = /^([^:@]+):([^:@]+)(?:@([^:@]+))?$/.exec(value);
  if (!m) throw new InvalidArgumentError(`"${value}" is not IP:PORT[@WEIGHT].`);
  return {
    ip: parseIPv4(m[1]),
    port: parsePort(m[2]),
    weight: m[3] === undefined ? 1 : parseWeight(m[3]),
  };
}

// ---- pure: human output ---------------------------------------------------------------------------

/** Left-aligned columns, two spaces apart; numbers right-aligned. */
export function formatTable(headers: string[], rows: (string | number)[][]): string {
  const cells = rows.map(r => r.map(String));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map(r => r[i]?.length ?? 0)));
  const numeric = headers.map(
    (_, i) => rows.length > 0 && rows.every(r => typeof r[i] === "number"),
  );
  const line = (r: string[]) =>
    r
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(headers), ...cells.map(line)].join("\n");
}

const service = (s: { vip: string; port: number; proto: string }) =>
  `${s.vip}:${s.port}/${s.proto}`;

export function formatServices(services: ServiceSpec[]): string {
  if (services.length === 0) return "no services";
  const rows: (string | number)[][] = [];
  for (const s of services) {
    const total = s.backends.reduce((sum, b) => sum + b.weight, 0) + s.rejectWeight;
    const share = (w: number) => (total === 0 ? "-" : `${((100 * w) / total).toFixed(1)}%`);
    if (s.backends.length === 0 && s.rejectWeight === 0)
      rows.push([service(s), "(none: every connection refused)", "-", "-"]);
    for (const b of s.backends)
      rows.push([service(s), `${b.ip}:${b.port}`, String(b.weight), share(b.weight)]);
    if (s.rejectWeight > 0)
      rows.push([service(s), "(rejected share)", String(s.rejectWeight), share(s.rejectWeight)]);
  }
  return formatTable(["SERVICE", "BACKEND", "WEIGHT", "SHARE"], rows);
}

/**
 * `nowNs` is CLOCK_MONOTONIC now, the clock the programs stamp entries with. IDLE is how long
 * since the flow's last packet, for TCP and UDP alike, to within a second (the programs stamp an
 * entry at most once a second, bpf/conntrack.h). STATE says which table holds the entry:
 * confirmed (blixt_ct4) or unconfirmed (blixt_ct4_new: the flow is not yet confirmed, e.g. a
 * TCP handshake that has not finished).
 */
export function formatConntrack(entries: ConntrackEntry[], nowNs: bigint): string {
  if (entries.length === 0) return "no conntrack entries";
  const sorted = [...entries].sort((a, b) => b.lastSeenNs - a.lastSeenNs);
  const rows = sorted.map(e => {
    const idle = `${(Math.max(0, Number(nowNs - BigInt(e.lastSeenNs))) / 1e9).toFixed(1)}s`;
    return [
      e.proto,
      e.confirmed ? "confirmed" : "unconfirmed",
      e.direction,
      `${e.saddr}:${e.sport}`,
      `${e.daddr}:${e.dport}`,
      `${e.natAddr}:${e.natPort}`,
      e.svcId,
      idle,
    ];
  });
  return formatTable(
    ["PROTO", "STATE", "DIRECTION", "SOURCE", "DESTINATION", "NAT", "SVC", "IDLE"],
    rows,
  );
}

export function formatStats(stats: DataplaneStats): string {
  const services =
    stats.services.length === 0
      ? "no services"
      : formatTable(
          ["SERVICE", "PACKETS", "BYTES", "NEW FLOWS", "REJECTS"],
          stats.services.map(s => [service(s), s.packets, s.bytes, s.newFlows, s.rejects]),
        );
  const reasons = formatTable(
    ["REASON", "PACKETS"],
    Object.entries(stats.reasons).map(([reason, packets]) => [reason, packets]),
  );
  return `${services}\n\n${reasons}`;
}

// ---- the BPF object ------------------------------------------------------------------------------

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/**
 * Makes sure `objDir` holds an up-to-date blixt.o before it is loaded. In a source tree (a
 * Makefile beside the object) make decides: `make -q` says whether the object is missing or
 * older than its sources, and then `make -s -C objDir` builds it. Elsewhere (the image) the
 * object must just be there. Returns a line saying what it built, or throws saying what failed
 * and which command builds it.
 */
export async function ensureBpfObject(objDir: string): Promise<string | undefined> {
  const object = join(objDir, OBJECT_FILE);
  const present = await exists(object);
  if (!(await exists(join(objDir, "Makefile")))) {
    if (!present)
      throw new Error(
        `${object} not found, and no Makefile beside it to build it from; set BLIXT_BPF_DIR to the directory holding ${OBJECT_FILE}`,
      );
    return undefined;
  }
  const fix =
    "install clang, llvm, libbpf-dev and make (hack/deps.sh), then run `npm run build:bpf`";
  const question = await execa("make", ["-q", "-C", objDir, OBJECT_FILE], {
    reject: false,
    stdin: "ignore",
  });
  if (question.exitCode === 0) return undefined;
  const why = present ? "older than its sources" : "missing";
  const command = `make -s -C ${objDir}`;
  const r =
    question.exitCode === 1
      ? await execa("make", ["-s", "-C", objDir], { reject: false, stdin: "ignore" })
      : question;
  if (r.exitCode !== 0) {
    const lines = `${r.stderr}\n${r.stdout}`
      .split("\n")
      .map(l => l.trim())
      .filter(Boolean);
    const detail = lines.find(l => /error/i.test(l)) ?? lines.at(-1) ?? r.shortMessage;
    throw new Error(`${object} is ${why} and \`${command}\` failed: ${detail}; ${fix}`);
  }
  return `${object} was ${why}: built it (${command})`;
}

// ---- the commands -------------------------------------------------------------------------------

interface Common {
  pinDir: string;
  netns?: string;
  xdpMode?: "native" | "generic" | "auto";
  json?: boolean;
}

/** Where blixt.o is: BLIXT_BPF_DIR (as for the node agent; the image sets it), else the source tree's bpf/. */
const bpfDir = () =>
  process.env.BLIXT_BPF_DIR?.trim() || fileURLToPath(new URL("../bpf", import.meta.url));

const dataplaneOf = (o: Common) =>
  new Dataplane({ pinDir: o.pinDir, netns: o.netns, xdpMode: o.xdpMode, objDir: bpfDir() });

/**
 * For commands that need the maps: nothing pinned under --pin-dir is a usage error (exit code
 * 2) that says what to run, rather than bpftool's ENOENT.
 */
async function loadedDataplane(o: Common, cmd: Command): Promise<Dataplane> {
  const dp = dataplaneOf(o);
  try {
    await access(dp.mapPin("blixt_services"));
  } catch {
    cmd.error(
      `error: option '--pin-dir <dir>': no blixt maps pinned under ${o.pinDir}; run \`blixt dataplane attach --iface IF --pin-dir ${o.pinDir}\` first, or pass the --pin-dir it used`,
      {
        exitCode: 2,
        code: "blixt.noMaps",
      },
    );
  }
  return dp;
}
const print = (text: string) => process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
const collect =
  <T>(parse: (v: string) => T) =>
  (value: string, previous: T[]) => [...previous, parse(value)];

const pinDirOption = () =>
  new Option("--pin-dir <dir>", "where blixt's maps and programs are pinned").default(
    DEFAULT_PIN_DIR,
  );
const vipOption = () =>
  new Option("--vip <ip>", "the service's virtual IP (a Gateway address)")
    .argParser(parseIPv4)
    .makeOptionMandatory();
const portOption = () =>
  new Option("--port <n>", "the listener port").argParser(parsePort).makeOptionMandatory();
const protoOption = () =>
  new Option("--proto <proto>", "the listener protocol")
    .choices(["tcp", "udp"])
    .makeOptionMandatory();

export function dataplaneCommand(): Command {
  const cmd = new Command("dataplane").description(
    "load, attach and program the eBPF dataplane on this node",
  );

  cmd
    .command("attach")
    .description(
      "load blixt's programs (reusing pinned maps, so connections survive) and attach them to a device",
    )
    .requiredOption("--iface <name>", "the device facing clients")
    .addOption(
      new Option(
        "--mode <mode>",
        "ingress hook: xdp, tc, or auto as the node agent picks it (tc on a veth, where XDP cannot send a reply back unless the peer runs XDP; xdp elsewhere)",
      )
        .choices(["auto", "xdp", "tc"])
        .default("auto"),
    )
    .addOption(
      new Option("--xdp-mode <mode>", "how XDP attaches: native driver, generic, or auto")
        .choices(["native", "generic", "auto"])
        .default("native"),
    )
    .addOption(pinDirOption())
    .option("--netns <name>", "network namespace (under /var/run/netns) the device lives in")
    .action(async (o: Common & { iface: string; mode: "auto" | "xdp" | "tc" }) => {
      const built = await ensureBpfObject(bpfDir());
      if (built) process.stderr.write(`blixt: ${built}\n`);
      const { kind } = await linkInfo(o.iface, { netns: o.netns });
      const mode = pickMode(o.mode, kind) === "tc" ? "tc" : "xdp";
      const dp = dataplaneOf(o);
      await dp.load();
      await dp.attach(o.iface, mode);
      print(
        `attached blixt (${mode}) to ${o.iface}${o.netns ? ` in netns ${o.netns}` : ""}; maps pinned under ${o.pinDir}`,
      );
      print(`mode ${mode}: ${modeReason(o.mode, kind)}`);
    });

  cmd
    .command("detach")
    .description("remove blixt's programs from a device (pinned maps stay)")
    .requiredOption("--iface <name>", "the device")
    .addOption(pinDirOption())
    .option("--netns <name>", "network namespace (under /var/run/netns) the device lives in")
    .action(async (o: Common & { iface: string }) => {
      await dataplaneOf(o).detach(o.iface);
      print(`detached blixt from ${o.iface}${o.netns ? ` in netns ${o.netns}` : ""}`);
    });

  cmd
    .command("set")
    .description("create or replace a service: VIP:port/proto → weighted backends")
    .addOption(vipOption())
    .addOption(portOption())
    .addOption(protoOption())
    .addOption(
      repeatable(
        new Option(
          "--backend <ip:port[@weight]>",
          "a backend (repeat for more); weight defaults to 1, 0 takes no new flows",
        )
          .argParser(collect(parseBackend))
          .default([] as Backend[]),
      ),
    )
    .option(
      "--reject-weight <n>",
      "weight of unresolved backendRefs: that share of new connections is rejected",
      parseWeight,
      0,
    )
    .addOption(pinDirOption())
    .action(
      async (
        o: Common & {
          vip: string;
          port: number;
          proto: Proto;
          backend: Backend[];
          rejectWeight: number;
        },
        cmd: Command,
      ) => {
        await (
          await loadedDataplane(o, cmd)
        ).setService({
          vip: o.vip,
          port: o.port,
          proto: o.proto,
          backends: o.backend,
          rejectWeight: o.rejectWeight,
        });
        print(
          `set ${service(o)} → ${o.backend.length === 0 ? "no backends (refused)" : o.backend.map(b => `${b.ip}:${b.port}@${b.weight}`).join(", ")}`,
        );
      },
    );

  cmd
    .command("delete")
    .description("remove a service")
    .addOption(vipOption())
    .addOption(portOption())
    .addOption(protoOption())
    .addOption(pinDirOption())
    .action(async (o: Common & { vip: string; port: number; proto: Proto }, cmd: Command) => {
      await (await loadedDataplane(o, cmd)).deleteService(o.vip, o.port, o.proto);
      print(`deleted ${service(o)}`);
    });

  cmd
    .command("list")
    .description("the services programmed in the maps, with their backends")
    .option("--json", "machine-readable output")
    .addOption(pinDirOption())
    .action(async (o: Common, cmd: Command) => {
      const services = await (await loadedDataplane(o, cmd)).listServices();
      print(o.json ? JSON.stringify(services, null, 2) : formatServices(services));
    });

  cmd
    .command("conntrack")
    .description("tracked flows, both directions")
    .option("--json", "machine-readable output")
    .addOption(pinDirOption())
    .action(async (o: Common, cmd: Command) => {
      const entries = await (await loadedDataplane(o, cmd)).conntrack();
      print(
        o.json
          ? JSON.stringify(entries, null, 2)
          : formatConntrack(entries, process.hrtime.bigint()),
      );
    });

  cmd
    .command("stats")
    .description("per-service counters and packets per pass/drop reason")
    .option("--json", "machine-readable output")
    .addOption(pinDirOption())
    .action(async (o: Common, cmd: Command) => {
      const stats = await (await loadedDataplane(o, cmd)).stats();
      print(o.json ? JSON.stringify(stats, null, 2) : formatStats(stats));
    });

  return cmd;
}
