/* SPDX-License-Identifier: Apache-2.0 */
/* THP collapses (khugepaged and madvise(COLLAPSE)), with the kernel's reason, counted in the kernel.
 *
 * huge_memory:mm_khugepaged_scan_pmd (anonymous) and mm_khugepaged_scan_file (file / shmem) fire
 * once per PMD range scanned, at the end, with the final result: a collapse that was tried
 * (mm_collapse_huge_page / mm_khugepaged_collapse_file) hands its own result back to the scan.
 * Neither event has an address:
 *   - madvise(COLLAPSE) runs in the caller's task: madvise_collapse() scans one PMD range after the
 *     other from the first PMD boundary at or above `start`, one scan event each, so the k-th scan
 *     event of the call is at hstart + k * PMD (the call's start stashed at sys_enter_madvise);
 *   - khugepaged runs in its own thread: the event carries the mm (an opaque key here, never
 *     dereferenced) and the PFN of the last page it examined; user space ties the PFN to an
 *     address of the traced process through its pagemap, and so the mm to the process.
 * collapse_counts is only added to, never read-and-cleared: `report --duration` reads the totals
 * since attach once (loader.Probes.collapse_counts), so the epoch in its key is there for the shared
 * map rules only. collapse_madvise (a madvise(COLLAPSE) call in flight, per thread) is an LRU map.
 */
#include "common.h"

#define COLLAPSE_PMD_BYTES (1ULL << PMD_SHIFT_BITS)
struct collapse_stash {
	u64 hstart;
	u64 k;
};
BPF_TABLE("lru_hash", u64, struct collapse_stash, collapse_madvise, INFLIGHT_ENTRIES);

struct collapse_key {
	u64 mm;          /* khugepaged: the mm; madvise(COLLAPSE): 0 (tgid says whose) */
	u64 addr;        /* madvise(COLLAPSE): the PMD range's address; khugepaged: 0 */
	u64 pfn;         /* khugepaged: last PFN examined (~0: none); madvise(COLLAPSE): 0 */
	u32 tgid;        /* madvise(COLLAPSE): the caller; khugepaged: 0 */
	u32 status;      /* enum scan_result, named by the tracepoint's print fmt */
	u32 file;        /* 1: mm_khugepaged_scan_file */
	u32 madvise;     /* 1: madvise(COLLAPSE), 0: khugepaged */
	u32 epoch;
};
struct collapse_value {
	u64 count;
	u64 filled;      /* PTEs that were empty (or the zero page) in the range: a success fills them */
};
BPF_HASH(collapse_counts, struct collapse_key, struct collapse_value, COLLAPSE_MAP_ENTRIES);

#ifdef FEATURE_COLLAPSE
static __always_inline int collapse_madvise_enter(u64 start, u64 behavior)
{
	u64 id = bpf_get_current_pid_tgid();
	if (behavior != MADV_COLLAPSE_NR || !pid_wanted(id >> 32))
		return 0;
	struct collapse_stash s = { .hstart = (start + COLLAPSE_PMD_BYTES - 1) & ~(COLLAPSE_PMD_BYTES - 1), .k = 0 };
	lose_if_failed(collapse_madvise.update(&id, &s), current_epoch(), LOST_COLLAPSE_MADVISE_FULL);
	return 0;
}

int on_collapse_madvise_enter(struct tp_syscalls__sys_enter_madvise *args)
{
	return collapse_madvise_enter(args->start, args->behavior);
}

#ifndef FEATURE_SYSCALLS
/* without the syscalls feature this is the program on sys_enter_madvise (see loader.EXTRA_PROGRAMS) */
int on_sys_enter_madvise(struct tp_syscalls__sys_enter_madvise *args)
{
	return collapse_madvise_enter(args->start, args->behavior);
}
#endif

#ifdef HAVE_tp_syscalls__sys_exit_madvise
int on_sys_exit_madvise(struct tp_syscalls__sys_exit_madvise *args)
{
	u64 id = bpf_get_current_pid_tgid();
	collapse_madvise.delete(&id);
	return 0;
}
#endif

static __always_inline void collapse_count(u64 mm, u64 pfn, u32 status, u32 file, u64 filled)
{
	u64 id = bpf_get_current_pid_tgid();
	struct collapse_key key = {};
	struct collapse_stash *s = collapse_madvise.lookup(&id);
	key.epoch = current_epoch();
	key.status = status;
	key.file = file;
	if (s) {
		key.madvise = 1;
		key.tgid = id >> 32;
		key.addr = s->hstart + s->k * COLLAPSE_PMD_BYTES;
		s->k += 1;
	} else {
		key.mm = mm;
		key.pfn = pfn;
	}
	struct collapse_value zero = {};
	struct collapse_value *v = collapse_counts.lookup_or_try_init(&key, &zero);
	if (!v) {
		count_lost(key.epoch, LOST_COLLAPSE_COUNTS_FULL);
		return;
	}
	__sync_fetch_and_add(&v->count, 1);
	__sync_fetch_and_add(&v->filled, filled);
}

#ifdef HAVE_tp_huge_memory__mm_khugepaged_scan_pmd
int on_mm_khugepaged_scan_pmd(struct tp_huge_memory__mm_khugepaged_scan_pmd *args)
{
	collapse_count((u64)args->mm, args->pfn, args->status, 0, args->none_or_zero);
	return 0;
}
#endif

#ifdef HAVE_tp_huge_memory__mm_khugepaged_scan_file
int on_mm_khugepaged_scan_file(struct tp_huge_memory__mm_khugepaged_scan_file *args)
{
	s64 holes = (s64)(COLLAPSE_PMD_BYTES >> PAGE_SHIFT_BITS) - args->present - args->swap;
	collapse_count((u64)args->mm, args->pfn, args->result, 1, holes > 0 ? holes : 0);
	return 0;
}
#endif
#endif /* FEATURE_COLLAPSE */
