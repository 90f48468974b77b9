// SPDX-License-Identifier: Apache-2.0
/**
 * From the DataplaneConfig's full schema (api/dataplaneconfig.yaml), two files the product
 * uses: the chart's CRD, whose listener items carry no schema (the API server keeps them as
 * they come: walking their schema cost it half as much CPU again on each write of a table, and
 * twice as much on each node's acknowledgement), and the listener items' schema as a module,
 * which the controller and every node agent check each table against
 * (capabilities/dataplaneconfig-check.ts). hack/gen-types.sh runs it;
 * test/unit/dataplaneconfig-check.test.ts fails when a committed file is not what it writes.
 *
 *   node --import=tsx hack/gen-crd.ts
 */
import { readFileSync, writeFileSync } from "node:fs";
import { isMap, isScalar, parseDocument, type Document } from "yaml";

export const FULL_CRD = "api/dataplaneconfig.yaml";
export const CHART_CRD = "charts/blixt/crds/dataplaneconfig.yaml";
export const LISTENER_SCHEMA_MODULE = "capabilities/generated/dataplaneconfig-listener-schema.ts";

const LISTENERS = [
  "spec",
  "versions",
  0,
  "schema",
  "openAPIV3Schema",
  "properties",
  "spec",
  "properties",
  "listeners",
];

function listenerItems(doc: Document): unknown {
  const items = doc.getIn([...LISTENERS, "items"], true);
  if (!isMap(items)) throw new Error(`${FULL_CRD}: no schema at spec.listeners.items`);
  return items;
}

/** The chart's CRD: the full one, its listener items left without a schema. Pure. */
export function chartCrd(full: string): string {
  const doc = parseDocument(full);
  listenerItems(doc); // throws when the full schema has none to leave out
  // The full schema's header comment is about that file; this one says what this file is.
  if (doc.contents) doc.contents.commentBefore = null;
  const first = isMap(doc.contents) ? doc.contents.items[0]?.key : undefined;
  if (isScalar(first)) first.commentBefore = null;
  doc.commentBefore = [
    " SPDX-License-Identifier: Apache-2.0",
    " DataplaneConfig: the table the controller compiles for one Gateway and every node agent",
    " applies to its eBPF maps (docs/dataplaneconfig.md).",
    " Written by hack/gen-types.sh from api/dataplaneconfig.yaml, the DataplaneConfig's full",
    " schema, every field described: edit that file and run hack/gen-types.sh. Here the",
    " listeners' items carry no schema: the API server keeps them as they come, and the",
    " controller (spec's only writer: the admission webhook denies everyone else) and every node",
    " agent check them against the full schema instead (capabilities/dataplaneconfig-check.ts).",
    " With their schema the API server spent half as much CPU again on each write of a table,",
    ' and twice as much on each acknowledgement (bench/REPORT.md, "API requests").',
  ].join("\n");
  const items = doc.createNode({ type: "object", "x-kubernetes-preserve-unknown-fields": true });
  doc.setIn([...LISTENERS, "items"], items);
  const description = String(doc.getIn([...LISTENERS, "description"]));
  doc.setIn(
    [...LISTENERS, "description"],
    `${description}\nEach entry's fields: blixt's api/dataplaneconfig.yaml and docs/dataplaneconfig.md.`,
  );
  return doc.toString({ lineWidth: 0, flowCollectionPadding: false });
}

/**
 * Every object schema that names its properties refuses others (`additionalProperties: false`),
 * as the API server's strict field validation refuses a field its schema lacks. Pure.
 */
function closed(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(closed);
  if (typeof schema !== "object" || schema === null) return schema;
  const out = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, closed(v)]));
  if ("properties" in out && !("x-kubernetes-preserve-unknown-fields" in out))
    out.additionalProperties = false;
  return out;
}

/** The listener items' schema, as a TypeScript module, unknown fields refused. Pure. */
export function listenerSchemaModule(full: string): string {
  const doc = parseDocument(full);
  const items = (listenerItems(doc) as { toJSON(): unknown }).toJSON();
  const schema = JSON.stringify(closed(items), null, 2);
  return [
    "// SPDX-License-Identifier: Apache-2.0",
    "// Written by hack/gen-types.sh from api/dataplaneconfig.yaml: edit that file and run it.",
    "// The schema of one entry of a DataplaneConfig's spec.listeners, which the chart's CRD",
    "// leaves to blixt to check (capabilities/dataplaneconfig-check.ts).",
    `export const LISTENER_SCHEMA = ${schema} as const;`,
    "",
  ].join("\n");
}

function main(): void {
  const full = readFileSync(FULL_CRD, "utf8");
  writeFileSync(CHART_CRD, chartCrd(full));
  writeFileSync(LISTENER_SCHEMA_MODULE, listenerSchemaModule(full));
  process.stderr.write(
    `gen-crd: wrote ${CHART_CRD} and ${LISTENER_SCHEMA_MODULE} from ${FULL_CRD}\n`,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) main();
