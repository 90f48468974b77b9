// SPDX-License-Identifier: Apache-2.0
// Byte encodings of every key and value in bpf/maps.h, as pure functions.
//
// The C structs are the source of truth; each encoder below spells out the same offsets.
// Addresses are 16 bytes, IPv4 stored IPv4-mapped (::ffff:a.b.c.d); ports are network byte
// order; every other integer is host order, which is little-endian on every machine blixt
// targets (x86-64, arm64). Padding is always zero, since hash keys compare every byte.
import { isIPv4 } from "node:net";

export type Proto = "tcp" | "udp";

/** Pinned map names, as in bpf/maps.h (the kernel keeps 15 characters of a map name). */
export const MAP_NAMES = [
  "blixt_services",
  "blixt_mg_chunks",
  "blixt_mg_backs",
  "blixt_backends",
  "blixt_ct4",
  "blixt_svc_epoch",
  "blixt_addrs",
  "blixt_svc_stats",
  "blixt_reasons",
  "blixt_ifaces",
  "blixt_arp_stats",
  "blixt_ct4_new",
  "blixt_ct_config",
  "blixt_ct_stats",
  "blixt_node",
  "blixt_announce",
  "blixt_yield",
] as const;
export type MapName = (typeof MAP_NAMES)[number];

/**
 * The maps whose size is a setting (the chart's agent.maps values): hash maps, where the size
 * is the capacity. The others are sized by bpf/maps.h: arrays indexed by service id, address
 * or counter, whose size the programs assume.
 */
export const SIZED_MAPS = {
  services: "blixt_services",
  backends: "blixt_backends",
  tableChunks: "blixt_mg_chunks",
  tableBackends: "blixt_mg_backs",
  conntrack: "blixt_ct4",
} as const satisfies Record<string, MapName>;
export type SizedMap = keyof typeof SIZED_MAPS;
export type MapSizes = Record<SizedMap, number>;
/**
 * Maps earlier versions pinned and this one no longer uses: one entry per Maglev slot
 * (blixt_maglev), and conntrack keyed by IPv4-mapped addresses with no epoch (blixt_conntrack).
 */
export const RETIRED_MAP_NAMES = ["blixt_maglev", "blixt_conntrack"] as const;

/** Program names (the functions in bpf/blixt.c), which bpftool loadall pins them under. */
export const PROG_NAMES = [
  "blixt_xdp_ingress",
  "blixt_tc_ingress",
  "blixt_tc_egress",
  "blixt_tc_pod_ingress",
] as const;
export type ProgName = (typeof PROG_NAMES)[number];

/** enum blixt_reason in bpf/common.h, in order: the index is the key of blixt_reasons. */
export const REASONS = [
  "pass_not_ipv4",
  "pass_no_service",
  "pass_unparsed",
  "dnat",
  "reverse_nat",
  "drop_malformed_l2",
  "drop_malformed_l3",
  "drop_ip_options",
  "drop_fragment",
  "drop_unknown_proto",
  "drop_malformed_l4",
  "reject_rst",
  "reject_drop",
  "refused_rst",
  "refused_drop",
  "drop_rst_failed",
  "icmp_echo_reply",
  "icmp_error_nat",
  "encap",
  "encap_no_neigh",
  "decap",
  "drop_no_node_address",
  "drop_encap_no_route",
  "drop_ipip",
  "icmp_frag_needed",
  "drop_too_big",
  "pass_other_host",
  "dnat_in_cluster",
  "drop_ct_clash",
] as const;
export type Reason = (typeof REASONS)[number];

/** Highest service id + 1 (BLIXT_MAX_SERVICES); id 0 means "none". */
export const MAX_SERVICES = 16384;
export const BACKEND_F_REJECT = 0x1;
/** The backend's pod runs on another node: its flows are encapsulated (IP-in-IP) to it, not DNATed here. */
export const BACKEND_F_REMOTE = 0x2;
export const CT_F_FORWARD = 0x1;
export const CT_F_REVERSE = 0x2;
/** The backend has answered (an unconfirmed flow's client packet then confirms it). */
export const CT_F_REPLIED = 0x4;
export const CT_F_FIN_CLIENT = 0x8;
export const CT_F_FIN_BACKEND = 0x10;
export const CT_F_RST = 0x20;
/** Created by a mid-flow TCP packet no entry knew (no SYN seen on this node). */
export const CT_F_PICKUP = 0x40;
/** Forward entry of a flow whose backend is on another node (encapsulated to it; no reverse entry here). */
export const CT_F_REMOTE = 0x80;
/** The flow arrived encapsulated from the node that chose its backend (replies leave straight to the client). */
export const CT_F_ENCAP = 0x100;
/** Flag of an address entry: this node announces it, so the programs answer ARP requests for it. */
export const ADDR_F_ANNOUNCE = 0x1;

export const IPPROTO: Record<Proto, number> = { tcp: 6, udp: 17 };

export function protoOf(n: number): Proto {
  if (n === 6) return "tcp";
  if (n === 17) return "udp";
  throw new Error(
    `unknown IP protocol number ${n} in a blixt map entry; only TCP (6) and UDP (17) are written`,
  );
}

// ---- addresses ------------------------------------------------------------------------------

/** 16-byte IPv4-mapped form of an IPv4 literal. */
export function addrBytes(ip: string): Uint8Array {
  if (!isIPv4(ip)) throw new Error(`"${ip}" is not an IPv4 address literal (dotted quad)`);
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  ip.split(".").forEach((octet, i) => (out[12 + i] = Number(octet)));
  return out;
}

export function addrString(bytes: Uint8Array): string {
  if (bytes.length !== 16) throw new Error(`address must be 16 bytes, got ${bytes.length}`);
  const mapped =
    bytes.subarray(0, 10).every(b => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (!mapped)
    throw new Error(
      `address ${hex(bytes).join(" ")} is not IPv4-mapped; IPv6 is not supported yet`,
    );
  return Array.from(bytes.subarray(12, 16)).join(".");
}

// ---- byte helpers -----------------------------------------------------------------------------

class Writer {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }
  addr(off: number, ip: string): this {
    this.bytes.set(addrBytes(ip), off);
    return this;
  }
  port(off: number, port: number): this {
    this.view.setUint16(off, port, false);
    return this;
  }
  u8(off: number, v: number): this {
    this.view.setUint8(off, v);
    return this;
  }
  u16(off: number, v: number): this {
    this.view.setUint16(off, v, true);
    return this;
  }
  u32(off: number, v: number): this {
    this.view.setUint32(off, v, true);
    return this;
  }
  u64(off: number, v: bigint): this {
    this.view.setBigUint64(off, v, true);
    return this;
  }
}

class Reader {
  private readonly view: DataView;
  constructor(
    private readonly bytes: Uint8Array,
    size: number,
    what: string,
  ) {
    if (bytes.length !== size)
      throw new Error(`${what} must be ${size} bytes, got ${bytes.length}`);
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  addr(off: number): string {
    return addrString(this.bytes.subarray(off, off + 16));
  }
  port(off: number): number {
    return this.view.getUint16(off, false);
  }
  u8(off: number): number {
    return this.view.getUint8(off);
  }
  u16(off: number): number {
    return this.view.getUint16(off, true);
  }
  u32(off: number): number {
    return this.view.getUint32(off, true);
  }
  u64(off: number): bigint {
    return this.view.getBigUint64(off, true);
  }
}

/** Bytes as bpftool's `hex` arguments ("0a"). */
const HEX_BYTE = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));
export function hex(bytes: Uint8Array): string[] {
  const out = new Array<string>(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = HEX_BYTE[bytes[i]];
  return out;
}

/** Bytes from bpftool's JSON ("0x0a" strings). */
export function fromBpftoolHex(words: string[]): Uint8Array {
  return Uint8Array.from(words, w => {
    const n = Number.parseInt(w, 16);
    if (!Number.isInteger(n) || n < 0 || n > 255)
      throw new Error(`bpftool printed "${w}", which is not a byte in hex`);
    return n;
  });
}

// ---- services: struct svc_key (20 bytes) → struct svc_value (16 bytes) -----------------------

export interface ServiceKey {
  vip: string;
  port: number;
  proto: Proto;
}
export interface ServiceValue {
  svcId: number;
  /** live Maglev table (its chunks, backend list and members), shared by services of equal tables; 0: none */
  tableId: number;
  /** M, a prime; 0 = every packet is rejected */
  tableSize: number;
  rejectWeight: number;
}

export const encodeServiceKey = (k: ServiceKey): Uint8Array =>
  new Writer(20).addr(0, k.vip).port(16, k.port).u8(18, IPPROTO[k.proto]).u8(19, 0).bytes;

export function decodeServiceKey(b: Uint8Array): ServiceKey {
  const r = new Reader(b, 20, "svc_key");
  return { vip: r.addr(0), port: r.port(16), proto: protoOf(r.u8(18)) };
}

export const encodeServiceValue = (v: ServiceValue): Uint8Array =>
  new Writer(16).u32(0, v.svcId).u32(4, v.tableId).u32(8, v.tableSize).u32(12, v.rejectWeight)
    .bytes;

export function decodeServiceValue(b: Uint8Array): ServiceValue {
  const r = new Reader(b, 16, "svc_value");
  return { svcId: r.u32(0), tableId: r.u32(4), tableSize: r.u32(8), rejectWeight: r.u32(12) };
}

// ---- Maglev tables: struct table_key (8 bytes) → struct table_chunk (2048 bytes) / struct backend (20 bytes:
// address 0..15, port 16..17 network order, flags 18..19 BACKEND_F_REJECT / BACKEND_F_REMOTE)

/** Slots per chunk of a table (BLIXT_CHUNK_SLOTS); slot s is element s % CHUNK_SLOTS of chunk s / CHUNK_SLOTS. */
export const CHUNK_SLOTS = 1024;
/** Chunks a table of `tableSize` slots takes; the last may be partial. */
export const chunkCount = (tableSize: number): number => Math.ceil(tableSize / CHUNK_SLOTS);

/** Key of both table maps: `index` is a chunk number (blixt_mg_chunks) or a backend index (blixt_mg_backs). */
export interface TableKey {
  tableId: number;
  index: number;
}
/**
 * An entry of a table's backend list: a backend (`remote` when its pod runs on another node), or
 * `reject` for the weighted share of invalid backendRefs.
 */
export type TableBackend =
  | { ip: string; port: number; remote?: boolean; reject?: false }
  | { reject: true };

export const encodeTableKey = (k: TableKey): Uint8Array =>
  new Writer(8).u32(0, k.tableId).u32(4, k.index).bytes;

export function decodeTableKey(b: Uint8Array): TableKey {
  const r = new Reader(b, 8, "table_key");
  return { tableId: r.u32(0), index: r.u32(4) };
}

/** struct table_chunk: up to CHUNK_SLOTS backend indexes (u16); slots past the table's end are zero. */
export function encodeTableChunk(indexes: ArrayLike<number>): Uint8Array {
  if (indexes.length > CHUNK_SLOTS)
    throw new RangeError(`a table chunk holds ${CHUNK_SLOTS} slots, got ${indexes.length}`);
  const w = new Writer(2 * CHUNK_SLOTS);
  for (let i = 0; i < indexes.length; i++) {
    const index = indexes[i];
    if (!Number.isInteger(index) || index < 0 || index > 0xffff)
      throw new RangeError(`table chunk slot ${i}: backend index ${index} does not fit a u16`);
    w.u16(2 * i, index);
  }
  return w.bytes;
}

export function decodeTableChunk(b: Uint8Array): Uint16Array {
  const r = new Reader(b, 2 * CHUNK_SLOTS, "table_chunk");
  return Uint16Array.from({ length: CHUNK_SLOTS }, (_, i) => r.u16(2 * i));
}

export function encodeTableBackend(s: TableBackend): Uint8Array {
  // The reject entry carries no address at all (all zero, not IPv4-mapped).
  if (s.reject) return new Writer(20).u16(18, BACKEND_F_REJECT).bytes;
  return new Writer(20)
    .addr(0, s.ip)
    .port(16, s.port)
    .u16(18, s.remote ? BACKEND_F_REMOTE : 0).bytes;
}

/** The entry back; `remote` is present only when set, as tables.ts builds entries. */
export function decodeTableBackend(b: Uint8Array): TableBackend {
  const r = new Reader(b, 20, "backend");
  const flags = r.u16(18);
  if (flags & BACKEND_F_REJECT) return { reject: true };
  return {
    ip: r.addr(0),
    port: r.port(16),
    ...(flags & BACKEND_F_REMOTE ? { remote: true } : {}),
  };
}

// ---- backends: struct backend_key (24 bytes) → struct backend_value (4 bytes) ----------------

/** A weighted member of a Maglev table (bpf/maps.h): written and deleted with the table. */
export interface BackendKey {
  tableId: number;
  ip: string;
  port: number;
}

export const encodeBackendKey = (k: BackendKey): Uint8Array =>
  new Writer(24).u32(0, k.tableId).addr(4, k.ip).port(20, k.port).u16(22, 0).bytes;

export function decodeBackendKey(b: Uint8Array): BackendKey {
  const r = new Reader(b, 24, "backend_key");
  return { tableId: r.u32(0), ip: r.addr(4), port: r.port(20) };
}

export const encodeBackendValue = (v: { weight: number }): Uint8Array =>
  new Writer(4).u32(0, v.weight).bytes;

export function decodeBackendValue(b: Uint8Array): { weight: number } {
  return { weight: new Reader(b, 4, "backend_value").u32(0) };
}

// ---- conntrack: struct ct_key (40 bytes) → struct ct_value (32 bytes) ------------------------

export interface ConntrackKey {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: Proto;
}
export interface ConntrackValue {
  /** forward: the backend; reverse: the VIP */
  addr: string;
  port: number;
  direction: "forward" | "reverse";
  svcId: number;
  /** forward: the service's epoch (blixt_svc_epoch) when the entry was last checked; 0 on reverse entries */
  epoch: number;
  /** bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC, to the tick): UDP, the flow's last packet to within a second; TCP, when the entry was created or last checked */
  lastSeenNs: bigint;
}

/** 4-byte network-order form of an IPv4 literal, as struct ct4_key and ct4_value hold it. */
function ip4Bytes(ip: string): Uint8Array {
  return addrBytes(ip).subarray(12, 16);
}
const ip4String = (b: Uint8Array): string => Array.from(b).join(".");

// ---- conntrack: struct ct4_key (16 bytes) → struct ct4_value (24 bytes) ---------------------

export const encodeConntrackKey = (k: ConntrackKey): Uint8Array => {
  const w = new Writer(16).port(8, k.sport).port(10, k.dport).u8(12, IPPROTO[k.proto]);
  w.bytes.set(ip4Bytes(k.saddr), 0);
  w.bytes.set(ip4Bytes(k.daddr), 4);
  return w.bytes;
};

export function decodeConntrackKey(b: Uint8Array): ConntrackKey {
  const r = new Reader(b, 16, "ct4_key");
  return {
    saddr: ip4String(b.subarray(0, 4)),
    daddr: ip4String(b.subarray(4, 8)),
    sport: r.port(8),
    dport: r.port(10),
    proto: protoOf(r.u8(12)),
  };
}

export const encodeConntrackValue = (v: ConntrackValue): Uint8Array => {
  const w = new Writer(24)
    .port(4, v.port)
    .u16(6, v.direction === "forward" ? CT_F_FORWARD : CT_F_REVERSE)
    .u32(8, v.svcId)
    .u32(12, v.epoch)
    .u64(16, v.lastSeenNs);
  w.bytes.set(ip4Bytes(v.addr), 0);
  return w.bytes;
};

export function decodeConntrackValue(b: Uint8Array): ConntrackValue {
  const r = new Reader(b, 24, "ct4_value");
  const flags = r.u16(6);
  return {
    addr: ip4String(b.subarray(0, 4)),
    port: r.port(4),
    direction: flags & CT_F_REVERSE ? "reverse" : "forward",
    svcId: r.u32(8),
    epoch: r.u32(12),
    lastSeenNs: r.u64(16),
  };
}

/** The CT_F_* bits of a ct4_value (bytes 6..7, host order; byte 7 was zero padding before CT_F_ENCAP). */
export const decodeConntrackFlags = (b: Uint8Array): number =>
  new Reader(b, 24, "ct4_value").u16(6);

// ---- conntrack timeouts: blixt_ct_config[0] = struct ct_config (16 bytes) -------------------

/** Idle timeouts of conntrack entries, in whole seconds (struct ct_config). */
export interface ConntrackTimeouts {
  /** TCP flow whose handshake has not finished (SYN seen, or picked up mid-flow, not yet confirmed) */
  tcpNewSeconds: number;
  /** confirmed TCP flow */
  tcpEstablishedSeconds: number;
  /** TCP flow after a RST or a FIN each way */
  tcpClosingSeconds: number;
  udpSeconds: number;
}

/**
 * Defaults (bpf/maps.h BLIXT_CT_DEFAULT_*): Cilium's CT_SYN_TIMEOUT, CT_CONNECTION_LIFETIME_TCP,
 * CT_CLOSE_TIMEOUT and CT_CONNECTION_LIFETIME_NONTCP. The programs use these for any field left 0,
 * so an unwritten map behaves the same.
 */
export const CONNTRACK_TIMEOUT_DEFAULTS: Readonly<ConntrackTimeouts> = Object.freeze({
  tcpNewSeconds: 60,
  tcpEstablishedSeconds: 21600,
  tcpClosingSeconds: 10,
  udpSeconds: 60,
});

/** Key of the single blixt_ct_config entry. */
export const CT_CONFIG_KEY = 0;

/** struct ct_config; every field a whole number of seconds in 1..2^32-1 (0 is "the default", written only by leaving a field out). */
export function encodeConntrackConfig(t: Partial<ConntrackTimeouts>): Uint8Array {
  const w = new Writer(16);
  (["tcpNewSeconds", "tcpEstablishedSeconds", "tcpClosingSeconds", "udpSeconds"] as const).forEach(
    (field, i) => {
      const v = t[field];
      if (v === undefined) return;
      if (!Number.isInteger(v) || v < 1 || v > 0xffffffff)
        throw new RangeError(
          `conntrack timeout ${field}: ${v} is not a whole number of seconds between 1 and 4294967295`,
        );
      w.u32(4 * i, v);
    },
  );
  return w.bytes;
}

/** struct ct_config back, with the programs' defaults in place of 0 fields. */
export function decodeConntrackConfig(b: Uint8Array): ConntrackTimeouts {
  const r = new Reader(b, 16, "ct_config");
  const or = (v: number, d: number) => v || d;
  const d = CONNTRACK_TIMEOUT_DEFAULTS;
  return {
    tcpNewSeconds: or(r.u32(0), d.tcpNewSeconds),
    tcpEstablishedSeconds: or(r.u32(4), d.tcpEstablishedSeconds),
    tcpClosingSeconds: or(r.u32(8), d.tcpClosingSeconds),
    udpSeconds: or(r.u32(12), d.udpSeconds),
  };
}

/** enum blixt_ct_counter in bpf/maps.h, in order: the index is the key of blixt_ct_stats (per-CPU u64). */
export const CT_COUNTERS = [
  "new",
  "pickup",
  "confirmed",
  "repaired",
  "closed",
  "expired",
  "clash_replaced",
  "clash_refused",
] as const;
export type ConntrackCounter = (typeof CT_COUNTERS)[number];

// ---- this node's address: blixt_node[0] = struct node_config (4 bytes) ----------------------

/** Key of the single blixt_node entry. */
export const NODE_CONFIG_KEY = 0;

/**
 * struct node_config: this node's IPv4 address (bytes 0..3, network order), the outer source of
 * packets encapsulated to a backend on another node. "0.0.0.0" is "unknown" (flows to remote
 * backends are then dropped).
 */
export const encodeNodeConfig = (ipv4: string): Uint8Array => addrBytes(ipv4).slice(12, 16);

export const decodeNodeConfig = (b: Uint8Array): { ipv4: string } => {
  new Reader(b, 4, "node_config");
  return { ipv4: ip4String(b) };
};

// ---- the announce deadline: blixt_announce[0] = struct announce_config (8 bytes) ------------

/** Key of the single blixt_announce entry. */
export const ANNOUNCE_CONFIG_KEY = 0;

/**
 * struct announce_config: until_ns (u64, host order), CLOCK_MONOTONIC nanoseconds (the clock of
 * bpf_ktime_get_ns and of process.hrtime) below which this node answers ARP for the addresses it
 * announces. 0n is "no deadline".
 */
export const encodeAnnounceConfig = (untilNs: bigint): Uint8Array =>
  new Writer(8).u64(0, untilNs).bytes;

export const decodeAnnounceConfig = (b: Uint8Array): { untilNs: bigint } => ({
  untilNs: new Reader(b, 8, "announce_config").u64(0),
});

// ---- yielded addresses: blixt_yield, addr_key → struct yield_value (16 bytes) ---------------

/** struct yield_value: when (CLOCK_MONOTONIC ns) and from which MAC another node announced the address. */
export interface YieldValue {
  atNs: bigint;
  mac: string;
}

export const decodeYieldValue = (b: Uint8Array): YieldValue => {
  const r = new Reader(b, 16, "yield_value");
  return { atNs: r.u64(0), mac: macStringOf(b.subarray(8, 14)) };
};

export const encodeYieldValue = (v: YieldValue): Uint8Array => {
  const out = new Writer(16).u64(0, v.atNs).bytes;
  out.set(macBytesOf(v.mac), 8);
  return out;
};

// ---- service epochs: u32 service id → u32 epoch (array) --------------------------------------

/** Index of blixt_svc_epoch holding the last epoch handed out (BLIXT_EPOCH_COUNTER; no service has id 0). */
export const EPOCH_COUNTER = 0;

export const encodeEpoch = (epoch: number): Uint8Array => new Writer(4).u32(0, epoch >>> 0).bytes;
export const decodeEpoch = (b: Uint8Array): number => new Reader(b, 4, "svc_epoch value").u32(0);

/** The epoch after `epoch`: u32, wrapping past 0 (0 is the value no service has been given). */
export const nextEpoch = (epoch: number): number => ((epoch >>> 0) + 1) % 0x1_0000_0000 || 1;

// ---- addresses: struct addr_key (16 bytes) → struct addr_value (4 bytes) ---------------------

export const encodeAddressKey = (ip: string): Uint8Array => addrBytes(ip);
export const decodeAddressKey = (b: Uint8Array): string => new Reader(b, 16, "addr_key").addr(0);
export const encodeAddressValue = (v: { flags: number }): Uint8Array =>
  new Writer(4).u32(0, v.flags).bytes;
export const decodeAddressValue = (b: Uint8Array): { flags: number } => ({
  flags: new Reader(b, 4, "addr_value").u32(0),
});

// ---- per-CPU counters ----------------------------------------------------------------------

/** Array index keys (svc_stats by svc_id, reasons by enum value): a host-order __u32. */
export const encodeIndexKey = (i: number): Uint8Array => new Writer(4).u32(0, i).bytes;
export const decodeIndexKey = (b: Uint8Array): number => new Reader(b, 4, "array index").u32(0);

export interface ServiceCounters {
  packets: number;
  bytes: number;
  newFlows: number;
  rejects: number;
}

/** struct svc_stats (32 bytes). Counters are returned as numbers: exact up to 2^53. */
export function decodeServiceCounters(b: Uint8Array): ServiceCounters {
  const r = new Reader(b, 32, "svc_stats");
  return {
    packets: Number(r.u64(0)),
    bytes: Number(r.u64(8)),
    newFlows: Number(r.u64(16)),
    rejects: Number(r.u64(24)),
  };
}

export const encodeServiceCounters = (c: ServiceCounters): Uint8Array =>
  new Writer(32)
    .u64(0, BigInt(c.packets))
    .u64(8, BigInt(c.bytes))
    .u64(16, BigInt(c.newFlows))
    .u64(24, BigInt(c.rejects)).bytes;

export const decodeReasonCounter = (b: Uint8Array): number =>
  Number(new Reader(b, 8, "reason counter").u64(0));

export function sumCounters(perCpu: ServiceCounters[]): ServiceCounters {
  return perCpu.reduce(
    (a, c) => ({
      packets: a.packets + c.packets,
      bytes: a.bytes + c.bytes,
      newFlows: a.newFlows + c.newFlows,
      rejects: a.rejects + c.rejects,
    }),
    { packets: 0, bytes: 0, newFlows: 0, rejects: 0 },
  );
}

// ---- ifaces: ifindex (__u32) → struct iface_value (8 bytes) ----------------------------------

export interface InterfaceEntry {
  ifindex: number;
  /** "aa:bb:cc:dd:ee:ff", the MAC ARP replies from this device carry */
  mac: string;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function macBytesOf(mac: string): Uint8Array {
  if (!MAC_RE.test(mac))
    throw new Error(`"${mac}" is not a MAC address (six hex bytes separated by ":")`);
  return Uint8Array.from(mac.split(":"), b => Number.parseInt(b, 16));
}

export const macStringOf = (b: Uint8Array): string =>
  Array.from(b, x => x.toString(16).padStart(2, "0")).join(":");

export const encodeInterfaceValue = (mac: string): Uint8Array => {
  const out = new Uint8Array(8);
  out.set(macBytesOf(mac), 0);
  return out;
};

export function decodeInterfaceValue(b: Uint8Array): { mac: string } {
  new Reader(b, 8, "iface_value");
  return { mac: macStringOf(b.subarray(0, 6)) };
}

// ---- arp_stats: per-CPU counters indexed by enum blixt_arp_counter ---------------------------

/** enum blixt_arp_counter in bpf/maps.h, in order: the index is the key of blixt_arp_stats. */
export const ARP_COUNTERS = [
  "replied",
  "no_iface",
  "deadline_passed",
  "other_announced",
  "yielded",
] as const;
export type ArpCounter = (typeof ARP_COUNTERS)[number];
