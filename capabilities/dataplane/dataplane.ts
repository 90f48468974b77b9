// SPDX-License-Identifier: Apache-2.0
// The dataplane as the rest of blixt sees it: load and attach the programs, program services
// and Gateway addresses into the pinned maps, read back state and counters.
//
// This class only does the I/O (bpftool, ip, bpffs): what a service is and what its table
// holds is tables.ts, the batch lines a change compiles to are lines.ts, both pure. Every write
// to the service and address maps is readMaps() then apply(): the node agent's passes and the
// single writes (setService, deleteService, setAddresses, setAnnounced) that the `blixt
// dataplane` command, the bench and the packet tests use, so those tests prove the agent's path.
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { isIPv4 } from "node:net";
import * as bpftool from "./bpftool.js";
import type { RunOptions, XdpMode } from "./bpftool.js";
import { sendGratuitousArp, type GratuitousArpOptions } from "./garp.js";
import { MAGLEV_MAX_SIZE } from "./maglev.js";
import type { AttachMode } from "./mode.js";
import {
  applyLines,
  emptyDiff,
  mapsSnapshot,
  type DataplaneDiff,
  type MapsSnapshot,
} from "./lines.js";
import { sampleChunks, serviceName, validateServiceSpec, type ServiceSpec } from "./tables.js";
import {
  ADDR_F_ANNOUNCE,
  ARP_COUNTERS,
  CT_CONFIG_KEY,
  CT_COUNTERS,
  EPOCH_COUNTER,
  MAP_NAMES,
  MAX_SERVICES,
  NODE_CONFIG_KEY,
  SIZED_MAPS,
  PROG_NAMES,
  REASONS,
  RETIRED_MAP_NAMES,
  decodeAddressKey,
  decodeAddressValue,
  decodeConntrackConfig,
  decodeConntrackKey,
  decodeConntrackValue,
  decodeEpoch,
  decodeIndexKey,
  decodeInterfaceValue,
  decodeNodeConfig,
  decodeAnnounceConfig,
  decodeYieldValue,
  ANNOUNCE_CONFIG_KEY,
  decodeReasonCounter,
  decodeServiceCounters,
  decodeServiceKey,
  decodeServiceValue,
  decodeTableChunk,
  encodeAddressKey,
  encodeConntrackConfig,
  encodeIndexKey,
  encodeInterfaceValue,
  encodeNodeConfig,
  encodeAnnounceConfig,
  encodeTableKey,
  fromBpftoolHex,
  hex,
  sumCounters,
  type ArpCounter,
  type ConntrackCounter,
  type ConntrackTimeouts,
  type InterfaceEntry,
  type MapName,
  type MapSizes,
  type SizedMap,
  type ProgName,
  type Proto,
  type YieldValue,
  type Reason,
  type ServiceCounters,
} from "./maps.js";

export type { Proto, ArpCounter, InterfaceEntry, MapSizes, SizedMap } from "./maps.js";
export interface DataplaneOptions {
  /** default /sys/fs/bpf/blixt */
  pinDir?: string;
  /** directory holding blixt.o; default <repo>/bpf */
  objDir?: string;
  /** netns NAME (under /var/run/netns) the devices of attach/detach live in */
  netns?: string;
  /** XDP attach mode: "native" (default), "generic", or "auto" (native where the driver has it, else generic) */
  xdpMode?: XdpMode;
  /**
   * Entries of the maps whose size is a setting (maps.ts SIZED_MAPS); a size left out is the
   * object's own (bpf/maps.h). Applied by load().
   */
  mapSizes?: Partial<MapSizes>;
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

/** The last epoch handed out, read from the maps (0 on fresh maps). */
async function readEpochCounter(pin: (m: MapName) => string): Promise<number> {
  const entry = await bpftool.mapLookup(pin("blixt_svc_epoch"), hex(encodeIndexKey(EPOCH_COUNTER)));
  return entry?.value ? decodeEpoch(entry.value) : 0;
}

// ---- I/O ----------------------------------------------------------------------------------------

/**
 * Lookups per bpftool batch when reading chunks back. A chunk prints as ~2,000 hex words (plus
 * its BTF rendering), so one batch for every sampled chunk of a thousand services was hundreds of
 * MB of JSON in the agent at once; slices keep the agent's memory flat whatever the table count.
 */
const CHUNK_READS_PER_BATCH = 128;

/** Reads a few chunks of every live table, a slice of services per batch. */
async function readChunks(
  pin: string,
  services: { tableId: number; tableSize: number }[],
): Promise<Map<number, Uint16Array | undefined>[]> {
  const wanted = services.map(s =>
    sampleChunks(s.tableSize).map(chunk => ({
      chunk,
      key: hex(encodeTableKey({ tableId: s.tableId, index: chunk })),
    })),
  );
  const result: Map<number, Uint16Array | undefined>[] = [];
  for (let first = 0; first < wanted.length; ) {
    // Whole services per slice, at least one.
    let last = first;
    let lookups = 0;
    while (
      last < wanted.length &&
      (last === first || lookups + wanted[last].length <= CHUNK_READS_PER_BATCH)
    )
      lookups += wanted[last++].length;
    const slice = wanted.slice(first, last);
    const lines = slice.flat().map(({ key }) => bpftool.mapLookupLine(pin, key));
    try {
      const outputs = (await bpftool.batch(lines, "reading Maglev table chunks")) as {
        value: string[];
      }[];
      let i = 0;
      for (const chunks of slice)
        result.push(
          new Map(
            chunks.map(
              ({ chunk }) => [chunk, decodeTableChunk(fromBpftoolHex(outputs[i++].value))] as const,
            ),
          ),
        );
    } catch {
      // bpftool stops a batch at the first missing key, so a damaged slice is read chunk by
      // chunk, one service at a time (never a process per chunk all at once).
      for (const chunks of slice) {
        const read = new Map<number, Uint16Array | undefined>();
        for (const { chunk, key } of chunks) {
          const entry = await bpftool.mapLookup(pin, key);
          read.set(chunk, entry?.value ? decodeTableChunk(entry.value) : undefined);
        }
        result.push(read);
      }
    }
    first = last;
  }
  return result;
}

/** What `bpftool -j map lookup` prints for a per-CPU map: one value per possible CPU. */
type PerCpuLookup = { values: { value: string[] }[] };
const perCpu = (o: PerCpuLookup) => o.values.map(v => fromBpftoolHex(v.value));

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
  readonly mapSizes: Partial<MapSizes>;

  constructor(opts: DataplaneOptions = {}) {
    this.mapSizes = opts.mapSizes ?? {};
    this.pinDir = opts.pinDir ?? DEFAULT_PIN_DIR;
    this.objDir = opts.objDir ?? fileURLToPath(new URL("../../bpf", import.meta.url));
    this.netns = opts.netns;
    this.xdpMode = opts.xdpMode ?? "native";
    if (/\s/.test(this.pinDir))
      throw new Error(
        `Dataplane: pinDir "${this.pinDir}" must not contain whitespace (bpftool batch splits lines on blanks)`,
      );
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
   *
   * A pinned map that cannot serve the object's programs (another key or value size or flags,
   * or an array with fewer entries: an upgrade that grew blixt_reasons by a new verdict, say;
   * bpftool.reusableMap) is not reused: bpftool would adopt the old map as it is, and the new
   * programs and the agent would read past its end. Its pin is replaced by a fresh map; what it
   * held is lost (counters start again, a state map is refilled by the agent's next pass). A
   * hash map of another size is reused (its size is its capacity). Returns the names of the
   * maps replaced.
   */
  async load(): Promise<string[]> {
    const mapDir = join(this.pinDir, "maps");
    const progDir = join(this.pinDir, "progs");
    await mkdir(mapDir, { recursive: true });
    await mkdir(progDir, { recursive: true });
    const object = join(this.objDir, OBJECT_FILE);
    const reuse: Record<string, string> = {};
    const replaced: string[] = [];
    let shapes: Map<string, bpftool.MapShape> | undefined;
    for (const name of MAP_NAMES) {
      if (!(await exists(this.mapPin(name)))) continue;
      shapes ??= await bpftool.objectMapShapes(object);
      const want = shapes.get(name);
      if (want && !bpftool.reusableMap(want, await bpftool.pinnedMapShape(this.mapPin(name)))) {
        await rm(this.mapPin(name), { force: true });
        replaced.push(name);
      } else reuse[name] = this.mapPin(name);
    }
    // The maps whose size is a setting: one pinned at another size is replaced (what it held is
    // lost: the agent's first pass writes services and tables again, conntrack starts empty),
    // and one at a size other than the object's is created here, for loadall to reuse. A size
    // left out leaves a pinned map as it is.
    for (const [setting, name] of Object.entries(SIZED_MAPS) as [SizedMap, MapName][]) {
      const entries = this.mapSizes[setting];
      if (entries === undefined) continue;
      if (reuse[name]) {
        if ((await bpftool.pinnedMapShape(reuse[name])).maxEntries === entries) continue;
        await rm(reuse[name], { force: true });
        delete reuse[name];
        replaced.push(name);
      }
      shapes ??= await bpftool.objectMapShapes(object);
      const shape = shapes.get(name);
      if (!shape) throw new Error(`map ${name} is not defined in ${object}`);
      if (shape.maxEntries === entries) continue;
      await bpftool.createMap(this.mapPin(name), name, shape, entries);
      reuse[name] = this.mapPin(name);
    }
    // A map of an older layout nothing loaded from here reads any more (attached programs keep
    // theirs alive until attach() replaces them). Its services' tables are rewritten by the
    // agent's next pass, which finds their chunks missing.
    for (const name of RETIRED_MAP_NAMES) await rm(join(mapDir, name), { force: true });

    // A load that died half-way leaves its staging pins behind; they hold maps and programs alive.
    for (const entry of await readdir(this.pinDir))
      if (entry.startsWith("staging-"))
        await rm(join(this.pinDir, entry), { recursive: true, force: true });
    const stage = join(
      this.pinDir,
      `staging-${process.pid}-${Date.now()}` /* bpffs refuses names with a dot */,
    );
    await mkdir(stage);
    try {
      await bpftool.loadAll({
        object,
        progDir: join(stage, "progs"),
        pinMaps: join(stage, "maps"),
        reuse,
      });
      for (const name of MAP_NAMES)
        if (!reuse[name]) await rename(join(stage, "maps", name), this.mapPin(name));
      // rename() over an existing pin replaces it in one step.
      for (const name of PROG_NAMES) await rename(join(stage, "progs", name), this.progPin(name));
    } finally {
      await rm(stage, { recursive: true, force: true });
    }
    return replaced;
  }

  /**
   * What the maps whose size is a setting hold at most, read from the pinned maps (load() first):
   * what the agent plans against. Services are also bounded by the service ids (bpf/maps.h).
   */
  async capacity(): Promise<MapSizes> {
    const sizes = {} as MapSizes;
    for (const [setting, name] of Object.entries(SIZED_MAPS) as [SizedMap, MapName][])
      sizes[setting] = (await bpftool.pinnedMapShape(this.mapPin(name))).maxEntries;
    sizes.services = Math.min(sizes.services, MAX_SERVICES - 1);
    return sizes;
  }

  /** Ingress program on the device (XDP, or TC where XDP cannot answer), plus TC egress for replies. Re-running replaces in place. */
  async attach(iface: string, mode: "xdp" | "tc"): Promise<void> {
    const opts = this.attachOpts;
    // The MAC goes in before the program runs, so the first ARP request already gets an answer.
    // A device that cannot be read is left to the attach below, whose error names it.
    const link = await bpftool.linkInfo(iface, opts).catch(() => undefined);
    if (link?.linkType === "ether")
      await this.setInterface({ ifindex: link.ifindex, mac: link.mac });
    if (mode === "xdp") {
      await bpftool.attachXdp(this.progPin("blixt_xdp_ingress"), iface, this.xdpMode, opts);
      await bpftool.detachTc(iface, "ingress", opts);
    } else {
      await bpftool.attachTc(this.progPin("blixt_tc_ingress"), iface, "ingress", opts);
      await bpftool.detachXdp(iface, opts);
    }
    await bpftool.attachTc(this.progPin("blixt_tc_egress"), iface, "egress", opts);
  }

  /**
   * The programs of a pod's interface (the node's end of it): blixt_tc_pod_ingress for what the
   * pod sends, blixt_tc_egress for what it receives (bpf/blixt.c). Re-running replaces in place.
   */
  async attachPod(iface: string): Promise<void> {
    const opts = this.attachOpts;
    await bpftool.attachTc(this.progPin("blixt_tc_pod_ingress"), iface, "ingress", opts);
    await bpftool.attachTc(this.progPin("blixt_tc_egress"), iface, "egress", opts);
  }

  /** The node's links (name, ifindex), in the namespace the devices live in. */
  async links(): Promise<{ ifname: string; ifindex: number }[]> {
    return bpftool.links(this.attachOpts);
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
  async attachment(iface: string): Promise<AttachMode | undefined> {
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
    const line = bpftool.mapUpdateLine(
      this.mapPin("blixt_ifaces"),
      hex(encodeIndexKey(entry.ifindex)),
      hex(encodeInterfaceValue(entry.mac)),
    );
    await bpftool.batch([line], `recording the MAC of ifindex ${entry.ifindex}`);
  }

  async removeInterface(ifindex: number): Promise<void> {
    const pin = this.mapPin("blixt_ifaces");
    if (!(await bpftool.mapLookup(pin, hex(encodeIndexKey(ifindex))))) return;
    await bpftool.batch(
      [bpftool.mapDeleteLine(pin, hex(encodeIndexKey(ifindex)))],
      `forgetting ifindex ${ifindex}`,
    );
  }

  async interfaces(): Promise<InterfaceEntry[]> {
    return (await bpftool.mapDump(this.mapPin("blixt_ifaces")))
      .map(e => ({ ifindex: decodeIndexKey(e.key), mac: decodeInterfaceValue(e.value!).mac }))
      .sort((a, b) => a.ifindex - b.ifindex);
  }

  /**
   * What the pinned maps hold now, read back (services, tables' members, addresses, tables'
   * backend lists and, unless `chunks` is false, sampled chunks; with `deadIds`, the ids no
   * service uses whose epoch is not 0, from the whole epoch array): the input of every write
   * (apply).
   */
  async readMaps(opts: { chunks?: boolean; deadIds?: boolean } = {}): Promise<MapsSnapshot> {
    const [[serviceEntries, backendEntries, addressEntries, tableBackendEntries], epoch, epochs] =
      await Promise.all([
        Promise.all(
          (["blixt_services", "blixt_backends", "blixt_addrs", "blixt_mg_backs"] as const).map(m =>
            bpftool.mapDump(this.mapPin(m)),
          ),
        ),
        readEpochCounter(m => this.mapPin(m)),
        opts.deadIds ? bpftool.mapDump(this.mapPin("blixt_svc_epoch")) : undefined,
      ]);
    const services = serviceEntries.map(e => decodeServiceValue(e.value!));
    // A table size the programs would never write (a hand edit) is not sampled: it is wrong already.
    // Without chunks (opts.chunks false) a table is judged by its size and backend list alone.
    // Services that share a table have it read once.
    let chunks: (Map<number, Uint16Array | undefined> | undefined)[] | undefined;
    if (opts.chunks !== false) {
      const tables = new Map<number, number>();
      for (const s of services)
        if (!tables.has(s.tableId))
          tables.set(s.tableId, s.tableSize <= MAGLEV_MAX_SIZE ? s.tableSize : 0);
      const read = await readChunks(
        this.mapPin("blixt_mg_chunks"),
        [...tables].map(([tableId, tableSize]) => ({ tableId, tableSize })),
      );
      const byTable = new Map([...tables.keys()].map((id, i) => [id, read[i]]));
      chunks = services.map(s => byTable.get(s.tableId));
    }
    return mapsSnapshot(
      {
        services: serviceEntries,
        backends: backendEntries,
        addresses: addressEntries,
        tableBackends: tableBackendEntries,
      },
      epoch,
      chunks,
      epochs,
    );
  }

  /**
   * Takes the maps from `snapshot` (what readMaps() read) to what `diff` asks, in ONE `bpftool
   * batch` (lines.ts applyLines says in which order, and what `tolerant`, `recheckAll` and
   * `keepEpochs` do).
   * Every write goes through here: the node agent's passes and each single change below.
   * Returns the number of bpftool commands it took.
   */
  async apply(
    diff: DataplaneDiff,
    snapshot: MapsSnapshot,
    opts: { tolerant?: boolean; recheckAll?: boolean; keepEpochs?: boolean; what?: string } = {},
  ): Promise<number> {
    const lines = applyLines(
      m => this.mapPin(m),
      diff,
      snapshot,
      opts.tolerant ?? false,
      opts.recheckAll ?? false,
      opts.keepEpochs ?? false,
    );
    await bpftool.batch(lines, opts.what ?? "applying DataplaneConfigs to the maps");
    return lines.length;
  }

  /** Creates or replaces one service (its table switched in with one write), through apply(). */
  async setService(spec: ServiceSpec): Promise<void> {
    validateServiceSpec(spec);
    const snapshot = await this.readMaps({ chunks: false });
    await this.apply({ ...emptyDiff(), set: [spec] }, snapshot, {
      what: `programming service ${serviceName(spec)}`,
    });
  }

  /** Removes one service, if present, through apply(). */
  async deleteService(vip: string, port: number, proto: Proto): Promise<void> {
    const key = { vip, port, proto };
    const snapshot = await this.readMaps({ chunks: false });
    if (!snapshot.states.has(serviceName(key))) return;
    await this.apply({ ...emptyDiff(), remove: [key] }, snapshot, {
      what: `deleting service ${serviceName(key)}`,
    });
  }

  async listServices(): Promise<ServiceSpec[]> {
    const { actual } = await this.readMaps({ chunks: false });
    return actual.services
      .map(({ vip, port, proto, backends, rejectWeight }) => ({
        vip,
        port,
        proto,
        backends,
        rejectWeight,
      }))
      .sort((a, b) => (serviceName(a) < serviceName(b) ? -1 : 1));
  }

  /** Makes the Gateway-address set exactly `addresses`; flags of addresses already present are kept. */
  async setAddresses(addresses: string[]): Promise<void> {
    addresses.forEach((a, i) => {
      if (!isIPv4(a))
        throw new Error(`setAddresses: addresses[${i}] "${a}" must be an IPv4 address literal`);
    });
    const snapshot = await this.readMaps({ chunks: false });
    const present = new Set(snapshot.actual.addresses.map(a => a.ip));
    const wanted = new Set(addresses);
    const upsert = [...wanted].filter(ip => !present.has(ip)).map(ip => ({ ip, announce: false }));
    const remove = [...present].filter(ip => !wanted.has(ip));
    await this.apply({ ...emptyDiff(), addresses: { upsert, remove } }, snapshot, {
      what: "setting Gateway addresses",
    });
  }

  async addresses(): Promise<string[]> {
    return (await bpftool.mapDump(this.mapPin("blixt_addrs")))
      .map(e => decodeAddressKey(e.key))
      .sort();
  }

  /**
   * Makes this node answer ARP for exactly `addresses` (ADDR_F_ANNOUNCE), and for no other
   * Gateway address. Each must already be a Gateway address (setAddresses), since an address
   * this node answers ARP for must also be refused on ports no listener has.
   */
  async setAnnounced(addresses: string[]): Promise<void> {
    const snapshot = await this.readMaps({ chunks: false });
    const present = new Map(snapshot.actual.addresses.map(a => [a.ip, a.announce]));
    addresses.forEach((a, i) => {
      if (!isIPv4(a))
        throw new Error(`setAnnounced: addresses[${i}] "${a}" must be an IPv4 address literal`);
      if (!present.has(a))
        throw new Error(
          `setAnnounced: ${a} is not a Gateway address in ${this.mapPin("blixt_addrs")}; add it with setAddresses first`,
        );
    });
    const wanted = new Set(addresses);
    const upsert = [...present]
      .filter(([ip, announce]) => wanted.has(ip) !== announce)
      .map(([ip]) => ({ ip, announce: wanted.has(ip) }));
    await this.apply({ ...emptyDiff(), addresses: { upsert, remove: [] } }, snapshot, {
      what: "setting announced Gateway addresses",
    });
  }

  /** The Gateway addresses this node answers ARP for. */
  async announced(): Promise<string[]> {
    return (await bpftool.mapDump(this.mapPin("blixt_addrs")))
      .filter(e => decodeAddressValue(e.value!).flags & ADDR_F_ANNOUNCE)
      .map(e => decodeAddressKey(e.key))
      .sort();
  }

  /**
   * Sends a gratuitous ARP for an address this node announces, out of `iface` (in this
   * Dataplane's netns): call it when the node takes the address over, so neighbours move to it
   * at once. Refuses an address the programs would not answer ARP for.
   */
  async announce(
    iface: string,
    address: string,
    opts: Omit<GratuitousArpOptions, "netns"> = {},
  ): Promise<void> {
    if (!isIPv4(address))
      throw new Error(`announce: address "${address}" must be an IPv4 address literal`);
    const entry = await bpftool.mapLookup(
      this.mapPin("blixt_addrs"),
      hex(encodeAddressKey(address)),
    );
    if (!entry || !(decodeAddressValue(entry.value!).flags & ADDR_F_ANNOUNCE)) {
      throw new Error(
        `announce: ${address} is not announced by this node (no ADDR_F_ANNOUNCE entry in ${this.mapPin("blixt_addrs")}); setAnnounced first, or a gratuitous ARP would draw traffic the node does not answer ARP for`,
      );
    }
    const link = await bpftool.linkInfo(iface, this.attachOpts);
    // Announcing it ourselves ends a yield to another node's announcement (bpf/arp.h).
    await this.clearYield(address);
    await sendGratuitousArp(iface, link.mac, address, { ...opts, netns: this.netns });
  }

  /**
   * Addresses this node yielded: it announces them (ADDR_F_ANNOUNCE) but heard another node's
   * gratuitous ARP for them since, so the programs no longer answer ARP for them (bpf/arp.h,
   * only where an announce deadline is set). Sorted by address.
   */
  async yields(): Promise<({ address: string } & YieldValue)[]> {
    return (await bpftool.mapDump(this.mapPin("blixt_yield")))
      .map(e => ({ address: decodeAddressKey(e.key), ...decodeYieldValue(e.value!) }))
      .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  }

  /** Forgets a yield: the programs answer ARP for the address again if it is announced. */
  async clearYield(address: string): Promise<void> {
    const pin = this.mapPin("blixt_yield");
    const key = hex(encodeAddressKey(address));
    if (!(await bpftool.mapLookup(pin, key))) return;
    await bpftool
      .batch([bpftool.mapDeleteLine(pin, key)], `forgetting the yield of ${address}`)
      .catch(async (error: unknown) => {
        // Gone meanwhile (another caller forgot it first): what was asked for holds.
        if (await bpftool.mapLookup(pin, key)) throw error;
      });
  }

  /** ARP counters (bpf/maps.h enum blixt_arp_counter), summed over CPUs. */
  async arpCounters(): Promise<Record<ArpCounter, number>> {
    const lines = ARP_COUNTERS.map((_, i) =>
      bpftool.mapLookupLine(this.mapPin("blixt_arp_stats"), hex(encodeIndexKey(i))),
    );
    const outputs = (await bpftool.batch(lines, "reading ARP counters")) as PerCpuLookup[];
    return Object.fromEntries(
      ARP_COUNTERS.map((c, i) => [
        c,
        perCpu(outputs[i]).reduce((sum, b) => sum + decodeReasonCounter(b), 0),
      ]),
    ) as Record<ArpCounter, number>;
  }

  /** The conntrack timeouts the programs use (blixt_ct_config; a field never written reads as its compiled default). */
  async conntrackTimeouts(): Promise<ConntrackTimeouts> {
    const entry = await bpftool.mapLookup(
      this.mapPin("blixt_ct_config"),
      hex(encodeIndexKey(CT_CONFIG_KEY)),
    );
    return decodeConntrackConfig(entry?.value ?? new Uint8Array(16));
  }

  /**
   * Makes the programs use these conntrack timeouts; writes only when the map differs.
   * Returns whether it wrote. Flows already tracked are judged by the new timeouts from their
   * next packet on.
   */
  async setConntrackTimeouts(timeouts: ConntrackTimeouts): Promise<boolean> {
    const value = encodeConntrackConfig(timeouts);
    const current = await this.conntrackTimeouts();
    if (hex(encodeConntrackConfig(current)).join(" ") === hex(value).join(" ")) return false;
    const line = bpftool.mapUpdateLine(
      this.mapPin("blixt_ct_config"),
      hex(encodeIndexKey(CT_CONFIG_KEY)),
      hex(value),
    );
    await bpftool.batch([line], "writing the conntrack timeouts");
    return true;
  }

  /** This node's own IPv4 address as the programs see it (blixt_node), "0.0.0.0" when never written. */
  async nodeAddress(): Promise<string> {
    const entry = await bpftool.mapLookup(
      this.mapPin("blixt_node"),
      hex(encodeIndexKey(NODE_CONFIG_KEY)),
    );
    return decodeNodeConfig(entry?.value ?? new Uint8Array(4)).ipv4;
  }

  /**
   * Sets this node's own IPv4 address: the outer source of packets sent to a backend on another
   * node (Backend.remote, bpf/encap.h). Until it is set, new flows to remote backends are dropped
   * (drop_no_node_address). Writes only when the map holds another address; "0.0.0.0" clears it.
   */
  async setNodeAddress(ipv4: string): Promise<void> {
    if (!isIPv4(ipv4))
      throw new Error(`setNodeAddress: "${ipv4}" must be an IPv4 address literal (dotted quad)`);
    if ((await this.nodeAddress()) === ipv4) return;
    const line = bpftool.mapUpdateLine(
      this.mapPin("blixt_node"),
      hex(encodeIndexKey(NODE_CONFIG_KEY)),
      hex(encodeNodeConfig(ipv4)),
    );
    await bpftool.batch([line], `setting this node's address to ${ipv4}`);
  }

  /** The announce deadline (blixt_announce: CLOCK_MONOTONIC ns), 0n when none is set. */
  async announceDeadline(): Promise<bigint> {
    const entry = await bpftool.mapLookup(
      this.mapPin("blixt_announce"),
      hex(encodeIndexKey(ANNOUNCE_CONFIG_KEY)),
    );
    return entry?.value ? decodeAnnounceConfig(entry.value).untilNs : 0n;
  }

  /**
   * Sets the announce deadline: this node answers ARP for the addresses it announces until
   * CLOCK_MONOTONIC reaches `untilNs` (process.hrtime.bigint() is that clock), then falls
   * silent until it is moved again (arp.h, counted as deadline_passed). The node agent keeps it
   * one Lease duration ahead while it runs; 0n removes the deadline.
   */
  async setAnnounceDeadline(untilNs: bigint): Promise<void> {
    if (untilNs < 0n || untilNs >= 1n << 64n)
      throw new Error(`setAnnounceDeadline: ${untilNs} is not an unsigned 64-bit nanosecond count`);
    const line = bpftool.mapUpdateLine(
      this.mapPin("blixt_announce"),
      hex(encodeIndexKey(ANNOUNCE_CONFIG_KEY)),
      hex(encodeAnnounceConfig(untilNs)),
    );
    await bpftool.batch([line], "moving the announce deadline");
  }

  /** Conntrack counters (bpf/maps.h enum blixt_ct_counter), summed over CPUs. */
  async conntrackCounters(): Promise<Record<ConntrackCounter, number>> {
    const lines = CT_COUNTERS.map((_, i) =>
      bpftool.mapLookupLine(this.mapPin("blixt_ct_stats"), hex(encodeIndexKey(i))),
    );
    const outputs = (await bpftool.batch(lines, "reading conntrack counters")) as PerCpuLookup[];
    return Object.fromEntries(
      CT_COUNTERS.map((c, i) => [
        c,
        perCpu(outputs[i]).reduce((sum, b) => sum + decodeReasonCounter(b), 0),
      ]),
    ) as Record<ConntrackCounter, number>;
  }

  /** Entries of both conntrack tables: blixt_ct4 (confirmed flows) and blixt_ct4_new (unconfirmed, bpf/conntrack.h). */
  async conntrack(): Promise<ConntrackEntry[]> {
    const tables = await Promise.all(
      (["blixt_ct4", "blixt_ct4_new"] as const).map(m => bpftool.mapDump(this.mapPin(m))),
    );
    return tables.flatMap((entries, table) =>
      entries.map(e => {
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
      }),
    );
  }

  async stats(): Promise<DataplaneStats> {
    // Per-CPU arrays always hold every index: look up the ids in use instead of dumping 16k entries.
    const services = (await bpftool.mapDump(this.mapPin("blixt_services"))).map(e => ({
      key: decodeServiceKey(e.key),
      svcId: decodeServiceValue(e.value!).svcId,
    }));
    const lookup = (m: MapName, i: number) =>
      bpftool.mapLookupLine(this.mapPin(m), hex(encodeIndexKey(i)));
    const lines = [
      ...services.map(s => lookup("blixt_svc_stats", s.svcId)),
      ...REASONS.map((_, i) => lookup("blixt_reasons", i)),
    ];
    const outputs = (await bpftool.batch(lines, "reading counters")) as PerCpuLookup[];
    const serviceStats = services.map(({ key, svcId }, i) => ({
      ...key,
      svcId,
      ...sumCounters(perCpu(outputs[i]).map(decodeServiceCounters)),
    }));
    const reasons = Object.fromEntries(
      REASONS.map((r, i) => [
        r,
        perCpu(outputs[services.length + i]).reduce((sum, b) => sum + decodeReasonCounter(b), 0),
      ]),
    ) as Record<Reason, number>;
    return { services: serviceStats, reasons };
  }

  /** Removes every pin under pinDir (maps, programs). Attached programs stay attached until detach(). */
  async unpin(): Promise<void> {
    if (!(await exists(this.pinDir))) return;
    for (const entry of await readdir(this.pinDir))
      await rm(join(this.pinDir, entry), { recursive: true, force: true });
    await rm(this.pinDir, { recursive: true, force: true });
  }
}
