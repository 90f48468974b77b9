// SPDX-License-Identifier: Apache-2.0
// Gratuitous ARP: when this node takes a Gateway address over, it tells the segment at once
// ("address is-at my MAC") instead of waiting for neighbours' caches to expire. BPF programs
// only run on a packet that arrives, so the announcement is sent from userspace, with iputils'
// arping, which can announce an address no interface holds (-U: unsolicited, source = target).
import { execa } from "execa";
import { isIPv4 } from "node:net";
import { netnsPrefix } from "./bpftool.js";

export interface GratuitousArpOptions {
  /** netns NAME under /var/run/netns the interface lives in */
  netns?: string;
  /** announcements to send, one a second (arping's interval); default 1 */
  count?: number;
  /** arping binary (iputils-arping); default "arping" on PATH */
  arping?: string;
}

/** Linux interface names: 1..15 bytes, no "/" or blanks (IFNAMSIZ - 1, dev_valid_name). */
const IFNAME_RE = /^[^\s/:]{1,15}$/;

/**
 * arping's arguments for an ARP Announcement (RFC 5227 2.3: a request with sender and target
 * both the address) of `address` on `iface`. Throws naming the argument that is wrong.
 */
export function gratuitousArpArgs(iface: string, address: string, count = 1): string[] {
  if (!IFNAME_RE.test(iface)) throw new Error(`gratuitous ARP: interface "${iface}" is not a Linux interface name (1-15 characters, no blanks, "/" or ":")`);
  if (!isIPv4(address)) throw new Error(`gratuitous ARP on ${iface}: address "${address}" must be an IPv4 address literal`);
  if (!Number.isInteger(count) || count < 1 || count > 10) throw new Error(`gratuitous ARP for ${address} on ${iface}: count must be an integer in 1..10, got ${count}`);
  // -q: no per-packet lines in the agent's log; -U: unsolicited, source = target = address.
  return ["-q", "-U", "-c", String(count), "-I", iface, address];
}

/**
 * Addresses this node announces now that it did not before: the ones to send a gratuitous ARP
 * for. Both lists are sets of IPv4 literals; the answer is sorted.
 */
export function addressesTakenOver(before: Iterable<string>, after: Iterable<string>): string[] {
  const had = new Set(before);
  return [...new Set(after)].filter((a) => !had.has(a)).sort();
}

/** Sends the announcement; throws with arping's own complaint, or says to install it. */
export async function sendGratuitousArp(iface: string, address: string, opts: GratuitousArpOptions = {}): Promise<void> {
  const args = gratuitousArpArgs(iface, address, opts.count);
  const argv = [...netnsPrefix(opts.netns), opts.arping ?? "arping", ...args];
  const r = await execa(argv[0], argv.slice(1), { reject: false, stdin: "ignore" });
  if (r.exitCode === 0) return;
  const missing = (r as { code?: string }).code === "ENOENT" || /No such file|not found/i.test(r.stderr);
  const hint = missing ? "; install the Debian package iputils-arping" : "";
  throw new Error(`gratuitous ARP for ${address} on ${iface}: \`${argv.join(" ")}\` failed: ${r.stderr.trim() || r.shortMessage || `exit ${r.exitCode}`}${hint}`);
}
