// SPDX-License-Identifier: GPL-2.0-only
// IPv4 ↔ the 16-byte IPv4-mapped form map keys use (see maps.h).
#ifndef BLIXT_ADDR_H
#define BLIXT_ADDR_H

#include "common.h"

static __always_inline void addr_from_v4(__u8 *addr, __be32 v4)
{
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(addr + 12, &v4, 4);
}

static __always_inline __be32 addr_to_v4(const __u8 *addr)
{
	__be32 v4;

	__builtin_memcpy(&v4, addr + 12, 4);
	return v4;
}

#endif
