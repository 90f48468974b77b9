// SPDX-License-Identifier: GPL-2.0-only
// Per-CPU counters: no atomics needed, userspace sums the CPUs.
#ifndef BLIXT_STATS_H
#define BLIXT_STATS_H

#include "maps.h"

static __always_inline void count_reason(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&blixt_reasons, &reason);

	if (n)
		*n += 1;
}

static __always_inline struct svc_stats *svc_stats_of(__u32 svc_id)
{
	return bpf_map_lookup_elem(&blixt_svc_stats, &svc_id);
}

#endif
