// SPDX-License-Identifier: Apache-2.0
// The node agent's side of the pinned maps: read back what they hold (for the diff in
// desired.ts) and turn a diff into ONE `bpftool batch` run. The per-service write protocol
// (backends, new table in the spare slot, one switching write, old table removed) is the
// Dataplane's own, from ../dataplane/dataplane.ts; this file only strings many services into one batch.
import * as bpftool from "../dataplane/bpftool.js";
import { readEpochCounter, type Dataplane } from "../dataplane/dataplane.js";
import { Epochs, epochLine, freeServiceId, serviceDeleteLines, serviceUpdateLines, spareTableId, tableBackendIndexes, type ServiceState } from "../dataplane/lines.js";
import { serviceName, serviceTable, type TableEntry } from "../dataplane/tables.js";
import { MAGLEV_MAX_SIZE } from "../dataplane/maglev.js";
import {
  ADDR_F_ANNOUNCE,
  chunkCount,
  decodeAddressKey,
  decodeAddressValue,
  decodeBackendKey,
  decodeBackendValue,
  decodeServiceKey,
  decodeServiceValue,
  decodeTableBackend,
  decodeTableChunk,
  decodeTableKey,
  encodeAddressKey,
  encodeAddressValue,
  encodeBackendKey,
  encodeTableChunk,
  encodeTableKey,
  fromBpftoolHex,
  hex,
  type BackendKey,
  type MapName,
  type TableKey,
} from "../dataplane/maps.js";
import { sampleChunks, type ActualService, type ActualState, type DataplaneDiff } from "./desired.js";

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

/** Most chunks a table can have: what a table id may hold when nothing says how many it does. */
const MAX_CHUNKS = chunkCount(MAGLEV_MAX_SIZE);

/** Appends without spreading: a spread of a very long array overflows the call stack. */
function append(lines: string[], more: string[]): void {
  for (const line of more) lines.push(line);
}

/**
 * Lookups per bpftool batch when reading chunks back. A chunk prints as ~2,000 hex words (plus
 * its BTF rendering), so one batch for every sampled chunk of a thousand services was hundreds of
 * MB of JSON in the agent at once; slices keep the agent's memory flat whatever the table count.
 */
const CHUNK_READS_PER_BATCH = 128;

/** Reads a few chunks of every live table, a slice of services per batch. */
async function readChunks(dp: Dataplane, services: { tableId: number; tableSize: number }[]): Promise<Map<number, Uint16Array | undefined>[]> {
  const pin = dp.mapPin("blixt_mg_chunks");
  const wanted = services.map((s) => sampleChunks(s.tableSize).map((chunk) => ({ chunk, key: hex(encodeTableKey({ tableId: s.tableId, index: chunk })) })));
  const result: Map<number, Uint16Array | undefined>[] = [];
  for (let first = 0; first < wanted.length; ) {
    // Whole services per slice, at least one.
    let last = first;
    let lookups = 0;
    while (last < wanted.length && (last === first || lookups + wanted[last].length <= CHUNK_READS_PER_BATCH)) lookups += wanted[last++].length;
    const slice = wanted.slice(first, last);
    const lines = slice.flat().map(({ key }) => bpftool.mapLookupLine(pin, key));
    try {
      const outputs = (await bpftool.batch(lines, "reading Maglev table chunks")) as { value: string[] }[];
      let i = 0;
      for (const chunks of slice) result.push(new Map(chunks.map(({ chunk }) => [chunk, decodeTableChunk(fromBpftoolHex(outputs[i++].value))] as const)));
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

/** What the pinned maps hold now, read back (services, backends, addresses, tables' backend lists and sampled chunks). */
export async function readMaps(dp: Dataplane, opts: { chunks?: boolean } = {}): Promise<MapsSnapshot> {
  const [[serviceEntries, backendEntries, addressEntries, tableBackendEntries], epoch] = await Promise.all([
    Promise.all((["blixt_services", "blixt_backends", "blixt_addrs", "blixt_mg_backs"] as const).map((m) => bpftool.mapDump(dp.mapPin(m)))),
    readEpochCounter((m) => dp.mapPin(m)),
  ]);
  const backendsBySvc = new Map<number, BackendKey[]>();
  const weights = new Map<string, number>();
  for (const e of backendEntries) {
    const k = decodeBackendKey(e.key);
    backendsBySvc.set(k.svcId, [...(backendsBySvc.get(k.svcId) ?? []), k]);
    weights.set(`${k.svcId} ${k.ip}:${k.port}`, decodeBackendValue(e.value!).weight);
  }
  const tableKeys = tableBackendEntries.map((e) => decodeTableKey(e.key));
  const listsByTable = new Map<number, Map<number, TableEntry>>();
  tableBackendEntries.forEach((e, i) => {
    const { tableId, index } = tableKeys[i];
    const b = decodeTableBackend(e.value!);
    const list = listsByTable.get(tableId) ?? new Map<number, TableEntry>();
    list.set(index, b.reject ? "reject" : { ip: b.ip, port: b.port });
    listsByTable.set(tableId, list);
  });
  const indexesByTable = tableBackendIndexes(tableKeys);
  const services = serviceEntries.map((e) => ({ key: decodeServiceKey(e.key), value: decodeServiceValue(e.value!) }));
  // A table size the programs would never write (a hand edit) is not sampled: it is wrong already.
  // Without chunks (opts.chunks false) a table is judged by its size and backend list alone.
  const chunks =
    opts.chunks === false
      ? services.map(() => undefined)
      : await readChunks(
          dp,
          services.map((s) => ({ tableId: s.value.tableId, tableSize: s.value.tableSize <= MAGLEV_MAX_SIZE ? s.value.tableSize : 0 })),
        );

  const states = new Map<string, ServiceState>();
  const actual: ActualService[] = services.map(({ key, value }, i) => {
    const backends = (backendsBySvc.get(value.svcId) ?? [])
      .map((b) => ({ ip: b.ip, port: b.port, weight: weights.get(`${value.svcId} ${b.ip}:${b.port}`)! }))
      .sort((a, b) => (`${a.ip}:${a.port}` < `${b.ip}:${b.port}` ? -1 : 1));
    states.set(serviceName(key), { value, backends, tableBackends: indexesByTable.get(value.tableId) ?? [] });
    return { ...key, ...value, backends, tableBackends: listsByTable.get(value.tableId) ?? new Map(), chunks: chunks[i] };
  });
  const live = new Set(services.map((s) => s.value.svcId));
  const liveTables = new Set(services.map((s) => s.value.tableId));
  const orphanBackends = [...backendsBySvc.entries()].filter(([svcId]) => !live.has(svcId)).flatMap(([, keys]) => keys);
  const orphanTableBackends = tableKeys.filter((k) => !liveTables.has(k.tableId));
  const addresses = addressEntries.map((e) => ({ ip: decodeAddressKey(e.key), announce: (decodeAddressValue(e.value!).flags & ADDR_F_ANNOUNCE) !== 0 }));
  return { actual: { services: actual, addresses }, states, orphanBackends, orphanTableBackends, epoch };
}

/**
 * Removal of chunks that may be missing: bpftool refuses to delete a missing key and stops the
 * batch there, so each chunk is first written (all zero: backend index 0, whose entry is
 * deleted before, so a packet still reading this table id is rejected) and then deleted.
 */
function tolerantChunkDeleteLines(pin: (m: MapName) => string, tableId: number, fromChunk: number, toChunk: number): string[] {
  const zero = hex(encodeTableChunk([]));
  const lines: string[] = [];
  for (let chunk = fromChunk; chunk < Math.min(toChunk, MAX_CHUNKS); chunk++) {
    const key = hex(encodeTableKey({ tableId, index: chunk }));
    lines.push(bpftool.mapUpdateLine(pin("blixt_mg_chunks"), key, zero), bpftool.mapDeleteLine(pin("blixt_mg_chunks"), key));
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
export function applyLines(pin: (m: MapName) => string, diff: DataplaneDiff, snapshot: MapsSnapshot, tolerant = false, recheckAll = false): string[] {
  const lines: string[] = [];
  const epochs = new Epochs(snapshot.epoch);
  const orphanIds = new Set<number>();
  for (const b of snapshot.orphanBackends) {
    lines.push(bpftool.mapDeleteLine(pin("blixt_backends"), hex(encodeBackendKey(b))));
    orphanIds.add(b.svcId);
  }
  // Entries may still name a service that was removed half-way.
  for (const svcId of orphanIds) lines.push(epochLine(pin, svcId, epochs.next()));
  for (const k of snapshot.orphanTableBackends) lines.push(bpftool.mapDeleteLine(pin("blixt_mg_backs"), hex(encodeTableKey(k))));

  for (const key of diff.remove) {
    const current = snapshot.states.get(serviceName(key));
    if (!current) continue;
    if (!tolerant) {
      append(lines, serviceDeleteLines(pin, key, current, epochs.next()));
      continue;
    }
    append(lines, serviceDeleteLines(pin, key, { ...current, value: { ...current.value, tableSize: 0 } }, epochs.next()));
    append(lines, tolerantChunkDeleteLines(pin, current.value.tableId, 0, chunkCount(current.value.tableSize)));
  }

  const used = [...snapshot.states.values()].map((s) => s.value.svcId);
  for (const spec of diff.set) {
    const name = serviceName(spec);
    const current = snapshot.states.get(name);
    const svcId = current?.value.svcId ?? freeServiceId(used);
    used.push(svcId);
    if (tolerant) append(lines, tolerantChunkDeleteLines(pin, spareTableId(svcId, current), chunkCount(serviceTable(spec.backends, spec.rejectWeight).tableSize), MAX_CHUNKS));
    if (current && (tolerant || diff.reasons.get(name) === "table")) {
      // The epoch moves after the old table is gone: the update's own epoch line comes before it.
      const update = serviceUpdateLines(pin, spec, svcId, { ...current, value: { ...current.value, tableSize: 0 } }, epochs.next());
      const epoch = update.pop()!;
      append(lines, update);
      append(lines, tolerantChunkDeleteLines(pin, current.value.tableId, 0, chunkCount(current.value.tableSize)));
      lines.push(epoch);
    } else {
      append(lines, serviceUpdateLines(pin, spec, svcId, current, epochs.next()));
    }
  }
  if (recheckAll) {
    const touched = new Set([...diff.set, ...diff.remove].map((s) => serviceName(s)));
    for (const [name, state] of snapshot.states) if (!touched.has(name)) lines.push(epochLine(pin, state.value.svcId, epochs.next()));
  }

  for (const a of diff.addresses.upsert) {
    lines.push(bpftool.mapUpdateLine(pin("blixt_addrs"), hex(encodeAddressKey(a.ip)), hex(encodeAddressValue({ flags: a.announce ? ADDR_F_ANNOUNCE : 0 }))));
  }
  for (const ip of diff.addresses.remove) lines.push(bpftool.mapDeleteLine(pin("blixt_addrs"), hex(encodeAddressKey(ip))));
  return epochs.record(pin, lines);
}

/** Applies a diff in one `bpftool batch` run; returns the number of bpftool commands it took. */
export async function applyDiff(dp: Dataplane, diff: DataplaneDiff, snapshot: MapsSnapshot, tolerant = false, recheckAll = false): Promise<number> {
  const lines = applyLines((m) => dp.mapPin(m), diff, snapshot, tolerant, recheckAll);
  await bpftool.batch(lines, "applying DataplaneConfigs to the maps");
  return lines.length;
}
