/* SPDX-License-Identifier: Apache-2.0 */
/* mmap / munmap / madvise, streamed one event each: shared by the syscall tracepoints
 * (syscalls.c) and the kprobes on the syscall functions (ksyscalls.c), which differ only in
 * where the arguments and the return value come from. ctx is the program's context, for
 * perf_submit. mmap_inflight (tid -> arguments, from enter to exit) is LRU-bounded: a thread
 * killed inside the syscall never deletes its entry. */
#ifndef PMEMTRACE_MMAP_EVENTS_H
#define PMEMTRACE_MMAP_EVENTS_H
#include "common.h"

struct mmap_args {
	u64 addr, len, prot, flags, fd, off;
};
BPF_TABLE("lru_hash", u32, struct mmap_args, mmap_inflight, INFLIGHT_ENTRIES);
BPF_PERF_OUTPUT(syscall_events);

struct syscall_event {
	u32 type;              /* EVENT_MMAP, EVENT_MUNMAP, EVENT_MADVISE */
	u32 tgid;
	u64 addr, len, prot, flags, fd, off;
	s64 ret;
	char comm[16];
};

static __always_inline void mmap_enter(u64 id, struct mmap_args *a)
{
	u32 tid = id;
	lose_if_failed(mmap_inflight.update(&tid, a), current_epoch(), LOST_INFLIGHT_FULL);
}

static __always_inline void mmap_exit(void *ctx, u64 id, s64 ret)
{
	u32 tid = id;
	struct mmap_args *a = mmap_inflight.lookup(&tid);
	if (!a)
		return;
	struct syscall_event e = { .type = EVENT_MMAP, .tgid = id >> 32 };
	e.addr = a->addr; e.len = a->len; e.prot = a->prot;
	e.flags = a->flags; e.fd = a->fd; e.off = a->off;
	e.ret = ret;
	mmap_inflight.delete(&tid);
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(ctx, &e, sizeof(e));
}

static __always_inline void munmap_event(void *ctx, u32 tgid, u64 addr, u64 len)
{
	struct syscall_event e = { .type = EVENT_MUNMAP, .tgid = tgid };
	e.addr = addr;
	e.len = len;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(ctx, &e, sizeof(e));
}

/* only the advice pmemtrace shows: huge pages, no huge pages, collapse */
static __always_inline void madvise_event(void *ctx, u32 tgid, u64 addr, u64 len, u64 advice)
{
	if (advice != MADV_HUGEPAGE_NR && advice != MADV_NOHUGEPAGE_NR && advice != MADV_COLLAPSE_NR)
		return;
	struct syscall_event e = { .type = EVENT_MADVISE, .tgid = tgid };
	e.addr = addr;
	e.len = len;
	e.flags = advice;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(ctx, &e, sizeof(e));
}

#endif /* PMEMTRACE_MMAP_EVENTS_H */
