// SPDX-License-Identifier: GPL-2.0-only
// Conntrack: both directions of a flow in one LRU hash (layout in maps.h). The forward entry
// keeps a flow on its backend; the reverse entry tells TC egress which VIP:port a reply must
// come from.
#ifndef BLIXT_CONNTRACK_H
#define BLIXT_CONNTRACK_H

#include "maps.h"
#include "addr.h"
#include "parse.h"

/* Refresh a UDP entry's last_seen_ns at most this often: a write per packet would bounce the
 * entry's cache line between CPUs for a timeout measured in tens of seconds. */
#define BLIXT_CT_REFRESH_NS (1000ULL * 1000 * 1000)

/* The conntrack clock. Coarse (the last tick, a few ms behind): it is read without touching the
 * clock source, which on a VM costs as much as a map lookup; timeouts are tens of seconds. */
static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline void ct_key_of(struct ct4_key *key, const struct pkt *p)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->saddr = p->saddr;
	key->daddr = p->daddr;
	key->sport = p->sport;
	key->dport = p->dport;
	key->proto = p->proto;
}

/* The epoch a service's forward entries must carry to skip the full check (maps.h). 0 when the
 * id is out of range, which no entry that passed the check carries after the agent's first write. */
static __always_inline __u32 svc_epoch(__u32 svc_id)
{
	__u32 *epoch = bpf_map_lookup_elem(&blixt_svc_epoch, &svc_id);

	return epoch ? *epoch : 0;
}

/* A UDP flow idle past the timeout picks its backend afresh. The clock is read only for UDP. */
static __always_inline int ct_udp_idle(const struct ct4_value *ct, __u64 now)
{
	return now > ct->last_seen_ns && now - ct->last_seen_ns > BLIXT_UDP_IDLE_TIMEOUT_NS;
}

static __always_inline void ct_touch(struct ct4_value *ct, __u64 now)
{
	if (now > ct->last_seen_ns + BLIXT_CT_REFRESH_NS)
		ct->last_seen_ns = now;
}

/* The full check of a forward entry: its backend is still a weighted member of the service and,
 * for UDP, the flow has not been idle past the timeout. */
static __always_inline int ct_forward_valid(const struct ct4_value *ct, __u32 svc_id, __u8 proto, __u64 now)
{
	struct backend_key bkey = {};
	struct backend_value *bval;

	if (!(ct->flags & CT_F_FORWARD) || ct->svc_id != svc_id)
		return 0;
	if (proto == IPPROTO_UDP && ct_udp_idle(ct, now))
		return 0;
	bkey.svc_id = svc_id;
	addr_from_v4(bkey.addr, ct->addr);
	bkey.port = ct->port;
	bval = bpf_map_lookup_elem(&blixt_backends, &bkey);
	return bval && bval->weight > 0;
}

/* Records a new flow client → VIP now going to backend, in both directions. */
static __always_inline void ct_create(const struct pkt *p, __u32 svc_id, __u32 epoch, const struct backend *be, __u64 now)
{
	struct ct4_key key;
	struct ct4_value val = {};

	ct_key_of(&key, p);
	val.addr = addr_to_v4(be->addr);
	val.port = be->port;
	val.flags = CT_F_FORWARD;
	val.svc_id = svc_id;
	val.epoch = epoch;
	val.last_seen_ns = now;
	bpf_map_update_elem(&blixt_ct4, &key, &val, BPF_ANY);

	/* Reverse: the reply travels backend:bport → client:cport and must leave as VIP:vport. */
	__builtin_memset(&key, 0, sizeof(key));
	key.saddr = addr_to_v4(be->addr);
	key.daddr = p->saddr;
	key.sport = be->port;
	key.dport = p->sport;
	key.proto = p->proto;
	val.addr = p->daddr;
	val.port = p->dport;
	val.flags = CT_F_REVERSE;
	val.epoch = 0;
	bpf_map_update_elem(&blixt_ct4, &key, &val, BPF_ANY);
}

#endif
