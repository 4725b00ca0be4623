/* fs-dax fault outcomes, per (tgid, VMA start), from the fs_dax tracepoints.
 *
 * Counted in the kernel: PMD faults that mapped 2 MiB, PMD fallbacks, NEEDDSYNC
 * (MAP_SYNC write faults that must flush metadata first), PTE faults, hole loads.
 * Streamed (rare): each PMD fallback with the fields its cause needs, plus whether
 * a 4 KiB entry was seen earlier for the same 2 MiB of the same file (from any
 * process): that blocks PMD faults and is the commonest cause nobody suspects.
 * Latency from NEEDDSYNC to dax_insert_pfn_mkwrite is a log2 histogram per VMA.
 */
enum dax_outcome {
	DAX_PMD_HUGE = 0, DAX_PMD_FALLBACK = 1, DAX_PMD_NEEDDSYNC = 2,
	DAX_PTE = 3, DAX_PTE_NEEDDSYNC = 4, DAX_LOAD_HOLE = 5,
	DAX_PMD_LOAD_HOLE = 6, DAX_PMD_LOAD_HOLE_FALLBACK = 7, DAX_MKWRITE = 8,
};

struct dax_key {
	u32 tgid;
	u32 outcome;
	u64 vm_start;
};
BPF_HASH(dax_counts, struct dax_key, u64, DAX_MAP_ENTRIES);
BPF_PERF_OUTPUT(dax_events);

/* 2 MiB file ranges that had a 4 KiB entry: (dev, ino, pgoff / 512). */
struct range_key {
	u64 ino;
	u64 index;
	u32 dev;
	u32 pad;
};
BPF_HASH(pte_ranges, struct range_key, u8, 65536);

struct dsync_key {
	u32 tgid;
	u32 pad;
	u64 address;
};
struct dsync_val {
	u64 ts;
	u64 vm_start;
};
BPF_HASH(dsync_start, struct dsync_key, struct dsync_val, 65536);

struct hist_key {
	u32 tgid;
	u32 slot;
	u64 vm_start;
};
BPF_HASH(dsync_latency, struct hist_key, u64, 16384);

struct dax_fallback_event {
	u32 type;              /* EVENT_DAX_FALLBACK */
	u32 tgid;
	u64 vm_start, vm_end, vm_flags, address, pgoff, max_pgoff, ino;
	u32 dev, flags;
	s32 result;
	u32 pte_seen;
	char comm[16];
};

static __always_inline void dax_count(u32 tgid, u64 vm_start, u32 outcome)
{
	struct dax_key k = { .tgid = tgid, .outcome = outcome, .vm_start = vm_start };
	{ u64 zero64 = 0; add_or_lose(dax_counts.lookup_or_try_init(&k, &zero64), 1); }
}

static __always_inline void remember_pte(u32 dev, u64 ino, u64 pgoff)
{
	struct range_key r = { .ino = ino, .index = pgoff >> 9, .dev = dev };
	u8 one = 1;
	pte_ranges.update(&r, &one);
}

#ifdef HAVE_tp_fs_dax__dax_pmd_fault_done
int on_dax_pmd_fault_done(struct tp_fs_dax__dax_pmd_fault_done *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	s32 result = args->result;
	u64 vm_start = args->vm_start;
	if (result & VM_FAULT_FALLBACK_BIT) {
		dax_count(tgid, vm_start, DAX_PMD_FALLBACK);
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
		struct range_key r = { .ino = args->ino, .index = args->pgoff >> 9, .dev = args->dev };
		e.pte_seen = pte_ranges.lookup(&r) ? 1 : 0;
		bpf_get_current_comm(&e.comm, sizeof(e.comm));
		dax_events.perf_submit(args, &e, sizeof(e));
		return 0;
	}
	if (result & VM_FAULT_NEEDDSYNC_BIT) {
		dax_count(tgid, vm_start, DAX_PMD_NEEDDSYNC);
		struct dsync_key k = { .tgid = tgid, .address = args->address & PMD_MASK_ADDR };
		struct dsync_val v = { .ts = bpf_ktime_get_ns(), .vm_start = vm_start };
		dsync_start.update(&k, &v);
		return 0;
	}
	if (result & VM_FAULT_NOPAGE_BIT)
		dax_count(tgid, vm_start, DAX_PMD_HUGE);
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_pte_fault_done
int on_dax_pte_fault_done(struct tp_fs_dax__dax_pte_fault_done *args)
{
	/* remembered from any process: a 4 KiB entry blocks later PMD faults */
	remember_pte(args->dev, args->ino, args->pgoff);
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	/* dax_pte_fault_done has no vm_start: key by page; user space finds the VMA */
	u64 page = args->address & ~0xfffULL;
	if (args->result & VM_FAULT_NEEDDSYNC_BIT) {
		dax_count(tgid, page, DAX_PTE_NEEDDSYNC);
		struct dsync_key k = { .tgid = tgid, .address = page };
		struct dsync_val v = { .ts = bpf_ktime_get_ns(), .vm_start = 0 };
		dsync_start.update(&k, &v);
	} else {
		dax_count(tgid, page, DAX_PTE);
	}
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_load_hole
int on_dax_load_hole(struct tp_fs_dax__dax_load_hole *args)
{
	remember_pte(args->dev, args->ino, args->pgoff);
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pid_wanted(tgid))
		dax_count(tgid, args->address & ~0xfffULL, DAX_LOAD_HOLE);
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_pmd_load_hole
int on_dax_pmd_load_hole(struct tp_fs_dax__dax_pmd_load_hole *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pid_wanted(tgid))
		dax_count(tgid, args->address & PMD_MASK_ADDR, DAX_PMD_LOAD_HOLE);
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_pmd_load_hole_fallback
int on_dax_pmd_load_hole_fallback(struct tp_fs_dax__dax_pmd_load_hole_fallback *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pid_wanted(tgid))
		dax_count(tgid, args->address & PMD_MASK_ADDR, DAX_PMD_LOAD_HOLE_FALLBACK);
	return 0;
}
#endif

#ifdef HAVE_tp_fs_dax__dax_insert_pfn_mkwrite
int on_dax_insert_pfn_mkwrite(struct tp_fs_dax__dax_insert_pfn_mkwrite *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	u64 now = bpf_ktime_get_ns();
	struct dsync_key k = { .tgid = tgid, .address = args->address & PMD_MASK_ADDR };
	struct dsync_val *v = dsync_start.lookup(&k);
	if (!v) {
		k.address = args->address & ~0xfffULL;
		v = dsync_start.lookup(&k);
	}
	u64 vm_start = args->address & ~0xfffULL;
	if (v) {
		u64 delta = now - v->ts;
		if (v->vm_start)
			vm_start = v->vm_start;
		struct hist_key h = { .tgid = tgid, .slot = bpf_log2l(delta), .vm_start = vm_start };
		{ u64 zero64 = 0; add_or_lose(dsync_latency.lookup_or_try_init(&h, &zero64), 1); }
		dsync_start.delete(&k);
	}
	dax_count(tgid, vm_start, DAX_MKWRITE);
	return 0;
}
#endif
