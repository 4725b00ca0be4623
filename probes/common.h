/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by every pmemtrace probe file; each file includes what it uses. The loader
 * prepends, before any of them:
 *   - #defines for configuration (PID_FILTER, FEATURE_*), for constants whose one source is
 *     Python (DAX_*, EVENT_*, LOST_*, MADV_*_NR, PAGE_SHIFT_BITS, PMD_SHIFT_BITS: see
 *     loader.shared_defines) and for enum values resolved from this kernel's BTF
 *     (THP_FAULT_ALLOC_ITEM, VM_FAULT_*_MASK);
 *   - structs generated from tracefs formats (struct tp_<category>__<event>).
 * Probes never read kernel structs: only those fields and raw-tracepoint scalars,
 * so the generic headers bcc compiles against cannot misread memory.
 *
 * Exact counts across interval boundaries (double buffering by epoch): every count key
 * carries the parity of `epoch` as the program read it. The loader flips the epoch, waits
 * for an RCU grace period (an update of the map-in-map `quiesce` calls synchronize_rcu();
 * every BPF tracing program runs inside an RCU read-side section), and only then reads and
 * deletes the keys of the old parity: no program can still be adding to them, so nothing is lost
 * between the read and the delete. Each program reads the epoch once, at its start.
 */
#ifndef PMEMTRACE_COMMON_H
#define PMEMTRACE_COMMON_H

#define PAGE_MASK_ADDR (~((1ULL << PAGE_SHIFT_BITS) - 1))
#define PMD_MASK_ADDR (~((1ULL << PMD_SHIFT_BITS) - 1))
/* 2 MiB of a file in pages: pgoff >> PMD_ORDER */
#define PMD_ORDER (PMD_SHIFT_BITS - PAGE_SHIFT_BITS)

BPF_ARRAY(epoch, u32, 1);
/* No program reads these two: the loader writes quiesce[0] after each epoch flip, because an
 * update of a map-in-map returns only after synchronize_rcu() (maybe_wait_bpf_programs). */
BPF_ARRAY(quiesce_inner, u32, 1);
BPF_ARRAY_OF_MAPS(quiesce, "quiesce_inner", 1);

static __always_inline u32 current_epoch(void)
{
	u32 zero = 0;
	u32 *e = epoch.lookup(&zero);
	return e ? (*e & 1) : 0;
}

/* Things we had to drop, per epoch and reason (LOST_*): read by the loader as "lost events". */
BPF_ARRAY(lost, u64, 2 * LOST_REASONS);

static __always_inline void count_lost(u32 ep, u32 reason)
{
	u32 slot = ep * LOST_REASONS + reason;
	u64 *v = lost.lookup(&slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int pid_wanted(u32 tgid)
{
#ifdef PID_FILTER
	return tgid == PID_FILTER;
#else
	return 1;
#endif
}

/* Adding to a count in a hash map is written out at each map (bcc cannot
 * rewrite map calls inside macros): lookup_or_try_init, then an atomic add;
 * a full map is counted in lost[], never dropped silently. */
static __always_inline void add_or_lose(u64 *v, u64 n, u32 ep, u32 reason)
{
	if (v)
		__sync_fetch_and_add(v, n);
	else
		count_lost(ep, reason);
}

/* A plain update (maps that are not counts): a failure is counted too. */
static __always_inline void lose_if_failed(int err, u32 ep, u32 reason)
{
	if (err < 0)
		count_lost(ep, reason);
}

/* (tgid, epoch): the key of per-process counts */
struct tgid_key {
	u32 tgid;
	u32 epoch;
};

#endif /* PMEMTRACE_COMMON_H */
