// SPDX-License-Identifier: GPL-2.0-only
// Every map blixt's programs share, with its key and value layout. TypeScript encodes the
// same bytes (capabilities/dataplane/maps.ts): a change here is a change there.
//
// Addresses are 16 bytes (except in ct4, below), IPv4 stored IPv4-mapped (::ffff:a.b.c.d, RFC 4291 2.5.5.2: bytes
// 0-9 zero, 10-11 0xff, 12-15 the IPv4 address), so IPv6 fits the same keys later without
// colliding with IPv4. Ports are network byte order (__be16). Other integers are host order
// (little-endian on every machine blixt targets). Padding is explicit and always zero, because
// hash keys compare every byte.
//
// No map is pinned by its definition: the loader (bpftool loadall ... pinmaps) pins them under
// blixt's pin directory and reuses pinned maps on reload so conntrack survives an upgrade.
// A pinned map whose key, value or flags differ from its definition here, or an array with fewer
// entries, is not reused but created afresh (Dataplane.load): growing an array, e.g. by a new
// verdict, is safe; a hash map of another size is reused as it is.
#ifndef BLIXT_MAPS_H
#define BLIXT_MAPS_H

#include "common.h"

#define BLIXT_MAX_SERVICES 16384    /* service ids are 1..16383; 0 means "none" */
#define BLIXT_MAX_BACKENDS 65536
/* Slots per table chunk. A power of two, so slot / CHUNK and slot % CHUNK are a shift and a mask
 * the verifier can bound; 1024 u16 slots (2048 value bytes) keep one `map update` line of
 * bpftool's batch mode (at most 4096 arguments) well inside its limit. */
#define BLIXT_CHUNK_SLOTS 1024
_Static_assert((BLIXT_CHUNK_SLOTS & (BLIXT_CHUNK_SLOTS - 1)) == 0, "BLIXT_CHUNK_SLOTS must be a power of two");
/* Tables are 16381..65521 slots (maglev.ts), i.e. 16..64 chunks; 2^15 chunks hold ~2000 tables at
 * the minimum size, ~1000 distinct backend sets with room to rewrite each (services with the
 * same backend set share one table). Not preallocated: memory follows use. */
#define BLIXT_MAX_TABLE_CHUNKS (1 << 15)
/* Backend lists of every table, live and being written (plus each table's rejected share). */
#define BLIXT_MAX_TABLE_BACKENDS (2 * BLIXT_MAX_BACKENDS)
#define BLIXT_MAX_CONNTRACK (1 << 18)
/* Unconfirmed flows (ct4_new): a SYN, a first UDP datagram or a mid-flow pickup waits here until
 * the backend has answered and the client has spoken again. A flood of new flows churns this
 * table only, never the confirmed one. */
#define BLIXT_MAX_CONNTRACK_NEW (1 << 16)
#define BLIXT_MAX_ADDRESSES 4096
#define BLIXT_MAX_IFACES 256

/* services: (VIP, port, protocol) → which Maglev table is live. */
struct svc_key {
	__u8 addr[BLIXT_ADDR_LEN]; /*  0..15 VIP, IPv4-mapped */
	__be16 port;               /* 16..17 listener port, network order */
	__u8 proto;                /* 18     IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u8 pad;                  /* 19     zero */
};                                 /* 20 bytes */

struct svc_value {
	__u32 svc_id;        /*  0..3  1..BLIXT_MAX_SERVICES-1: index of stats, part of table ids */
	__u32 table_id;      /*  4..7  live Maglev table, shared by services of equal tables; 0: none */
	__u32 table_size;    /*  8..11 M, a prime; 0 = no usable backend, every packet is rejected */
	__u32 reject_weight; /* 12..15 weight of invalid backendRefs (read back by the agent only) */
};                           /* 16 bytes */

/* A Maglev table is two maps' worth of entries under one table id:
 *  mg_backs:  (table, index) → backend: the table's backend list, one entry per backend with
 *             weight > 0, plus one BACKEND_F_REJECT entry for the rejected share;
 *  mg_chunks: (table, chunk) → BLIXT_CHUNK_SLOTS u16 indexes into that list; slot s of the table
 *             is chunk s / CHUNK, element s % CHUNK. The last chunk's elements past M are zero.
 * A service's table is written whole under a free id (or is one already live with the same
 * content), then the service value is switched to it in one update; a table's chunks and backend
 * list are deleted once no service names it. A missing chunk or backend entry rejects the
 * packet, as does the reject entry. */
struct table_key {
	__u32 table_id; /* 0..3 */
	__u32 index;    /* 4..7 mg_chunks: chunk number 0..ceil(M / CHUNK)-1; mg_backs: backend index */
};                      /* 8 bytes */

struct table_chunk {
	__u16 backend[BLIXT_CHUNK_SLOTS]; /* 0..2047 index into the table's backend list, per slot */
};                                        /* 2048 bytes */

#define BACKEND_F_REJECT 0x1 /* this entry is the weighted share of invalid backendRefs */
/* The backend's pod runs on another node: a flow to it is not DNATed here but sent whole to that
 * node inside an outer IPv4 header (IP-in-IP, encap.h), which DNATs it there; the backend answers
 * the client directly (direct server return). */
#define BACKEND_F_REMOTE 0x2

struct backend {
	__u8 addr[BLIXT_ADDR_LEN]; /*  0..15 backend IP, IPv4-mapped (zero when rejecting) */
	__be16 port;               /* 16..17 backend port, network order */
	__u16 flags;               /* 18..19 BACKEND_F_* */
};                                 /* 20 bytes */

/* backends: (Maglev table, backend address, port) → weight: the weighted members of each table,
 * written with the table and deleted with it. Lets conntrack ask "is this flow's backend still a
 * member of its service's live table?" in one lookup, and lets the agent read specs back. Keyed
 * by table, not service: the services of one backend set (a thousand routes to one Deployment)
 * share one table and so one set of entries, and a change to the set writes them once. */
struct backend_key {
	__u32 table_id;            /*  0..3 */
	__u8 addr[BLIXT_ADDR_LEN]; /*  4..19 IPv4-mapped */
	__be16 port;               /* 20..21 network order */
	__u16 pad;                 /* 22..23 zero */
};                                 /* 24 bytes */

struct backend_value {
	__u32 weight; /* 0..3 > 0: a backend without weight is no member (established flows move away) */
};                    /* 4 bytes */

/* ct4: IPv4 conntrack of confirmed flows, one entry per direction; ct4_new holds unconfirmed
 * flows in the same layout (conntrack.h says when a flow moves). Keyed by the bare IPv4 5-tuple (16 bytes, not the
 * 40 an IPv4-mapped key takes): every forwarded packet hashes this key, and IPv6 gets a map of
 * its own, as Cilium keeps ct4 and ct6 apart.
 *  forward: client → VIP  (saddr=client, daddr=VIP, sport=client port, dport=VIP port)
 *           value = backend address and port
 *  reverse: backend → client (saddr=backend, daddr=client, sport=backend port, dport=client port)
 *           value = VIP and VIP port, the source replies must carry */
struct ct4_key {
	__be32 saddr;               /*  0..3 */
	__be32 daddr;               /*  4..7 */
	__be16 sport;               /*  8..9 network order */
	__be16 dport;               /* 10..11 network order */
	__u8 proto;                 /* 12 */
	__u8 pad[3];                /* 13..15 zero */
};                                  /* 16 bytes */

#define CT_F_FORWARD 0x1
#define CT_F_REVERSE 0x2
#define CT_F_REPLIED 0x4     /* the backend has answered (unconfirmed entries: ready to be confirmed) */
#define CT_F_FIN_CLIENT 0x8  /* TCP: the client sent a FIN */
#define CT_F_FIN_BACKEND 0x10 /* TCP: the backend sent a FIN */
#define CT_F_RST 0x20        /* TCP: either side sent a RST */
#define CT_F_PICKUP 0x40     /* created by a mid-flow packet (no SYN seen on this node) */
#define CT_F_REMOTE 0x80     /* forward entry only: the backend is on another node, packets are encapsulated
			      * to it and its replies never come back here (conntrack.h) */
#define CT_F_ENCAP 0x100     /* the flow arrived encapsulated from the node that chose its backend: replies
			      * leave from here straight to the client (SYN-ACK MSS clamped, encap.h) */
/* Closed: a RST, or a FIN each way. Both entries of a flow carry the same CT_F_FIN_* and CT_F_RST
 * bits; a closed flow lives for the closing timeout after the packet that closed it. */
#define CT_F_CLOSED_MASK (CT_F_FIN_CLIENT | CT_F_FIN_BACKEND)

struct ct4_value {
	__be32 addr;         /*  0..3  forward: backend; reverse: VIP */
	__be16 port;         /*  4..5  forward: backend port; reverse: VIP port */
	__u16 flags;         /*  6..7  CT_F_* (byte 7 was padding, always zero, before CT_F_ENCAP) */
	__u32 svc_id;        /*  8..11 */
	__u32 epoch;         /* 12..15 forward: blixt_svc_epoch[svc_id] when the entry was last checked */
	__u64 last_seen_ns;  /* 16..23 bpf_ktime_get_coarse_ns(): the flow's last packet in this entry's
			      *        direction, to within a second (BLIXT_CT_REFRESH_NS); for a closed
			      *        TCP flow, the packet that closed it */
};                           /* 24 bytes */

/* ct_config: index 0 holds the conntrack timeouts, written by the node agent (maps.ts
 * encodeConntrackConfig). A field left 0 takes the compiled default (BLIXT_CT_DEFAULT_*), so a
 * map nobody wrote behaves as documented. An entry idle past its timeout is treated as absent
 * and replaced by the next packet that needs it. */
struct ct_config {
	__u32 tcp_new_s;         /*  0..3  TCP unconfirmed (SYN seen, handshake not finished) */
	__u32 tcp_established_s; /*  4..7  TCP confirmed, idle */
	__u32 tcp_closing_s;     /*  8..11 TCP after a RST or a FIN each way */
	__u32 udp_s;             /* 12..15 UDP, idle */
};                               /* 16 bytes */

/* Defaults: Cilium's (CT_SYN_TIMEOUT 60 s, CT_CONNECTION_LIFETIME_TCP 6 h, CT_CLOSE_TIMEOUT 10 s,
 * CT_CONNECTION_LIFETIME_NONTCP 60 s). nf_conntrack's differ: SYN_SENT 120 s, ESTABLISHED 5 days,
 * CLOSE 10 s / TIME_WAIT 120 s, UDP 30 s unreplied and 120 s once a stream. */
#define BLIXT_CT_DEFAULT_TCP_NEW_S 60
#define BLIXT_CT_DEFAULT_TCP_ESTABLISHED_S 21600
#define BLIXT_CT_DEFAULT_TCP_CLOSING_S 10
#define BLIXT_CT_DEFAULT_UDP_S 60

/* ct_stats: per-CPU counters, indexed by enum blixt_ct_counter. */
enum blixt_ct_counter {
	CT_NEW = 0,            /* unconfirmed flow created: a SYN or a first UDP datagram */
	CT_PICKUP = 1,         /* unconfirmed flow created by a mid-flow packet no entry knew */
	CT_CONFIRMED = 2,      /* unconfirmed flow moved to ct4 (the backend answered, the client spoke again) */
	CT_REPAIRED = 3,       /* a flow's missing other direction recreated from the one present */
	CT_CLOSED = 4,         /* a TCP flow closed (RST, or FIN each way) */
	CT_EXPIRED = 5,        /* an entry found idle past its timeout, removed */
	CT_CLASH_REPLACED = 6, /* a new flow took its backend → client key from another flow (closed, expired, or UDP) */
	CT_CLASH_REFUSED = 7,  /* a new TCP flow refused: an open one holds its backend → client key (conntrack.h) */
	CT_COUNTER_MAX = 8,
};

/* svc_epoch: service id → the epoch of its backend set. The agent writes a new, never reused,
 * epoch for a service after every change that takes a backend out of it (or a weight to 0), and
 * after its removal, as the last write of that change. A forward conntrack entry whose epoch
 * matches was checked against the service as it is now, so a packet of an established flow
 * needs one conntrack lookup and this array read (which the verifier inlines), not the service,
 * backend and Maglev lookups; a mismatch sends it through the full check once, which stamps the
 * new epoch.
 * Index 0 (no service has id 0) holds the last epoch handed out, so none is ever handed out twice,
 * whatever restarts. */
#define BLIXT_EPOCH_COUNTER 0

/* node: index 0 holds this node's own address, written by the node agent (maps.ts
 * encodeNodeConfig): the outer source of packets encapsulated to a backend on another node. 0 =
 * unknown: a new flow to a remote backend is then dropped (drop_no_node_address). */
struct node_config {
	__be32 ipv4; /* 0..3 network order; 0 = not written yet */
};                   /* 4 bytes */

/* announce: index 0 holds the dead-man's switch of ARP (arp.h is_announced). The node agent
 * writes "until now + its Lease duration" (CLOCK_MONOTONIC ns, bpf_ktime_get_ns's clock) every
 * renew interval while it runs (maps.ts encodeAnnounceConfig), so a node whose agent died or
 * hangs stops answering ARP for its addresses about when the other agents take them over,
 * instead of answering beside the new announcer until the agent is back. Packets that still
 * reach the node are forwarded all the same. 0 = no deadline (nobody holds a Lease here: the
 * CLI, the netns labs): announced addresses are answered for as long as they are flagged. */
struct announce_config {
	__u64 until_ns; /* 0..7 bpf_ktime_get_ns() below which ADDR_F_ANNOUNCE holds; 0 = always */
};                      /* 8 bytes */

/* yield: Gateway addresses this node announces (ADDR_F_ANNOUNCE) for which it heard another
 * node's gratuitous ARP, written by the programs (arp.h): another node took the address over,
 * so this one stops answering for it. That is how a node cut off from the API server alone,
 * which cannot see that its Lease lapsed, steps down when the new announcer speaks. Only where
 * an announce deadline is set (an agent holding a Lease; elsewhere the controller alone moves
 * addresses). The agent removes an entry when it no longer announces the address, or when it
 * holds its Lease on a current view and still announces it (it announces again, gratuitously). */
struct yield_value {
	__u64 at_ns;        /*  0..7  bpf_ktime_get_ns() of the announcement heard */
	__u8 mac[ETH_ALEN]; /*  8..13 the announcing node's MAC (the ARP sender hardware address) */
	__u8 pad[2];        /* 14..15 */
};                          /* 16 bytes */

/* addresses: Gateway addresses this node serves → flags. A packet to one of them on a port
 * with no listener is refused, never handed to the host's sockets. */
struct addr_key {
	__u8 addr[BLIXT_ADDR_LEN]; /* 0..15 IPv4-mapped */
};                                 /* 16 bytes */

#define ADDR_F_ANNOUNCE 0x1 /* this node announces the address: answer ARP requests for it (arp.h) */

struct addr_value {
	__u32 flags; /* 0..3 ADDR_F_* */
};                   /* 4 bytes */

/* ifaces: ifindex → the device's MAC, written by the loader when it attaches. An ARP reply must
 * carry the MAC of the device the request came in on, and a program cannot read a device's
 * address itself; the request is broadcast, so its destination does not tell either. */
struct iface_value {
	__u8 mac[ETH_ALEN]; /* 0..5 */
	__u16 pad;          /* 6..7 zero */
};                          /* 8 bytes; the key is the ifindex, a host-order __u32 */

/* arp_stats: per-CPU counters, indexed by enum blixt_arp_counter. Kept apart from the reasons so
 * that list (and REASON_MAX) stays the IPv4 verdicts'. */
enum blixt_arp_counter {
	ARP_REPLIED = 0,  /* request for an announced address answered in the kernel */
	ARP_NO_IFACE = 1, /* request for an announced address on a device with no ifaces entry: passed */
	ARP_DEADLINE_PASSED = 2, /* request for a flagged address left unanswered: the agent stopped renewing (announce) */
	ARP_OTHER_ANNOUNCED = 3, /* another node's gratuitous ARP for an address this node announces: yielded (yield) */
	ARP_YIELDED = 4,         /* request for a flagged address left unanswered: yielded to the node that announced it */
	ARP_COUNTER_MAX = 5,
};

/* svc_stats: per-CPU counters, indexed by svc_id. */
struct svc_stats {
	__u64 packets;   /*  0..7  packets to the service (forwarded or rejected) */
	__u64 bytes;     /*  8..15 their bytes as received, L2 header included */
	__u64 new_flows; /* 16..23 conntrack misses that picked a backend */
	__u64 rejects;   /* 24..31 packets rejected (RST or drop) */
};                       /* 32 bytes */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLIXT_MAX_SERVICES);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} blixt_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLIXT_MAX_TABLE_CHUNKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct table_key);
	__type(value, struct table_chunk);
} blixt_mg_chunks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLIXT_MAX_TABLE_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct table_key);
	__type(value, struct backend);
} blixt_mg_backs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLIXT_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct backend_key);
	__type(value, struct backend_value);
} blixt_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BLIXT_MAX_CONNTRACK);
	__type(key, struct ct4_key);
	__type(value, struct ct4_value);
} blixt_ct4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BLIXT_MAX_CONNTRACK_NEW);
	__type(key, struct ct4_key);
	__type(value, struct ct4_value);
} blixt_ct4_new SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_config);
} blixt_ct_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct node_config);
} blixt_node SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct announce_config);
} blixt_announce SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLIXT_MAX_ADDRESSES);
	__type(key, struct addr_key);
	__type(value, struct yield_value);
} blixt_yield SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CT_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} blixt_ct_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BLIXT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} blixt_svc_epoch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLIXT_MAX_ADDRESSES);
	__type(key, struct addr_key);
	__type(value, struct addr_value);
} blixt_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BLIXT_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct svc_stats);
} blixt_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
} blixt_reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BLIXT_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct iface_value);
} blixt_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ARP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} blixt_arp_stats SEC(".maps");

#endif
