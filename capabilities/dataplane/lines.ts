// SPDX-License-Identifier: Apache-2.0
// The bpftool batch lines that write services into the pinned maps, the pure part: a table
// written under the spare id and switched in with one write, tables and backends removed,
// service epochs handed out, and (applyLines) a whole diff against what the maps hold as one
// batch. No I/O: the Dataplane (dataplane.ts) reads the maps back and runs the lines, for the
// node agent and for every single write (`blixt dataplane set`, tests, bench) alike.
import * as bpftool from "./bpftool.js";
import type { MapEntry } from "./bpftool.js";
import { MAGLEV_MAX_SIZE } from "./maglev.js";
import {
  ADDR_F_ANNOUNCE,
  CHUNK_SLOTS,
  EPOCH_COUNTER,
  MAX_SERVICES,
  chunkCount,
  decodeAddressKey,
  decodeAddressValue,
  decodeBackendKey,
  decodeBackendValue,
  decodeServiceKey,
  decodeServiceValue,
  decodeTableBackend,
  decodeTableKey,
  encodeAddressKey,
  encodeAddressValue,
  encodeBackendKey,
  encodeBackendValue,
  encodeEpoch,
  encodeIndexKey,
  encodeServiceCounters,
  encodeServiceKey,
  encodeServiceValue,
  encodeTableBackend,
  encodeTableChunk,
  encodeTableKey,
  hex,
  nextEpoch,
  tableIdOf,
  type BackendKey,
  type MapName,
  type Proto,
  type ServiceValue,
  type TableKey,
} from "./maps.js";
import {
  mergeBackends,
  serviceName,
  serviceTable,
  validateServiceSpec,
  type Backend,
  type ServiceSpec,
  type ServiceTable,
  type TableEntry,
} from "./tables.js";

export interface ServiceState {
  value: ServiceValue;
  /** backends present in blixt_backends for this service */
  backends: Backend[];
  /** indexes present in blixt_mg_backs for the live table (value.tableId): what removing it deletes */
  tableBackends: number[];
}

/** The table id a service's next table is written under: the one its live table does not use. */
export const spareTableId = (svcId: number, current?: ServiceState): number =>
  tableIdOf(svcId, current?.value.tableId === tableIdOf(svcId, 0) ? 1 : 0);

/** Lines that write a whole table under `tableId`: its backend list, then its chunks. */
export function tableWriteLines(
  pin: (m: MapName) => string,
  tableId: number,
  table: ServiceTable,
): string[] {
  const lines: string[] = [];
  table.backends.forEach((entry, index) => {
    const value =
      entry === "reject" ? encodeTableBackend({ reject: true }) : encodeTableBackend(entry);
    lines.push(
      bpftool.mapUpdateLine(
        pin("blixt_mg_backs"),
        hex(encodeTableKey({ tableId, index })),
        hex(value),
      ),
    );
  });
  for (let chunk = 0; chunk < chunkCount(table.tableSize); chunk++) {
    const indexes = table.slots.subarray(
      chunk * CHUNK_SLOTS,
      Math.min(table.tableSize, (chunk + 1) * CHUNK_SLOTS),
    );
    lines.push(
      bpftool.mapUpdateLine(
        pin("blixt_mg_chunks"),
        hex(encodeTableKey({ tableId, index: chunk })),
        hex(encodeTableChunk(indexes)),
      ),
    );
  }
  return lines;
}

/** Lines that delete a table every entry of which is present: its backend list, then its chunks. */
export function tableDeleteLines(
  pin: (m: MapName) => string,
  tableId: number,
  tableSize: number,
  tableBackends: number[],
): string[] {
  const lines = tableBackends.map(index =>
    bpftool.mapDeleteLine(pin("blixt_mg_backs"), hex(encodeTableKey({ tableId, index }))),
  );
  for (let chunk = 0; chunk < chunkCount(tableSize); chunk++)
    lines.push(
      bpftool.mapDeleteLine(pin("blixt_mg_chunks"), hex(encodeTableKey({ tableId, index: chunk }))),
    );
  return lines;
}

/** The line that gives service `svcId` epoch `epoch` (blixt_svc_epoch; bpf/maps.h says why). */
export const epochLine = (pin: (m: MapName) => string, svcId: number, epoch: number): string =>
  bpftool.mapUpdateLine(
    pin("blixt_svc_epoch"),
    hex(encodeIndexKey(svcId)),
    hex(encodeEpoch(epoch)),
  );

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

/**
 * bpftool batch lines that move a service from `current` (absent for a new service) to `spec`:
 * new backends, the new table (backend list and chunks) under the spare id, one write of the
 * service entry that switches to it, then removal of the old table and of backends no longer
 * listed, and last the service's new `epoch`. No packet ever sees a half-written table, and
 * flows to a removed backend re-pick only after the switch: established flows skip the full
 * check until the epoch moves, which is why it moves only once everything else is written. A
 * table is a handful of lines: one per backend plus one per CHUNK_SLOTS slots.
 */
export function serviceUpdateLines(
  pin: (m: MapName) => string,
  spec: ServiceSpec,
  svcId: number,
  current: ServiceState | undefined,
  epoch: number,
): string[] {
  validateServiceSpec(spec);
  const backends = mergeBackends(spec.backends);
  const table = serviceTable(backends, spec.rejectWeight);
  const tableId = spareTableId(svcId, current);
  const lines: string[] = [];

  for (const b of backends) {
    lines.push(
      bpftool.mapUpdateLine(
        pin("blixt_backends"),
        hex(encodeBackendKey({ svcId, ip: b.ip, port: b.port })),
        hex(encodeBackendValue(b)),
      ),
    );
  }
  for (const line of tableWriteLines(pin, tableId, table)) lines.push(line);
  if (!current) {
    // A reused id must not inherit a deleted service's counters.
    lines.push(
      bpftool.mapUpdateLine(
        pin("blixt_svc_stats"),
        hex(encodeIndexKey(svcId)),
        hex(encodeServiceCounters({ packets: 0, bytes: 0, newFlows: 0, rejects: 0 })),
      ),
    );
  }
  // The switch: one update of the service entry.
  lines.push(
    bpftool.mapUpdateLine(
      pin("blixt_services"),
      hex(encodeServiceKey(spec)),
      hex(
        encodeServiceValue({
          svcId,
          tableId,
          tableSize: table.tableSize,
          rejectWeight: spec.rejectWeight,
        }),
      ),
    ),
  );
  if (current) {
    for (const line of tableDeleteLines(
      pin,
      current.value.tableId,
      current.value.tableSize,
      current.tableBackends,
    ))
      lines.push(line);
    const keep = new Set(backends.map(b => `${b.ip}:${b.port}`));
    for (const b of current.backends) {
      if (!keep.has(`${b.ip}:${b.port}`))
        lines.push(
          bpftool.mapDeleteLine(
            pin("blixt_backends"),
            hex(encodeBackendKey({ svcId, ip: b.ip, port: b.port })),
          ),
        );
    }
  }
  lines.push(epochLine(pin, svcId, epoch));
  return lines;
}

/**
 * Lines that remove a service: its entry first (so nothing reaches the table), then a new `epoch`
 * (so no established flow skips the lookup that now fails), then table and backends.
 */
export function serviceDeleteLines(
  pin: (m: MapName) => string,
  key: { vip: string; port: number; proto: Proto },
  current: ServiceState,
  epoch: number,
): string[] {
  const { svcId, tableId, tableSize } = current.value;
  const lines = [
    bpftool.mapDeleteLine(pin("blixt_services"), hex(encodeServiceKey(key))),
    epochLine(pin, svcId, epoch),
  ];
  // A loop, not push(...): a table of tens of thousands of backends would overflow the stack.
  for (const line of tableDeleteLines(pin, tableId, tableSize, current.tableBackends))
    lines.push(line);
  for (const b of current.backends)
    lines.push(
      bpftool.mapDeleteLine(
        pin("blixt_backends"),
        hex(encodeBackendKey({ svcId, ip: b.ip, port: b.port })),
      ),
    );
  return lines;
}

/** Backend-list keys read back (blixt_mg_backs), grouped: table id → indexes present, ascending. */
export function tableBackendIndexes(
  keys: { tableId: number; index: number }[],
): Map<number, number[]> {
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
  throw new Error(
    `no free service id: all ${MAX_SERVICES - 1} are in use; delete services or raise BLIXT_MAX_SERVICES in bpf/maps.h`,
  );
}

// ---- a change set against what the maps hold ------------------------------------------------

/** A service as read back from the pinned maps. */
export interface ActualService {
  vip: string;
  port: number;
  proto: Proto;
  svcId: number;
  tableId: number;
  tableSize: number;
  rejectWeight: number;
  backends: Backend[];
  /** The live table's backend list read back (blixt_mg_backs), by index; absent when not read. */
  tableBackends?: Map<number, TableEntry>;
  /**
   * Chunks of the live table read back (blixt_mg_chunks), by chunk number (undefined: the chunk
   * is missing). A sample (sampleChunks), not the whole table: reading every chunk of every
   * table on each resync costs more than it finds, and a damaged table shows in its sampled
   * chunks, its backend list or its size.
   */
  chunks?: Map<number, Uint16Array | undefined>;
}

/** A Gateway address in the maps, and whether this node answers ARP for it. */
export interface AddressEntry {
  ip: string;
  announce: boolean;
}

export interface ActualState {
  services: ActualService[];
  addresses: AddressEntry[];
}

export interface DataplaneDiff {
  /** services to create or reprogram (new table, one switch write) */
  set: ServiceSpec[];
  /** services to remove */
  remove: { vip: string; port: number; proto: Proto }[];
  /** Gateway addresses to add or re-flag, and to remove */
  addresses: { upsert: AddressEntry[]; remove: string[] };
  /** why each service in `set` is there: "new", "backends", "rejectWeight", "table" */
  reasons: Map<string, string>;
}

/** A diff that changes nothing: what a single write fills in. */
export const emptyDiff = (): DataplaneDiff => ({
  set: [],
  remove: [],
  addresses: { upsert: [], remove: [] },
  reasons: new Map(),
});

export interface MapsSnapshot {
  actual: ActualState;
  /** by serviceName: what the Dataplane's line builders need to move a service on */
  states: Map<string, ServiceState>;
  /** backends of service ids no service entry uses (a crash mid-delete, or a hand edit) */
  orphanBackends: BackendKey[];
  /** backend-list entries of tables no service entry points at (a spare table an apply left half-written) */
  orphanTableBackends: TableKey[];
  /** the last service epoch handed out (blixt_svc_epoch[EPOCH_COUNTER]) */
  epoch: number;
}

/**
 * The snapshot every write starts from, decoded from the dumps of the services, backends,
 * addresses and table backend-list maps, the epoch counter and (when read) each service's
 * sampled chunks, in the order of `dumps.services`.
 */
export function mapsSnapshot(
  dumps: {
    services: MapEntry[];
    backends: MapEntry[];
    addresses: MapEntry[];
    tableBackends: MapEntry[];
  },
  epoch: number,
  chunks?: (Map<number, Uint16Array | undefined> | undefined)[],
): MapsSnapshot {
  const backendsBySvc = new Map<number, BackendKey[]>();
  const weights = new Map<string, number>();
  for (const e of dumps.backends) {
    const k = decodeBackendKey(e.key);
    const list = backendsBySvc.get(k.svcId);
    if (list) list.push(k);
    else backendsBySvc.set(k.svcId, [k]);
    weights.set(`${k.svcId} ${k.ip}:${k.port}`, decodeBackendValue(e.value!).weight);
  }
  const tableKeys = dumps.tableBackends.map(e => decodeTableKey(e.key));
  const listsByTable = new Map<number, Map<number, TableEntry>>();
  dumps.tableBackends.forEach((e, i) => {
    const { tableId, index } = tableKeys[i];
    const b = decodeTableBackend(e.value!);
    const list = listsByTable.get(tableId) ?? new Map<number, TableEntry>();
    list.set(
      index,
      b.reject
        ? "reject"
        : b.remote
          ? { ip: b.ip, port: b.port, remote: true }
          : { ip: b.ip, port: b.port },
    );
    listsByTable.set(tableId, list);
  });
  const indexesByTable = tableBackendIndexes(tableKeys);
  const services = dumps.services.map(e => ({
    key: decodeServiceKey(e.key),
    value: decodeServiceValue(e.value!),
  }));

  const states = new Map<string, ServiceState>();
  const actual: ActualService[] = services.map(({ key, value }, i) => {
    const backends = (backendsBySvc.get(value.svcId) ?? [])
      .map(b => ({
        ip: b.ip,
        port: b.port,
        weight: weights.get(`${value.svcId} ${b.ip}:${b.port}`)!,
      }))
      .sort((a, b) => (`${a.ip}:${a.port}` < `${b.ip}:${b.port}` ? -1 : 1));
    states.set(serviceName(key), {
      value,
      backends,
      tableBackends: indexesByTable.get(value.tableId) ?? [],
    });
    return {
      ...key,
      ...value,
      backends,
      tableBackends: listsByTable.get(value.tableId) ?? new Map(),
      chunks: chunks?.[i],
    };
  });
  const live = new Set(services.map(s => s.value.svcId));
  const liveTables = new Set(services.map(s => s.value.tableId));
  const orphanBackends = [...backendsBySvc.entries()]
    .filter(([svcId]) => !live.has(svcId))
    .flatMap(([, keys]) => keys);
  const orphanTableBackends = tableKeys.filter(k => !liveTables.has(k.tableId));
  const addresses = dumps.addresses.map(e => ({
    ip: decodeAddressKey(e.key),
    announce: (decodeAddressValue(e.value!).flags & ADDR_F_ANNOUNCE) !== 0,
  }));
  return {
    actual: { services: actual, addresses },
    states,
    orphanBackends,
    orphanTableBackends,
    epoch,
  };
}

/** Most chunks a table can have: what a table id may hold when nothing says how many it does. */
const MAX_CHUNKS = chunkCount(MAGLEV_MAX_SIZE);

/** Appends without spreading: a spread of a very long array overflows the call stack. */
function append(lines: string[], more: string[]): void {
  for (const line of more) lines.push(line);
}

/**
 * Removal of chunks that may be missing: bpftool refuses to delete a missing key and stops the
 * batch there, so each chunk is first written (all zero: backend index 0, whose entry is
 * deleted before, so a packet still reading this table id is rejected) and then deleted.
 */
function tolerantChunkDeleteLines(
  pin: (m: MapName) => string,
  tableId: number,
  fromChunk: number,
  toChunk: number,
): string[] {
  const zero = hex(encodeTableChunk([]));
  const lines: string[] = [];
  for (let chunk = fromChunk; chunk < Math.min(toChunk, MAX_CHUNKS); chunk++) {
    const key = hex(encodeTableKey({ tableId, index: chunk }));
    lines.push(
      bpftool.mapUpdateLine(pin("blixt_mg_chunks"), key, zero),
      bpftool.mapDeleteLine(pin("blixt_mg_chunks"), key),
    );
  }
  return lines;
}

/**
 * Every bpftool command that takes the maps from `snapshot` to what `diff` asks, in the order
 * that keeps traffic correct throughout: leftovers of unused ids first (so a reused id starts
 * clean), then removals, then services (each switched by one write), then addresses.
 * `tolerant` removes old tables chunk-safely, for tables damaged behind the agent's back (and
 * for any retry, since a failed apply may have left one half-deleted, or a spare table
 * half-written: its chunks past the new table's end are cleared too).
 *
 * Every service written or removed gets a new epoch (its last line), so its established flows
 * are checked again. `recheckAll` gives one to every other service too: for the first pass of
 * an agent and after a failed apply, when a batch that stopped half-way may have changed a
 * service without moving its epoch.
 */
export function applyLines(
  pin: (m: MapName) => string,
  diff: DataplaneDiff,
  snapshot: MapsSnapshot,
  tolerant = false,
  recheckAll = false,
): string[] {
  const lines: string[] = [];
  const epochs = new Epochs(snapshot.epoch);
  const orphanIds = new Set<number>();
  for (const b of snapshot.orphanBackends) {
    lines.push(bpftool.mapDeleteLine(pin("blixt_backends"), hex(encodeBackendKey(b))));
    orphanIds.add(b.svcId);
  }
  // Entries may still name a service that was removed half-way.
  for (const svcId of orphanIds) lines.push(epochLine(pin, svcId, epochs.next()));
  for (const k of snapshot.orphanTableBackends)
    lines.push(bpftool.mapDeleteLine(pin("blixt_mg_backs"), hex(encodeTableKey(k))));

  for (const key of diff.remove) {
    const current = snapshot.states.get(serviceName(key));
    if (!current) continue;
    if (!tolerant) {
      append(lines, serviceDeleteLines(pin, key, current, epochs.next()));
      continue;
    }
    append(
      lines,
      serviceDeleteLines(
        pin,
        key,
        { ...current, value: { ...current.value, tableSize: 0 } },
        epochs.next(),
      ),
    );
    append(
      lines,
      tolerantChunkDeleteLines(pin, current.value.tableId, 0, chunkCount(current.value.tableSize)),
    );
  }

  const used = [...snapshot.states.values()].map(s => s.value.svcId);
  for (const spec of diff.set) {
    const name = serviceName(spec);
    const current = snapshot.states.get(name);
    const svcId = current?.value.svcId ?? freeServiceId(used);
    used.push(svcId);
    if (tolerant)
      append(
        lines,
        tolerantChunkDeleteLines(
          pin,
          spareTableId(svcId, current),
          chunkCount(serviceTable(spec.backends, spec.rejectWeight).tableSize),
          MAX_CHUNKS,
        ),
      );
    if (current && (tolerant || diff.reasons.get(name) === "table")) {
      // The epoch moves after the old table is gone: the update's own epoch line comes before it.
      const update = serviceUpdateLines(
        pin,
        spec,
        svcId,
        { ...current, value: { ...current.value, tableSize: 0 } },
        epochs.next(),
      );
      const epoch = update.pop()!;
      append(lines, update);
      append(
        lines,
        tolerantChunkDeleteLines(
          pin,
          current.value.tableId,
          0,
          chunkCount(current.value.tableSize),
        ),
      );
      lines.push(epoch);
    } else {
      append(lines, serviceUpdateLines(pin, spec, svcId, current, epochs.next()));
    }
  }
  if (recheckAll) {
    const touched = new Set([...diff.set, ...diff.remove].map(s => serviceName(s)));
    for (const [name, state] of snapshot.states)
      if (!touched.has(name)) lines.push(epochLine(pin, state.value.svcId, epochs.next()));
  }

  for (const a of diff.addresses.upsert) {
    lines.push(
      bpftool.mapUpdateLine(
        pin("blixt_addrs"),
        hex(encodeAddressKey(a.ip)),
        hex(encodeAddressValue({ flags: a.announce ? ADDR_F_ANNOUNCE : 0 })),
      ),
    );
  }
  for (const ip of diff.addresses.remove)
    lines.push(bpftool.mapDeleteLine(pin("blixt_addrs"), hex(encodeAddressKey(ip))));
  return epochs.record(pin, lines);
}
