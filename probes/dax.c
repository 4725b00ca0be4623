/* SPDX-License-Identifier: Apache-2.0 */
/* fs-dax fault outcomes, per (tgid, VMA start), from the fs_dax tracepoints.
 *
 * Counted in the kernel: PMD faults that mapped 2 MiB, PMD fallbacks, NEEDDSYNC
 * (MAP_SYNC write faults that must flush metadata first), PTE faults, hole loads.
 * Streamed (rare): each PMD fallback with the fields its cause needs, plus whether
 * a 4 KiB entry was seen earlier for the same 2 MiB of the same file (from any
 * process): that blocks PMD faults and is the commonest cause nobody suspects.
 * Latency from NEEDDSYNC to dax_insert_pfn_mkwrite is a log2 histogram per VMA.
 */
#include "common.h"
#include "dax_counts.h"

BPF_PERF_OUTPUT(dax_events);

/* 2 MiB file ranges that had a 4 KiB entry: (dev, ino, pgoff >> PMD_ORDER). A memory, not a
 * count: LRU-bounded, so on a box that maps more than PTE_RANGE_ENTRIES such ranges the
 * oldest are forgotten and a fallback there is classified without "pte_seen". */
struct range_key {
	u64 ino;
	u64 index;
	u32 dev;
	u32 pad;
};
BPF_TABLE("lru_hash", struct range_key, u8, pte_ranges, PTE_RANGE_ENTRIES);

struct dsync_key {
	u32 tgid;
	u32 pad;
	u64 address;
};
struct dsync_val {
	u64 ts;
	u64 vm_start;
};
/* NEEDDSYNC seen, waiting for its dax_insert_pfn_mkwrite: deleted when it comes; LRU-bounded
 * for the ones that never come (the process died, or the mkwrite failed). */
BPF_TABLE("lru_hash", struct dsync_key, struct dsync_val, dsync_start, DSYNC_START_ENTRIES);

struct hist_key {
	u32 tgid;
	u32 slot;
	u64 vm_start;
	u32 epoch;
	u32 pad;
};
BPF_HASH(dsync_latency, struct hist_key, u64, DSYNC_HIST_ENTRIES);

struct dax_fallback_event {
	u32 type;              /* EVENT_DAX_FALLBACK */
	u32 tgid;
	u64 vm_start, vm_end, vm_flags, address, pgoff, max_pgoff, ino;
	u32 dev, flags;
	s32 result;
	u32 pte_seen;
	char comm[16];
};

static __always_inline void remember_pte(u32 ep, u32 dev, u64 ino, u64 pgoff)
{
	struct range_key r = { .ino = ino, .index = pgoff >> PMD_ORDER, .dev = dev };
	u8 one = 1;
	lose_if_failed(pte_ranges.update(&r, &one), ep, LOST_PTE_RANGES_FULL);
}

#ifdef HAVE_tp_fs_dax__dax_pmd_fault_done
int on_dax_pmd_fault_done(struct tp_fs_dax__dax_pmd_fault_done *args)
{
	u32 ep = current_epoch();
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	s32 result = args->result;
	u64 vm_start = args->vm_start;
	if (result & VM_FAULT_FALLBACK_MASK) {
		dax_count(ep, tgid, vm_start, DAX_PMD_FALLBACK);
		struct dax_fallback_event e = { .type = EVENT_DAX_FALLBACK, .tgid = tgid };
		e.vm_start = vm_start;
		e.vm_end = args->vm_end;
		e.vm_flags = args->vm_flags;
		e.address = args->address;
		e.pgoff = args->pgoff;
		e.max_pgoff = args->max_pgoff;
		e.ino = args->ino;
		e.dev = args->dev;
		e.flags = args->flags;
		e.result = result;
		struct range_key r = { .ino = args->ino, .index = args->pgoff >> PMD_ORDER, .dev = args->dev };
		e.pte_seen = pte_ranges.lookup(&r) ? 1 : 0;
		bpf_get_current_comm(&e.comm, sizeof(e.comm));
		dax_events.perf_submit(args, &e, sizeof(e));
		return 0;
	}
	if (result & VM_FAULT_NEEDDSYNC_MASK) {
		dax_count(ep, tgid, vm_start, DAX_PMD_NEEDDSYNC);
		struct dsync_key k = { .tgid = tgid, .address = args->address & PMD_MASK_ADDR };
		struct dsync_val v = { .ts = bpf_ktime_get_ns(), .vm_start = vm_start };
		lose_if_failed(dsync_start.update(&k, &v), ep, LOST_DSYNC_START_FULL);
		return 0;
	}
	if (result & VM_FAULT_NOPAGE_MASK)
		dax_count(ep, tgid, vm_start, DAX_PMD_HUGE);
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_pte_fault_done
int on_dax_pte_fault_done(struct tp_fs_dax__dax_pte_fault_done *args)
{
	u32 ep = current_epoch();
	/* remembered from any process: a 4 KiB entry blocks later PMD faults */
	remember_pte(ep, args->dev, args->ino, args->pgoff);
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	/* dax_pte_fault_done has no vm_start: key by page; user space finds the VMA */
	u64 page = args->address & PAGE_MASK_ADDR;
	if (args->result & VM_FAULT_NEEDDSYNC_MASK) {
		dax_count(ep, tgid, page, DAX_PTE_NEEDDSYNC);
		struct dsync_key k = { .tgid = tgid, .address = page };
		struct dsync_val v = { .ts = bpf_ktime_get_ns(), .vm_start = 0 };
		lose_if_failed(dsync_start.update(&k, &v), ep, LOST_DSYNC_START_FULL);
	} else {
		dax_count(ep, tgid, page, DAX_PTE);
	}
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_load_hole
int on_dax_load_hole(struct tp_fs_dax__dax_load_hole *args)
{
	u32 ep = current_epoch();
	remember_pte(ep, args->dev, args->ino, args->pgoff);
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pid_wanted(tgid))
		dax_count(ep, tgid, args->address & PAGE_MASK_ADDR, DAX_LOAD_HOLE);
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_pmd_load_hole
int on_dax_pmd_load_hole(struct tp_fs_dax__dax_pmd_load_hole *args)
{
	u32 ep = current_epoch();
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pid_wanted(tgid))
		dax_count(ep, tgid, args->address & PMD_MASK_ADDR, DAX_PMD_LOAD_HOLE);
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_pmd_load_hole_fallback
int on_dax_pmd_load_hole_fallback(struct tp_fs_dax__dax_pmd_load_hole_fallback *args)
{
	u32 ep = current_epoch();
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pid_wanted(tgid))
		dax_count(ep, tgid, args->address & PMD_MASK_ADDR, DAX_PMD_LOAD_HOLE_FALLBACK);
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_insert_pfn_mkwrite
int on_dax_insert_pfn_mkwrite(struct tp_fs_dax__dax_insert_pfn_mkwrite *args)
{
	u32 ep = current_epoch();
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	u64 now = bpf_ktime_get_ns();
	struct dsync_key k = { .tgid = tgid, .address = args->address & PMD_MASK_ADDR };
	struct dsync_val *v = dsync_start.lookup(&k);
	if (!v) {
		k.address = args->address & PAGE_MASK_ADDR;
		v = dsync_start.lookup(&k);
	}
	u64 vm_start = args->address & PAGE_MASK_ADDR;
	if (v) {
		u64 delta = now - v->ts;
		if (v->vm_start)
			vm_start = v->vm_start;
		struct hist_key h = { .tgid = tgid, .slot = bpf_log2l(delta), .vm_start = vm_start, .epoch = ep };
		u64 zero64 = 0;
		add_or_lose(dsync_latency.lookup_or_try_init(&h, &zero64), 1, ep, LOST_DSYNC_LATENCY_FULL);
		dsync_start.delete(&k);
	}
	dax_count(ep, tgid, vm_start, DAX_MKWRITE);
	return 0;
}
#endif
