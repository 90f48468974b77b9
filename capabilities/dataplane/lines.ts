// SPDX-License-Identifier: Apache-2.0
// The bpftool batch lines that write services into the pinned maps, the pure part: a table
// written under a free id (or one already live with the same content) and switched in with one
// write, tables no service uses any more and backends removed,
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
  decodeEpoch,
  decodeIndexKey,
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
  tableKey,
  validateServiceSpec,
  type Backend,
  type ServiceSpec,
  type ServiceTable,
  type TableEntry,
} from "./tables.js";

export interface ServiceState {
  value: ServiceValue;
  /**
   * the live table's members present in blixt_backends (under value.tableId; none for table 0):
   * the service's weighted backends, what removing the table deletes
   */
  backends: Backend[];
  /** indexes present in blixt_mg_backs for the live table (value.tableId): what removing it deletes */
  tableBackends: number[];
}

/**
 * Table ids for tables written in one batch: the smallest not in `used` (every id the maps hold
 * a table or a table's leftovers under, and every id handed out before), from 1. Id 0 stands for
 * the empty table (size 0: no backend with weight), which has no entries.
 */
export class TableIds {
  #next = 1;
  constructor(private used: Set<number>) {}
  take(): number {
    while (this.used.has(this.#next)) this.#next++;
    this.used.add(this.#next);
    return this.#next;
  }
}

/**
 * Lines that write a whole table under `tableId`: its backend list, its members (blixt_backends:
 * the weighted backends of `backends`, which conntrack checks established flows against), then
 * its chunks.
 */
export function tableWriteLines(
  pin: (m: MapName) => string,
  tableId: number,
  table: ServiceTable,
  backends: Backend[],
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
  for (const b of backends)
    if (b.weight > 0)
      lines.push(
        bpftool.mapUpdateLine(
          pin("blixt_backends"),
          hex(encodeBackendKey({ tableId, ip: b.ip, port: b.port })),
          hex(encodeBackendValue(b)),
        ),
      );
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

/**
 * Lines that delete a table every entry of which is present: its members (`members`, as read
 * back), its backend list (the indexes in `tableBackends`), then its chunks.
 */
export function tableDeleteLines(
  pin: (m: MapName) => string,
  tableId: number,
  tableSize: number,
  tableBackends: number[],
  members: { ip: string; port: number }[],
): string[] {
  const lines = members.map(b =>
    bpftool.mapDeleteLine(
      pin("blixt_backends"),
      hex(encodeBackendKey({ tableId, ip: b.ip, port: b.port })),
    ),
  );
  for (const index of tableBackends)
    lines.push(
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
 * Whether moving a service from `current` to `backends` (merged) takes a backend out of it:
 * one with weight that has none after (removed, or its weight set to 0). Only then can the full
 * check of an established flow (bpf/conntrack.h ct_forward_valid: its backend is a weighted
 * member of its service) answer otherwise than before, so only then must the service's epoch
 * move. A backend added, a weight changed, a new table or reject share change no flow's check.
 */
export function dropsBackend(current: ServiceState, backends: Backend[]): boolean {
  const weighted = new Set(backends.filter(b => b.weight > 0).map(b => `${b.ip}:${b.port}`));
  return current.backends.some(b => b.weight > 0 && !weighted.has(`${b.ip}:${b.port}`));
}

/**
 * bpftool batch lines that move a service from `current` (absent for a new service) to `spec`:
 * the table (backend list, members and chunks) under `table.id` when `table.write` (else that
 * table is live already, shared with services of the same content, or written earlier in the
 * batch), one write of the service entry that switches to it, and last the service's new
 * `epoch` when one is given (applyLines gives one to a new service, and to one that loses a
 * backend: dropsBackend). No packet ever sees a half-written table, and flows to a removed
 * backend re-pick only after the switch: established flows skip the full check until the epoch
 * moves, which is why it moves only once everything else is written. The old table (and with it
 * the old members) goes once no service uses it (applyLines). A table is a handful of lines: two
 * per backend plus one per CHUNK_SLOTS slots, written once for every service that shares it;
 * what is the service's own is its switch and its epoch.
 */
export function serviceUpdateLines(
  pin: (m: MapName) => string,
  spec: ServiceSpec,
  svcId: number,
  current: ServiceState | undefined,
  epoch: number | undefined,
  table: { id: number; write: boolean },
): string[] {
  validateServiceSpec(spec);
  const backends = mergeBackends(spec.backends);
  const built = serviceTable(backends, spec.rejectWeight);
  const tableId = built.tableSize === 0 ? 0 : table.id;
  const lines: string[] = [];
  if (table.write)
    for (const line of tableWriteLines(pin, tableId, built, backends)) lines.push(line);
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
          tableSize: built.tableSize,
          rejectWeight: spec.rejectWeight,
        }),
      ),
    ),
  );
  if (epoch !== undefined) lines.push(epochLine(pin, svcId, epoch));
  return lines;
}

/**
 * Lines that remove a service: its entry first (so nothing reaches the table), then a new `epoch`
 * (so no established flow skips the lookup that now fails). Its table, members included, goes
 * once no service uses it (applyLines).
 */
export function serviceDeleteLines(
  pin: (m: MapName) => string,
  key: { vip: string; port: number; proto: Proto },
  current: ServiceState,
  epoch: number,
): string[] {
  return [
    bpftool.mapDeleteLine(pin("blixt_services"), hex(encodeServiceKey(key))),
    epochLine(pin, current.value.svcId, epoch),
  ];
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
  /** members of tables no service entry points at, or of table 0 (a crash mid-delete, or a hand edit) */
  orphanBackends: BackendKey[];
  /** backend-list entries of tables no service entry points at (a new table an apply left half-written) */
  orphanTableBackends: TableKey[];
  /** the last service epoch handed out (blixt_svc_epoch[EPOCH_COUNTER]) */
  epoch: number;
  /**
   * Ids no service entry uses whose epoch is not 0 (read only when asked: readMaps `deadIds`):
   * one of them may be a service whose removal stopped between its entry and its epoch.
   */
  deadIds?: number[];
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
  epochs?: MapEntry[],
): MapsSnapshot {
  const membersByTable = new Map<number, (BackendKey & { weight: number })[]>();
  for (const e of dumps.backends) {
    const member = { ...decodeBackendKey(e.key), weight: decodeBackendValue(e.value!).weight };
    const list = membersByTable.get(member.tableId);
    if (list) list.push(member);
    else membersByTable.set(member.tableId, [member]);
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
    // Table 0 (nothing with weight) has no members: any found under it are leftovers.
    const backends = (value.tableId === 0 ? [] : (membersByTable.get(value.tableId) ?? []))
      .map(b => ({ ip: b.ip, port: b.port, weight: b.weight }))
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
  const orphanBackends = [...membersByTable.entries()]
    .filter(([tableId]) => tableId === 0 || !liveTables.has(tableId))
    .flatMap(([, members]) => members.map(({ tableId, ip, port }) => ({ tableId, ip, port })));
  const deadIds = epochs
    ?.map(e => ({ id: decodeIndexKey(e.key), epoch: decodeEpoch(e.value!) }))
    .filter(({ id, epoch }) => id !== EPOCH_COUNTER && epoch !== 0 && !live.has(id))
    .map(({ id }) => id)
    .sort((a, b) => a - b);
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
    ...(deadIds ? { deadIds } : {}),
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
 *
 * Services with the same table content (tableKey: the same weighted backend set, as when many
 * routes send to one Deployment) share one table: a service switches to a live table of its
 * content, or to one written earlier in the batch, and only a content nobody has yet is
 * written, under a free id. A table is deleted right after the last service using it switches
 * away or is removed, so a batch that rewrites every table holds at most one old table of each
 * service beside the new ones, as before sharing. `tolerant` shares no live table (one may be
 * damaged), clears a new id's chunks past the new table's end, and removes old tables
 * chunk-safely: for tables damaged behind the agent's back, and for any retry, since a failed
 * apply may have left one half-deleted, or a new table half-written.
 *
 * Every service written or removed gets a new epoch (its last line), so its established flows
 * are checked again; with `keepEpochs` (the node agent's passes) only one created, removed, or
 * that loses a backend (dropsBackend) does: one that only gains backends, or changes weights,
 * table or reject share, keeps its epoch, as every check its flows passed still holds (one line
 * less for each of a thousand routes when a Deployment scales up). `tolerant` ignores
 * `keepEpochs`. `recheckAll` gives one to every other service too: for the first pass of an
 * agent and after a failed apply, when a batch that stopped half-way may have changed a service
 * without moving its epoch.
 */
export function applyLines(
  pin: (m: MapName) => string,
  diff: DataplaneDiff,
  snapshot: MapsSnapshot,
  tolerant = false,
  recheckAll = false,
  keepEpochs = false,
): string[] {
  const lines: string[] = [];
  const epochs = new Epochs(snapshot.epoch);
  for (const b of snapshot.orphanBackends)
    lines.push(bpftool.mapDeleteLine(pin("blixt_backends"), hex(encodeBackendKey(b))));
  // A service whose removal stopped between its entry and its epoch left its flows trusted:
  // every id no service uses gets a new epoch once more, when the snapshot names them.
  if (recheckAll)
    for (const svcId of snapshot.deadIds ?? []) lines.push(epochLine(pin, svcId, epochs.next()));
  for (const k of snapshot.orphanTableBackends)
    lines.push(bpftool.mapDeleteLine(pin("blixt_mg_backs"), hex(encodeTableKey(k))));

  // Live tables: how many services use each now, and what deleting one takes.
  const users = new Map<number, number>();
  const held = new Map<number, { size: number; backends: number[]; members: Backend[] }>();
  for (const state of snapshot.states.values()) {
    const id = state.value.tableId;
    users.set(id, (users.get(id) ?? 0) + 1);
    held.set(id, {
      size: state.value.tableSize,
      backends: state.tableBackends,
      members: state.backends,
    });
  }
  const changing = new Set([...diff.set, ...diff.remove].map(s => serviceName(s)));
  // A table that services keep as they are is whole (the diff checked it), and may be shared.
  const byContent = new Map<string, number>();
  if (!tolerant)
    for (const service of snapshot.actual.services) {
      if (changing.has(serviceName(service)) || service.tableSize === 0) continue;
      byContent.set(actualTableKey(service), service.tableId);
    }
  const keptIds = new Set(
    [...snapshot.states]
      .filter(([name]) => !changing.has(name))
      .map(([, state]) => state.value.tableId),
  );
  const ids = new TableIds(
    new Set([
      ...users.keys(),
      ...snapshot.orphanTableBackends.map(k => k.tableId),
      ...snapshot.orphanBackends.map(k => k.tableId),
    ]),
  );
  // Services that switch to a live table of their content (byContent holds no empty table).
  const sharing = new Map<string, number>();
  for (const spec of diff.set) {
    const id = byContent.get(tableKey(spec.backends, spec.rejectWeight));
    if (id !== undefined) sharing.set(serviceName(spec), id);
  }
  // Ids some service will use once the batch is done: never deleted by it.
  const staying = new Set([...keptIds, ...sharing.values()]);
  // A table the diff found damaged may miss chunks: removed chunk-safely, as in `tolerant`.
  const damaged = new Set(
    diff.set
      .filter(spec => diff.reasons.get(serviceName(spec)) === "table")
      .flatMap(spec => snapshot.states.get(serviceName(spec))?.value.tableId ?? []),
  );
  const release = (id: number) => {
    const left = (users.get(id) ?? 0) - 1;
    users.set(id, left);
    if (left > 0 || id === 0 || staying.has(id)) return;
    const { size, backends, members } = held.get(id)!;
    if (!tolerant && !damaged.has(id)) {
      append(lines, tableDeleteLines(pin, id, size, backends, members));
      return;
    }
    append(lines, tableDeleteLines(pin, id, 0, backends, members));
    append(lines, tolerantChunkDeleteLines(pin, id, 0, chunkCount(size)));
  };

  for (const key of diff.remove) {
    const current = snapshot.states.get(serviceName(key));
    if (!current) continue;
    append(lines, serviceDeleteLines(pin, key, current, epochs.next()));
    release(current.value.tableId);
  }

  const used = [...snapshot.states.values()].map(s => s.value.svcId);
  const written = new Map<string, number>();
  for (const spec of diff.set) {
    const name = serviceName(spec);
    const current = snapshot.states.get(name);
    const svcId = current?.value.svcId ?? freeServiceId(used);
    used.push(svcId);
    const content = tableKey(spec.backends, spec.rejectWeight);
    const { tableSize } = serviceTable(spec.backends, spec.rejectWeight);
    let table: { id: number; write: boolean };
    if (tableSize === 0) table = { id: 0, write: false };
    else if (sharing.has(name)) table = { id: sharing.get(name)!, write: false };
    else if (written.has(content)) table = { id: written.get(content)!, write: false };
    else {
      const id = ids.take();
      written.set(content, id);
      staying.add(id);
      table = { id, write: true };
      if (tolerant)
        append(lines, tolerantChunkDeleteLines(pin, id, chunkCount(tableSize), MAX_CHUNKS));
    }
    const epoch =
      !current ||
      !keepEpochs ||
      recheckAll ||
      tolerant ||
      dropsBackend(current, mergeBackends(spec.backends))
        ? epochs.next()
        : undefined;
    append(lines, serviceUpdateLines(pin, spec, svcId, current, epoch, table));
    if (current && current.value.tableId !== table.id) release(current.value.tableId);
  }
  if (recheckAll) {
    for (const [name, state] of snapshot.states)
      if (!changing.has(name)) lines.push(epochLine(pin, state.value.svcId, epochs.next()));
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

/** The content key of a live service's table: its backends' weights, and remote as its table says. */
function actualTableKey(service: ActualService): string {
  const remote = new Set(
    [...(service.tableBackends?.values() ?? [])].flatMap(e =>
      e !== "reject" && e.remote ? [`${e.ip}:${e.port}`] : [],
    ),
  );
  return tableKey(
    service.backends.map(b => (remote.has(`${b.ip}:${b.port}`) ? { ...b, remote: true } : b)),
    service.rejectWeight,
  );
}
