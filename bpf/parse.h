// SPDX-License-Identifier: GPL-2.0-only
// Ethernet → IPv4 → TCP/UDP parsing into a flat description of the packet. Every read is
// preceded by a bounds check against data_end; nothing here writes to the packet. Lengths are
// checked against the whole packet's length, which for a TC skb can exceed its linear part
// (data..data_end): a TCP segment from a local socket keeps its payload in page fragments.
#ifndef BLIXT_PARSE_H
#define BLIXT_PARSE_H

#include "common.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define L2_LEN ((int)sizeof(struct ethhdr))
#define L3_OFF L2_LEN
#define L4_OFF (L2_LEN + (int)sizeof(struct iphdr)) /* only packets without IP options reach L4 */

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IPV4,      /* not parsed further */
	PARSE_BAD_L2,
	PARSE_BAD_L3,
	PARSE_IP_OPTIONS,    /* L3 fine, L4 not located: never rewritten */
	PARSE_FRAGMENT,
	PARSE_UNKNOWN_PROTO,
	PARSE_BAD_L4,
};

/* What the programs need to know about a packet, in the byte order it travels in. */
struct pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;   /* byte 13 of the TCP header; 0 for UDP */
	__be16 udp_check; /* 0 means "no checksum" and must stay 0 */
	__be32 tcp_seq;
	__u16 l4_payload; /* bytes after the L4 header, from the IPv4 total length */
	__u32 len;        /* whole frame, as received */
};

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

static __always_inline int parse_eth(void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return PARSE_BAD_L2;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	return PARSE_OK;
}

/* An IP-in-IP packet (encap.h): the inner IPv4 header follows the outer one, which has no options. */
#define IPIP_HDR_LEN ((int)sizeof(struct iphdr))
#define INNER_L3_OFF (L3_OFF + IPIP_HDR_LEN)
#define INNER_L4_OFF (L4_OFF + IPIP_HDR_LEN)

/* IPv4 header without options at offset `off` (L3_OFF, or INNER_L3_OFF for the packet inside an
 * IP-in-IP one); fills addresses and protocol even when it then refuses the packet, so the caller
 * can still tell whether it was addressed to a Gateway address. */
static __always_inline int parse_ipv4_at(void *data, void *data_end, __u32 len, struct pkt *p, int off)
{
	struct iphdr *ip = data + off;
	__u16 tot_len;

	if ((void *)(ip + 1) > data_end)
		return PARSE_BAD_L3;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_BAD_L3;
	tot_len = bpf_ntohs(ip->tot_len);
	/* Ethernet may pad a short frame, so more bytes than tot_len is fine; fewer is not. */
	if (tot_len < ip->ihl * 4 || off + (__u32)tot_len > len)
		return PARSE_BAD_L3;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->l4_payload = tot_len - ip->ihl * 4;

	if (ip->ihl != 5)
		return PARSE_IP_OPTIONS;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return PARSE_UNKNOWN_PROTO;
	return PARSE_OK;
}

static __always_inline int parse_ipv4(void *data, void *data_end, __u32 len, struct pkt *p)
{
	return parse_ipv4_at(data, data_end, len, p, L3_OFF);
}

/* TCP/UDP header at offset `off` (L4_OFF, or INNER_L4_OFF). */
static __always_inline int parse_l4_at(void *data, void *data_end, struct pkt *p, int off)
{
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + off;
		__u16 hdr;

		if ((void *)(tcp + 1) > data_end)
			return PARSE_BAD_L4;
		hdr = tcp->doff * 4;
		if (tcp->doff < 5 || hdr > p->l4_payload)
			return PARSE_BAD_L4;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		p->tcp_seq = tcp->seq;
		p->l4_payload -= hdr;
		return PARSE_OK;
	}

	struct udphdr *udp = data + off;

	if ((void *)(udp + 1) > data_end)
		return PARSE_BAD_L4;
	/* A length past the IPv4 payload is what udp_rcv drops as a short packet; less is padding it trims. */
	if (bpf_ntohs(udp->len) < sizeof(*udp) || p->l4_payload < sizeof(*udp) || bpf_ntohs(udp->len) > p->l4_payload)
		return PARSE_BAD_L4;
	p->sport = udp->source;
	p->dport = udp->dest;
	p->udp_check = udp->check;
	p->l4_payload -= sizeof(*udp);
	return PARSE_OK;
}

static __always_inline int parse_l4(void *data, void *data_end, struct pkt *p)
{
	return parse_l4_at(data, data_end, p, L4_OFF);
}

/* Whole walk over a packet of `len` bytes; returns the first layer that refused the packet. */
static __always_inline int parse_packet(void *data, void *data_end, __u32 len, struct pkt *p)
{
	int ret;

	p->len = len;
	ret = parse_eth(data, data_end);
	if (ret != PARSE_OK)
		return ret;
	ret = parse_ipv4(data, data_end, len, p);
	if (ret != PARSE_OK)
		return ret;
	return parse_l4(data, data_end, p);
}

/* Headers a TC program reads directly: Ethernet, IPv4 without options, a TCP header (the larger
 * of TCP/UDP). Payload stays where it is: NAT and the RST go through skb helpers. */
#define TC_PULL_LEN (L4_OFF + (int)sizeof(struct tcphdr))

/* An ICMP error is read and rewritten through its quote: Ethernet, IPv4, ICMP header, the quoted
 * IPv4 header and 18 bytes of the quoted L4 header (through a TCP checksum). icmp.h. */
#define TC_PULL_LEN_ICMP 80

/* An IP-in-IP packet is read through its inner headers: 20 bytes more. */
#define TC_PULL_LEN_IPIP (TC_PULL_LEN + IPIP_HDR_LEN)

/* Makes the headers linear when they are not (a forwarded or locally built skb may hold them
 * in fragments); a linear skb pays one compare, and an ICMP packet's quote (or an IP-in-IP
 * packet's inner headers) is pulled too. */
static __always_inline void tc_pull_headers(struct __sk_buff *skb)
{
	__u32 linear = skb->data_end - skb->data;
	struct iphdr *ip;
	__u32 want;

	if (linear < TC_PULL_LEN && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < TC_PULL_LEN ? skb->len : TC_PULL_LEN);
	ip = (void *)(long)skb->data + L3_OFF;
	if ((void *)(ip + 1) > (void *)(long)skb->data_end)
		return;
	if (ip->protocol == IPPROTO_ICMP)
		want = TC_PULL_LEN_ICMP;
	else if (ip->protocol == IPPROTO_IPIP)
		want = TC_PULL_LEN_IPIP;
	else
		return;
	linear = skb->data_end - skb->data;
	if (linear < want && skb->len > linear)
		bpf_skb_pull_data(skb, skb->len < want ? skb->len : want);
}

#endif
