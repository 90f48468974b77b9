// SPDX-License-Identifier: Apache-2.0
// Gratuitous ARP: when this node takes a Gateway address over, it tells the segment at once
// ("address is-at my MAC") instead of waiting for neighbours' caches to expire. BPF programs
// only run when a packet arrives, so the announcement is sent from userspace: the frame is
// built here (pure) and written to the interface through a packet socket by socat. arping
// cannot do it: iputils' arping binds its source address first, which fails for an address
// no interface holds, and blixt never puts a Gateway address on an interface.
import { execa } from "execa";
import { isIPv4 } from "node:net";
import { netnsPrefix } from "./bpftool.js";
import { macBytesOf } from "./maps.js";

export interface GratuitousArpOptions {
  /** netns NAME under /var/run/netns the interface lives in */
  netns?: string;
  /** announcements to send, back to back; default 1 */
  count?: number;
  /** socat binary; default "socat" on PATH */
  socat?: string;
}

/** Linux interface names: 1..15 bytes, no blanks, "/" or ":" (dev_valid_name; ":" would split socat's address). */
const IFNAME_RE = /^[^\s/:,!]{1,15}$/;
/** Ethernet's minimum frame without the FCS: a 42-byte ARP frame is padded to it. */
const MIN_FRAME = 60;

/**
 * An ARP Announcement (RFC 5227 2.3) of `address` from `mac`: a broadcast request whose sender
 * and target protocol addresses are both the address, target hardware address zero. Linux
 * neighbours update an entry they hold for the address from it (arp_process, "is_garp").
 */
export function gratuitousArpFrame(mac: string, address: string): Uint8Array {
  if (!isIPv4(address))
    throw new Error(
      `gratuitous ARP from ${mac}: address "${address}" must be an IPv4 address literal`,
    );
  const hw = macBytesOf(mac);
  const ip = Uint8Array.from(address.split("."), Number);
  const frame = new Uint8Array(MIN_FRAME);
  const v = new DataView(frame.buffer);
  frame.fill(0xff, 0, 6); // Ethernet broadcast
  frame.set(hw, 6);
  v.setUint16(12, 0x0806); // ARP
  v.setUint16(14, 1); // htype Ethernet
  v.setUint16(16, 0x0800); // ptype IPv4
  frame[18] = 6;
  frame[19] = 4;
  v.setUint16(20, 1); // request
  frame.set(hw, 22); // sha
  frame.set(ip, 28); // spa
  frame.set(ip, 38); // tpa; tha (32..37) stays zero
  return frame;
}

/** socat's arguments that copy stdin, one write per frame, onto the interface as raw frames. */
export function socatArgs(iface: string): string[] {
  if (!IFNAME_RE.test(iface))
    throw new Error(
      `gratuitous ARP: interface "${iface}" is not a Linux interface name (1-15 characters, no blanks, "/", ":", "," or "!")`,
    );
  return ["-u", "STDIN", `INTERFACE:${iface}`];
}

/**
 * Addresses this node announces now that it did not before: the ones to send a gratuitous ARP
 * for. Both lists are sets of IPv4 literals; the answer is sorted.
 */
export function addressesTakenOver(before: Iterable<string>, after: Iterable<string>): string[] {
  const had = new Set(before);
  return [...new Set(after)].filter(a => !had.has(a)).sort();
}

/** Sends the announcement out of `iface`, whose MAC is `mac`; throws with socat's own complaint. */
export async function sendGratuitousArp(
  iface: string,
  mac: string,
  address: string,
  opts: GratuitousArpOptions = {},
): Promise<void> {
  const count = opts.count ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > 10)
    throw new Error(
      `gratuitous ARP for ${address} on ${iface}: count must be an integer in 1..10, got ${count}`,
    );
  const frame = gratuitousArpFrame(mac, address);
  const argv = [...netnsPrefix(opts.netns), opts.socat ?? "socat", ...socatArgs(iface)];
  for (let i = 0; i < count; i++) {
    // One frame per process: socat writes what one read returns, and a pipe write this small is one read.
    const r = await execa(argv[0], argv.slice(1), { reject: false, input: frame });
    if (r.exitCode === 0) continue;
    const missing =
      (r.cause as { code?: string } | undefined)?.code === "ENOENT" ||
      (/No such file or directory/.test(r.stderr) && /exec|socat/.test(r.stderr));
    const hint = missing ? "; install the Debian package socat" : "";
    throw new Error(
      `gratuitous ARP for ${address} on ${iface}: \`${argv.join(" ")}\` failed: ${r.stderr.trim() || r.shortMessage}${hint}`,
    );
  }
}
