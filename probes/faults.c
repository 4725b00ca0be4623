/* SPDX-License-Identifier: Apache-2.0 */
/* Page faults and THP fault allocations, by address.
 *
 * Raw tracepoints only (~50 ns a call): exceptions:page_fault_user gives the
 * faulting address before the fault is handled; memcg:count_memcg_events then
 * fires in the same task with THP_FAULT_ALLOC when the fault allocated a PMD
 * folio. The address travels from one to the other in the stash, an array
 * indexed by thread id, the same on every kernel (stash.h).
 *
 * FEATURE_FAULTS  (needs PID_FILTER): every fault counted per 4 KiB page
 *                 (page_fault_user alone: works where the memcg tracepoint is absent).
 *                 Other processes pay one early return (pid_wanted).
 * THP_ATTRIBUTION (the loader defines it when both tracepoints and the BTF enum
 *                 value exist): THP fault allocations counted per (tgid, PMD address),
 *                 and the comm of each tgid that took one, per epoch (for rows of
 *                 processes that exited before user space could read /proc).
 *
 * Bounds: every count map holds at most what one interval adds (the loader deletes the
 * keys of the epoch it has read), sized in loader.MAP_SIZES; a full map is counted in lost[].
 */
#include "common.h"
#include "stash.h"

struct addr_key {
	u32 tgid;
	u32 epoch;
	u64 addr;
};
BPF_HASH(thp_faults, struct addr_key, u64, THP_MAP_ENTRIES);
BPF_HASH(thp_unattributed, struct tgid_key, u64, COMM_MAP_ENTRIES);
struct comm_t {
	char comm[16];
};
BPF_HASH(thp_comm, struct tgid_key, struct comm_t, COMM_MAP_ENTRIES);
#ifdef FEATURE_FAULTS
BPF_HASH(page_faults, struct addr_key, u64, FAULT_MAP_ENTRIES);
#endif

RAW_TRACEPOINT_PROBE(page_fault_user)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
#if defined(THP_ATTRIBUTION) || defined(FEATURE_DEVDAX)
	stash_put(id, ctx->args[0]);
#endif
#ifdef FEATURE_FAULTS
	u32 ep = current_epoch();
	struct addr_key k = { .tgid = id >> 32, .epoch = ep, .addr = ctx->args[0] & PAGE_MASK_ADDR };
	u64 zero64 = 0;
	add_or_lose(page_faults.lookup_or_try_init(&k, &zero64), 1, ep, LOST_PAGE_FAULTS_FULL);
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
	u32 ep = current_epoch();
	u64 n = ctx->args[2];
	u64 zero64 = 0;
	struct tgid_key t = { .tgid = tgid, .epoch = ep };
	u64 page = stash_get(id);
	if (!page) {
		add_or_lose(thp_unattributed.lookup_or_try_init(&t, &zero64), n, ep, LOST_THP_UNATTRIBUTED_FULL);
	} else {
		struct addr_key k = { .tgid = tgid, .epoch = ep, .addr = page & PMD_MASK_ADDR };
		add_or_lose(thp_faults.lookup_or_try_init(&k, &zero64), n, ep, LOST_THP_FAULTS_FULL);
	}
	struct comm_t c = {};
	bpf_get_current_comm(&c.comm, sizeof(c.comm));
	lose_if_failed(thp_comm.update(&t, &c), ep, LOST_THP_COMM_FULL);
	return 0;
}
#endif
