/* SPDX-License-Identifier: Apache-2.0 */
/* device-dax faults: /dev/daxX.Y has no tracepoints, so where the kernel has
 * kprobes (feature-detected by the loader) dev_dax_huge_fault is probed for its
 * scalar arguments only: the size argument (an order since 6.6, enum
 * page_entry_size before; the loader defines DEVDAX_PMD_ARG / DEVDAX_PTE_ARG
 * from BTF) and the return value. The address comes from the page_fault_user
 * stash of the same task, so counts land on the VMA, keyed by page like PTE
 * DAX faults.
 */
#include <uapi/linux/ptrace.h>   /* struct pt_regs: the arch ABI, for the argument registers only */
#include "common.h"
#include "stash.h"
#include "dax_counts.h"

/* tid -> size argument between entry and return; LRU-bounded (a thread killed inside the
 * fault never deletes its entry) */
BPF_TABLE("lru_hash", u32, u32, devdax_inflight, INFLIGHT_ENTRIES);

int on_devdax_fault(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	u32 tid = id, size = (u32)PT_REGS_PARM2(ctx);
	lose_if_failed(devdax_inflight.update(&tid, &size), current_epoch(), LOST_INFLIGHT_FULL);
	return 0;
}

int on_devdax_fault_ret(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = id, tgid = id >> 32;
	u32 *size = devdax_inflight.lookup(&tid);
	if (!size)
		return 0;
	u32 arg = *size;
	devdax_inflight.delete(&tid);
	u32 ep = current_epoch();
	u32 result = (u32)PT_REGS_RC(ctx);
	u64 page = stash_get(tid);
	if (arg == DEVDAX_PMD_ARG) {
		if (result & VM_FAULT_FALLBACK_MASK)
			dax_count(ep, tgid, page, DAX_PMD_FALLBACK);
		else if (result & VM_FAULT_NOPAGE_MASK)
			dax_count(ep, tgid, page, DAX_PMD_HUGE);
	} else if (arg == DEVDAX_PTE_ARG) {
		dax_count(ep, tgid, page, DAX_PTE);
	}
	return 0;
}
