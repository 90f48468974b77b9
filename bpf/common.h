// SPDX-License-Identifier: GPL-2.0-only
// Shared includes, constants and the verdict/reason enum every program and the TypeScript
// side (capabilities/dataplane/maps.ts) agree on.
#ifndef BLIXT_COMMON_H
#define BLIXT_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <linux/if_packet.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define BLIXT_ADDR_LEN 16

/*
 * Why a packet was passed, rewritten or dropped: the index into the reasons map.
 * Append only: the numbers are part of the map ABI (maps.ts REASONS mirrors this list).
 */
enum blixt_reason {
	REASON_PASS_NOT_IPV4 = 0,       /* ARP, IPv6, VLAN-tagged: not parsed, passed untouched */
	REASON_PASS_NO_SERVICE = 1,     /* well-formed IPv4 not addressed to a service or Gateway address */
	REASON_PASS_UNPARSED = 2,       /* fragment / IP options / other protocol / short L4, not to a Gateway address */
	REASON_DNAT = 3,                /* forwarded to a backend */
	REASON_REVERSE_NAT = 4,         /* reply rewritten back to VIP:port */
	REASON_DROP_MALFORMED_L2 = 5,   /* shorter than an Ethernet header */
	REASON_DROP_MALFORMED_L3 = 6,   /* short IPv4 header, version != 4, IHL < 5, bad total length */
	REASON_DROP_IP_OPTIONS = 7,     /* IHL > 5 to a Gateway address */
	REASON_DROP_FRAGMENT = 8,       /* fragment to a Gateway address */
	REASON_DROP_UNKNOWN_PROTO = 9,  /* neither TCP nor UDP, to a Gateway address */
	REASON_DROP_MALFORMED_L4 = 10,  /* short TCP/UDP header or TCP doff < 5, to a Gateway address */
	REASON_REJECT_RST = 11,         /* service rejects (no backend / reject slot): SYN answered with RST */
	REASON_REJECT_DROP = 12,        /* service rejects: UDP or non-SYN TCP dropped */
	REASON_REFUSED_RST = 13,        /* Gateway address, no listener on the port: SYN answered with RST */
	REASON_REFUSED_DROP = 14,       /* Gateway address, no listener: UDP or non-SYN TCP dropped */
	REASON_DROP_RST_FAILED = 15,    /* could not shrink the packet into a RST: dropped instead */
	REASON_ICMP_ECHO_REPLY = 16,    /* echo request to an announced Gateway address answered (icmp.h) */
	REASON_ICMP_ERROR_NAT = 17,     /* ICMP error about a flow translated: to its backend (ingress) or its client (egress) */
	REASON_ENCAP = 18,              /* to a backend on another node: encapsulated (IP-in-IP) and sent to it */
	REASON_ENCAP_NO_NEIGH = 19,     /* the same, next hop's MAC not known yet (encap.h says how it is sent) */
	REASON_DECAP = 20,              /* IP-in-IP from the node that chose a local backend: decapsulated, DNATed */
	REASON_DROP_NO_NODE_ADDR = 21,  /* a remote backend was chosen, but this node's own address is unknown */
	REASON_DROP_ENCAP_NO_ROUTE = 22, /* no usable route to a remote backend (FIB lookup failed) */
	REASON_DROP_IPIP = 23,          /* IP-in-IP not for a backend of a service this node knows */
	REASON_ICMP_FRAG_NEEDED = 24,   /* too big to encapsulate, DF set: ICMP fragmentation needed sent back */
	REASON_DROP_TOO_BIG = 25,       /* too big to encapsulate, DF clear: dropped */
	REASON_PASS_OTHER_HOST = 26,    /* TC: a frame for another host's MAC (a bridge flooding it): left to the kernel, which drops it */
	REASON_DNAT_IN_CLUSTER = 27,    /* a pod on this node to a service: DNAT to the backend wherever it runs (pod network carries it) */
	REASON_DROP_CT_CLASH = 28,      /* a new TCP flow whose backend → client 4-tuple an open flow through another VIP:port holds (conntrack.h) */
	REASON_MAX = 29,
};

#endif
