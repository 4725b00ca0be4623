/* SPDX-License-Identifier: Apache-2.0 */
/* The faulting address, from exceptions:page_fault_user to what follows in the same task
 * (memcg:count_memcg_events in faults.c, the device-dax kretprobe in devdax.c).
 *
 * A plain array of STASH_ENTRIES words indexed by the low bits of the thread id. One word
 * holds the page address and, in the low bits a page address leaves free, a valid bit and
 * the thread id's high bits, so a reader checks it got its own thread's word with one 8-byte
 * load, never a torn pair. An array lookup is inlined by the verifier: this is the cheapest
 * store on the every-fault path (task storage cost ~45 ns more per fault), works on every
 * kernel, and is not per-CPU (zeroing a 2 MiB folio may sleep and resume elsewhere).
 * Bounded by construction, nothing to evict: the next fault of any thread with the same low
 * bits overwrites the word; a reader that then finds another thread's word has no address
 * (its THP fault counts as unattributed). The loader checks STASH_ENTRIES is a power of two
 * large enough that pid_max's high bits fit (program.stash_fits, a unit test). */
#ifndef PMEMTRACE_STASH_H
#define PMEMTRACE_STASH_H
#include "common.h"

#if defined(THP_ATTRIBUTION) || defined(FEATURE_DEVDAX)   /* its only users */
#define STASH_VALID (1ULL << (PAGE_SHIFT_BITS - 1))
BPF_ARRAY(stash, u64, STASH_ENTRIES);

static __always_inline void stash_put(u32 tid, u64 address)
{
	u32 slot = tid & (STASH_ENTRIES - 1);
	u64 *w = stash.lookup(&slot);
	if (w)
		*w = (address & PAGE_MASK_ADDR) | STASH_VALID | (tid / STASH_ENTRIES);
}

/* the page address this thread last faulted on, or 0 if its word was taken by another thread */
static __always_inline u64 stash_get(u32 tid)
{
	u32 slot = tid & (STASH_ENTRIES - 1);
	u64 *w = stash.lookup(&slot);
	if (!w)
		return 0;
	u64 word = *w;
	if (word != ((word & PAGE_MASK_ADDR) | STASH_VALID | (tid / STASH_ENTRIES)))
		return 0;
	return word & PAGE_MASK_ADDR;
}
#endif

#endif /* PMEMTRACE_STASH_H */
