// SPDX-License-Identifier: GPL-2.0-only
// blixt's programs: the decision lives in lb.h, the packet surgery in nat.h; each program
// only maps the verdict onto its hook's return codes.
#include "common.h"
#include "maps.h"
#include "lb.h"
#include "nat.h"
#include "stats.h"
#include "arp.h"
#include "icmp.h"
#include "encap.h"

/* Ingress fast path: DNAT to a backend (or encapsulate to a backend's node, or decapsulate for a
 * local one), refuse or reject, answer ARP for announced addresses, pass everything else. */
SEC("xdp")
int blixt_xdp_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct verdict v = {};
	int ret;

	lb_ingress(data, data_end, data_end - data, &v);
	/* IPv4 never gets here: ARP costs the fast path nothing but this compare. */
	if (v.reason == REASON_PASS_NOT_IPV4) {
		arp_ingress(data, data_end, ctx->ingress_ifindex, &v);
		if (v.action == ACT_ARP_REPLY && !arp_reply_xdp(data, data_end, &v)) {
			count_arp(ARP_REPLIED);
			return XDP_TX;
		}
		v.action = ACT_PASS;
	}
	if (v.action == ACT_ICMP)
		icmp_ingress(data, data_end, &v);
	switch (v.action) {
	case ACT_DNAT:
		if (nat_xdp(data, data_end, &v, NAT_DST))
			v.action = ACT_PASS; /* unreachable after parsing; never half-rewrite */
		break;
	case ACT_RST:
		if (rst_xdp(ctx, &v)) {
			v.action = ACT_DROP;
			v.reason = REASON_DROP_RST_FAILED;
		}
		break;
	case ACT_ENCAP:
		ret = encap_xdp(ctx, &v);
		if (ret == ENCAP_TOO_BIG)
			ret = too_big_xdp(ctx, &v);
		count_reason(v.reason);
		return ret;
	case ACT_DECAP:
		if (decap_xdp(ctx, &v)) {
			v.action = ACT_DROP; /* the outer header may be gone already: never pass half */
			v.reason = REASON_DROP_MALFORMED_L3;
		}
		break;
	}
	count_reason(v.reason);
	if (v.action == ACT_RST || v.action == ACT_ICMP_ECHO)
		return XDP_TX;
	return v.action == ACT_DROP ? XDP_DROP : XDP_PASS;
}

/* The rewrites both TC ingress programs make in place: DNAT to the backend, or the packet turned
 * into a RST. A helper that fails mid-rewrite leaves the packet half done: it is dropped. */
static __always_inline void tc_rewrite(struct __sk_buff *skb, struct verdict *v)
{
	if (v->action == ACT_DNAT && nat_tc(skb, v, NAT_DST)) {
		v->action = ACT_DROP;
		v->reason = REASON_DROP_MALFORMED_L4;
	} else if (v->action == ACT_RST && rst_tc(skb, v)) {
		v->action = ACT_DROP;
		v->reason = REASON_DROP_RST_FAILED;
	}
}

/* Counts the verdict and maps it onto TC's return codes: a RST or an echo reply goes back out of
 * the device it came in on. */
static __always_inline int tc_verdict(struct __sk_buff *skb, const struct verdict *v)
{
	count_reason(v->reason);
	if (v->action == ACT_RST || v->action == ACT_ICMP_ECHO)
		return bpf_redirect(skb->ifindex, 0);
	return v->action == ACT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

/* The same ingress work from TC, for devices where XDP cannot send a RST back (veth whose
 * peer runs no XDP): the RST leaves through bpf_redirect to the device it came from. */
SEC("tc")
int blixt_tc_ingress(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct verdict v = {};
	int ret;

	/* A unicast frame for another host (PACKET_OTHERHOST: its destination MAC is not this
	 * device's) is not this node's to forward. A bridge floods such frames to every port when
	 * it has no entry for their MAC, as when the port of the node they are for went away (a
	 * powered-off announcer): forwarding them here too would hand the backend a copy from
	 * every node. The kernel drops them; they are left to it. (A test run, BPF_PROG_TEST_RUN,
	 * has no ingress device unless it names one, and judges the MAC against the loopback's:
	 * only a frame that came in on a device is judged here.) */
	if (skb->pkt_type == PACKET_OTHERHOST && skb->ingress_ifindex) {
		count_reason(REASON_PASS_OTHER_HOST);
		return TC_ACT_OK;
	}
	tc_pull_headers(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	lb_ingress(data, data_end, skb->len, &v);
	if (v.reason == REASON_PASS_NOT_IPV4) {
		arp_ingress(data, data_end, skb->ifindex, &v);
		if (v.action == ACT_ARP_REPLY && !arp_reply_tc(skb, &v)) {
			count_arp(ARP_REPLIED);
			return bpf_redirect(skb->ifindex, 0);
		}
		v.action = ACT_PASS;
	}
	if (v.action == ACT_ICMP)
		icmp_ingress(data, data_end, &v);
	switch (v.action) {
	case ACT_ENCAP:
		ret = encap_tc(skb, &v);
		if (ret == ENCAP_TOO_BIG)
			ret = too_big_tc(skb, &v);
		count_reason(v.reason);
		return ret;
	case ACT_DECAP:
		if (decap_tc(skb, &v)) {
			v.action = ACT_DROP;
			v.reason = REASON_DROP_MALFORMED_L3;
		}
		break;
	default:
		tc_rewrite(skb, &v);
	}
	return tc_verdict(skb, &v);
}

/* Ingress from a pod (TC on the node's end of each pod's interface, "hairpin"): a pod on this node
 * that connects to a Gateway address gets the same backend choice, DNATed to the backend wherever
 * it runs; the pod network carries the packet there with the pod's own address as source, and
 * blixt_tc_egress on this interface gives the replies VIP:port back. No encapsulation, no ARP
 * answers (a pod asks for its gateway, never for a Gateway address), and no PACKET_OTHERHOST rule:
 * on a bridge port, a pod's frame for the bridge's MAC is "other host" to the port itself. */
SEC("tc")
int blixt_tc_pod_ingress(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct verdict v = { .in_cluster = 1 };

	tc_pull_headers(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	lb_ingress(data, data_end, skb->len, &v);
	if (v.reason == REASON_PASS_NOT_IPV4)
		return TC_ACT_OK; /* not counted: most of a pod's frames are not for a service */
	if (v.action == ACT_ICMP)
		icmp_ingress(data, data_end, &v);
	if (v.action == ACT_ENCAP || v.action == ACT_DECAP) {
		/* lb_ingress never decides these for a pod's packet; never half-handle one. */
		v.action = ACT_DROP;
		v.reason = REASON_DROP_IPIP;
	}
	tc_rewrite(skb, &v);
	if (v.action == ACT_PASS)
		return TC_ACT_OK; /* a pod's ordinary traffic: not counted, as at egress */
	return tc_verdict(skb, &v);
}

/* Egress: replies from backends leave with the VIP:port their client talked to. */
SEC("tc")
int blixt_tc_egress(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct verdict v = {};

	tc_pull_headers(skb);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	lb_egress(data, data_end, skb->len, &v);
	if (v.action == ACT_ICMP) {
		if (!icmp_egress(data, data_end, &v.pkt))
			return TC_ACT_OK;
		count_reason(REASON_ICMP_ERROR_NAT);
		return TC_ACT_OK;
	}
	if (v.action != ACT_DNAT)
		return TC_ACT_OK; /* not counted: every packet the host sends would land here */
	if (nat_tc(skb, &v, NAT_SRC)) {
		count_reason(REASON_DROP_MALFORMED_L4);
		return TC_ACT_SHOT;
	}
	if (v.clamp_mss)
		mss_clamp_tc(skb);
	count_reason(REASON_REVERSE_NAT);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
