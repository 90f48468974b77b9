// SPDX-License-Identifier: GPL-2.0-only
// The ingress decision, shared by XDP and TC ingress: which service a packet is for, which
// backend takes it (conntrack first, then the 5-tuple hash into the service's Maglev table),
// or why it is passed, refused or rejected. Nothing here writes to the packet; the program
// applies the verdict with the primitives its hook allows (nat.h).
#ifndef BLIXT_LB_H
#define BLIXT_LB_H

#include "maps.h"
#include "addr.h"
#include "parse.h"
#include "conntrack.h"
#include "stats.h"

enum action {
	ACT_PASS = 0,
	ACT_DROP,
	ACT_DNAT, /* rewrite destination to verdict.addr:port, then pass to the kernel to route */
	ACT_RST,  /* answer a SYN with a RST from the address it was sent to */
	ACT_ARP_REPLY, /* answer an ARP request for an announced address (arp.h) */
	ACT_ICMP,      /* IPv4 ICMP: decided and rewritten by icmp.h */
	ACT_ICMP_ECHO, /* the frame is now an echo reply: send it back */
	ACT_ENCAP,     /* backend on another node: wrap in an outer IPv4 header to verdict.addr, send (encap.h) */
	ACT_DECAP,     /* IP-in-IP for a local backend: strip the outer header, then DNAT as ACT_DNAT */
};

struct verdict {
	int action;
	__u32 reason;
	__be32 addr;
	__be16 port;
	__be32 outer_saddr; /* ACT_ENCAP: this node's address (blixt_node) */
	int clamp_mss;      /* egress: a SYN-ACK of a flow that arrived encapsulated (encap.h) */
	int decap;          /* ingress: the packet is the inner one of an IP-in-IP packet (lb_ipip_inner) */
	__u16 frag_mtu;     /* ACT_ENCAP, too big: the next-hop MTU ICMP fragmentation needed names */
	int in_cluster;     /* ingress from a pod's interface (blixt_tc_pod_ingress): always DNAT, never encapsulate */
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
	struct pkt pkt;
};

static __always_inline __u32 rol32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

/* MurmurHash3's 32-bit block mix and finaliser over the 5-tuple: cheap, well distributed,
 * and the same on every node, so every node picks the same backend for a flow. */
static __always_inline __u32 hash_word(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = rol32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = rol32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 flow_hash(const struct pkt *p)
{
	__u32 h = 0x626c6978; /* "blix" */

	h = hash_word(h, p->saddr);
	h = hash_word(h, p->daddr);
	h = hash_word(h, ((__u32)p->sport << 16) | p->dport);
	h = hash_word(h, p->proto);
	h ^= 13;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Only a bare SYN gets a RST: answering every segment would turn the node into a RST
 * reflector for spoofed ACK floods, and a SYN is what a refused client waits on. */
static __always_inline int is_bare_syn(const struct pkt *p)
{
	return p->proto == IPPROTO_TCP &&
	       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN;
}

static __always_inline void refuse(struct verdict *v, __u32 rst_reason, __u32 drop_reason)
{
	if (is_bare_syn(&v->pkt)) {
		v->action = ACT_RST;
		v->reason = rst_reason;
	} else {
		v->action = ACT_DROP;
		v->reason = drop_reason;
	}
}

static __always_inline int is_gateway_address(__be32 daddr)
{
	struct addr_key key;

	addr_from_v4(key.addr, daddr);
	return bpf_map_lookup_elem(&blixt_addrs, &key) != NULL;
}

/* A packet blixt cannot parse is never rewritten: to a Gateway address it is dropped (it
 * would otherwise reach the host's sockets or be routed on); to anything else it is passed
 * untouched, since it is not blixt's to judge. */
static __always_inline void unparsed(struct verdict *v, __u32 drop_reason)
{
	if (is_gateway_address(v->pkt.daddr)) {
		v->action = ACT_DROP;
		v->reason = drop_reason;
	} else {
		v->action = ACT_PASS;
		v->reason = REASON_PASS_UNPARSED;
	}
}

/* The backend a new flow's hash lands on in the service's live table: slot = hash % M, then
 * the slot's chunk, then the backend list entry the slot names. NULL when the service has no
 * table, or a chunk or entry is missing (a table mid-removal or a bug upstream). */
static __always_inline struct backend *maglev_backend(const struct svc_value *svc, __u32 hash)
{
	struct table_key key;
	struct table_chunk *chunk;
	__u32 slot;

	if (!svc->table_size)
		return NULL;
	slot = hash % svc->table_size;
	key.table_id = svc->table_id;
	key.index = slot / BLIXT_CHUNK_SLOTS;
	chunk = bpf_map_lookup_elem(&blixt_mg_chunks, &key);
	if (!chunk)
		return NULL;
	key.index = chunk->backend[slot & (BLIXT_CHUNK_SLOTS - 1)];
	return bpf_map_lookup_elem(&blixt_mg_backs, &key);
}

static __always_inline void count_service(__u32 svc_id, const struct pkt *p)
{
	struct svc_stats *stats = svc_stats_of(svc_id);

	if (stats) {
		stats->packets += 1;
		stats->bytes += p->len;
	}
}

static __always_inline void dnat_to(struct verdict *v, __be32 addr, __be16 port)
{
	v->action = ACT_DNAT;
	v->reason = v->in_cluster ? REASON_DNAT_IN_CLUSTER : REASON_DNAT;
	v->addr = addr;
	v->port = port;
}

static __always_inline void drop_ipip(struct verdict *v)
{
	v->action = ACT_DROP;
	v->reason = REASON_DROP_IPIP;
}

/* This node's own IPv4 address, the outer source of encapsulated packets; 0 when the agent has not
 * written it. */
static __always_inline __be32 node_ipv4(void)
{
	__u32 zero = 0;
	struct node_config *n = bpf_map_lookup_elem(&blixt_node, &zero);

	return n ? n->ipv4 : 0;
}

/* Sends the flow to its backend: DNAT for a local one; for a remote one (CT_F_REMOTE), encapsulation
 * to its node, which needs this node's address. Returns 0 when that is unknown: the packet is then
 * dropped (drop_no_node_address) and the caller records nothing. A pod's packet (in_cluster) is
 * DNATed whatever node its backend runs on: the pod network routes pod to pod, and the kernel's
 * conntrack on this node sees the flow both ways. */
static __always_inline int forward_to(struct verdict *v, __be32 addr, __be16 port, int remote)
{
	__be32 self;

	if (!remote || v->in_cluster) {
		dnat_to(v, addr, port);
		return 1;
	}
	self = node_ipv4();
	if (!self) {
		v->action = ACT_DROP;
		v->reason = REASON_DROP_NO_NODE_ADDR;
		return 0;
	}
	v->action = ACT_ENCAP;
	v->reason = REASON_ENCAP;
	v->addr = addr;
	v->port = port;
	v->outer_saddr = self;
	return 1;
}

/* The fast path: a packet of a flow whose service has not changed since its entry was last
 * checked (the epochs match, maps.h) goes to the entry's backend. Returns 0 when the full path
 * must decide. */
static __always_inline int lb_established(struct verdict *v, struct ct4_value *ct, const struct ct4_key *key, int confirmed, __u64 now)
{
	if (ct->epoch != svc_epoch(ct->svc_id) || !ct->epoch)
		return 0;
	/* Encapsulated: the sender named the backend, and it must be the entry's. */
	if (v->decap && (ct->addr != v->addr || ct->port != v->port))
		return 0;
	ct_refresh(ct, key, confirmed, now);
	count_service(ct->svc_id, &v->pkt);
	if (v->decap) {
		v->action = ACT_DECAP;
		v->reason = REASON_DECAP;
		return 1;
	}
	forward_to(v, ct->addr, ct->port, ct->flags & CT_F_REMOTE);
	return 1;
}

/* The full path for a packet to a service: its conntrack entry (`ct`, NULL if none) is checked
 * against the service as it is now; a flow with no valid entry gets a backend from the Maglev
 * table, and lb_record then gives it new entries. The epoch is read before the checks, so a change
 * the agent makes meanwhile leaves the entry stale for the next packet rather than stamped as
 * checked. Sets the verdict; returns what lb_record needs when the flow must be recorded (the
 * service id in the high 32 bits, that epoch in the low ones), 0 when not. Not inlined (its stack
 * would add to every program's), and lb_record is its sibling, not its callee: the verifier
 * limits the stack of a chain of calls (lb_ingress calls lb_choose, lb_claim, lb_record). */
static __noinline __u64 lb_choose(struct verdict *v, const struct svc_value *svc, struct ct4_value *ct, const struct ct4_key *key, int confirmed)
{
	__u64 now = ct_now();
	struct pkt *p = &v->pkt;
	__u32 epoch = svc_epoch(svc->svc_id);
	__u64 record = ((__u64)svc->svc_id << 32) | epoch;
	struct svc_stats *stats;
	struct backend *be;
	__be32 baddr;
	__be16 bport;
	int remote;

	if (v->decap) {
		struct backend_key bkey = {};

		/* The backend the sending node chose must be one of this service's (of its live table). */
		bkey.table_id = svc->table_id;
		addr_from_v4(bkey.addr, v->addr);
		bkey.port = v->port;
		if (!bpf_map_lookup_elem(&blixt_backends, &bkey)) {
			drop_ipip(v);
			return 0;
		}
		count_service(svc->svc_id, p);
		v->action = ACT_DECAP;
		v->reason = REASON_DECAP;
		if (ct && ct->svc_id == svc->svc_id && ct->addr == v->addr && ct->port == v->port) {
			ct->epoch = epoch;
			ct_refresh(ct, key, confirmed, now);
			return 0;
		}
		return record;
	}
	count_service(svc->svc_id, p);
	if (ct && ct_forward_valid(ct, svc)) {
		ct->epoch = epoch;
		ct_refresh(ct, key, confirmed, now);
		forward_to(v, ct->addr, ct->port, ct->flags & CT_F_REMOTE);
		return 0;
	}

	stats = svc_stats_of(svc->svc_id);
	be = maglev_backend(svc, flow_hash(p));
	/* No backend means a table mid-removal or a bug upstream: reject rather than guess. */
	if (!be || (be->flags & BACKEND_F_REJECT)) {
		if (stats)
			stats->rejects += 1;
		refuse(v, REASON_REJECT_RST, REASON_REJECT_DROP);
		return 0;
	}
	baddr = addr_to_v4(be->addr);
	bport = be->port;
	remote = (be->flags & BACKEND_F_REMOTE) && !v->in_cluster;
	/* A remote backend with no address to send from: nothing is recorded, the client retries. */
	if (!forward_to(v, baddr, bport, remote)) {
		if (stats)
			stats->rejects += 1;
		return 0;
	}
	return record;
}

/* A local flow lb_choose sent to a backend claims its backend → client key before lb_record writes
 * it (conntrack.h). When an open TCP flow through another VIP:port holds it, the packet is dropped
 * (drop_ct_clash) and nothing is recorded; returns 0. A remote flow has no reverse entry here, and
 * a RST with no entry records nothing. Not inlined, and a sibling of lb_choose and lb_record, for
 * the same reason. */
static __noinline int lb_claim(struct verdict *v, struct ct4_value *ct, const struct ct4_key *key, int confirmed, __u32 svc_id)
{
	struct svc_stats *stats;
	struct ct4_key scratch;

	if (v->action == ACT_ENCAP || (!ct && (v->pkt.tcp_flags & TCP_FLAG_RST)) ||
	    ct_claim_reverse(ct ? confirmed : CT_TBL_NEW, key, v->addr, v->port, &scratch))
		return 1;
	v->action = ACT_DROP;
	v->reason = REASON_DROP_CT_CLASH;
	stats = v->decap ? NULL : svc_stats_of(svc_id);
	if (stats)
		stats->rejects += 1;
	return 0;
}

/*
 * The entries of a flow lb_choose sent to a backend (v->addr:port; `record` is what lb_choose
 * returned): a bare SYN or a UDP datagram, an unconfirmed flow (CT_NEW); a TCP segment without
 * SYN, forwarded where the table says (every node's table says the same), an unconfirmed flow
 * marked CT_F_PICKUP, so that its replies are reverse-NATed (CT_PICKUP); a RST, nothing. An entry
 * whose backend left is re-pointed in the table it is in, and the old backend's reverse entry is
 * removed. Not inlined, for the same reason as lb_choose.
 */
static __noinline void lb_record(struct verdict *v, struct ct4_value *ct, const struct ct4_key *key, int confirmed, __u64 record)
{
	__u32 svc_id = record >> 32;
	__u32 epoch = (__u32)record;
	struct pkt *p = &v->pkt;
	struct svc_stats *stats = v->decap ? NULL : svc_stats_of(svc_id);
	__u16 flags = v->decap ? CT_F_ENCAP : v->action == ACT_ENCAP ? CT_F_REMOTE : 0;
	__u64 now = ct_now();
	struct ct4_key old;

	if (stats)
		stats->new_flows += 1;
	if (ct) {
		/* The flow's backend left: the old reverse entry names a backend it no longer uses. */
		if (!(ct->flags & CT_F_REMOTE)) {
			ct_other_key(&old, key, ct);
			ct_delete(confirmed, &old);
		}
		flags |= ct->flags & (CT_F_PICKUP | CT_F_REPLIED);
		ct_create(confirmed, p, svc_id, epoch, v->addr, v->port, flags, now);
	} else if (p->proto == IPPROTO_UDP || is_bare_syn(p)) {
		ct_create(CT_TBL_NEW, p, svc_id, epoch, v->addr, v->port, flags, now);
		count_ct(CT_NEW);
	} else if (!(p->tcp_flags & TCP_FLAG_RST)) {
		ct_create(CT_TBL_NEW, p, svc_id, epoch, v->addr, v->port, flags | CT_F_PICKUP, now);
		count_ct(CT_PICKUP);
	}
}

/* Parse results other than PARSE_OK, for both ingress programs. */
static __always_inline void lb_parse_verdict(struct verdict *v, int parsed)
{
	switch (parsed) {
	case PARSE_NOT_IPV4:
		v->action = ACT_PASS;
		v->reason = REASON_PASS_NOT_IPV4;
		return;
	case PARSE_BAD_L2:
		/* Nothing valid is shorter than an Ethernet header; the stack would drop it too. */
		v->action = ACT_DROP;
		v->reason = REASON_DROP_MALFORMED_L2;
		return;
	case PARSE_BAD_L3:
		/* Exactly what ip_rcv would discard: dropping early changes nothing but the count. */
		v->action = ACT_DROP;
		v->reason = REASON_DROP_MALFORMED_L3;
		return;
	case PARSE_IP_OPTIONS:
		unparsed(v, REASON_DROP_IP_OPTIONS);
		return;
	case PARSE_FRAGMENT:
		unparsed(v, REASON_DROP_FRAGMENT);
		return;
	case PARSE_UNKNOWN_PROTO:
		if (v->pkt.proto == IPPROTO_ICMP) {
			v->action = ACT_ICMP; /* the program hands it to icmp.h, which decides */
			v->reason = REASON_DROP_UNKNOWN_PROTO;
			return;
		}
		unparsed(v, REASON_DROP_UNKNOWN_PROTO);
		return;
	default:
		unparsed(v, REASON_DROP_MALFORMED_L4);
		return;
	}
}

/*
 * IP-in-IP from the node that chose one of this node's backends for a flow (encap.h): the outer
 * destination is the backend, the outer IPv4 id its port, the inner packet the client's, unchanged
 * (client → VIP:port). The inner packet becomes v->pkt and goes through lb_ingress like any other,
 * with its backend already chosen (v->decap, v->addr:port): when it is TCP/UDP to a service this
 * node knows and that backend is listed in it, the verdict is ACT_DECAP (strip the outer header,
 * DNAT as ACT_DNAT) and the flow is recorded in both directions, flagged CT_F_ENCAP, so TC egress
 * gives the backend's replies VIP:port as source; they go straight to the client. The node that
 * sent it chose the backend: an entry naming another one is replaced. Returns 0 for an inner
 * packet that is not well-formed TCP/UDP (dropped, drop_ipip).
 */
static __always_inline int lb_ipip_inner(void *data, void *data_end, __u32 len, struct verdict *v)
{
	struct iphdr *outer = data + L3_OFF;
	struct pkt *p = &v->pkt;

	if ((void *)(outer + 1) > data_end)
		return 0;
	v->decap = 1;
	v->addr = outer->daddr;
	v->port = outer->id; /* the port as it travels, network order */
	__builtin_memset(p, 0, sizeof(*p));
	p->len = len - IPIP_HDR_LEN;
	if (parse_ipv4_at(data, data_end, len, p, INNER_L3_OFF) != PARSE_OK)
		return 0;
	return parse_l4_at(data, data_end, p, INNER_L4_OFF) == PARSE_OK;
}

static __always_inline void lb_ingress(void *data, void *data_end, __u32 len, struct verdict *v)
{
	struct pkt *p = &v->pkt;
	struct svc_key skey = {};
	struct svc_value *svc;
	struct ct4_key ckey;
	struct ct4_value *ct;
	int parsed, confirmed = CT_TBL_CONFIRMED;
	__u64 now;

	parsed = parse_packet(data, data_end, len, p);
	/* A pod's own IP-in-IP is not from a node that chose a backend: judged like any other protocol. */
	if (parsed == PARSE_UNKNOWN_PROTO && p->proto == IPPROTO_IPIP && !v->in_cluster) {
		if (!lb_ipip_inner(data, data_end, len, v)) {
			drop_ipip(v);
			return;
		}
	} else if (parsed != PARSE_OK) {
		lb_parse_verdict(v, parsed);
		return;
	}

	/* Conntrack first: most packets to a service belong to a flow it already has. */
	now = ct_now();
	ct_key_of(&ckey, p);
	ct = ct_find(&ckey, CT_F_FORWARD, now, &confirmed);
	if (ct && ct_closed(ct) && is_bare_syn(p)) {
		/* A new connection on the 5-tuple of a closed one: start afresh. */
		ct_remove_pair(confirmed, &ckey, ct);
		ct = NULL;
	}
	if (ct && v->decap && (ct->flags & CT_F_REMOTE)) {
		/* This node once sent the flow on itself; now it is the backend's node. */
		ct_remove_pair(confirmed, &ckey, ct);
		ct = NULL;
	}
	if (ct) {
		ct_track_tcp(p, ct, &ckey, confirmed, 1, now);
		/* The backend answered (or, remote, a second went by) and the client speaks again. */
		if (!confirmed && ct_confirms(p, ct, now)) {
			struct ct4_value *moved = ct_confirm(&ckey, ct, now);

			if (moved) {
				ct = moved;
				confirmed = CT_TBL_CONFIRMED;
			}
		}
		if (lb_established(v, ct, &ckey, confirmed, now))
			return;
	}

	__builtin_memcpy(v->dmac, ((struct ethhdr *)data)->h_dest, ETH_ALEN);
	__builtin_memcpy(v->smac, ((struct ethhdr *)data)->h_source, ETH_ALEN);

	addr_from_v4(skey.addr, p->daddr);
	skey.port = p->dport;
	skey.proto = p->proto;
	svc = bpf_map_lookup_elem(&blixt_services, &skey);
	if (svc) {
		__u64 record = lb_choose(v, svc, ct, &ckey, confirmed);

		if (record && lb_claim(v, ct, &ckey, confirmed, record >> 32))
			lb_record(v, ct, &ckey, confirmed, record);
		return;
	}
	if (v->decap) {
		drop_ipip(v);
		return;
	}
	if (is_gateway_address(p->daddr)) {
		refuse(v, REASON_REFUSED_RST, REASON_REFUSED_DROP);
		return;
	}
	v->action = ACT_PASS;
	v->reason = REASON_PASS_NO_SERVICE;
}

/* Egress: a reply from a backend to a client of a service gets the VIP:port back as source. The
 * first reply that is not a RST marks an unconfirmed flow CT_F_REPLIED (both entries), so the
 * client's next packet confirms it. */
static __always_inline void lb_egress(void *data, void *data_end, __u32 len, struct verdict *v)
{
	struct pkt *p = &v->pkt;
	struct ct4_key key, fkey;
	struct ct4_value *ct, *fwd;
	int confirmed = CT_TBL_CONFIRMED;
	int parsed;
	__u64 now;

	v->action = ACT_PASS;
	v->reason = REASON_PASS_NO_SERVICE;
	parsed = parse_packet(data, data_end, len, p);
	if (parsed == PARSE_UNKNOWN_PROTO && p->proto == IPPROTO_ICMP)
		v->action = ACT_ICMP; /* an error about a flow: icmp.h */
	if (parsed != PARSE_OK)
		return;
	now = ct_now();
	ct_key_of(&key, p);
	ct = ct_find(&key, CT_F_REVERSE, now, &confirmed);
	if (!ct)
		return;
	ct_track_tcp(p, ct, &key, confirmed, 0, now);
	if (!confirmed && !(ct->flags & CT_F_REPLIED) && !(p->tcp_flags & TCP_FLAG_RST)) {
		ct->flags |= CT_F_REPLIED;
		ct_other_key(&fkey, &key, ct);
		fwd = ct_lookup(CT_TBL_NEW, &fkey);
		if (fwd)
			fwd->flags |= CT_F_REPLIED;
	}
	ct_refresh(ct, &key, confirmed, now);
	/* The backend's SYN-ACK to a client whose packets reach it encapsulated: the client must not
	 * send segments that no longer fit once encapsulated. */
	v->clamp_mss = (ct->flags & CT_F_ENCAP) && p->proto == IPPROTO_TCP &&
		       (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK);
	v->action = ACT_DNAT; /* applied to the source by the caller */
	v->reason = REASON_REVERSE_NAT;
	v->addr = ct->addr;
	v->port = ct->port;
}

#endif
