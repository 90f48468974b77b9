// SPDX-License-Identifier: Apache-2.0
// ICMP frames for packet tests (echo, and errors quoting another packet), and a from-scratch
// checker of every checksum in an Ethernet/IPv4 frame: the outer IPv4 header, TCP/UDP, ICMP,
// and inside an ICMP error the quoted IPv4 header.
import { checksum, ipBytes, ipString, l4Checksum, macBytes, onesSum } from "./packet.js";

export const ICMP_ECHOREPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_ECHO = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_FRAG_NEEDED = 4; // code of ICMP_DEST_UNREACH
export const ICMP_PORT_UNREACH = 3; // code of ICMP_DEST_UNREACH

export interface IcmpOptions {
  src: string;
  dst: string;
  type: number;
  code?: number;
  /** bytes 4..7 of the ICMP header (echo id/sequence, the next-hop MTU) */
  rest?: number;
  /** echo data, or the quoted packet of an error */
  payload?: Uint8Array;
  srcMac?: string;
  dstMac?: string;
  ttl?: number;
}

/** Ethernet + IPv4 (no options, DF) + ICMP, every checksum computed from scratch. */
export function icmpFrame(o: IcmpOptions): Uint8Array {
  const payload = o.payload ?? new Uint8Array(0);
  const out = new Uint8Array(14 + 20 + 8 + payload.length);
  const v = new DataView(out.buffer);
  out.set(macBytes(o.dstMac ?? "02:00:00:00:00:02"), 0);
  out.set(macBytes(o.srcMac ?? "02:00:00:00:00:01"), 6);
  v.setUint16(12, 0x0800);
  out[14] = 0x45;
  v.setUint16(16, 20 + 8 + payload.length);
  v.setUint16(18, 0x4321);
  v.setUint16(20, 0x4000);
  out[22] = o.ttl ?? 64;
  out[23] = 1;
  out.set(ipBytes(o.src), 26);
  out.set(ipBytes(o.dst), 30);
  v.setUint16(24, checksum(out.subarray(14, 34)));
  out[34] = o.type;
  out[35] = o.code ?? 0;
  v.setUint32(38, o.rest ?? 0);
  out.set(payload, 42);
  v.setUint16(36, checksum(out.subarray(34)));
  return out;
}

/** The IPv4 packet inside an Ethernet frame (for quoting it in an ICMP error), cut to `length` bytes. */
export const quoteOf = (frame: Uint8Array, length = frame.length - 14): Uint8Array =>
  frame.slice(14, 14 + length);

export interface Quote {
  src: string;
  dst: string;
  protocol: number;
  sport: number;
  dport: number;
  ipChecksumOk: boolean;
  /** the quoted TCP/UDP checksum field, when the quote reaches it */
  l4Checksum?: number;
}

export interface IcmpParsed {
  type: number;
  code: number;
  rest: number;
  checksumOk: boolean;
  data: Uint8Array;
  quote?: Quote;
}

/** Parses the ICMP message of an Ethernet/IPv4 frame without IP options. */
export function parseIcmp(frame: Uint8Array): IcmpParsed {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const total = v.getUint16(16);
  const msg = frame.subarray(34, 14 + total);
  const out: IcmpParsed = {
    type: msg[0],
    code: msg[1],
    rest: v.getUint32(38),
    checksumOk: onesSum(msg) === 0xffff,
    data: msg.subarray(8),
  };
  if (
    (out.type === ICMP_DEST_UNREACH || out.type === ICMP_TIME_EXCEEDED) &&
    out.data.length >= 28
  ) {
    const q = out.data;
    const qv = new DataView(q.buffer, q.byteOffset, q.byteLength);
    const protocol = q[9];
    const csumOff = protocol === 6 ? 20 + 16 : 20 + 6;
    out.quote = {
      src: ipString(q.subarray(12, 16)),
      dst: ipString(q.subarray(16, 20)),
      protocol,
      sport: qv.getUint16(20),
      dport: qv.getUint16(22),
      ipChecksumOk: onesSum(q.subarray(0, 20)) === 0xffff,
      l4Checksum: q.length >= csumOff + 2 ? qv.getUint16(csumOff) : undefined,
    };
  }
  return out;
}

/**
 * Every checksum of a frame, recomputed from its bytes: IPv4 header; TCP/UDP (pseudo-header
 * included; UDP 0 is "none"); ICMP over the whole message, and the quoted IPv4 header of an
 * error (a quoted L4 checksum covers bytes the quote may not hold: see quotedL4ChecksumOf).
 * Returns the names of the checksums that fail; [] when all verify. For a well-formed
 * Ethernet/IPv4 frame without options only.
 */
export function badChecksums(frame: Uint8Array): string[] {
  const bad: string[] = [];
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (onesSum(frame.subarray(14, 34)) !== 0xffff) bad.push("ipv4");
  const total = v.getUint16(16);
  const seg = frame.subarray(34, 14 + total);
  const src = frame.subarray(26, 30);
  const dst = frame.subarray(30, 34);
  const proto = frame[23];
  if (proto === 6 && seg.length >= 20 && l4Checksum(src, dst, 6, seg) !== v.getUint16(34 + 16))
    bad.push("tcp");
  if (proto === 17 && seg.length >= 8) {
    const c = v.getUint16(34 + 6);
    if (c !== 0 && l4Checksum(src, dst, 17, seg) !== c) bad.push("udp");
  }
  if (proto === 1) {
    const icmp = parseIcmp(frame);
    if (!icmp.checksumOk) bad.push("icmp");
    if (icmp.quote && !icmp.quote.ipChecksumOk) bad.push("quoted ipv4");
  }
  return bad;
}

/** The TCP/UDP checksum of a whole segment sent src → dst (what a quote's checksum field must hold). */
export const quotedL4ChecksumOf = (
  src: string,
  dst: string,
  proto: number,
  segment: Uint8Array,
): number => l4Checksum(ipBytes(src), ipBytes(dst), proto, segment);
