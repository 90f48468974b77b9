// SPDX-License-Identifier: Apache-2.0
// The node agent's side of the pinned maps: read back what they hold (for the diff in
// plan.ts) and turn a diff into ONE `bpftool batch` run. The per-service write protocol
// (backends, new table in the spare slot, one switching write, old table removed) is the
// Dataplane's own, from dataplane.ts; this file only strings many services into one batch.
import * as bpftool from "./bpftool.js";
import { freeServiceId, serviceDeleteLines, serviceName, serviceTable, serviceUpdateLines, type Dataplane, type ServiceSpec, type ServiceState } from "./dataplane.js";
import { MAGLEV_MAX_SIZE } from "./maglev.js";
import {
  ADDR_F_ANNOUNCE,
  decodeAddressKey,
  decodeAddressValue,
  decodeBackendKey,
  decodeBackendValue,
  decodeMaglevSlot,
  decodeServiceKey,
  decodeServiceValue,
  encodeAddressKey,
  encodeAddressValue,
  encodeBackendKey,
  encodeMaglevKey,
  encodeMaglevSlot,
  fromBpftoolHex,
  hex,
  type BackendKey,
  type MapName,
} from "./maps.js";
import { sampleSlots, type ActualService, type ActualState, type DataplaneDiff } from "./plan.js";

export interface MapsSnapshot {
  actual: ActualState;
  /** by serviceName: what the Dataplane's line builders need to move a service on */
  states: Map<string, ServiceState>;
  /** backends of service ids no service entry uses (a crash mid-delete, or a hand edit) */
  orphanBackends: BackendKey[];
}

type Slot = { ip: string; port: number } | "reject" | undefined;

/** Reads a few slots of every live table, in one batch when all are there. */
async function readSamples(dp: Dataplane, services: { tableId: number; tableSize: number }[]): Promise<Map<number, Slot>[]> {
  const pin = dp.mapPin("blixt_maglev");
  const wanted = services.map((s) => sampleSlots(s.tableSize).map((slot) => ({ slot, key: hex(encodeMaglevKey({ tableId: s.tableId, slot })) })));
  const decode = (value: Uint8Array): Slot => {
    const s = decodeMaglevSlot(value);
    return s.reject ? "reject" : { ip: s.ip, port: s.port };
  };
  const lines = wanted.flat().map(({ key }) => ["map", "lookup", "pinned", pin, "key", "hex", ...key].join(" "));
  try {
    const outputs = (await bpftool.batch(lines, "reading Maglev table samples")) as { value: string[] }[];
    let i = 0;
    return wanted.map((samples) => new Map(samples.map(({ slot }) => [slot, decode(fromBpftoolHex(outputs[i++].value))] as const)));
  } catch {
    // bpftool stops a batch at the first missing key, so a damaged table is read slot by slot.
    return Promise.all(
      wanted.map(async (samples) => {
        const read = await Promise.all(samples.map(async ({ slot, key }) => [slot, await bpftool.mapLookup(pin, key)] as const));
        return new Map(read.map(([slot, entry]) => [slot, entry?.value ? decode(entry.value) : undefined] as const));
      }),
    );
  }
}

/** What the pinned maps hold now, read back (services, backends, addresses, table samples). */
export async function readMaps(dp: Dataplane): Promise<MapsSnapshot> {
  const [serviceEntries, backendEntries, addressEntries] = await Promise.all([
    bpftool.mapDump(dp.mapPin("blixt_services")),
    bpftool.mapDump(dp.mapPin("blixt_backends")),
    bpftool.mapDump(dp.mapPin("blixt_addrs")),
  ]);
  const backendsBySvc = new Map<number, BackendKey[]>();
  const weights = new Map<string, number>();
  for (const e of backendEntries) {
    const k = decodeBackendKey(e.key);
    backendsBySvc.set(k.svcId, [...(backendsBySvc.get(k.svcId) ?? []), k]);
    weights.set(`${k.svcId} ${k.ip}:${k.port}`, decodeBackendValue(e.value!).weight);
  }
  const services = serviceEntries.map((e) => ({ key: decodeServiceKey(e.key), value: decodeServiceValue(e.value!) }));
  // A table size the programs would never write (a hand edit) is not sampled: it is wrong already.
  const samples = await readSamples(
    dp,
    services.map((s) => ({ tableId: s.value.tableId, tableSize: s.value.tableSize <= MAGLEV_MAX_SIZE ? s.value.tableSize : 0 })),
  );

  const states = new Map<string, ServiceState>();
  const actual: ActualService[] = services.map(({ key, value }, i) => {
    const backends = (backendsBySvc.get(value.svcId) ?? [])
      .map((b) => ({ ip: b.ip, port: b.port, weight: weights.get(`${value.svcId} ${b.ip}:${b.port}`)! }))
      .sort((a, b) => (`${a.ip}:${a.port}` < `${b.ip}:${b.port}` ? -1 : 1));
    states.set(serviceName(key), { value, backends });
    return { ...key, ...value, backends, samples: samples[i] };
  });
  const live = new Set(services.map((s) => s.value.svcId));
  const orphanBackends = [...backendsBySvc.entries()].filter(([svcId]) => !live.has(svcId)).flatMap(([, keys]) => keys);
  const addresses = addressEntries.map((e) => ({ ip: decodeAddressKey(e.key), announce: (decodeAddressValue(e.value!).flags & ADDR_F_ANNOUNCE) !== 0 }));
  return { actual: { services: actual, addresses }, states, orphanBackends };
}

/**
 * Removal of a table that may be damaged: bpftool refuses to delete a missing key and stops the
 * batch there, so each slot is first written (with the replacement table's slot, which is what a
 * packet that still read the old table id should get anyway) and then deleted.
 */
function tolerantTableDeleteLines(pin: (m: MapName) => string, tableId: number, tableSize: number, replacement: ServiceSpec | undefined): string[] {
  const table = replacement ? serviceTable(replacement.backends, replacement.rejectWeight) : { tableSize: 0, slots: [] };
  const lines: string[] = [];
  for (let slot = 0; slot < Math.min(tableSize, MAGLEV_MAX_SIZE); slot++) {
    const s = table.slots[slot % Math.max(1, table.tableSize)];
    const value = s === undefined || s === "reject" ? encodeMaglevSlot({ reject: true }) : encodeMaglevSlot(s);
    const key = hex(encodeMaglevKey({ tableId, slot }));
    lines.push(bpftool.mapUpdateLine(pin("blixt_maglev"), key, hex(value)), bpftool.mapDeleteLine(pin("blixt_maglev"), key));
  }
  return lines;
}

/**
 * Every bpftool command that takes the maps from `snapshot` to what `diff` asks, in the order
 * that keeps traffic correct throughout: leftovers of unused ids first (so a reused id starts
 * clean), then removals, then services (each switched by one write), then addresses.
 * `tolerant` removes old tables slot-safely, for tables damaged behind the agent's back (and
 * for any retry, since a failed apply may have left one half-deleted).
 */
export function applyLines(pin: (m: MapName) => string, diff: DataplaneDiff, snapshot: MapsSnapshot, tolerant = false): string[] {
  const lines: string[] = [];
  for (const b of snapshot.orphanBackends) lines.push(bpftool.mapDeleteLine(pin("blixt_backends"), hex(encodeBackendKey(b))));

  for (const key of diff.remove) {
    const current = snapshot.states.get(serviceName(key));
    if (!current) continue;
    if (!tolerant) {
      lines.push(...serviceDeleteLines(pin, key, current));
      continue;
    }
    lines.push(...serviceDeleteLines(pin, key, { ...current, value: { ...current.value, tableSize: 0 } }));
    lines.push(...tolerantTableDeleteLines(pin, current.value.tableId, current.value.tableSize, undefined));
  }

  const used = [...snapshot.states.values()].map((s) => s.value.svcId);
  for (const spec of diff.set) {
    const name = serviceName(spec);
    const current = snapshot.states.get(name);
    const svcId = current?.value.svcId ?? freeServiceId(used);
    used.push(svcId);
    if (current && (tolerant || diff.reasons.get(name) === "table")) {
      lines.push(...serviceUpdateLines(pin, spec, svcId, { ...current, value: { ...current.value, tableSize: 0 } }));
      lines.push(...tolerantTableDeleteLines(pin, current.value.tableId, current.value.tableSize, spec));
    } else {
      lines.push(...serviceUpdateLines(pin, spec, svcId, current));
    }
  }

  for (const a of diff.addresses.upsert) {
    lines.push(bpftool.mapUpdateLine(pin("blixt_addrs"), hex(encodeAddressKey(a.ip)), hex(encodeAddressValue({ flags: a.announce ? ADDR_F_ANNOUNCE : 0 }))));
  }
  for (const ip of diff.addresses.remove) lines.push(bpftool.mapDeleteLine(pin("blixt_addrs"), hex(encodeAddressKey(ip))));
  return lines;
}

/** Applies a diff in one `bpftool batch` run; returns the number of bpftool commands it took. */
export async function applyDiff(dp: Dataplane, diff: DataplaneDiff, snapshot: MapsSnapshot, tolerant = false): Promise<number> {
  const lines = applyLines((m) => dp.mapPin(m), diff, snapshot, tolerant);
  await bpftool.batch(lines, "applying DataplaneConfigs to the maps");
  return lines.length;
}
