// SPDX-License-Identifier: GPL-2.0-only
// Internet checksum arithmetic (RFC 1071) and incremental update (RFC 1624, eqn. 3:
// HC' = ~(~HC + ~m + m')). Values are summed exactly as they lie in memory (network order
// loaded as native 16-bit words): one's-complement sums are byte-order independent as long
// as every operand is loaded the same way.
#ifndef BLIXT_CSUM_H
#define BLIXT_CSUM_H

#include "common.h"

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Adds "32-bit field changed from → to" to a running difference. */
static __always_inline __u32 csum_diff32(__u32 acc, __be32 from, __be32 to)
{
	return acc + (__u16)~(from & 0xffff) + (__u16)~(from >> 16) + (to & 0xffff) + (to >> 16);
}

static __always_inline __u32 csum_diff16(__u32 acc, __be16 from, __be16 to)
{
	return acc + (__u16)~from + to;
}

/* The checksum field after applying a difference built with csum_diff*. */
static __always_inline __u16 csum_apply(__u16 check, __u32 diff)
{
	return ~csum_fold32((__u16)~check + diff);
}

/* Same for UDP, where 0 means "no checksum": 0 stays 0, and a result of 0 is sent as
 * 0xffff (RFC 768). */
static __always_inline __u16 csum_apply_udp(__u16 check, __u32 diff)
{
	__u16 out;

	if (check == 0)
		return 0;
	out = csum_apply(check, diff);
	return out ? out : 0xffff;
}

/* Plain sum of n 16-bit words; n must be a compile-time constant so the loop unrolls. */
static __always_inline __u32 csum_words(const __u16 *words, int n, __u32 acc)
{
#pragma unroll
	for (int i = 0; i < n; i++)
		acc += words[i];
	return acc;
}

#endif
