// SPDX-License-Identifier: GPL-2.0-only
// ARP (RFC 826) for the Gateway addresses this node announces: a request for one is answered in
// the kernel with the MAC of the device it came in on. The address is never added to a host
// interface, so the host's own sockets are never reachable through it, and only the node the
// agents picked answers (ADDR_F_ANNOUNCE), while its agent keeps the announce deadline ahead
// (blixt_announce: a dead agent's node falls silent). Only the non-IPv4 path runs any of this.
#ifndef BLIXT_ARP_H
#define BLIXT_ARP_H

#include "common.h"
#include "maps.h"
#include "lb.h"

#define ARP_HTYPE_ETHER 1
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2

/* The Ethernet/IPv4 form of an ARP packet; the addresses are byte arrays because spa sits at
 * offset 14, where a __be32 would make the compiler pad. */
struct arp_eth {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 oper;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
}; /* 28 bytes */

struct arp_frame {
	struct ethhdr eth;
	struct arp_eth arp;
}; /* 42 bytes: what the reply writes; a padded request keeps its padding */

#define ARP_FRAME_LEN ((int)sizeof(struct arp_frame))

static __always_inline void count_arp(__u32 counter)
{
	__u64 *n = bpf_map_lookup_elem(&blixt_arp_stats, &counter);

	if (n)
		*n += 1;
}

static __always_inline int mac_is_broadcast(const __u8 *mac)
{
	return (mac[0] & mac[1] & mac[2] & mac[3] & mac[4] & mac[5]) == 0xff;
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* The address is flagged ADDR_F_ANNOUNCE on this node. */
static __always_inline int is_flagged_announce(__be32 v4)
{
	struct addr_key key;
	struct addr_value *a;

	addr_from_v4(key.addr, v4);
	a = bpf_map_lookup_elem(&blixt_addrs, &key);
	return a && (a->flags & ADDR_F_ANNOUNCE);
}

/* The agent's announce deadline (maps.h struct announce_config) has not passed, or none is set. */
static __always_inline int announce_deadline_ok(void)
{
	__u32 key = 0;
	struct announce_config *c = bpf_map_lookup_elem(&blixt_announce, &key);

	return !c || !c->until_ns || bpf_ktime_get_ns() < c->until_ns;
}

/* Another node's gratuitous ARP for the address was heard since this node started announcing it. */
static __always_inline int is_yielded(__be32 v4)
{
	struct addr_key key;

	addr_from_v4(key.addr, v4);
	return bpf_map_lookup_elem(&blixt_yield, &key) != NULL;
}

/* This node answers for the address: flagged, its agent alive to say so, and not yielded. */
static __always_inline int is_announced(__be32 v4)
{
	return is_flagged_announce(v4) && announce_deadline_ok() && !is_yielded(v4);
}

/*
 * A gratuitous ARP (spa == tpa, request or reply) for an address this node announces, from
 * another MAC: another node took the address over (maps.h struct yield_value says when this
 * node steps down). Only where an agent keeps an announce deadline: without Leases the
 * controller alone moves addresses, and the agent follows it.
 */
static __always_inline void arp_heard_announcement(const struct arp_frame *f, __be32 addr, __u32 ifindex)
{
	__u32 zero = 0;
	struct announce_config *c;
	struct iface_value *iface;
	struct yield_value y = {};
	struct addr_key key;

	if (!is_flagged_announce(addr))
		return;
	c = bpf_map_lookup_elem(&blixt_announce, &zero);
	if (!c || !c->until_ns)
		return;
	iface = bpf_map_lookup_elem(&blixt_ifaces, &ifindex);
	if (!iface || mac_equal(f->arp.sha, iface->mac))
		return;
	addr_from_v4(key.addr, addr);
	y.at_ns = bpf_ktime_get_ns();
	__builtin_memcpy(y.mac, f->arp.sha, ETH_ALEN);
	bpf_map_update_elem(&blixt_yield, &key, &y, BPF_ANY);
	count_arp(ARP_OTHER_ANNOUNCED);
}

/*
 * Called for frames lb_ingress passed as not IPv4. Sets ACT_ARP_REPLY when the frame is an
 * Ethernet/IPv4 ARP request for an announced address, sent to this device (broadcast, or
 * unicast to its MAC, as a cache refresh is), and leaves in the verdict what the reply needs:
 * smac = the requester's hardware address, dmac = this device's MAC, pkt.saddr/daddr = the
 * requester's and the requested protocol address. Everything else stays a pass: replies,
 * gratuitous requests (spa == tpa: an announcement, not a question), other addresses.
 * An RFC 5227 probe (spa 0.0.0.0) is answered: it asks whether the address is in use, and it is.
 */
static __always_inline void arp_ingress(void *data, void *data_end, __u32 ifindex, struct verdict *v)
{
	struct arp_frame *f = data;
	struct iface_value *iface;
	__be32 spa, tpa;

	if ((void *)(f + 1) > data_end)
		return;
	if (f->eth.h_proto != bpf_htons(ETH_P_ARP) || f->arp.htype != bpf_htons(ARP_HTYPE_ETHER) ||
	    f->arp.ptype != bpf_htons(ETH_P_IP) || f->arp.hlen != ETH_ALEN || f->arp.plen != 4)
		return;
	if (f->arp.oper != bpf_htons(ARP_OP_REQUEST) && f->arp.oper != bpf_htons(ARP_OP_REPLY))
		return;
	/* A group address cannot be a requester or an announcer. */
	if (f->arp.sha[0] & 1)
		return;
	__builtin_memcpy(&spa, f->arp.spa, 4);
	__builtin_memcpy(&tpa, f->arp.tpa, 4);
	if (spa == tpa) {
		/* An announcement, not a question: passed on, and noted if it takes one of ours. */
		arp_heard_announcement(f, tpa, ifindex);
		return;
	}
	if (f->arp.oper != bpf_htons(ARP_OP_REQUEST) || !is_flagged_announce(tpa))
		return;
	if (!announce_deadline_ok()) {
		/* The agent stopped renewing the deadline: another node is taking the address over. */
		count_arp(ARP_DEADLINE_PASSED);
		return;
	}
	if (is_yielded(tpa)) {
		/* Another node announced the address since: it answers now. */
		count_arp(ARP_YIELDED);
		return;
	}

	iface = bpf_map_lookup_elem(&blixt_ifaces, &ifindex);
	if (!iface) {
		/* Attached without the loader's ifaces entry: the reply would need a MAC we do not know. */
		count_arp(ARP_NO_IFACE);
		return;
	}
	if (!mac_is_broadcast(f->eth.h_dest) && !mac_equal(f->eth.h_dest, iface->mac))
		return;

	v->action = ACT_ARP_REPLY;
	__builtin_memcpy(v->smac, f->arp.sha, ETH_ALEN);
	__builtin_memcpy(v->dmac, iface->mac, ETH_ALEN);
	v->pkt.saddr = spa;
	v->pkt.daddr = tpa;
}

/* The reply: to the requester's hardware address, from this device, "tpa is-at our MAC". */
static __always_inline void arp_reply_build(struct arp_frame *f, const struct verdict *v)
{
	__builtin_memcpy(f->eth.h_dest, v->smac, ETH_ALEN);
	__builtin_memcpy(f->eth.h_source, v->dmac, ETH_ALEN);
	f->eth.h_proto = bpf_htons(ETH_P_ARP);
	f->arp.htype = bpf_htons(ARP_HTYPE_ETHER);
	f->arp.ptype = bpf_htons(ETH_P_IP);
	f->arp.hlen = ETH_ALEN;
	f->arp.plen = 4;
	f->arp.oper = bpf_htons(ARP_OP_REPLY);
	__builtin_memcpy(f->arp.sha, v->dmac, ETH_ALEN);
	__builtin_memcpy(f->arp.spa, &v->pkt.daddr, 4);
	__builtin_memcpy(f->arp.tha, v->smac, ETH_ALEN);
	__builtin_memcpy(f->arp.tpa, &v->pkt.saddr, 4);
}

/* Rewrites the request into the reply in place; the caller returns XDP_TX. */
static __always_inline int arp_reply_xdp(void *data, void *data_end, const struct verdict *v)
{
	struct arp_frame f;

	if (data + ARP_FRAME_LEN > data_end)
		return -1;
	arp_reply_build(&f, v);
	__builtin_memcpy(data, &f, ARP_FRAME_LEN);
	return 0;
}

/* Rewrites the request into the reply; the caller redirects it out of the device it came in on. */
static __always_inline int arp_reply_tc(struct __sk_buff *skb, const struct verdict *v)
{
	struct arp_frame f;

	arp_reply_build(&f, v);
	return bpf_skb_store_bytes(skb, 0, &f, ARP_FRAME_LEN, 0) ? -1 : 0;
}

#endif
