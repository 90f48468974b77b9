// SPDX-License-Identifier: GPL-2.0-only
// Conntrack: both directions of a flow, in one of two LRU hashes of the same layout (maps.h).
// The forward entry keeps a flow on its backend; the reverse entry tells TC egress which VIP:port
// a reply must come from.
//
// A flow starts unconfirmed, in blixt_ct4_new: created by a bare SYN, a UDP datagram, or a
// mid-flow TCP packet no entry knows (a pickup: the flow began on another node, or its entries
// expired; Maglev sends it to the same backend as every node would, and the entries let its
// replies be reverse-NATed). It moves to blixt_ct4 once the backend has answered (egress sets
// CT_F_REPLIED) and the client then sends a packet that is neither a SYN nor a RST. So a flood of
// SYNs, spoofed ACKs or one-off datagrams churns the unconfirmed table only: a full table makes
// new flows wait their turn, and never evicts a confirmed one.
//
// A remote flow (CT_F_REMOTE: its backend runs on another node, encap.h) has a forward entry
// only: its replies leave the backend's node straight to the client and never pass here, so there
// is nothing to reverse-NAT and no reply to wait for. It is confirmed by the client alone: a packet
// that is neither a SYN nor a RST, arriving more than a second (BLIXT_CT_REFRESH_NS) after the
// entry was created or last refreshed, i.e. the client is still talking a second after the flow
// began. It closes on a RST or on the client's FIN (the backend's FIN is never seen here). The
// backend's node tracks the same flow with both entries (CT_F_ENCAP), confirmed by the backend's
// replies as a local flow is.
#ifndef BLIXT_CONNTRACK_H
#define BLIXT_CONNTRACK_H

#include "maps.h"
#include "addr.h"
#include "parse.h"

/* An entry's last_seen_ns is refreshed at most this often: a write per packet would bounce the
 * entry's cache line between CPUs for timeouts measured in seconds. The same refresh checks the
 * flow's other direction and recreates it when it is gone. */
#define BLIXT_CT_REFRESH_NS (1000ULL * 1000 * 1000)
#define BLIXT_NS_PER_S (1000ULL * 1000 * 1000)

#define CT_TBL_NEW 0
#define CT_TBL_CONFIRMED 1

/* The conntrack clock. Coarse (the last tick, a few ms behind): it is read without touching the
 * clock source, which on a VM costs as much as a map lookup; timeouts are seconds. */
static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline void count_ct(__u32 counter)
{
	__u64 *n = bpf_map_lookup_elem(&blixt_ct_stats, &counter);

	if (n)
		*n += 1;
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

/* The key of the other direction of the flow an entry belongs to. A forward entry (client → VIP,
 * value = backend) gives backend → client; a reverse entry (backend → client, value = VIP)
 * gives client → VIP. */
static __always_inline void ct_other_key(struct ct4_key *out, const struct ct4_key *key, const struct ct4_value *ct)
{
	__builtin_memset(out, 0, sizeof(*out));
	if (ct->flags & CT_F_FORWARD) {
		out->saddr = ct->addr;
		out->daddr = key->saddr;
		out->sport = ct->port;
		out->dport = key->sport;
	} else {
		out->saddr = key->daddr;
		out->daddr = ct->addr;
		out->sport = key->dport;
		out->dport = ct->port;
	}
	out->proto = key->proto;
}

/* The value of the other direction: a forward entry's key was sent to the VIP, which its reverse
 * entry holds; a reverse entry's key was sent from the backend, which its forward entry holds. */
static __always_inline void ct_other_value(struct ct4_value *out, const struct ct4_key *key, const struct ct4_value *ct)
{
	__builtin_memset(out, 0, sizeof(*out));
	if (ct->flags & CT_F_FORWARD) {
		out->addr = key->daddr;
		out->port = key->dport;
	} else {
		out->addr = key->saddr;
		out->port = key->sport;
	}
	out->flags = (ct->flags & ~(CT_F_FORWARD | CT_F_REVERSE)) | ((ct->flags & CT_F_FORWARD) ? CT_F_REVERSE : CT_F_FORWARD);
	out->svc_id = ct->svc_id;
	out->epoch = 0; /* a recreated forward entry takes the full check once */
	out->last_seen_ns = ct->last_seen_ns;
}

static __always_inline struct ct4_value *ct_lookup(int confirmed, const struct ct4_key *key)
{
	if (confirmed)
		return bpf_map_lookup_elem(&blixt_ct4, key);
	return bpf_map_lookup_elem(&blixt_ct4_new, key);
}

static __always_inline int ct_update(int confirmed, const struct ct4_key *key, const struct ct4_value *val)
{
	if (confirmed)
		return bpf_map_update_elem(&blixt_ct4, key, val, BPF_ANY);
	return bpf_map_update_elem(&blixt_ct4_new, key, val, BPF_ANY);
}

static __always_inline void ct_delete(int confirmed, const struct ct4_key *key)
{
	if (confirmed)
		bpf_map_delete_elem(&blixt_ct4, key);
	else
		bpf_map_delete_elem(&blixt_ct4_new, key);
}

/* Writes an entry and its other direction (a remote flow has none: its replies never come here). */
static __always_inline void ct_write_pair(int confirmed, const struct ct4_key *key, const struct ct4_value *val)
{
	struct ct4_key other;
	struct ct4_value oval;

	ct_update(confirmed, key, val);
	if (val->flags & CT_F_REMOTE)
		return;
	ct_other_key(&other, key, val);
	ct_other_value(&oval, key, val);
	ct_update(confirmed, &other, &oval);
}

/* Removes an entry and its other direction (the copy is taken first: the value may be freed). */
static __always_inline void ct_remove_pair(int confirmed, const struct ct4_key *key, const struct ct4_value *ct)
{
	struct ct4_key other;
	int remote = ct->flags & CT_F_REMOTE;

	ct_other_key(&other, key, ct);
	ct_delete(confirmed, key);
	if (!remote)
		ct_delete(confirmed, &other);
}

/* Closed: a RST, or a FIN each way; a remote flow, whose backend's FIN never passes here, also by
 * the client's FIN. */
static __always_inline int ct_closed(const struct ct4_value *ct)
{
	return (ct->flags & CT_F_RST) || (ct->flags & CT_F_CLOSED_MASK) == CT_F_CLOSED_MASK ||
	       (ct->flags & (CT_F_REMOTE | CT_F_FIN_CLIENT)) == (CT_F_REMOTE | CT_F_FIN_CLIENT);
}

/* Seconds an entry may stay idle, from blixt_ct_config (0 fields take the defaults in maps.h). */
static __always_inline __u64 ct_timeout_ns(const struct ct4_value *ct, __u8 proto, int confirmed)
{
	__u32 zero = 0;
	struct ct_config *c = bpf_map_lookup_elem(&blixt_ct_config, &zero);
	__u32 s;

	if (proto == IPPROTO_UDP) {
		s = c && c->udp_s ? c->udp_s : BLIXT_CT_DEFAULT_UDP_S;
	} else if (ct_closed(ct)) {
		s = c && c->tcp_closing_s ? c->tcp_closing_s : BLIXT_CT_DEFAULT_TCP_CLOSING_S;
	} else if (!confirmed) {
		s = c && c->tcp_new_s ? c->tcp_new_s : BLIXT_CT_DEFAULT_TCP_NEW_S;
	} else {
		s = c && c->tcp_established_s ? c->tcp_established_s : BLIXT_CT_DEFAULT_TCP_ESTABLISHED_S;
	}
	return (__u64)s * BLIXT_NS_PER_S;
}

static __always_inline int ct_expired(const struct ct4_value *ct, __u8 proto, int confirmed, __u64 now)
{
	return now > ct->last_seen_ns && now - ct->last_seen_ns > ct_timeout_ns(ct, proto, confirmed);
}

/*
 * The live entry of a direction (CT_F_FORWARD at ingress, CT_F_REVERSE at egress) for `key`:
 * confirmed table first, then the unconfirmed one; *confirmed tells which. An entry idle past its
 * timeout is removed with its other direction and counted, and the lookup goes on as if it had
 * not been there.
 */
static __always_inline struct ct4_value *ct_find(const struct ct4_key *key, __u8 dir, __u64 now, int *confirmed)
{
	struct ct4_value *ct = bpf_map_lookup_elem(&blixt_ct4, key);

	if (ct && (ct->flags & dir)) {
		if (!ct_expired(ct, key->proto, CT_TBL_CONFIRMED, now)) {
			*confirmed = CT_TBL_CONFIRMED;
			return ct;
		}
		ct_remove_pair(CT_TBL_CONFIRMED, key, ct);
		count_ct(CT_EXPIRED);
	}
	ct = bpf_map_lookup_elem(&blixt_ct4_new, key);
	if (ct && (ct->flags & dir)) {
		if (!ct_expired(ct, key->proto, CT_TBL_NEW, now)) {
			*confirmed = CT_TBL_NEW;
			return ct;
		}
		ct_remove_pair(CT_TBL_NEW, key, ct);
		count_ct(CT_EXPIRED);
	}
	return NULL;
}

/*
 * TCP FIN/RST bookkeeping for a packet of the flow `ct` belongs to (from the client at ingress,
 * from the backend at egress). The bits go on both entries, so either direction knows the flow
 * is closed; the packet that closes it stamps last_seen, and the closing timeout runs from there.
 */
static __always_inline void ct_track_tcp(const struct pkt *p, struct ct4_value *ct, const struct ct4_key *key, int confirmed, int from_client, __u64 now)
{
	struct ct4_key other;
	struct ct4_value *o;
	__u16 add = 0;

	if (p->proto != IPPROTO_TCP || !(p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		return;
	if (p->tcp_flags & TCP_FLAG_RST)
		add |= CT_F_RST;
	if (p->tcp_flags & TCP_FLAG_FIN)
		add |= from_client ? CT_F_FIN_CLIENT : CT_F_FIN_BACKEND;
	if ((ct->flags & add) == add)
		return;
	if (!ct_closed(ct)) {
		ct->flags |= add;
		if (ct_closed(ct)) {
			ct->last_seen_ns = now;
			count_ct(CT_CLOSED);
		}
	}
	if (ct->flags & CT_F_REMOTE)
		return;
	ct_other_key(&other, key, ct);
	o = ct_lookup(confirmed, &other);
	if (o && !ct_closed(o)) {
		o->flags |= add;
		if (ct_closed(o))
			o->last_seen_ns = now;
	}
}

/*
 * At most once a second per entry: stamps last_seen on this entry and on the flow's other
 * direction (either direction's traffic keeps the whole flow alive), recreating the other one
 * when it is gone (the LRU evicts entries one at a time). A closed flow is not refreshed: it
 * expires the closing timeout after the packet that closed it.
 */
static __always_inline void ct_refresh(struct ct4_value *ct, const struct ct4_key *key, int confirmed, __u64 now)
{
	struct ct4_key other;
	struct ct4_value oval;
	struct ct4_value *o;

	if (now <= ct->last_seen_ns + BLIXT_CT_REFRESH_NS || ct_closed(ct))
		return;
	ct->last_seen_ns = now;
	if (ct->flags & CT_F_REMOTE)
		return;
	ct_other_key(&other, key, ct);
	o = ct_lookup(confirmed, &other);
	if (o) {
		o->last_seen_ns = now;
		return;
	}
	ct_other_value(&oval, key, ct);
	ct_update(confirmed, &other, &oval);
	count_ct(CT_REPAIRED);
}

/* The epoch a service's forward entries must carry to skip the full check (maps.h). 0 when the
 * id is out of range, which no entry that passed the check carries after the agent's first write. */
static __always_inline __u32 svc_epoch(__u32 svc_id)
{
	__u32 *epoch = bpf_map_lookup_elem(&blixt_svc_epoch, &svc_id);

	return epoch ? *epoch : 0;
}

/* The full check of a forward entry: its backend is still a weighted member of the service's
 * live table. */
static __always_inline int ct_forward_valid(const struct ct4_value *ct, const struct svc_value *svc)
{
	struct backend_key bkey = {};
	struct backend_value *bval;

	if (!(ct->flags & CT_F_FORWARD) || ct->svc_id != svc->svc_id)
		return 0;
	bkey.table_id = svc->table_id;
	addr_from_v4(bkey.addr, ct->addr);
	bkey.port = ct->port;
	bval = bpf_map_lookup_elem(&blixt_backends, &bkey);
	return bval && bval->weight > 0;
}

/*
 * Before a local flow's entries are written in `table`: makes its reverse key (baddr:bport →
 * client) its own. Another flow may hold that key: the same client address and port reached the
 * same backend address and port through another VIP:port (two listeners, or two Gateways, sharing a
 * backend, and a client that picked the same source port for both). The backend sees the two as
 * one 4-tuple, and the confirmed table is read first at egress, so a leftover entry there would
 * give the new flow's replies the other VIP:port as source: the client answers them with a RST and
 * the handshake never completes. So the holder gives the key up, with its forward entry, when it is
 * closed or expired, or is UDP (the newest datagram's flow takes the replies; the other flow's
 * next datagram is decided afresh and takes them back): counted CT_CLASH_REPLACED. A TCP flow that
 * is still open keeps it: the backend could not tell the new SYN from that connection, so the new
 * flow is refused (returns 0, counted CT_CLASH_REFUSED) and the client's retransmitted SYN gets in
 * once the open one has closed. The flow's own entries in the other table are stale and removed
 * too. One or two lookups, for new flows only. `scratch` is the caller's: lb_claim (lb.h), not
 * inlined, whose frame comes on top of the program's, near the verifier's limit.
 */
static __always_inline int ct_claim_reverse(int table, const struct ct4_key *key, __be32 baddr, __be16 bport, struct ct4_key *scratch)
{
	__u64 now = ct_now();
	struct ct4_value *o;
	__be32 vip;
	__be16 vport;
	int t;

	for (t = CT_TBL_NEW; t <= CT_TBL_CONFIRMED; t++) {
		__builtin_memset(scratch, 0, sizeof(*scratch));
		scratch->saddr = baddr;
		scratch->daddr = key->saddr;
		scratch->sport = bport;
		scratch->dport = key->sport;
		scratch->proto = key->proto;
		o = ct_lookup(t, scratch);
		if (!o || !(o->flags & CT_F_REVERSE))
			continue;
		/* A reverse entry's value is the VIP:port its flow was sent to. */
		vip = o->addr;
		vport = o->port;
		if (vip == key->daddr && vport == key->dport) {
			if (t == table)
				continue; /* this flow's own entry: rewritten below */
		} else if (key->proto == IPPROTO_TCP && !ct_closed(o) && !ct_expired(o, key->proto, t, now)) {
			count_ct(CT_CLASH_REFUSED);
			return 0;
		} else {
			count_ct(CT_CLASH_REPLACED);
		}
		/* Both entries of the holder: the reverse one, then its forward one (client → vip:vport). */
		ct_delete(t, scratch);
		scratch->saddr = key->saddr;
		scratch->daddr = vip;
		scratch->sport = key->sport;
		scratch->dport = vport;
		ct_delete(t, scratch);
	}
	return 1;
}

/* Records flow client → VIP now going to backend, in both directions, in the given table. */
static __always_inline void ct_create(int confirmed, const struct pkt *p, __u32 svc_id, __u32 epoch, __be32 addr, __be16 port, __u16 flags, __u64 now)
{
	struct ct4_key key;
	struct ct4_value val = {};

	ct_key_of(&key, p);
	val.addr = addr;
	val.port = port;
	val.flags = CT_F_FORWARD | flags;
	val.svc_id = svc_id;
	val.epoch = epoch;
	val.last_seen_ns = now;
	ct_write_pair(confirmed, &key, &val);
}

/* Whether a packet from the client confirms its unconfirmed flow: neither a SYN nor a RST, after
 * the backend answered (a local flow), or more than a second after the entry was created or last
 * refreshed (a remote flow, whose replies are never seen here). */
static __always_inline int ct_confirms(const struct pkt *p, const struct ct4_value *ct, __u64 now)
{
	if (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_RST))
		return 0;
	if (ct->flags & CT_F_REMOTE)
		return now > ct->last_seen_ns + BLIXT_CT_REFRESH_NS;
	return ct->flags & CT_F_REPLIED;
}

/* Moves an unconfirmed flow into blixt_ct4; returns its new forward entry (NULL if the write
 * failed, and the flow stays where it was). */
static __always_inline struct ct4_value *ct_confirm(const struct ct4_key *key, struct ct4_value *ct, __u64 now)
{
	struct ct4_value val = *ct;

	val.last_seen_ns = now;
	ct_write_pair(CT_TBL_CONFIRMED, key, &val);
	ct = bpf_map_lookup_elem(&blixt_ct4, key);
	if (!ct)
		return NULL;
	ct_remove_pair(CT_TBL_NEW, key, &val);
	count_ct(CT_CONFIRMED);
	return ct;
}

#endif
