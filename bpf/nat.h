// SPDX-License-Identifier: GPL-2.0-only
// Applying a verdict to the packet: address/port rewrite with incremental checksums, and the
// RST built in place. XDP writes through packet pointers; TC goes through skb helpers, which
// also keep the skb's checksum state (CHECKSUM_PARTIAL/COMPLETE) right.
#ifndef BLIXT_NAT_H
#define BLIXT_NAT_H

#include "common.h"
#include "parse.h"
#include "csum.h"
#include "lb.h"

#define NAT_DST 1 /* DNAT: rewrite destination (ingress) */
#define NAT_SRC 0 /* reverse NAT: rewrite source (egress) */

#define TCP_CHECK_OFF 16
#define UDP_CHECK_OFF 6

static __always_inline int nat_xdp(void *data, void *data_end, const struct verdict *v, int dst)
{
	struct iphdr *ip = data + L3_OFF;
	void *l4 = data + L4_OFF;
	__be32 *addr;
	__be16 *port;
	__u32 diff;

	if ((void *)(ip + 1) > data_end)
		return -1;
	addr = dst ? &ip->daddr : &ip->saddr;
	diff = csum_diff32(0, *addr, v->addr);
	ip->check = csum_apply(ip->check, diff);

	if (v->pkt.proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		port = dst ? &tcp->dest : &tcp->source;
		/* The pseudo-header carries the address, so it enters the L4 checksum too. */
		tcp->check = csum_apply(tcp->check, csum_diff16(diff, *port, v->port));
	} else {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return -1;
		port = dst ? &udp->dest : &udp->source;
		udp->check = csum_apply_udp(udp->check, csum_diff16(diff, *port, v->port));
	}
	*addr = v->addr;
	*port = v->port;
	return 0;
}

static __always_inline int nat_tc(struct __sk_buff *skb, const struct verdict *v, int dst)
{
	const struct pkt *p = &v->pkt;
	int tcp = p->proto == IPPROTO_TCP;
	__u32 addr_off = L3_OFF + (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__u32 port_off = L4_OFF + (dst ? 2 : 0);
	__u32 check_off = L4_OFF + (tcp ? TCP_CHECK_OFF : UDP_CHECK_OFF);
	__u64 l4flags = tcp ? 0 : BPF_F_MARK_MANGLED_0; /* UDP: keep 0, send a computed 0 as 0xffff */
	__be32 old_addr = dst ? p->daddr : p->saddr;
	__be16 old_port = dst ? p->dport : p->sport;

	if (bpf_l4_csum_replace(skb, check_off, old_addr, v->addr, l4flags | BPF_F_PSEUDO_HDR | 4))
		return -1;
	if (bpf_l4_csum_replace(skb, check_off, old_port, v->port, l4flags | 2))
		return -1;
	if (bpf_l3_csum_replace(skb, L3_OFF + offsetof(struct iphdr, check), old_addr, v->addr, 4))
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &v->addr, 4, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, port_off, &v->port, 2, 0))
		return -1;
	return 0;
}

/* A RST answering a bare SYN (RFC 9293 3.10.7.1, "CLOSED"): from the address and port the SYN
 * went to, seq 0, ack = SYN's seq + 1 + its payload, flags RST|ACK, no options, no payload. */
struct rst_frame {
	__u16 align;       /* puts the IP header on a 4-byte boundary without packing */
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;
};

#define RST_FRAME_LEN ((int)sizeof(struct rst_frame) - 2) /* 54 bytes on the wire */
#define RST_FRAME_START(f) ((void *)&(f)->eth)

struct pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

static __always_inline void rst_build(struct rst_frame *f, const struct verdict *v)
{
	const struct pkt *p = &v->pkt;
	struct pseudo_hdr ph;
	__u32 sum;

	__builtin_memset(f, 0, sizeof(*f));
	__builtin_memcpy(f->eth.h_dest, v->smac, ETH_ALEN);
	__builtin_memcpy(f->eth.h_source, v->dmac, ETH_ALEN);
	f->eth.h_proto = bpf_htons(ETH_P_IP);

	f->ip.version = 4;
	f->ip.ihl = 5;
	f->ip.tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct tcphdr));
	f->ip.frag_off = bpf_htons(0x4000); /* DF, as Linux sends its own RSTs */
	f->ip.ttl = 64;
	f->ip.protocol = IPPROTO_TCP;
	f->ip.saddr = p->daddr;
	f->ip.daddr = p->saddr;
	f->ip.check = ~csum_fold32(csum_words((__u16 *)&f->ip, sizeof(struct iphdr) / 2, 0));

	f->tcp.source = p->dport;
	f->tcp.dest = p->sport;
	f->tcp.seq = 0;
	f->tcp.ack_seq = bpf_htonl(bpf_ntohl(p->tcp_seq) + 1 + p->l4_payload +
				   ((p->tcp_flags & TCP_FLAG_FIN) ? 1 : 0));
	f->tcp.doff = 5;
	f->tcp.rst = 1;
	f->tcp.ack = 1;

	ph.saddr = f->ip.saddr;
	ph.daddr = f->ip.daddr;
	ph.zero = 0;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(struct tcphdr));
	sum = csum_words((__u16 *)&ph, sizeof(ph) / 2, 0);
	sum = csum_words((__u16 *)&f->tcp, sizeof(struct tcphdr) / 2, sum);
	f->tcp.check = ~csum_fold32(sum);
}

/* Turns the XDP frame into the RST; the caller returns XDP_TX. */
static __always_inline int rst_xdp(struct xdp_md *ctx, const struct verdict *v)
{
	struct rst_frame f;
	void *data, *data_end;
	int delta = RST_FRAME_LEN - (int)v->pkt.len;

	rst_build(&f, v);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + RST_FRAME_LEN > data_end)
		return -1;
	__builtin_memcpy(data, RST_FRAME_START(&f), RST_FRAME_LEN);
	return 0;
}

/* Turns the skb into the RST; the caller redirects it out of the device it came in on. */
static __always_inline int rst_tc(struct __sk_buff *skb, const struct verdict *v)
{
	struct rst_frame f;

	rst_build(&f, v);
	if (bpf_skb_change_tail(skb, RST_FRAME_LEN, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, 0, RST_FRAME_START(&f), RST_FRAME_LEN, 0))
		return -1;
	return 0;
}

#endif
