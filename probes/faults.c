/* Page faults and THP fault allocations, by address.
 *
 * Raw tracepoints only (~50 ns a call): exceptions:page_fault_user gives the
 * faulting address before the fault is handled; memcg:count_memcg_events then
 * fires in the same task with THP_FAULT_ALLOC when the fault allocated a PMD
 * folio. The address travels from one to the other in task-local storage: a
 * per-CPU stash lost 1-4 of 32 THP faults here, because zeroing a 2 MiB folio
 * may sleep and resume on another CPU. The task pointer is only handed to the
 * storage helper, never dereferenced.
 * Before 5.11 (no BPF task storage, no bpf_get_current_task_btf; the loader then
 * leaves HAVE_TASK_STORAGE undefined) the stash is an LRU hash keyed by thread id:
 * bounded (STASH_ENTRIES), the least recently faulting threads evicted first.
 *
 * FEATURE_FAULTS  (needs PID_FILTER): every fault counted per 4 KiB page
 *                 (page_fault_user alone: works where the memcg tracepoint is absent).
 * THP_ATTRIBUTION (the loader defines it when both tracepoints and the BTF enum
 *                 value exist): THP fault allocations counted per (tgid, PMD address).
 */
struct fault_stash {
	u64 address;
};
#ifdef HAVE_TASK_STORAGE
BPF_TASK_STORAGE(stash, struct fault_stash);
#else
BPF_TABLE("lru_hash", u32, struct fault_stash, stash, STASH_ENTRIES);
#endif

struct addr_key {
	u32 tgid;
	u32 pad;
	u64 addr;
};
BPF_HASH(thp_faults, struct addr_key, u64, THP_MAP_ENTRIES);
BPF_HASH(thp_unattributed, u32, u64, 4096);
struct comm_t {
	char comm[16];
};
BPF_HASH(thp_comm, u32, struct comm_t, 4096);
#ifdef FEATURE_FAULTS
BPF_HASH(page_faults, struct addr_key, u64, FAULT_MAP_ENTRIES);
#endif

RAW_TRACEPOINT_PROBE(page_fault_user)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
#if defined(THP_ATTRIBUTION) || defined(FEATURE_DEVDAX)
#ifdef HAVE_TASK_STORAGE
	struct fault_stash *s = stash.task_storage_get((struct task_struct *)bpf_get_current_task_btf(), 0,
						       BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (s)
		s->address = ctx->args[0];
#else
	u32 stash_tid = id;
	struct fault_stash st = { .address = ctx->args[0] };
	stash.update(&stash_tid, &st);
#endif
#endif
#ifdef FEATURE_FAULTS
	struct addr_key k = { .tgid = id >> 32, .addr = ctx->args[0] & ~0xfffULL };
	{ u64 zero64 = 0; add_or_lose(page_faults.lookup_or_try_init(&k, &zero64), 1); }
#endif
	return 0;
}

#ifdef THP_ATTRIBUTION
RAW_TRACEPOINT_PROBE(count_memcg_events)
{
	int item = (int)ctx->args[1];
	if (item != THP_FAULT_ALLOC_ITEM && item != THP_FILE_ALLOC_ITEM)
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (!pid_wanted(tgid))
		return 0;
	u64 n = ctx->args[2];
#ifdef HAVE_TASK_STORAGE
	struct fault_stash *s = stash.task_storage_get((struct task_struct *)bpf_get_current_task_btf(), 0, 0);
#else
	u32 stash_tid = id;
	struct fault_stash *s = stash.lookup(&stash_tid);
#endif
	if (!s) {
		{ u64 zero64 = 0; add_or_lose(thp_unattributed.lookup_or_try_init(&tgid, &zero64), n); }
		return 0;
	}
	struct addr_key k = { .tgid = tgid, .addr = s->address & PMD_MASK_ADDR };
	{ u64 zero64 = 0; add_or_lose(thp_faults.lookup_or_try_init(&k, &zero64), n); }
	struct comm_t c = {};
	bpf_get_current_comm(&c.comm, sizeof(c.comm));
	thp_comm.update(&tgid, &c);
	return 0;
}
#endif
