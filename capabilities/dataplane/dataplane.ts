// SPDX-License-Identifier: Apache-2.0
// The dataplane as the rest of blixt sees it: load and attach the programs, program services
// and Gateway addresses into the pinned maps, read back state and counters.
//
// Pure parts (validation, the batch a service change compiles to) are exported functions;
// the Dataplane class only adds the bpftool I/O around them.
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { isIPv4 } from "node:net";
import * as bpftool from "./bpftool.js";
import type { RunOptions, XdpMode } from "./bpftool.js";
import { buildMaglevTable, maglevTableSize } from "./maglev.js";
import { sendGratuitousArp, type GratuitousArpOptions } from "./garp.js";
import {
  ADDR_F_ANNOUNCE,
  ARP_COUNTERS,
  CHUNK_SLOTS,
  MAP_NAMES,
  MAX_SERVICES,
  PROG_NAMES,
  REASONS,
  RETIRED_MAP_NAMES,
  chunkCount,
  decodeAddressKey,
  decodeAddressValue,
  decodeBackendKey,
  decodeBackendValue,
  decodeConntrackKey,
  decodeConntrackValue,
  decodeIndexKey,
  decodeInterfaceValue,
  decodeReasonCounter,
  decodeServiceCounters,
  decodeServiceKey,
  decodeServiceValue,
  decodeTableKey,
  encodeAddressKey,
  encodeAddressValue,
  encodeBackendKey,
  encodeBackendValue,
  encodeIndexKey,
  encodeInterfaceValue,
  encodeTableBackend,
  encodeTableChunk,
  encodeTableKey,
  encodeServiceCounters,
  encodeServiceKey,
  encodeServiceValue,
  hex,
  sumCounters,
  tableIdOf,
  type ArpCounter,
  type InterfaceEntry,
  type MapName,
  type ProgName,
  type Proto,
  type Reason,
  type ServiceCounters,
  type ServiceValue,
  EPOCH_COUNTER,
  decodeEpoch,
  encodeEpoch,
  nextEpoch,
} from "./maps.js";

export type { Proto, ArpCounter, InterfaceEntry } from "./maps.js";
/** How the ingress program runs on a device: native XDP, generic (skb) XDP, or TC ingress. */
export type IngressMode = "xdp" | "xdpgeneric" | "tc";
export interface Backend {
  ip: string;
  port: number;
  weight: number;
}
export interface ServiceSpec {
  vip: string;
  port: number;
  proto: Proto;
  backends: Backend[];
  /** weight of the backendRefs that could not be resolved: that share of new flows is rejected */
  rejectWeight: number;
}
export interface DataplaneOptions {
  /** default /sys/fs/bpf/blixt */
  pinDir?: string;
  /** directory holding blixt.o; default <repo>/bpf */
  objDir?: string;
  /** netns NAME (under /var/run/netns) the devices of attach/detach live in */
  netns?: string;
  /** XDP attach mode: "native" (default), "generic", or "auto" (native where the driver has it, else generic) */
  xdpMode?: XdpMode;
}
export interface ConntrackEntry {
  /** in blixt_ct4 (the backend answered and the client spoke again), not blixt_ct4_new */
  confirmed: boolean;
  direction: "forward" | "reverse";
  proto: Proto;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  /** forward: the backend the flow goes to; reverse: the VIP replies are sent from */
  natAddr: string;
  natPort: number;
  svcId: number;
  /** forward: the service epoch the entry was last checked at (bpf/maps.h); 0 on reverse entries */
  epoch: number;
  /**
   * CLOCK_MONOTONIC ns, to the kernel's tick (exact up to 2^53 ns, about 104 days of uptime):
   * the flow's last packet, to within a second; for a closed TCP flow, the packet that closed it
   */
  lastSeenNs: number;
}
export interface ServiceStats extends ServiceCounters {
  vip: string;
  port: number;
  proto: Proto;
  svcId: number;
}
export interface DataplaneStats {
  services: ServiceStats[];
  /** packets per pass/drop reason (bpf/common.h enum blixt_reason), summed over CPUs */
  reasons: Record<Reason, number>;
}

export const DEFAULT_PIN_DIR = "/sys/fs/bpf/blixt";
export const OBJECT_FILE = "blixt.o";

// ---- pure: validation and compilation ----------------------------------------------------------

const isPort = (n: unknown) => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
const isWeight = (n: unknown) => Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 0xffffffff;

export function serviceName(s: { vip: string; port: number; proto: string }): string {
  return `${s.vip}:${s.port}/${s.proto}`;
}

/** Throws an Error naming the service and the field that is wrong. */
export function validateServiceSpec(spec: ServiceSpec): void {
  const name = `service ${serviceName(spec)}`;
  if (!isIPv4(spec.vip)) throw new Error(`${name}: vip "${spec.vip}" must be an IPv4 address literal`);
  if (!isPort(spec.port)) throw new Error(`${name}: port must be an integer in 1..65535, got ${spec.port}`);
  if (spec.proto !== "tcp" && spec.proto !== "udp") throw new Error(`${name}: proto must be "tcp" or "udp", got ${JSON.stringify(spec.proto)}`);
  if (!isWeight(spec.rejectWeight)) throw new Error(`${name}: rejectWeight must be a non-negative integer, got ${spec.rejectWeight}`);
  if (!Array.isArray(spec.backends)) throw new Error(`${name}: backends must be an array`);
  spec.backends.forEach((b, i) => {
    if (!isIPv4(b.ip)) throw new Error(`${name}: backends[${i}].ip "${b.ip}" must be an IPv4 address literal`);
    if (!isPort(b.port)) throw new Error(`${name}: backends[${i}].port must be an integer in 1..65535, got ${b.port}`);
    if (!isWeight(b.weight)) throw new Error(`${name}: backends[${i}].weight must be a non-negative integer, got ${b.weight}`);
  });
}

/** The same endpoint listed twice (two backendRefs resolving to one pod) carries the sum of its weights. */
export function mergeBackends(backends: Backend[]): Backend[] {
  const byKey = new Map<string, Backend>();
  for (const b of backends) {
    const key = `${b.ip}:${b.port}`;
    const seen = byKey.get(key);
    byKey.set(key, seen ? { ...seen, weight: seen.weight + b.weight } : { ...b });
  }
  return [...byKey.values()].sort((a, b) => (`${a.ip}:${a.port}` < `${b.ip}:${b.port}` ? -1 : 1));
}

/** Key of the Maglev pseudo-backend that stands for the rejected share; cannot collide with "ip:port". */
const REJECT_KEY = "reject";

/** An entry of a table's backend list: a backend, or the rejected share. */
export type TableEntry = { ip: string; port: number } | "reject";

export interface ServiceTable {
  tableSize: number;
  /** the table's backend list (blixt_mg_backs): weighted backends in key order, then "reject" if it has a share */
  backends: TableEntry[];
  /** per slot: an index into `backends` (written to blixt_mg_chunks, CHUNK_SLOTS per entry) */
  slots: Uint16Array;
}

/** What slot `slot` of a table holds. */
export const slotEntry = (table: ServiceTable, slot: number): TableEntry | undefined =>
  slot < table.tableSize ? table.backends[table.slots[slot]] : undefined;

/** The Maglev table for a service: weighted backends plus the rejected share; size 0 when nothing has weight. */
export function serviceTable(backends: Backend[], rejectWeight: number): ServiceTable {
  const weighted = mergeBackends(backends).filter((b) => b.weight > 0);
  const members = [
    ...weighted.map((b) => ({ key: `${b.ip}:${b.port}`, weight: b.weight, entry: { ip: b.ip, port: b.port } as TableEntry })),
    ...(rejectWeight > 0 ? [{ key: REJECT_KEY, weight: rejectWeight, entry: "reject" as TableEntry }] : []),
  ];
  if (members.length === 0) return { tableSize: 0, backends: [], slots: new Uint16Array(0) };
  // Slots name backends by a u16 index (struct table_chunk).
  if (members.length > 0x10000) throw new RangeError(`a Maglev table indexes at most 65536 backends (the rejected share counts as one), got ${members.length} with weight > 0`);
  const tableSize = maglevTableSize(members.length);
  const table = buildMaglevTable(
    members.map(({ key, weight }) => ({ key, weight })),
    tableSize,
  );
  return { tableSize, backends: members.map((m) => m.entry), slots: Uint16Array.from(table) };
}

export interface ServiceState {
  value: ServiceValue;
  /** backends present in blixt_backends for this service */
  backends: Backend[];
  /** indexes present in blixt_mg_backs for the live table (value.tableId): what removing it deletes */
  tableBackends: number[];
}

/** The table id a service's next table is written under: the one its live table does not use. */
export const spareTableId = (svcId: number, current?: ServiceState): number => tableIdOf(svcId, current?.value.tableId === tableIdOf(svcId, 0) ? 1 : 0);

/** Lines that write a whole table under `tableId`: its backend list, then its chunks. */
export function tableWriteLines(pin: (m: MapName) => string, tableId: number, table: ServiceTable): string[] {
  const lines: string[] = [];
  table.backends.forEach((entry, index) => {
    const value = entry === "reject" ? encodeTableBackend({ reject: true }) : encodeTableBackend(entry);
    lines.push(bpftool.mapUpdateLine(pin("blixt_mg_backs"), hex(encodeTableKey({ tableId, index })), hex(value)));
  });
  for (let chunk = 0; chunk < chunkCount(table.tableSize); chunk++) {
    const indexes = table.slots.subarray(chunk * CHUNK_SLOTS, Math.min(table.tableSize, (chunk + 1) * CHUNK_SLOTS));
    lines.push(bpftool.mapUpdateLine(pin("blixt_mg_chunks"), hex(encodeTableKey({ tableId, index: chunk })), hex(encodeTableChunk(indexes))));
  }
  return lines;
}

/** Lines that delete a table every entry of which is present: its backend list, then its chunks. */
export function tableDeleteLines(pin: (m: MapName) => string, tableId: number, tableSize: number, tableBackends: number[]): string[] {
  const lines = tableBackends.map((index) => bpftool.mapDeleteLine(pin("blixt_mg_backs"), hex(encodeTableKey({ tableId, index }))));
  for (let chunk = 0; chunk < chunkCount(tableSize); chunk++) lines.push(bpftool.mapDeleteLine(pin("blixt_mg_chunks"), hex(encodeTableKey({ tableId, index: chunk }))));
  return lines;
}

/** The line that gives service `svcId` epoch `epoch` (blixt_svc_epoch; bpf/maps.h says why). */
export const epochLine = (pin: (m: MapName) => string, svcId: number, epoch: number): string =>
  bpftool.mapUpdateLine(pin("blixt_svc_epoch"), hex(encodeIndexKey(svcId)), hex(encodeEpoch(epoch)));

/**
 * Hands out service epochs after the last one the maps record (blixt_svc_epoch[EPOCH_COUNTER]).
 * Every epoch is new for as long as the maps are pinned, so a conntrack entry stamped by a
 * service that was since changed, removed, or whose id went to another service never matches.
 */
export class Epochs {
  private handedOut = false;
  constructor(private last: number) {}
  next(): number {
    this.last = nextEpoch(this.last);
    this.handedOut = true;
    return this.last;
  }
  /**
   * Puts the line recording the last epoch handed out FIRST in `lines`: a batch that stops
   * half-way still never hands one out twice. Does nothing when none was handed out.
   */
  record(pin: (m: MapName) => string, lines: string[]): string[] {
    if (this.handedOut) lines.unshift(epochLine(pin, EPOCH_COUNTER, this.last));
    return lines;
  }
}

/** The last epoch handed out, read from the maps (0 on fresh maps). */
export async function readEpochCounter(pin: (m: MapName) => string): Promise<number> {
  const entry = await bpftool.mapLookup(pin("blixt_svc_epoch"), hex(encodeIndexKey(EPOCH_COUNTER)));
  return entry?.value ? decodeEpoch(entry.value) : 0;
}

/**
 * bpftool batch lines that move a service from `current` (absent for a new service) to `spec`:
 * new backends, the new table (backend list and chunks) under the spare id, one write of the
 * service entry that switches to it, then removal of the old table and of backends no longer
 * listed, and last the service's new `epoch`. No packet ever sees a half-written table, and
 * flows to a removed backend re-pick only after the switch: established flows skip the full
 * check until the epoch moves, which is why it moves only once everything else is written. A
 * table is a handful of lines: one per backend plus one per CHUNK_SLOTS slots.
 */
export function serviceUpdateLines(pin: (m: MapName) => string, spec: ServiceSpec, svcId: number, current: ServiceState | undefined, epoch: number): string[] {
  validateServiceSpec(spec);
  const backends = mergeBackends(spec.backends);
  const table = serviceTable(backends, spec.rejectWeight);
  const tableId = spareTableId(svcId, current);
  const lines: string[] = [];

  for (const b of backends) {
    lines.push(bpftool.mapUpdateLine(pin("blixt_backends"), hex(encodeBackendKey({ svcId, ip: b.ip, port: b.port })), hex(encodeBackendValue(b))));
  }
  for (const line of tableWriteLines(pin, tableId, table)) lines.push(line);
  if (!current) {
    // A reused id must not inherit a deleted service's counters.
    lines.push(bpftool.mapUpdateLine(pin("blixt_svc_stats"), hex(encodeIndexKey(svcId)), hex(encodeServiceCounters({ packets: 0, bytes: 0, newFlows: 0, rejects: 0 }))));
  }
  // The switch: one update of the service entry.
  lines.push(
    bpftool.mapUpdateLine(
      pin("blixt_services"),
      hex(encodeServiceKey(spec)),
      hex(encodeServiceValue({ svcId, tableId, tableSize: table.tableSize, rejectWeight: spec.rejectWeight })),
    ),
  );
  if (current) {
    for (const line of tableDeleteLines(pin, current.value.tableId, current.value.tableSize, current.tableBackends)) lines.push(line);
    const keep = new Set(backends.map((b) => `${b.ip}:${b.port}`));
    for (const b of current.backends) {
      if (!keep.has(`${b.ip}:${b.port}`)) lines.push(bpftool.mapDeleteLine(pin("blixt_backends"), hex(encodeBackendKey({ svcId, ip: b.ip, port: b.port }))));
    }
  }
  lines.push(epochLine(pin, svcId, epoch));
  return lines;
}

/**
 * Lines that remove a service: its entry first (so nothing reaches the table), then a new `epoch`
 * (so no established flow skips the lookup that now fails), then table and backends.
 */
export function serviceDeleteLines(pin: (m: MapName) => string, key: { vip: string; port: number; proto: Proto }, current: ServiceState, epoch: number): string[] {
  const { svcId, tableId, tableSize } = current.value;
  const lines = [bpftool.mapDeleteLine(pin("blixt_services"), hex(encodeServiceKey(key))), epochLine(pin, svcId, epoch)];
  // A loop, not push(...): a table of tens of thousands of backends would overflow the stack.
  for (const line of tableDeleteLines(pin, tableId, tableSize, current.tableBackends)) lines.push(line);
  for (const b of current.backends) lines.push(bpftool.mapDeleteLine(pin("blixt_backends"), hex(encodeBackendKey({ svcId, ip: b.ip, port: b.port }))));
  return lines;
}

/** Backend-list keys read back (blixt_mg_backs), grouped: table id → indexes present, ascending. */
export function tableBackendIndexes(keys: { tableId: number; index: number }[]): Map<number, number[]> {
  const byTable = new Map<number, number[]>();
  for (const k of keys) {
    const list = byTable.get(k.tableId);
    if (list) list.push(k.index);
    else byTable.set(k.tableId, [k.index]);
  }
  for (const list of byTable.values()) list.sort((a, b) => a - b);
  return byTable;
}

/** Smallest service id not in use (ids are 1..MAX_SERVICES-1). */
export function freeServiceId(used: Iterable<number>): number {
  const taken = new Set(used);
  for (let id = 1; id < MAX_SERVICES; id++) if (!taken.has(id)) return id;
  throw new Error(`no free service id: all ${MAX_SERVICES - 1} are in use; delete services or raise BLIXT_MAX_SERVICES in bpf/maps.h`);
}

// ---- I/O ----------------------------------------------------------------------------------------

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

export class Dataplane {
  readonly pinDir: string;
  readonly objDir: string;
  readonly netns?: string;
  readonly xdpMode: XdpMode;

  constructor(opts: DataplaneOptions = {}) {
    this.pinDir = opts.pinDir ?? DEFAULT_PIN_DIR;
    this.objDir = opts.objDir ?? fileURLToPath(new URL("../../bpf", import.meta.url));
    this.netns = opts.netns;
    this.xdpMode = opts.xdpMode ?? "native";
    if (/\s/.test(this.pinDir)) throw new Error(`Dataplane: pinDir "${this.pinDir}" must not contain whitespace (bpftool batch splits lines on blanks)`);
  }

  mapPin(name: MapName): string {
    return join(this.pinDir, "maps", name);
  }

  progPin(name: ProgName): string {
    return join(this.pinDir, "progs", name);
  }

  private get attachOpts(): RunOptions {
    return { netns: this.netns };
  }

  /**
   * Loads blixt.o. Maps already pinned are reused (conntrack and services survive an agent
   * restart or upgrade); maps not yet pinned are created. Programs are pinned afresh, replacing
   * old pins; devices keep running the old programs until attach() is called again.
   */
  async load(): Promise<void> {
    const mapDir = join(this.pinDir, "maps");
    const progDir = join(this.pinDir, "progs");
    await mkdir(mapDir, { recursive: true });
    await mkdir(progDir, { recursive: true });
    const reuse: Record<string, string> = {};
    for (const name of MAP_NAMES) if (await exists(this.mapPin(name))) reuse[name] = this.mapPin(name);
    // A map of an older layout nothing loaded from here reads any more (attached programs keep
    // theirs alive until attach() replaces them). Its services' tables are rewritten by the
    // agent's next pass, which finds their chunks missing.
    for (const name of RETIRED_MAP_NAMES) await rm(join(mapDir, name), { force: true });

    // A load that died half-way leaves its staging pins behind; they hold maps and programs alive.
    for (const entry of await readdir(this.pinDir)) if (entry.startsWith("staging-")) await rm(join(this.pinDir, entry), { recursive: true, force: true });
    const stage = join(this.pinDir, `staging-${process.pid}-${Date.now()}` /* bpffs refuses names with a dot */);
    await mkdir(stage);
    try {
      await bpftool.loadAll({ object: join(this.objDir, OBJECT_FILE), progDir: join(stage, "progs"), pinMaps: join(stage, "maps"), reuse });
      for (const name of MAP_NAMES) if (!reuse[name]) await rename(join(stage, "maps", name), this.mapPin(name));
      // rename() over an existing pin replaces it in one step.
      for (const name of PROG_NAMES) await rename(join(stage, "progs", name), this.progPin(name));
    } finally {
      await rm(stage, { recursive: true, force: true });
    }
  }

  /** Ingress program on the device (XDP, or TC where XDP cannot answer), plus TC egress for replies. Re-running replaces in place. */
  async attach(iface: string, mode: "xdp" | "tc"): Promise<void> {
    const opts = this.attachOpts;
    // The MAC goes in before the program runs, so the first ARP request already gets an answer.
    // A device that cannot be read is left to the attach below, whose error names it.
    const link = await bpftool.linkInfo(iface, opts).catch(() => undefined);
    if (link?.linkType === "ether") await this.setInterface({ ifindex: link.ifindex, mac: link.mac });
    if (mode === "xdp") {
      await bpftool.attachXdp(this.progPin("blixt_xdp_ingress"), iface, this.xdpMode, opts);
      await bpftool.detachTc(iface, "ingress", opts);
    } else {
      await bpftool.attachTc(this.progPin("blixt_tc_ingress"), iface, "ingress", opts);
      await bpftool.detachXdp(iface, opts);
    }
    await bpftool.attachTc(this.progPin("blixt_tc_egress"), iface, "egress", opts);
  }

  async detach(iface: string): Promise<void> {
    const opts = this.attachOpts;
    await bpftool.detachXdp(iface, opts);
    await bpftool.detachTc(iface, "ingress", opts);
    await bpftool.detachTc(iface, "egress", opts);
    // A device already gone has no entry worth keeping either; its ifindex may be reused.
    const link = await bpftool.linkInfo(iface, opts).catch(() => undefined);
    if (link) await this.removeInterface(link.ifindex);
  }

  /** How blixt's ingress program runs on a device now, or undefined when it is not attached. */
  async attachment(iface: string): Promise<IngressMode | undefined> {
    const opts = this.attachOpts;
    const xdp = await bpftool.xdpMode(iface, opts);
    if (xdp) return xdp === "generic" ? "xdpgeneric" : "xdp";
    return (await bpftool.hasTc(iface, "ingress", opts)) ? "tc" : undefined;
  }

  /** Records the MAC ARP replies from device `ifindex` carry (attach() does this for its device). */
  async setInterface(entry: InterfaceEntry): Promise<void> {
    if (!Number.isInteger(entry.ifindex) || entry.ifindex < 1 || entry.ifindex > 0xffffffff) {
      throw new Error(`setInterface: ifindex must be a positive integer, got ${entry.ifindex}`);
    }
    const line = bpftool.mapUpdateLine(this.mapPin("blixt_ifaces"), hex(encodeIndexKey(entry.ifindex)), hex(encodeInterfaceValue(entry.mac)));
    await bpftool.batch([line], `recording the MAC of ifindex ${entry.ifindex}`);
  }

  async removeInterface(ifindex: number): Promise<void> {
    const pin = this.mapPin("blixt_ifaces");
    if (!(await bpftool.mapLookup(pin, hex(encodeIndexKey(ifindex))))) return;
    await bpftool.batch([bpftool.mapDeleteLine(pin, hex(encodeIndexKey(ifindex)))], `forgetting ifindex ${ifindex}`);
  }

  async interfaces(): Promise<InterfaceEntry[]> {
    return (await bpftool.mapDump(this.mapPin("blixt_ifaces")))
      .map((e) => ({ ifindex: decodeIndexKey(e.key), mac: decodeInterfaceValue(e.value!).mac }))
      .sort((a, b) => a.ifindex - b.ifindex);
  }

  private async serviceStates(): Promise<Map<string, { key: ReturnType<typeof decodeServiceKey>; state: ServiceState }>> {
    const [services, backends, tableBackends] = await Promise.all(
      (["blixt_services", "blixt_backends", "blixt_mg_backs"] as const).map((m) => bpftool.mapDump(this.mapPin(m))),
    );
    const bySvc = new Map<number, Backend[]>();
    for (const e of backends) {
      const k = decodeBackendKey(e.key);
      const list = bySvc.get(k.svcId) ?? [];
      list.push({ ip: k.ip, port: k.port, weight: decodeBackendValue(e.value!).weight });
      bySvc.set(k.svcId, list);
    }
    const byTable = tableBackendIndexes(tableBackends.map((e) => decodeTableKey(e.key)));
    const out = new Map<string, { key: ReturnType<typeof decodeServiceKey>; state: ServiceState }>();
    for (const e of services) {
      const key = decodeServiceKey(e.key);
      const value = decodeServiceValue(e.value!);
      out.set(serviceName(key), { key, state: { value, backends: mergeBackends(bySvc.get(value.svcId) ?? []), tableBackends: byTable.get(value.tableId) ?? [] } });
    }
    return out;
  }

  async setService(spec: ServiceSpec): Promise<void> {
    validateServiceSpec(spec);
    const states = await this.serviceStates();
    const current = states.get(serviceName(spec))?.state;
    const svcId = current?.value.svcId ?? freeServiceId([...states.values()].map((s) => s.state.value.svcId));
    const pin = (m: MapName) => this.mapPin(m);
    const epochs = new Epochs(await readEpochCounter(pin));
    const lines = epochs.record(pin, serviceUpdateLines(pin, spec, svcId, current, epochs.next()));
    await bpftool.batch(lines, `programming service ${serviceName(spec)}`);
  }

  async deleteService(vip: string, port: number, proto: Proto): Promise<void> {
    const states = await this.serviceStates();
    const current = states.get(serviceName({ vip, port, proto }));
    if (!current) return;
    const pin = (m: MapName) => this.mapPin(m);
    const epochs = new Epochs(await readEpochCounter(pin));
    const lines = epochs.record(pin, serviceDeleteLines(pin, { vip, port, proto }, current.state, epochs.next()));
    await bpftool.batch(lines, `deleting service ${serviceName({ vip, port, proto })}`);
  }

  async listServices(): Promise<ServiceSpec[]> {
    const states = await this.serviceStates();
    return [...states.values()]
      .map(({ key, state }) => ({ ...key, backends: state.backends, rejectWeight: state.value.rejectWeight }))
      .sort((a, b) => (serviceName(a) < serviceName(b) ? -1 : 1));
  }

  /** Makes the Gateway-address set exactly `addresses`; flags of addresses already present are kept. */
  async setAddresses(addresses: string[]): Promise<void> {
    addresses.forEach((a, i) => {
      if (!isIPv4(a)) throw new Error(`setAddresses: addresses[${i}] "${a}" must be an IPv4 address literal`);
    });
    const pin = this.mapPin("blixt_addrs");
    const present = new Set((await bpftool.mapDump(pin)).map((e) => decodeAddressKey(e.key)));
    const wanted = new Set(addresses);
    const lines = [
      ...[...wanted].filter((a) => !present.has(a)).map((a) => bpftool.mapUpdateLine(pin, hex(encodeAddressKey(a)), hex(encodeAddressValue({ flags: 0 })))),
      ...[...present].filter((a) => !wanted.has(a)).map((a) => bpftool.mapDeleteLine(pin, hex(encodeAddressKey(a)))),
    ];
    await bpftool.batch(lines, "setting Gateway addresses");
  }

  async addresses(): Promise<string[]> {
    return (await bpftool.mapDump(this.mapPin("blixt_addrs"))).map((e) => decodeAddressKey(e.key)).sort();
  }

  /**
   * Makes this node answer ARP for exactly `addresses` (ADDR_F_ANNOUNCE), and for no other
   * Gateway address. Each must already be a Gateway address (setAddresses), since an address
   * this node answers ARP for must also be refused on ports no listener has.
   */
  async setAnnounced(addresses: string[]): Promise<void> {
    const pin = this.mapPin("blixt_addrs");
    const present = new Map((await bpftool.mapDump(pin)).map((e) => [decodeAddressKey(e.key), decodeAddressValue(e.value!).flags]));
    addresses.forEach((a, i) => {
      if (!isIPv4(a)) throw new Error(`setAnnounced: addresses[${i}] "${a}" must be an IPv4 address literal`);
      if (!present.has(a)) throw new Error(`setAnnounced: ${a} is not a Gateway address in ${pin}; add it with setAddresses first`);
    });
    const wanted = new Set(addresses);
    const lines = [...present]
      .filter(([a, flags]) => wanted.has(a) !== ((flags & ADDR_F_ANNOUNCE) !== 0))
      .map(([a, flags]) => bpftool.mapUpdateLine(pin, hex(encodeAddressKey(a)), hex(encodeAddressValue({ flags: flags ^ ADDR_F_ANNOUNCE }))));
    await bpftool.batch(lines, "setting announced Gateway addresses");
  }

  /** The Gateway addresses this node answers ARP for. */
  async announced(): Promise<string[]> {
    return (await bpftool.mapDump(this.mapPin("blixt_addrs")))
      .filter((e) => decodeAddressValue(e.value!).flags & ADDR_F_ANNOUNCE)
      .map((e) => decodeAddressKey(e.key))
      .sort();
  }

  /**
   * Sends a gratuitous ARP for an address this node announces, out of `iface` (in this
   * Dataplane's netns): call it when the node takes the address over, so neighbours move to it
   * at once. Refuses an address the programs would not answer ARP for.
   */
  async announce(iface: string, address: string, opts: Omit<GratuitousArpOptions, "netns"> = {}): Promise<void> {
    if (!isIPv4(address)) throw new Error(`announce: address "${address}" must be an IPv4 address literal`);
    const entry = await bpftool.mapLookup(this.mapPin("blixt_addrs"), hex(encodeAddressKey(address)));
    if (!entry || !(decodeAddressValue(entry.value!).flags & ADDR_F_ANNOUNCE)) {
      throw new Error(`announce: ${address} is not announced by this node (no ADDR_F_ANNOUNCE entry in ${this.mapPin("blixt_addrs")}); setAnnounced first, or a gratuitous ARP would draw traffic the node does not answer ARP for`);
    }
    const link = await bpftool.linkInfo(iface, this.attachOpts);
    await sendGratuitousArp(iface, link.mac, address, { ...opts, netns: this.netns });
  }

  /** ARP counters (bpf/maps.h enum blixt_arp_counter), summed over CPUs. */
  async arpCounters(): Promise<Record<ArpCounter, number>> {
    const lines = ARP_COUNTERS.map((_, i) => ["map", "lookup", "pinned", this.mapPin("blixt_arp_stats"), "key", "hex", ...hex(encodeIndexKey(i))].join(" "));
    const outputs = (await bpftool.batch(lines, "reading ARP counters")) as { values: { value: string[] }[] }[];
    return Object.fromEntries(
      ARP_COUNTERS.map((c, i) => [c, outputs[i].values.reduce((sum, v) => sum + decodeReasonCounter(Uint8Array.from(v.value, (w) => Number.parseInt(w, 16))), 0)]),
    ) as Record<ArpCounter, number>;
  }

  /** Entries of both conntrack tables: blixt_ct4 (confirmed flows) and blixt_ct4_new (unconfirmed, bpf/conntrack.h). */
  async conntrack(): Promise<ConntrackEntry[]> {
    const tables = await Promise.all((["blixt_ct4", "blixt_ct4_new"] as const).map((m) => bpftool.mapDump(this.mapPin(m))));
    return tables.flatMap((entries, table) => entries.map((e) => {
      const k = decodeConntrackKey(e.key);
      const v = decodeConntrackValue(e.value!);
      return {
        confirmed: table === 0,
        direction: v.direction,
        proto: k.proto,
        saddr: k.saddr,
        sport: k.sport,
        daddr: k.daddr,
        dport: k.dport,
        natAddr: v.addr,
        natPort: v.port,
        svcId: v.svcId,
        epoch: v.epoch,
        lastSeenNs: Number(v.lastSeenNs),
      };
    }));
  }

  async stats(): Promise<DataplaneStats> {
    // Per-CPU arrays always hold every index: look up the ids in use instead of dumping 16k entries.
    const services = [...(await this.serviceStates()).values()];
    const lookup = (m: MapName, i: number) => ["map", "lookup", "pinned", this.mapPin(m), "key", "hex", ...hex(encodeIndexKey(i))].join(" ");
    const lines = [...services.map((s) => lookup("blixt_svc_stats", s.state.value.svcId)), ...REASONS.map((_, i) => lookup("blixt_reasons", i))];
    const outputs = (await bpftool.batch(lines, "reading counters")) as { values: { value: string[] }[] }[];
    const perCpu = (o: { values: { value: string[] }[] }) => o.values.map((v) => Uint8Array.from(v.value, (w) => Number.parseInt(w, 16)));
    const serviceStats = services.map(({ key, state }, i) => ({ ...key, svcId: state.value.svcId, ...sumCounters(perCpu(outputs[i]).map(decodeServiceCounters)) }));
    const reasons = Object.fromEntries(
      REASONS.map((r, i) => [r, perCpu(outputs[services.length + i]).reduce((sum, b) => sum + decodeReasonCounter(b), 0)]),
    ) as Record<Reason, number>;
    return { services: serviceStats, reasons };
  }

  /** Removes every pin under pinDir (maps, programs). Attached programs stay attached until detach(). */
  async unpin(): Promise<void> {
    if (!(await exists(this.pinDir))) return;
    for (const entry of await readdir(this.pinDir)) await rm(join(this.pinDir, entry), { recursive: true, force: true });
    await rm(this.pinDir, { recursive: true, force: true });
  }
}
