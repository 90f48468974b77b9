// SPDX-License-Identifier: GPL-2.0-only
// Conntrack: both directions of a flow in one LRU hash (layout in maps.h). The forward entry
// keeps a flow on its backend; the reverse entry tells TC egress which VIP:port a reply must
// come from.
#ifndef BLIXT_CONNTRACK_H
#define BLIXT_CONNTRACK_H

#include "maps.h"
#include "addr.h"
#include "parse.h"

static __always_inline void ct_key_of(struct ct_key *key, const struct pkt *p)
{
	__builtin_memset(key, 0, sizeof(*key));
	addr_from_v4(key->saddr, p->saddr);
	addr_from_v4(key->daddr, p->daddr);
	key->sport = p->sport;
	key->dport = p->dport;
	key->proto = p->proto;
}

/* A forward entry still holds if its backend is still a weighted member of the service and,
 * for UDP, the flow has not been idle past the timeout. */
static __always_inline int ct_forward_valid(const struct ct_value *ct, __u32 svc_id, __u8 proto, __u64 now)
{
	struct backend_key bkey = {};
	struct backend_value *bval;

	if (!(ct->flags & CT_F_FORWARD) || ct->svc_id != svc_id)
		return 0;
	if (proto == IPPROTO_UDP && now - ct->last_seen_ns > BLIXT_UDP_IDLE_TIMEOUT_NS)
		return 0;
	bkey.svc_id = svc_id;
	__builtin_memcpy(bkey.addr, ct->addr, BLIXT_ADDR_LEN);
	bkey.port = ct->port;
	bval = bpf_map_lookup_elem(&blixt_backends, &bkey);
	return bval && bval->weight > 0;
}

/* Records a new flow client → VIP now going to backend, in both directions. */
static __always_inline void ct_create(const struct pkt *p, __u32 svc_id, const struct backend *be, __u64 now)
{
	struct ct_key key;
	struct ct_value val = {};

	ct_key_of(&key, p);
	__builtin_memcpy(val.addr, be->addr, BLIXT_ADDR_LEN);
	val.port = be->port;
	val.flags = CT_F_FORWARD;
	val.svc_id = svc_id;
	val.last_seen_ns = now;
	bpf_map_update_elem(&blixt_conntrack, &key, &val, BPF_ANY);

	/* Reverse: the reply travels backend:bport → client:cport and must leave as VIP:vport. */
	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.saddr, be->addr, BLIXT_ADDR_LEN);
	addr_from_v4(key.daddr, p->saddr);
	key.sport = be->port;
	key.dport = p->sport;
	key.proto = p->proto;
	addr_from_v4(val.addr, p->daddr);
	val.port = p->dport;
	val.flags = CT_F_REVERSE;
	bpf_map_update_elem(&blixt_conntrack, &key, &val, BPF_ANY);
}

#endif
