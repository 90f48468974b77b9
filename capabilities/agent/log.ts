// SPDX-License-Identifier: Apache-2.0
// What the node agent logs through: Pepr's logger on a node (index.ts), a recorder in tests.
// A file of its own, so the TLS listeners and the loop both use it without importing each other.

export interface AgentLog {
  info(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}
