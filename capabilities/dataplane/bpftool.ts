// SPDX-License-Identifier: Apache-2.0
// Thin driver over bpftool (and tc, for the clsact hooks: this bpftool, v7.1, attaches only
// XDP; tcx needs v7.4+). Every failure throws a BpftoolError carrying the command line and
// the tool's own stderr, so the person reading the log can re-run it.
import { execa } from "execa";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export class BpftoolError extends Error {
  constructor(
    readonly command: string,
    readonly stderr: string,
    what: string,
  ) {
    super(`${what}: \`${command}\` failed: ${stderr.trim() || "(no stderr)"}`);
    this.name = "BpftoolError";
  }
}

export interface RunOptions {
  /** netns NAME under /var/run/netns; entered with nsenter so /sys/fs/bpf stays visible. */
  netns?: string;
  /** bpftool binary; default "bpftool" on PATH */
  bpftool?: string;
}

/** Prefix that runs a command in a named network namespace (ip netns exec would remount /sys and hide bpffs). */
export function netnsPrefix(netns?: string): string[] {
  return netns ? ["nsenter", `--net=/var/run/netns/${netns}`] : [];
}

async function run(argv: string[], what: string, opts: RunOptions = {}, allowFail = false) {
  const full = [...netnsPrefix(opts.netns), ...argv];
  const result = await execa(full[0], full.slice(1), { reject: false, stdin: "ignore" });
  if (result.exitCode !== 0 && !allowFail) {
    throw new BpftoolError(
      full.join(" "),
      `${result.stderr}${result.stdout ? `\n${result.stdout}` : ""}`,
      what,
    );
  }
  return result;
}

/** bpftool -j ARGS, parsed; throws with the command and stderr on failure. */
export async function bpftoolJson(
  args: string[],
  what: string,
  opts: RunOptions = {},
): Promise<unknown> {
  const { stdout } = await run([opts.bpftool ?? "bpftool", "-j", ...args], what, opts);
  return stdout.trim() ? JSON.parse(stdout) : null;
}

// ---- map shapes ------------------------------------------------------------------------------

/** What decides whether a pinned map can serve an object's programs. */
export interface MapShape {
  /** BPF_MAP_TYPE_* number (only from an object's BTF; 0 where unknown) */
  typeId?: number;
  maxEntries: number;
  keySize: number;
  valueSize: number;
  flags: number;
}

type BtfType = {
  id: number;
  kind: string;
  name?: string;
  type_id?: number;
  size?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number }[];
  vars?: { type_id: number }[];
};

/**
 * The shape of every map an object file defines (its BTF `.maps` section: `__uint(name, N)` is a
 * pointer to an array of N elements, `__type(name, T)` a pointer to T), without loading it.
 */
export async function objectMapShapes(
  object: string,
  opts: RunOptions = {},
): Promise<Map<string, MapShape>> {
  const btf = (await bpftoolJson(["btf", "dump", "file", object], `reading the BTF of ${object}`, {
    ...opts,
    netns: undefined,
  })) as { types: BtfType[] };
  const byId = new Map(btf.types.map(t => [t.id, t]));
  const resolve = (id: number | undefined): BtfType | undefined => {
    let t = id === undefined ? undefined : byId.get(id);
    while (t && ["TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"].includes(t.kind))
      t = byId.get(t.type_id!);
    return t;
  };
  const sizeOf = (t: BtfType | undefined): number =>
    !t ? 0 : t.kind === "ARRAY" ? (t.nr_elems ?? 0) * sizeOf(resolve(t.type_id)) : (t.size ?? 0);
  const shapes = new Map<string, MapShape>();
  const section = btf.types.find(t => t.kind === "DATASEC" && t.name === ".maps");
  for (const v of section?.vars ?? []) {
    const variable = byId.get(v.type_id);
    const def = resolve(variable?.type_id);
    if (!variable?.name || !def?.members) continue;
    const field = (name: string) => {
      const target = resolve(resolve(def.members!.find(m => m.name === name)?.type_id)?.type_id);
      return target;
    };
    const uint = (name: string) => field(name)?.nr_elems ?? 0;
    shapes.set(variable.name, {
      typeId: uint("type"),
      maxEntries: uint("max_entries"),
      keySize: uint("key_size") || sizeOf(field("key")),
      valueSize: uint("value_size") || sizeOf(field("value")),
      flags: uint("map_flags"),
    });
  }
  return shapes;
}

/** The shape of a pinned map, and its type as bpftool names it ("percpu_array", "lru_hash", …). */
export async function pinnedMapShape(
  pin: string,
  opts: RunOptions = {},
): Promise<MapShape & { type: string }> {
  const info = (await bpftoolJson(["map", "show", "pinned", pin], `reading map ${pin}`, opts)) as {
    type: string;
    max_entries: number;
    bytes_key: number;
    bytes_value: number;
    flags: number;
  };
  return {
    type: info.type,
    maxEntries: info.max_entries,
    keySize: info.bytes_key,
    valueSize: info.bytes_value,
    flags: info.flags,
  };
}

/**
 * Whether a pinned map can serve programs that define it as `want`: the same key and value size
 * and flags, and, for an array (indexed: the programs and the agent read every index below
 * `want.maxEntries`), at least as many entries. A hash map's size is only its capacity: one
 * sized otherwise still serves, and keeps its entries (conntrack) across the reload.
 */
export const reusableMap = (want: MapShape, have: MapShape & { type: string }): boolean =>
  want.keySize === have.keySize &&
  want.valueSize === have.valueSize &&
  want.flags === have.flags &&
  (!have.type.endsWith("array") || have.maxEntries >= want.maxEntries);

/** bpftool's names of the map types a size can be set for (BPF_MAP_TYPE_HASH, _LRU_HASH). */
const SIZEABLE_TYPES: Record<number, string> = { 1: "hash", 9: "lru_hash" };

/**
 * Creates and pins a map shaped as `shape` (an object's map, by objectMapShapes) but with
 * `entries` entries, for loadAll to reuse: how a map's size becomes a setting. Hash maps only.
 */
export async function createMap(
  pin: string,
  name: string,
  shape: MapShape,
  entries: number,
  opts: RunOptions = {},
): Promise<void> {
  const type = SIZEABLE_TYPES[shape.typeId ?? 0];
  if (!type)
    throw new Error(
      `map ${name}: its size cannot be set (map type ${shape.typeId}; only hash maps can be resized)`,
    );
  await run(
    [
      opts.bpftool ?? "bpftool",
      "map",
      "create",
      pin,
      "type",
      type,
      "key",
      String(shape.keySize),
      "value",
      String(shape.valueSize),
      "entries",
      String(entries),
      "name",
      name,
      "flags",
      String(shape.flags),
    ],
    `creating map ${name} with ${entries} entries`,
    opts,
  );
}

// ---- load -------------------------------------------------------------------------------------

export interface LoadAllOptions extends RunOptions {
  /** object file with every program and map */
  object: string;
  /** directory bpftool pins each program under, by function name */
  progDir: string;
  /** directory bpftool pins every map the object defines, by map name */
  pinMaps: string;
  /** maps to reuse instead of create: name → pinned path (this is what keeps conntrack across reloads) */
  reuse?: Record<string, string>;
}

export async function loadAll(o: LoadAllOptions): Promise<void> {
  const reuse = Object.entries(o.reuse ?? {}).flatMap(([name, path]) => [
    "map",
    "name",
    name,
    "pinned",
    path,
  ]);
  await run(
    [
      o.bpftool ?? "bpftool",
      "prog",
      "loadall",
      o.object,
      o.progDir,
      ...reuse,
      "pinmaps",
      o.pinMaps,
    ],
    `loading ${o.object}`,
    o,
  );
}

// ---- attach -----------------------------------------------------------------------------------

export type XdpMode = "native" | "generic" | "auto";
const XDP_ATTACH_TYPE: Record<XdpMode, string> = {
  native: "xdpdrv",
  generic: "xdpgeneric",
  auto: "xdp",
};

/** Attaches (or replaces in place) the XDP program on a device. */
export async function attachXdp(
  progPin: string,
  iface: string,
  mode: XdpMode,
  opts: RunOptions = {},
): Promise<void> {
  await run(
    [
      opts.bpftool ?? "bpftool",
      "net",
      "attach",
      XDP_ATTACH_TYPE[mode],
      "pinned",
      progPin,
      "dev",
      iface,
      "overwrite",
    ],
    `attaching XDP (${mode}) to ${iface}`,
    opts,
  );
}

/** Removes whatever XDP program is on a device, native or generic; no error if there is none. */
export async function detachXdp(iface: string, opts: RunOptions = {}): Promise<void> {
  for (const type of ["xdpdrv", "xdpgeneric"]) {
    await run(
      [opts.bpftool ?? "bpftool", "net", "detach", type, "dev", iface],
      `detaching XDP from ${iface}`,
      opts,
      true,
    );
  }
}

/** XDP attach type the device has now, if any. */
export async function xdpMode(
  iface: string,
  opts: RunOptions = {},
): Promise<"native" | "generic" | undefined> {
  const out = (await bpftoolJson(
    ["net", "show", "dev", iface],
    `listing programs on ${iface}`,
    opts,
  )) as { xdp?: { devname: string; mode: string }[] }[] | null;
  const entry = out?.[0]?.xdp?.find(x => x.devname === iface);
  if (!entry) return undefined;
  return entry.mode === "generic" ? "generic" : "native";
}

export type TcDirection = "ingress" | "egress";
/** blixt's filters sit at one fixed preference and handle, so a re-run replaces them and leaves others' alone. */
export const TC_PREF = 0xb1;
export const TC_HANDLE = 1;

export async function attachTc(
  progPin: string,
  iface: string,
  direction: TcDirection,
  opts: RunOptions = {},
): Promise<void> {
  await run(["tc", "qdisc", "replace", "dev", iface, "clsact"], `adding clsact to ${iface}`, opts);
  await run(
    [
      "tc",
      "filter",
      "replace",
      "dev",
      iface,
      direction,
      "pref",
      String(TC_PREF),
      "handle",
      String(TC_HANDLE),
      "bpf",
      "direct-action",
      "object-pinned",
      progPin,
    ],
    `attaching TC ${direction} to ${iface}`,
    opts,
  );
}

/** Removes blixt's filter; no error if it is not there. The clsact qdisc stays for others. */
export async function detachTc(
  iface: string,
  direction: TcDirection,
  opts: RunOptions = {},
): Promise<void> {
  await run(
    [
      "tc",
      "filter",
      "delete",
      "dev",
      iface,
      direction,
      "pref",
      String(TC_PREF),
      "handle",
      String(TC_HANDLE),
      "bpf",
    ],
    `detaching TC ${direction} from ${iface}`,
    opts,
    true,
  );
}

/** Whether blixt's TC filter is on a device in that direction. */
export async function hasTc(
  iface: string,
  direction: TcDirection,
  opts: RunOptions = {},
): Promise<boolean> {
  const r = await run(
    ["tc", "filter", "show", "dev", iface, direction, "pref", String(TC_PREF)],
    `listing TC ${direction} on ${iface}`,
    opts,
    true,
  );
  return r.exitCode === 0 && /\bbpf\b/.test(r.stdout);
}

// ---- maps -------------------------------------------------------------------------------------

export const mapUpdateLine = (pin: string, key: string[], value: string[]): string =>
  ["map", "update", "pinned", pin, "key", "hex", ...key, "value", "hex", ...value].join(" ");
export const mapDeleteLine = (pin: string, key: string[]): string =>
  ["map", "delete", "pinned", pin, "key", "hex", ...key].join(" ");
/** A batch line that reads one entry; bpftool stops the batch at a key that is absent. */
export const mapLookupLine = (pin: string, key: string[]): string =>
  ["map", "lookup", "pinned", pin, "key", "hex", ...key].join(" ");

interface BatchResult {
  command: string[];
  output: unknown;
}

/**
 * Most words (command arguments) one `bpftool -j batch` run is given. bpftool's JSON echoes every
 * command with its output, so one run for a thousand tables of 2,000-word chunk lines printed
 * hundreds of MB for the agent to hold and parse; runs of this size keep that to a few MB.
 */
const BATCH_WORDS = 100_000;

/**
 * Runs many bpftool commands in order (`bpftool batch file`), in as few processes as the output
 * size allows (see BATCH_WORDS). bpftool stops at the first failing line, and so does this: no
 * later run starts. The error names that line.
 */
export async function batch(
  lines: string[],
  what: string,
  opts: RunOptions = {},
): Promise<unknown[]> {
  if (lines.length === 0) return [];
  // The batch format is one command per line, split on blanks: a path may contain neither.
  const broken = lines.find(line => /[\n\r]/.test(line));
  if (broken !== undefined)
    throw new Error(`${what}: batch command contains a line break: ${JSON.stringify(broken)}`);
  const outputs: unknown[] = [];
  for (let first = 0; first < lines.length; ) {
    let last = first;
    let words = 0;
    while (last < lines.length && (last === first || words + wordCount(lines[last]) <= BATCH_WORDS))
      words += wordCount(lines[last++]);
    for (const output of await batchRun(lines.slice(first, last), first, lines.length, what, opts))
      outputs.push(output);
    first = last;
  }
  return outputs;
}

function wordCount(line: string): number {
  let words = 1;
  for (let i = 0; i < line.length; i++) if (line.charCodeAt(i) === 32) words++;
  return words;
}

/** One `bpftool -j batch file` run of lines[offset..], for batch(). */
async function batchRun(
  lines: string[],
  offset: number,
  total: number,
  what: string,
  opts: RunOptions,
): Promise<unknown[]> {
  const dir = await mkdtemp(join(tmpdir(), "blixt-batch-"));
  const file = join(dir, "commands");
  try {
    await writeFile(file, lines.join("\n") + "\n");
    const command = [opts.bpftool ?? "bpftool", "-j", "batch", "file", file];
    const r = await run(command, what, opts, true);
    let results: BatchResult[] = [];
    try {
      results = JSON.parse(r.stdout) as BatchResult[];
    } catch {
      /* bpftool died before printing JSON: report its stderr below */
    }
    const failed = results.find(
      x => x.output && typeof x.output === "object" && "error" in (x.output as object),
    );
    if (r.exitCode !== 0 || failed) {
      const detail = failed
        ? `line ${offset + results.indexOf(failed) + 1} (${failed.command.join(" ").slice(0, 200)}): ${(failed.output as { error: string }).error}`
        : r.stderr;
      const count =
        total === lines.length
          ? `${total} commands`
          : `commands ${offset + 1}-${offset + lines.length} of ${total}`;
      throw new BpftoolError(`${command.join(" ")} (${count})`, detail, what);
    }
    return results.map(x => x.output);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface MapEntry {
  key: Uint8Array;
  /** single value (non per-CPU maps) */
  value?: Uint8Array;
  /** one value per possible CPU (per-CPU maps) */
  values?: Uint8Array[];
  /** bpftool's BTF rendering of key and value(s) */
  formatted?: { key: unknown; value?: unknown; values?: { cpu: number; value: unknown }[] };
}

interface RawEntry {
  key: string[];
  value?: string[];
  values?: { cpu: number; value: string[] }[];
  formatted?: MapEntry["formatted"];
}

const toBytes = (words: string[]) => Uint8Array.from(words, w => Number.parseInt(w, 16));

function entryOf(raw: RawEntry): MapEntry {
  return {
    key: toBytes(raw.key),
    value: raw.value ? toBytes(raw.value) : undefined,
    values: raw.values ? raw.values.map(v => toBytes(v.value)) : undefined,
    formatted: raw.formatted,
  };
}

export async function mapDump(pin: string, opts: RunOptions = {}): Promise<MapEntry[]> {
  const out = (await bpftoolJson(["map", "dump", "pinned", pin], `dumping map ${pin}`, opts)) as
    | RawEntry[]
    | null;
  return (out ?? []).map(entryOf);
}

/** One entry, or undefined when the key is absent. */
export async function mapLookup(
  pin: string,
  key: string[],
  opts: RunOptions = {},
): Promise<MapEntry | undefined> {
  const argv = [
    opts.bpftool ?? "bpftool",
    "-j",
    "map",
    "lookup",
    "pinned",
    pin,
    "key",
    "hex",
    ...key,
  ];
  const r = await run(argv, `looking up in ${pin}`, opts, true);
  if (r.exitCode !== 0) {
    // bpftool -j reports an absent key as `null` on stdout with nothing on stderr.
    if (r.stdout.trim() === "null" && !r.stderr.trim()) return undefined;
    throw new BpftoolError(argv.join(" "), r.stderr, `looking up in ${pin}`);
  }
  return entryOf(JSON.parse(r.stdout) as RawEntry);
}

// ---- prog run (BPF_PROG_TEST_RUN) -------------------------------------------------------------

export interface ProgRunResult {
  retval: number;
  /** average ns per run, as the kernel measured it */
  duration: number;
  dataOut: Uint8Array;
}

/**
 * Runs a program on each packet, all in one bpftool process; `repeat` runs each that many
 * times; `ctxIn` is the context every run starts from (for TC, a struct __sk_buff).
 */
export async function progRunMany(
  progPin: string,
  packets: Uint8Array[],
  opts: RunOptions & { repeat?: number; ctxIn?: Uint8Array } = {},
): Promise<ProgRunResult[]> {
  const dir = await mkdtemp(join(tmpdir(), "blixt-run-"));
  try {
    const lines: string[] = [];
    await Promise.all(packets.map((p, i) => writeFile(join(dir, `in${i}`), p)));
    if (opts.ctxIn) await writeFile(join(dir, "ctx"), opts.ctxIn);
    packets.forEach((_, i) => {
      const repeat = opts.repeat && opts.repeat > 1 ? ["repeat", String(opts.repeat)] : [];
      const ctx = opts.ctxIn ? ["ctx_in", join(dir, "ctx")] : [];
      lines.push(
        [
          "prog",
          "run",
          "pinned",
          progPin,
          "data_in",
          join(dir, `in${i}`),
          "data_out",
          join(dir, `out${i}`),
          ...ctx,
          ...repeat,
        ].join(" "),
      );
    });
    const outputs = (await batch(lines, `running ${progPin}`, opts)) as {
      retval: number;
      duration: number;
    }[];
    // Awaited here, not returned: `finally` must not remove the files before they are read.
    return await Promise.all(
      outputs.map(async (o, i) => ({
        retval: o.retval,
        duration: o.duration,
        dataOut: new Uint8Array(await readFile(join(dir, `out${i}`))),
      })),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function progRun(
  progPin: string,
  packet: Uint8Array,
  opts: RunOptions & { repeat?: number; ctxIn?: Uint8Array } = {},
): Promise<ProgRunResult> {
  return (await progRunMany(progPin, [packet], opts))[0];
}

// ---- links (ip) -------------------------------------------------------------------------------

export interface LinkInfo {
  ifname: string;
  ifindex: number;
  /** "aa:bb:cc:dd:ee:ff" */
  mac: string;
  /** "veth", "vxlan", …; undefined for a plain (physical) device */
  kind?: string;
  /** "ether" for Ethernet; "loopback", "none" (tun, wireguard), … otherwise */
  linkType?: string;
}

/** The one link in `ip -j -d link show dev IF` output. Throws naming the device when the JSON lacks it. */
export function parseLink(iface: string, json: string): LinkInfo {
  const links = JSON.parse(json || "[]") as {
    ifname?: string;
    ifindex?: number;
    address?: string;
    link_type?: string;
    linkinfo?: { info_kind?: string };
  }[];
  const link = links.find(l => l.ifname === iface) ?? links[0];
  if (!link || !Number.isInteger(link.ifindex)) {
    throw new Error(`device ${iface}: \`ip -j -d link show\` gave no ifindex for it`);
  }
  return {
    ifname: link.ifname ?? iface,
    ifindex: link.ifindex!,
    mac: (link.address ?? "").toLowerCase(),
    kind: link.linkinfo?.info_kind,
    linkType: link.link_type,
  };
}

/** ifindex, MAC and kind of a device (in opts.netns, if given). */
export async function linkInfo(iface: string, opts: RunOptions = {}): Promise<LinkInfo> {
  const r = await run(
    ["ip", "-j", "-d", "link", "show", "dev", iface],
    `reading device ${iface}`,
    opts,
  );
  return parseLink(iface, r.stdout);
}

/** Every link's name and ifindex (in opts.netns, if given), from `ip -j link show`. */
export async function links(opts: RunOptions = {}): Promise<{ ifname: string; ifindex: number }[]> {
  const r = await run(["ip", "-j", "link", "show"], "listing devices", opts);
  return (JSON.parse(r.stdout || "[]") as { ifname?: string; ifindex?: number }[])
    .filter(l => typeof l.ifname === "string" && Number.isInteger(l.ifindex))
    .map(l => ({ ifname: l.ifname!, ifindex: l.ifindex! }));
}
