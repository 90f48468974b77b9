// SPDX-License-Identifier: Apache-2.0
// The bpftool batch lines that write services into the pinned maps, the pure part: a table
// written under the spare id and switched in with one write, tables and backends removed,
// service epochs handed out. No I/O: dataplane.ts reads the maps and runs the lines.
import * as bpftool from "./bpftool.js";
import {
  CHUNK_SLOTS,
  EPOCH_COUNTER,
  MAX_SERVICES,
  chunkCount,
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
  type MapName,
  type Proto,
  type ServiceValue,
} from "./maps.js";
import { mergeBackends, serviceTable, validateServiceSpec, type Backend, type ServiceSpec, type ServiceTable } from "./tables.js";

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
