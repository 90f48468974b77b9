// SPDX-License-Identifier: GPL-2.0-only
// ICMP: echo requests to an announced Gateway address are answered in the kernel, and ICMP errors
// about a flow blixt NATs are translated, so that path-MTU discovery ("fragmentation needed")
// and traceroute work through the VIP. Decision and rewrite in one place, through packet
// pointers: XDP writes its frame directly, and TC writes the skb's linear part directly (the
// programs pull TC_PULL_LEN_ICMP bytes first, tc_pull_headers). Every checksum a change covers is
// updated incrementally (RFC 1624), so every checksum that verified before still verifies.
//
// An error quotes the IPv4 header and at least 8 bytes of the packet it is about (RFC 792).
//  - Ingress, to a VIP: about a packet the VIP sent, i.e. a backend's reply that TC egress gave
//    VIP:port as source (a router on the way to the client, or the client itself, answers). The
//    forward entry client → VIP names the backend: the outer destination becomes the backend,
//    the quoted source backend:port, and the kernel routes it there as it routes the flow.
//  - Egress, to a client: about a packet the client sent to VIP:port that ingress DNATed to the
//    backend (a router on the way to the backend, or the backend's host, answers). The reverse
//    entry backend → client names the VIP: the quoted destination becomes VIP:port, and when
//    the backend itself sent the error, its outer source becomes the VIP too (as nf_nat does),
//    so the client sees the address it talked to.
#ifndef BLIXT_ICMP_H
#define BLIXT_ICMP_H

#include "common.h"
#include "parse.h"
#include "csum.h"
#include "conntrack.h"
#include "lb.h"
#include "arp.h"

/* <linux/icmp.h> drags in libc's socket headers, which a -target bpf build cannot use. */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11

struct icmphdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__be32 rest; /* echo: id and sequence; fragmentation needed: the next-hop MTU */
};

#define ICMP_HDR_LEN 8
#define ICMP_INNER_OFF (L4_OFF + ICMP_HDR_LEN)       /* 42: the quoted IPv4 header */
#define ICMP_INNER_L4_OFF (ICMP_INNER_OFF + 20)      /* 62: the quoted L4 header */
_Static_assert(ICMP_INNER_L4_OFF + 18 == TC_PULL_LEN_ICMP, "TC pulls what icmp.h reads");

static __always_inline int icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED;
}

/* A source no reply may go to: this network (0/8), multicast or reserved (224/3, incl. broadcast). */
static __always_inline int icmp_bad_source(__be32 saddr)
{
	__u8 first = ((__u8 *)&saddr)[0];

	return first == 0 || first >= 224;
}

/*
 * Changes the quoted packet's address (*addr) and port (*port) to to_addr:to_port, and every
 * checksum that covers them: the quoted IPv4 header's, the quoted L4 checksum when the quote
 * holds it (pseudo-header and port; UDP 0 stays 0), and the ICMP checksum over all of those.
 */
static __always_inline void icmp_rewrite_quote(struct icmphdr *icmp, struct iphdr *in, __be32 *addr, __be16 *port,
					       __be16 *l4check, int udp, __be32 to_addr, __be16 to_port)
{
	__u32 d_addr = csum_diff32(0, *addr, to_addr);
	__u32 d_l4 = csum_diff16(d_addr, *port, to_port);
	__u32 d_icmp = d_l4;
	__u16 old_ipc = in->check;
	__u16 new_ipc = csum_apply(old_ipc, d_addr);

	d_icmp = csum_diff16(d_icmp, old_ipc, new_ipc);
	if (l4check) {
		__u16 old = *l4check;
		__u16 new = udp ? csum_apply_udp(old, d_l4) : csum_apply(old, d_l4);

		d_icmp = csum_diff16(d_icmp, old, new);
		*l4check = new;
	}
	in->check = new_ipc;
	*addr = to_addr;
	*port = to_port;
	icmp->checksum = csum_apply(icmp->checksum, d_icmp);
}

/* Sets the outer IPv4 address *addr to `to`, with the header checksum. */
static __always_inline void icmp_rewrite_outer(struct iphdr *ip, __be32 *addr, __be32 to)
{
	ip->check = csum_apply(ip->check, csum_diff32(0, *addr, to));
	*addr = to;
}

/* The quoted IPv4 header of an ICMP error of icmp_len bytes (from the IPv4 total length: what
 * follows in the frame is padding, which no checksum covers), checked: IPv4 without options, TCP
 * or UDP, not a later fragment (which quotes no ports), 8 bytes of L4 present. NULL otherwise. */
static __always_inline struct iphdr *icmp_quoted_ip(void *data, void *data_end, __u32 icmp_len)
{
	struct iphdr *in = data + ICMP_INNER_OFF;

	if (data + ICMP_INNER_L4_OFF + 8 > data_end || icmp_len < ICMP_HDR_LEN + 20 + 8)
		return NULL;
	if (in->version != 4 || in->ihl != 5 || (in->frag_off & bpf_htons(IP_OFFSET)))
		return NULL;
	if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
		return NULL;
	return in;
}

/* The quoted L4 checksum, if the quote (icmp_len bytes of ICMP) reaches it: UDP's is in the
 * first 8 bytes, TCP's at 16. */
static __always_inline __be16 *icmp_quoted_check(void *data, void *data_end, __u32 icmp_len, int udp)
{
	__be16 *ports = data + ICMP_INNER_L4_OFF;

	if (udp)
		return data + ICMP_INNER_L4_OFF + 8 <= data_end ? &ports[3] : NULL;
	if (icmp_len < ICMP_HDR_LEN + 20 + 18)
		return NULL;
	return data + ICMP_INNER_L4_OFF + 18 <= data_end ? &ports[8] : NULL;
}

/* Turns an echo request into its reply in place: MACs and addresses swapped, TTL 64, type 0. */
static __always_inline void icmp_echo_reply(struct ethhdr *eth, struct iphdr *ip, struct icmphdr *icmp)
{
	__u8 mac[ETH_ALEN];
	__be32 a = ip->saddr;
	__u16 old;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	ip->saddr = ip->daddr; /* a swap leaves the header's sum as it was */
	ip->daddr = a;
	old = *(__u16 *)&ip->ttl;
	ip->ttl = 64;
	ip->check = csum_apply(ip->check, csum_diff16(0, old, *(__u16 *)&ip->ttl));
	old = *(__u16 *)icmp;
	icmp->type = ICMP_ECHOREPLY;
	icmp->checksum = csum_apply(icmp->checksum, csum_diff16(0, old, *(__u16 *)icmp));
}

/*
 * Ingress ICMP (lb_ingress set ACT_ICMP: an IPv4 ICMP packet without options, not a fragment).
 * Echo request to an announced Gateway address: answered (ACT_ICMP_ECHO, the caller sends the
 * frame back). Error about a flow's reply: translated for the backend and passed. Anything else
 * is what any other protocol gets: dropped to a Gateway address, passed untouched otherwise.
 */
static __always_inline void icmp_ingress(void *data, void *data_end, struct verdict *v)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + L3_OFF;
	struct icmphdr *icmp = data + L4_OFF;
	struct iphdr *in;
	__be16 *ports;
	struct ct4_key key;
	struct ct4_value *ct;
	int confirmed;

	if ((void *)(icmp + 1) > data_end || v->pkt.l4_payload < ICMP_HDR_LEN) {
		unparsed(v, REASON_DROP_MALFORMED_L4);
		return;
	}
	if (icmp->type == ICMP_ECHO && icmp->code == 0 && !icmp_bad_source(ip->saddr) && is_announced(ip->daddr)) {
		icmp_echo_reply(eth, ip, icmp);
		v->action = ACT_ICMP_ECHO;
		v->reason = REASON_ICMP_ECHO_REPLY;
		return;
	}
	if (!icmp_is_error(icmp->type))
		goto other;
	in = icmp_quoted_ip(data, data_end, v->pkt.l4_payload);
	if (!in || in->saddr != ip->daddr)
		goto other;
	ports = data + ICMP_INNER_L4_OFF;
	if ((void *)(ports + 2) > data_end)
		goto other;
	/* The quoted packet went VIP:vport → client:cport; its flow's forward entry is the reverse. */
	__builtin_memset(&key, 0, sizeof(key));
	key.saddr = in->daddr;
	key.daddr = in->saddr;
	key.sport = ports[1];
	key.dport = ports[0];
	key.proto = in->protocol;
	ct = ct_find(&key, CT_F_FORWARD, ct_now(), &confirmed);
	if (!ct)
		goto other;
	icmp_rewrite_outer(ip, &ip->daddr, ct->addr);
	icmp_rewrite_quote(icmp, in, &in->saddr, &ports[0], icmp_quoted_check(data, data_end, v->pkt.l4_payload, in->protocol == IPPROTO_UDP),
			   in->protocol == IPPROTO_UDP, ct->addr, ct->port);
	v->action = ACT_PASS;
	v->reason = REASON_ICMP_ERROR_NAT;
	return;
other:
	unparsed(v, REASON_DROP_UNKNOWN_PROTO);
}

/*
 * Egress ICMP: an error to a client about a packet it sent to a VIP, which reached the backend
 * DNATed, gets the VIP:port back in its quote (and as outer source, if the backend sent it).
 * Returns 1 when the packet was rewritten.
 */
static __always_inline int icmp_egress(void *data, void *data_end, const struct pkt *p)
{
	struct iphdr *ip = data + L3_OFF;
	struct icmphdr *icmp = data + L4_OFF;
	struct iphdr *in;
	__be16 *ports;
	struct ct4_key key;
	struct ct4_value *ct;
	int confirmed;

	if ((void *)(icmp + 1) > data_end || !icmp_is_error(icmp->type))
		return 0;
	in = icmp_quoted_ip(data, data_end, p->l4_payload);
	if (!in || in->saddr != ip->daddr)
		return 0;
	ports = data + ICMP_INNER_L4_OFF;
	if ((void *)(ports + 2) > data_end)
		return 0;
	/* The quoted packet went client:cport → backend:bport: the reverse entry is its mirror. */
	__builtin_memset(&key, 0, sizeof(key));
	key.saddr = in->daddr;
	key.daddr = in->saddr;
	key.sport = ports[1];
	key.dport = ports[0];
	key.proto = in->protocol;
	ct = ct_find(&key, CT_F_REVERSE, ct_now(), &confirmed);
	if (!ct)
		return 0;
	if (ip->saddr == in->daddr)
		icmp_rewrite_outer(ip, &ip->saddr, ct->addr);
	icmp_rewrite_quote(icmp, in, &in->daddr, &ports[1], icmp_quoted_check(data, data_end, p->l4_payload, in->protocol == IPPROTO_UDP),
			   in->protocol == IPPROTO_UDP, ct->addr, ct->port);
	return 1;
}

#endif
