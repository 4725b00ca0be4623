/* SPDX-License-Identifier: Apache-2.0 */
/* The faulting address, from exceptions:page_fault_user to what follows in the same task
 * (memcg:count_memcg_events in faults.c, the device-dax kretprobe in devdax.c).
 * Task-local storage, not per-CPU: zeroing a 2 MiB folio may sleep and resume on another
 * CPU (a per-CPU stash lost 1-4 of 32 THP faults). Freed with its task: bounded by the
 * number of tasks, no eviction needed. The task pointer is only handed to the storage
 * helper, never dereferenced. */
#ifndef PMEMTRACE_STASH_H
#define PMEMTRACE_STASH_H
#include "common.h"

#if defined(THP_ATTRIBUTION) || defined(FEATURE_DEVDAX)   /* its only users */
struct fault_stash {
	u64 address;
};
#ifdef HAVE_TASK_STORAGE
BPF_TASK_STORAGE(stash, struct fault_stash);
#else
/* Before 5.11 (no BPF task storage): an LRU hash keyed by thread id, bounded by
 * STASH_ENTRIES, the least recently faulting threads evicted first (loader.stash_defines). */
BPF_TABLE("lru_hash", u32, struct fault_stash, stash, STASH_ENTRIES);
#endif

#endif

#endif /* PMEMTRACE_STASH_H */
