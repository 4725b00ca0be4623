/* SPDX-License-Identifier: Apache-2.0 */
/* DAX fault outcomes counted per (tgid, outcome, VMA start or page), per epoch: shared by
 * dax.c (fs-dax tracepoints) and devdax.c (device-dax kprobe). The DAX_* outcome values
 * come from aggregate.DAX_OUTCOMES through the loader. */
#ifndef PMEMTRACE_DAX_COUNTS_H
#define PMEMTRACE_DAX_COUNTS_H
#include "common.h"

struct dax_key {
	u32 tgid;
	u32 outcome;
	u64 vm_start;
	u32 epoch;
	u32 pad;
};
BPF_HASH(dax_counts, struct dax_key, u64, DAX_MAP_ENTRIES);

static __always_inline void dax_count(u32 ep, u32 tgid, u64 vm_start, u32 outcome)
{
	struct dax_key k = { .tgid = tgid, .outcome = outcome, .vm_start = vm_start, .epoch = ep };
	u64 zero64 = 0;
	add_or_lose(dax_counts.lookup_or_try_init(&k, &zero64), 1, ep, LOST_DAX_COUNTS_FULL);
}

#endif /* PMEMTRACE_DAX_COUNTS_H */
