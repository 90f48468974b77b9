// SPDX-License-Identifier: Apache-2.0
// Ethernet/IPv4/TCP/UDP frames for packet tests: builders that compute every checksum from
// scratch, a parser, and checksum verifiers independent of the dataplane's incremental math.
import { isIPv4 } from "node:net";

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;

export interface FrameOptions {
  srcMac?: string;
  dstMac?: string;
  /** EtherType; default IPv4 */
  ethType?: number;
  src: string;
  dst: string;
  ttl?: number;
  id?: number;
  /** IP flags+fragment offset word (host order), e.g. 0x2000 = MF, 0x4000 = DF */
  fragWord?: number;
  /** IP options (multiple of 4 bytes); makes IHL > 5 */
  ipOptions?: Uint8Array;
  /** override IHL (for malformed cases) */
  ihl?: number;
  /** override the IPv4 total length (for malformed cases) */
  totalLength?: number;
  /** override the IP protocol number */
  protocol?: number;
}

export interface TcpOptions extends FrameOptions {
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  flags?: number;
  window?: number;
  /** TCP options (multiple of 4 bytes) */
  tcpOptions?: Uint8Array;
  /** override data offset (for malformed cases) */
  doff?: number;
  payload?: Uint8Array;
}

export interface UdpOptions extends FrameOptions {
  sport: number;
  dport: number;
  payload?: Uint8Array;
  /** send checksum 0 ("none"), as RFC 768 allows */
  zeroChecksum?: boolean;
}

export function macBytes(mac: string): Uint8Array {
  const parts = mac.split(":");
  if (parts.length !== 6) throw new Error(`"${mac}" is not a MAC address`);
  return Uint8Array.from(parts, p => Number.parseInt(p, 16));
}

export const macString = (b: Uint8Array): string =>
  Array.from(b, x => x.toString(16).padStart(2, "0")).join(":");

export function ipBytes(ip: string): Uint8Array {
  if (!isIPv4(ip)) throw new Error(`"${ip}" is not an IPv4 address`);
  return Uint8Array.from(ip.split("."), Number);
}

export const ipString = (b: Uint8Array): string => Array.from(b).join(".");

/** RFC 1071 one's-complement sum of 16-bit big-endian words, folded. */
export function onesSum(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i < bytes.length; i += 2)
    sum += (bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export const checksum = (bytes: Uint8Array, initial = 0): number =>
  ~onesSum(bytes, initial) & 0xffff;

function pseudoHeaderSum(src: Uint8Array, dst: Uint8Array, proto: number, length: number): number {
  const ph = new Uint8Array(12);
  ph.set(src, 0);
  ph.set(dst, 4);
  ph[9] = proto;
  ph[10] = length >> 8;
  ph[11] = length & 0xff;
  return onesSum(ph);
}

/** The TCP/UDP checksum of a segment (its checksum field taken as zero), from scratch. */
export function l4Checksum(
  src: Uint8Array,
  dst: Uint8Array,
  proto: number,
  segment: Uint8Array,
): number {
  const copy = segment.slice();
  const off = proto === 6 ? 16 : 6;
  copy[off] = 0;
  copy[off + 1] = 0;
  const c = checksum(copy, pseudoHeaderSum(src, dst, proto, segment.length));
  return proto === 17 && c === 0 ? 0xffff : c;
}

function frame(o: FrameOptions, proto: number, l4: Uint8Array): Uint8Array {
  const options = o.ipOptions ?? new Uint8Array(0);
  if (options.length % 4) throw new Error("IP options must be a multiple of 4 bytes");
  const ipHeaderLen = 20 + options.length;
  const out = new Uint8Array(14 + ipHeaderLen + l4.length);
  const v = new DataView(out.buffer);
  out.set(macBytes(o.dstMac ?? "02:00:00:00:00:02"), 0);
  out.set(macBytes(o.srcMac ?? "02:00:00:00:00:01"), 6);
  v.setUint16(12, o.ethType ?? ETH_P_IP);
  const ip = 14;
  out[ip] = 0x40 | ((o.ihl ?? ipHeaderLen / 4) & 0x0f);
  v.setUint16(ip + 2, o.totalLength ?? ipHeaderLen + l4.length);
  v.setUint16(ip + 4, o.id ?? 0x1234);
  v.setUint16(ip + 6, o.fragWord ?? 0x4000);
  out[ip + 8] = o.ttl ?? 64;
  out[ip + 9] = o.protocol ?? proto;
  out.set(ipBytes(o.src), ip + 12);
  out.set(ipBytes(o.dst), ip + 16);
  out.set(options, ip + 20);
  v.setUint16(ip + 10, checksum(out.subarray(ip, ip + ipHeaderLen)));
  out.set(l4, ip + ipHeaderLen);
  return out;
}

export function tcpFrame(o: TcpOptions): Uint8Array {
  const options = o.tcpOptions ?? new Uint8Array(0);
  const payload = o.payload ?? new Uint8Array(0);
  const seg = new Uint8Array(20 + options.length + payload.length);
  const v = new DataView(seg.buffer);
  v.setUint16(0, o.sport);
  v.setUint16(2, o.dport);
  v.setUint32(4, o.seq ?? 1000);
  v.setUint32(8, o.ack ?? 0);
  seg[12] = (o.doff ?? (20 + options.length) / 4) << 4;
  seg[13] = o.flags ?? TCP_SYN;
  v.setUint16(14, o.window ?? 64240);
  seg.set(options, 20);
  seg.set(payload, 20 + options.length);
  v.setUint16(16, l4Checksum(ipBytes(o.src), ipBytes(o.dst), 6, seg));
  return frame(o, 6, seg);
}

export function udpFrame(o: UdpOptions): Uint8Array {
  const payload = o.payload ?? new Uint8Array(0);
  const seg = new Uint8Array(8 + payload.length);
  const v = new DataView(seg.buffer);
  v.setUint16(0, o.sport);
  v.setUint16(2, o.dport);
  v.setUint16(4, seg.length);
  seg.set(payload, 8);
  v.setUint16(6, o.zeroChecksum ? 0 : l4Checksum(ipBytes(o.src), ipBytes(o.dst), 17, seg));
  return frame(o, 17, seg);
}

export interface ParsedFrame {
  dstMac: string;
  srcMac: string;
  ethType: number;
  ip: {
    ihl: number;
    totalLength: number;
    id: number;
    fragWord: number;
    ttl: number;
    protocol: number;
    checksum: number;
    src: string;
    dst: string;
  };
  tcp?: {
    sport: number;
    dport: number;
    seq: number;
    ack: number;
    doff: number;
    flags: number;
    window: number;
    checksum: number;
    urgent: number;
  };
  udp?: { sport: number; dport: number; length: number; checksum: number };
  payload: Uint8Array;
  /** IPv4 header checksum verifies (recomputed from the bytes) */
  ipChecksumOk: boolean;
  /** L4 checksum verifies from scratch; for UDP, checksum 0 counts as "none" and is reported as true */
  l4ChecksumOk: boolean;
}

/** Parses a well-formed Ethernet/IPv4/TCP-or-UDP frame, verifying both checksums from scratch. */
export function parseFrame(b: Uint8Array): ParsedFrame {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const ihl = b[14] & 0x0f;
  const ipEnd = 14 + ihl * 4;
  const totalLength = v.getUint16(16);
  const src = b.subarray(26, 30);
  const dst = b.subarray(30, 34);
  const protocol = b[23];
  const segment = b.subarray(ipEnd, 14 + totalLength);
  const out: ParsedFrame = {
    dstMac: macString(b.subarray(0, 6)),
    srcMac: macString(b.subarray(6, 12)),
    ethType: v.getUint16(12),
    ip: {
      ihl,
      totalLength,
      id: v.getUint16(18),
      fragWord: v.getUint16(20),
      ttl: b[22],
      protocol,
      checksum: v.getUint16(24),
      src: ipString(src),
      dst: ipString(dst),
    },
    payload: new Uint8Array(0),
    ipChecksumOk: onesSum(b.subarray(14, ipEnd)) === 0xffff,
    l4ChecksumOk: false,
  };
  if (protocol === 6) {
    const doff = segment[12] >> 4;
    out.tcp = {
      sport: v.getUint16(ipEnd),
      dport: v.getUint16(ipEnd + 2),
      seq: v.getUint32(ipEnd + 4),
      ack: v.getUint32(ipEnd + 8),
      doff,
      flags: segment[13],
      window: v.getUint16(ipEnd + 14),
      checksum: v.getUint16(ipEnd + 16),
      urgent: v.getUint16(ipEnd + 18),
    };
    out.payload = segment.subarray(doff * 4);
    out.l4ChecksumOk = l4Checksum(src, dst, 6, segment) === out.tcp.checksum;
  } else if (protocol === 17) {
    out.udp = {
      sport: v.getUint16(ipEnd),
      dport: v.getUint16(ipEnd + 2),
      length: v.getUint16(ipEnd + 4),
      checksum: v.getUint16(ipEnd + 6),
    };
    out.payload = segment.subarray(8);
    out.l4ChecksumOk =
      out.udp.checksum === 0 || l4Checksum(src, dst, 17, segment) === out.udp.checksum;
  }
  return out;
}

/** A frame whose EtherType is not IPv4 (an ARP request, say), padded to the Ethernet minimum. */
export function nonIpFrame(ethType: number, length = 60): Uint8Array {
  const out = new Uint8Array(length);
  out.set(macBytes("ff:ff:ff:ff:ff:ff"), 0);
  out.set(macBytes("02:00:00:00:00:01"), 6);
  out[12] = ethType >> 8;
  out[13] = ethType & 0xff;
  return out;
}
