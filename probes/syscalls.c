/* SPDX-License-Identifier: Apache-2.0 */
/* Rare paths: mmap / munmap / madvise (streamed, one event each) and mincore
 * (aggregated per process in the kernel, with the resident fraction of the answer).
 * Syscall tracepoints put every syscall of every task on the slow path while
 * attached; bench/bench.py measures that on a syscall-heavy loop.
 * The *_inflight maps (tid -> arguments, from enter to exit) are LRU-bounded: a thread
 * killed inside the syscall never deletes its entry.
 */
#include "common.h"

#ifdef FEATURE_SYSCALLS
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

#ifdef HAVE_tp_syscalls__sys_enter_mmap
int on_sys_enter_mmap(struct tp_syscalls__sys_enter_mmap *args)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	u32 tid = id;
	struct mmap_args a = { .addr = args->addr, .len = args->len, .prot = args->prot,
			       .flags = args->flags, .fd = args->fd, .off = args->off };
	lose_if_failed(mmap_inflight.update(&tid, &a), current_epoch(), LOST_INFLIGHT_FULL);
	return 0;
}
#endif

#ifdef HAVE_tp_syscalls__sys_exit_mmap
int on_sys_exit_mmap(struct tp_syscalls__sys_exit_mmap *args)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = id;
	struct mmap_args *a = mmap_inflight.lookup(&tid);
	if (!a)
		return 0;
	struct syscall_event e = { .type = EVENT_MMAP, .tgid = id >> 32 };
	e.addr = a->addr; e.len = a->len; e.prot = a->prot;
	e.flags = a->flags; e.fd = a->fd; e.off = a->off;
	e.ret = args->ret;
	mmap_inflight.delete(&tid);
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(args, &e, sizeof(e));
	return 0;
}
#endif

#ifdef HAVE_tp_syscalls__sys_enter_munmap
int on_sys_enter_munmap(struct tp_syscalls__sys_enter_munmap *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	struct syscall_event e = { .type = EVENT_MUNMAP, .tgid = tgid };
	e.addr = args->addr;
	e.len = args->len;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(args, &e, sizeof(e));
	return 0;
}
#endif

#ifdef HAVE_tp_syscalls__sys_enter_madvise
int on_sys_enter_madvise(struct tp_syscalls__sys_enter_madvise *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	u64 advice = args->behavior;
	if (advice != MADV_HUGEPAGE_NR && advice != MADV_NOHUGEPAGE_NR && advice != MADV_COLLAPSE_NR)
		return 0;
	struct syscall_event e = { .type = EVENT_MADVISE, .tgid = tgid };
	e.addr = args->start;
	e.len = args->len_in;
	e.flags = advice;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(args, &e, sizeof(e));
	return 0;
}
#endif
#endif

#ifdef FEATURE_MINCORE
struct mincore_args {
	u64 start, len, vec, ts;
};
BPF_TABLE("lru_hash", u32, struct mincore_args, mincore_inflight, INFLIGHT_ENTRIES);

struct mincore_stats {
	u64 calls, errors, bytes, pages_examined, pages_resident, ns;
};
BPF_HASH(mincore_counts, struct tgid_key, struct mincore_stats, COMM_MAP_ENTRIES);

#ifdef HAVE_tp_syscalls__sys_enter_mincore
int on_sys_enter_mincore(struct tp_syscalls__sys_enter_mincore *args)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	u32 tid = id;
	struct mincore_args a = { .start = args->start, .len = args->len,
				  .vec = (u64)args->vec, .ts = bpf_ktime_get_ns() };
	lose_if_failed(mincore_inflight.update(&tid, &a), current_epoch(), LOST_INFLIGHT_FULL);
	return 0;
}
#endif

#ifdef HAVE_tp_syscalls__sys_exit_mincore
int on_sys_exit_mincore(struct tp_syscalls__sys_exit_mincore *args)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = id, tgid = id >> 32;
	struct mincore_args *a = mincore_inflight.lookup(&tid);
	if (!a)
		return 0;
	u32 ep = current_epoch();
	struct tgid_key t = { .tgid = tgid, .epoch = ep };
	struct mincore_stats zero = {}, *st = mincore_counts.lookup_or_try_init(&t, &zero);
	if (!st) {
		count_lost(ep, LOST_MINCORE_COUNTS_FULL);
		mincore_inflight.delete(&tid);
		return 0;
	}
	__sync_fetch_and_add(&st->calls, 1);
	__sync_fetch_and_add(&st->ns, bpf_ktime_get_ns() - a->ts);
	if (args->ret != 0) {
		__sync_fetch_and_add(&st->errors, 1);
		mincore_inflight.delete(&tid);
		return 0;
	}
	__sync_fetch_and_add(&st->bytes, a->len);
	/* Read the answer vector, bounded: the first MINCORE_VEC_WORDS * 8 pages. */
	u64 pages = (a->len + (1ULL << PAGE_SHIFT_BITS) - 1) >> PAGE_SHIFT_BITS, examined = 0, resident = 0;
	u64 vec = a->vec;
	for (int i = 0; i < MINCORE_VEC_WORDS; i++) {
		if (examined + 8 > pages)
			break;
		u64 w = 0;
		if (bpf_probe_read_user(&w, sizeof(w), (void *)(vec + i * 8)))
			break;
		/* one byte a page, bit 0 = resident: add the low bits of the 8 bytes */
		resident += ((w & 0x0101010101010101ULL) * 0x0101010101010101ULL) >> 56;
		examined += 8;
	}
	/* the tail of fewer than 8 pages, byte by byte */
	for (int j = 0; j < 8; j++) {
		if (examined >= pages || examined >= MINCORE_VEC_WORDS * 8)
			break;
		u8 b = 0;
		if (bpf_probe_read_user(&b, 1, (void *)(vec + examined)))
			break;
		resident += b & 1;
		examined += 1;
	}
	__sync_fetch_and_add(&st->pages_examined, examined);
	__sync_fetch_and_add(&st->pages_resident, resident);
	mincore_inflight.delete(&tid);
	return 0;
}
#endif
#endif
