// SPDX-License-Identifier: GPL-2.0-only
// Backends on another node, client address kept: IP-in-IP (protocol 4) with direct server return.
//
// The node a client's packet reaches (the receiving node) picks the backend as for a local one;
// when its pod runs on another node (BACKEND_F_REMOTE), the packet is not DNATed but sent whole
// inside an outer IPv4 header: source this node's address (blixt_node), destination the backend's
// IP (the route to the pod's network leads to its node), id the backend's port, DF set (so the id
// names no fragment, RFC 6864), TTL 64, the inner TOS. The backend's node strips the outer header,
// DNATs the inner packet to that backend:port (lb.h lb_ipip_inner) and reverse-NATs the replies, which go
// from there straight to the client with VIP:port as source.
//
// The receiving node sends the packet itself: given to the kernel's forwarding path with one of
// its own addresses as source, it would be dropped as a martian. bpf_fib_lookup on the backend's
// IP gives the device, MACs and MTU; XDP sends with XDP_TX (same device) or bpf_redirect, TC with
// bpf_redirect_neigh. When the next hop's MAC is not known yet (encap_no_neigh), TC's
// bpf_redirect_neigh resolves it and sends the packet once it is; XDP has no way to ask, so the
// encapsulated packet is passed to the kernel with the CLIENT's address as outer source (which is
// not one of this node's, so the kernel forwards it, resolving the neighbour on the way, and the
// backend's node does not look at the outer source); the flow's later packets find the neighbour
// and leave by XDP_TX with this node's address.
//
// MTU: the outer header costs 20 bytes. A packet whose encapsulated form exceeds the route's MTU is
// answered with ICMP fragmentation needed (next-hop MTU = MTU - 20), from VIP to the client, when
// DF is set, and dropped when it is not (drop_too_big): the outer header must keep DF, so nothing
// may fragment it. A TCP client whose SYN-ACK came through the backend's node rarely gets there:
// that node clamps the SYN-ACK's MSS to its uplink MTU - 60 (outer and inner IPv4, TCP;
// mss_clamp_tc).
#ifndef BLIXT_ENCAP_H
#define BLIXT_ENCAP_H

#include "common.h"
#include "parse.h"
#include "csum.h"
#include "lb.h"
#include "nat.h"
#include "icmp.h"

#ifndef AF_INET
#define AF_INET 2
#endif

#define IP_DF 0x4000
#define ICMP_FRAG_NEEDED 4
#define ICMP_TOS 0xc0 /* IPTOS_PREC_INTERNETCONTROL, as the kernel's own ICMP errors */

/* The outer IPv4 header in front of the client's packet (inner_len bytes from its IPv4 header on). */
static __always_inline void encap_outer(struct iphdr *o, const struct verdict *v, __be32 saddr, __u8 tos, __u16 inner_len)
{
	__builtin_memset(o, 0, sizeof(*o));
	o->version = 4;
	o->ihl = 5;
	o->tos = tos;
	o->tot_len = bpf_htons(inner_len + IPIP_HDR_LEN);
	o->id = v->port; /* the backend's port, as it travels */
	o->frag_off = bpf_htons(IP_DF);
	o->ttl = 64;
	o->protocol = IPPROTO_IPIP;
	o->saddr = saddr;
	o->daddr = v->addr;
	o->check = ~csum_fold32(csum_words((__u16 *)o, sizeof(*o) / 2, 0));
}

/* The route to the backend for an encapsulated packet of outer_len bytes, arriving on ifindex. */
static __always_inline int encap_fib(void *ctx, struct bpf_fib_lookup *fib, const struct verdict *v, __u8 tos, __u16 outer_len, __u32 ifindex)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = IPPROTO_IPIP;
	fib->tos = tos;
	fib->tot_len = outer_len;
	fib->ipv4_src = v->outer_saddr;
	fib->ipv4_dst = v->addr;
	fib->ifindex = ifindex;
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* ICMP destination unreachable / fragmentation needed (RFC 792, RFC 1191) about the client's
 * packet, from the address it was sent to: the quote is its IPv4 header and first 8 L4 bytes. */
struct frag_needed_frame {
	__u16 align; /* puts the IP header on a 4-byte boundary without packing */
	struct ethhdr eth;
	struct iphdr ip;
	struct icmphdr icmp;
	__u8 quote[sizeof(struct iphdr) + 8];
};

#define FRAG_NEEDED_LEN ((int)sizeof(struct frag_needed_frame) - 2) /* 70 bytes on the wire */
#define FRAG_NEEDED_START(f) ((void *)&(f)->eth)
#define FRAG_NEEDED_QUOTE_LEN ((int)sizeof(struct iphdr) + 8)
#define FRAG_NEEDED_IN_LEN (L3_OFF + FRAG_NEEDED_QUOTE_LEN) /* what is read of the client's frame */

/* Builds the error; `in` is the client's frame: its Ethernet header, IPv4 header and 8 bytes more. */
static __always_inline void frag_needed_build(struct frag_needed_frame *f, const struct verdict *v, const __u8 *in, __u16 mtu)
{
	const struct ethhdr *eth = (const void *)in;
	const struct pkt *p = &v->pkt;

	__builtin_memset(f, 0, sizeof(*f));
	__builtin_memcpy(f->eth.h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(f->eth.h_source, eth->h_dest, ETH_ALEN);
	f->eth.h_proto = bpf_htons(ETH_P_IP);
	f->ip.version = 4;
	f->ip.ihl = 5;
	f->ip.tos = ICMP_TOS;
	f->ip.tot_len = bpf_htons(FRAG_NEEDED_LEN - L2_LEN);
	f->ip.ttl = 64;
	f->ip.protocol = IPPROTO_ICMP;
	f->ip.saddr = p->daddr;
	f->ip.daddr = p->saddr;
	f->ip.check = ~csum_fold32(csum_words((__u16 *)&f->ip, sizeof(struct iphdr) / 2, 0));
	f->icmp.type = ICMP_DEST_UNREACH;
	f->icmp.code = ICMP_FRAG_NEEDED;
	f->icmp.rest = bpf_htonl(mtu); /* unused (16 bits), next-hop MTU (16 bits) */
	__builtin_memcpy(f->quote, in + L3_OFF, FRAG_NEEDED_QUOTE_LEN);
	f->icmp.checksum = ~csum_fold32(csum_words((__u16 *)&f->icmp, (ICMP_HDR_LEN + FRAG_NEEDED_QUOTE_LEN) / 2, 0));
}

/* The MTU the client must fit: the route's, less the outer header. */
static __always_inline __u16 encap_inner_mtu(const struct bpf_fib_lookup *fib)
{
	return fib->mtu_result > IPIP_HDR_LEN ? fib->mtu_result - IPIP_HDR_LEN : 0;
}

/* The client's packet is too big to encapsulate (encap_* returned ENCAP_TOO_BIG): turns the frame
 * into the ICMP error when DF is set (returns XDP_TX), else drops it. Not inlined, and called by
 * the program rather than by encap_*, so the two stacks never add up. */
static __noinline int too_big_xdp(struct xdp_md *ctx, struct verdict *v)
{
	struct frag_needed_frame f;
	__u8 in[FRAG_NEEDED_IN_LEN];
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + L3_OFF;

	if (data + FRAG_NEEDED_IN_LEN > data_end)
		goto drop;
	/* No DF, or a source no error may go to (RFC 1122 3.2.2: icmp_bad_source): dropped. */
	if (!(ip->frag_off & bpf_htons(IP_DF)) || icmp_bad_source(ip->saddr))
		goto drop;
	__builtin_memcpy(in, data, FRAG_NEEDED_IN_LEN);
	frag_needed_build(&f, v, in, v->frag_mtu);
	if (bpf_xdp_adjust_tail(ctx, FRAG_NEEDED_LEN - (int)(data_end - data)))
		goto drop;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + FRAG_NEEDED_LEN > data_end)
		goto drop;
	__builtin_memcpy(data, FRAG_NEEDED_START(&f), FRAG_NEEDED_LEN);
	v->reason = REASON_ICMP_FRAG_NEEDED;
	return XDP_TX;
drop:
	v->reason = REASON_DROP_TOO_BIG;
	return XDP_DROP;
}

static __noinline int too_big_tc(struct __sk_buff *skb, struct verdict *v)
{
	struct frag_needed_frame f;
	__u8 in[FRAG_NEEDED_IN_LEN];
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + L3_OFF;

	if (data + FRAG_NEEDED_IN_LEN > data_end)
		goto drop;
	/* No DF, or a source no error may go to (RFC 1122 3.2.2: icmp_bad_source): dropped. */
	if (!(ip->frag_off & bpf_htons(IP_DF)) || icmp_bad_source(ip->saddr))
		goto drop;
	__builtin_memcpy(in, data, FRAG_NEEDED_IN_LEN);
	frag_needed_build(&f, v, in, v->frag_mtu);
	if (bpf_skb_change_tail(skb, FRAG_NEEDED_LEN, 0))
		goto drop;
	if (bpf_skb_store_bytes(skb, 0, FRAG_NEEDED_START(&f), FRAG_NEEDED_LEN, 0))
		goto drop;
	v->reason = REASON_ICMP_FRAG_NEEDED;
	return bpf_redirect(skb->ifindex, 0);
drop:
	v->reason = REASON_DROP_TOO_BIG;
	return TC_ACT_SHOT;
}

/* What encap_* return, instead of a hook's action, for a packet too big to encapsulate. */
#define ENCAP_TOO_BIG (-1)

/* ACT_ENCAP from XDP: returns the XDP action (or ENCAP_TOO_BIG) and leaves the reason in v. */
static __noinline int encap_xdp(struct xdp_md *ctx, struct verdict *v)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + L3_OFF;
	struct bpf_fib_lookup fib;
	struct ethhdr eth;
	struct iphdr *outer;
	__be32 saddr = v->outer_saddr;
	__u16 inner_len;
	__u8 tos;
	int rc;

	if ((void *)(ip + 1) > data_end)
		goto drop;
	inner_len = bpf_ntohs(ip->tot_len);
	tos = ip->tos;
	__builtin_memcpy(&eth, data, sizeof(eth));
	rc = encap_fib(ctx, &fib, v, tos, inner_len + IPIP_HDR_LEN, ctx->ingress_ifindex);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		v->frag_mtu = encap_inner_mtu(&fib);
		return ENCAP_TOO_BIG;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* See the top of this file: the kernel forwards it, and learns the neighbour. */
		saddr = v->pkt.saddr;
		v->reason = REASON_ENCAP_NO_NEIGH;
	} else if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		v->reason = REASON_DROP_ENCAP_NO_ROUTE;
		return XDP_DROP;
	}
	if (bpf_xdp_adjust_head(ctx, -IPIP_HDR_LEN))
		goto drop;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	outer = data + L3_OFF;
	if ((void *)(outer + 1) > data_end)
		goto drop;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth.h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth.h_source, fib.smac, ETH_ALEN);
	}
	__builtin_memcpy(data, &eth, sizeof(eth));
	encap_outer(outer, v, saddr, tos, inner_len);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);
drop:
	v->reason = REASON_DROP_MALFORMED_L3;
	return XDP_DROP;
}

/* ACT_ENCAP from TC ingress: returns the TC action (or ENCAP_TOO_BIG) and leaves the reason in v. A GSO packet (a
 * client on a veth, or GRO) is checked segment by segment: bpf_skb_adjust_room takes the 20 bytes
 * off its segment size, so only its header is checked here. */
static __noinline int encap_tc(struct __sk_buff *skb, struct verdict *v)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + L3_OFF;
	struct bpf_redir_neigh nh = {};
	struct bpf_fib_lookup fib;
	struct iphdr outer;
	__u16 inner_len;
	__u8 tos;
	int rc;

	if ((void *)(ip + 1) > data_end)
		goto drop;
	inner_len = bpf_ntohs(ip->tot_len);
	tos = ip->tos;
	rc = encap_fib(skb, &fib, v, tos, skb->gso_size ? 0 : inner_len + IPIP_HDR_LEN, skb->ifindex);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		v->frag_mtu = encap_inner_mtu(&fib);
		return ENCAP_TOO_BIG;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		v->reason = REASON_ENCAP_NO_NEIGH;
	} else if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		v->reason = REASON_DROP_ENCAP_NO_ROUTE;
		return TC_ACT_SHOT;
	}
	encap_outer(&outer, v, v->outer_saddr, tos, inner_len);
	if (bpf_skb_adjust_room(skb, IPIP_HDR_LEN, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
		goto drop;
	if (bpf_skb_store_bytes(skb, L3_OFF, &outer, sizeof(outer), 0))
		goto drop;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		/* bpf_redirect_neigh writes the MACs itself; these make the frame whole meanwhile. */
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
			goto drop;
	}
	nh.nh_family = AF_INET;
	nh.ipv4_nh = fib.ipv4_dst; /* the gateway the route names, or the backend itself */
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
drop:
	v->reason = REASON_DROP_MALFORMED_L3;
	return TC_ACT_SHOT;
}

/* ACT_DECAP from XDP: strips the outer header (the Ethernet header moves up 20 bytes), then DNATs. */
static __always_inline int decap_xdp(struct xdp_md *ctx, const struct verdict *v)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth;

	if (data + INNER_L3_OFF > data_end)
		return -1;
	__builtin_memcpy(&eth, data, sizeof(eth));
	if (bpf_xdp_adjust_head(ctx, IPIP_HDR_LEN))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(eth) > data_end)
		return -1;
	__builtin_memcpy(data, &eth, sizeof(eth));
	return nat_xdp(data, data_end, v, NAT_DST);
}

static __always_inline int decap_tc(struct __sk_buff *skb, const struct verdict *v)
{
	if (bpf_skb_adjust_room(skb, -IPIP_HDR_LEN, BPF_ADJ_ROOM_MAC, 0))
		return -1;
	return nat_tc(skb, v, NAT_DST);
}

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCP_MAX_OPTIONS 40
#define MSS_SCAN_OPTIONS 4

/* What a segment adds to its MSS once encapsulated: outer IPv4 + IPv4 + TCP without options. */
#define MSS_OVERHEAD (IPIP_HDR_LEN + (int)sizeof(struct iphdr) + (int)sizeof(struct tcphdr))

/*
 * A backend's SYN-ACK (already reverse-NATed) to a client whose packets reach it encapsulated:
 * lowers its MSS option to the device MTU - 60, so no segment the client sends grows past the MTU
 * when the receiving node adds its 20 bytes. The TCP checksum is updated; a SYN-ACK without the
 * option, or with a smaller one, is left alone.
 */
static __always_inline void mss_clamp_tc(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct tcphdr *tcp;
	__u32 mtu = 0, optlen, off = 0, n, linear;
	__be16 old_mss, new_mss;
	__u8 *o = 0;
	__u16 max;

	if (bpf_check_mtu(skb, skb->ifindex, &mtu, 0, 0) < 0 || mtu <= MSS_OVERHEAD)
		return;
	max = mtu - MSS_OVERHEAD;
	/* The options follow the 54 bytes the program pulled. */
	linear = skb->data_end - skb->data;
	if (linear < L4_OFF + 60 && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < L4_OFF + 60 ? skb->len : L4_OFF + 60);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	tcp = data + L4_OFF;
	if ((void *)(tcp + 1) > data_end)
		return;
	optlen = tcp->doff * 4 - sizeof(*tcp);
	if (optlen < 4 || optlen > TCP_MAX_OPTIONS)
		return;
	/* The MSS option comes first in every common stack's SYN-ACK; a few options are looked through
	 * (unrolled: a loop over option lengths read from the packet is a path per length to the
	 * verifier). A SYN-ACK whose MSS sits later is left as it is. */
#pragma unroll
	for (n = 0; n < MSS_SCAN_OPTIONS; n++) {
		if (off + 4 > optlen)
			return;
		o = data + L4_OFF + sizeof(*tcp) + (off & 63);
		if ((void *)(o + 4) > data_end)
			return;
		if (o[0] == TCPOPT_EOL)
			return;
		if (o[0] == TCPOPT_MSS && o[1] == 4)
			break;
		if (o[0] == TCPOPT_NOP) {
			off++;
			continue;
		}
		if (o[1] < 2)
			return;
		off += o[1];
	}
	if (n == MSS_SCAN_OPTIONS || !o)
		return;
	__builtin_memcpy(&old_mss, o + 2, 2);
	if (bpf_ntohs(old_mss) <= max)
		return;
	new_mss = bpf_htons(max);
	if (bpf_l4_csum_replace(skb, L4_OFF + TCP_CHECK_OFF, old_mss, new_mss, 2))
		return;
	bpf_skb_store_bytes(skb, L4_OFF + sizeof(*tcp) + (off & 63) + 2, &new_mss, 2, 0);
}

#endif
