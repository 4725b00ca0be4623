/* SPDX-License-Identifier: Apache-2.0 */
/* The mmap / munmap / madvise / mincore watch of probes/syscalls.c, through kprobes on
 * the syscall functions themselves (__x64_sys_mmap, ...) instead of syscall tracepoints;
 * the maps, events and their meaning are the same (the bodies below are syscalls.c's).
 *
 * Why: attaching any syscall tracepoint sets the tracepoint work flag on every task, so
 * every system call of every task takes the kernel's slow path (about 12% on a getppid
 * loop). A kprobe on __x64_sys_mincore runs only when mincore is called. The loader
 * feature-detects kprobes (tracefs kprobe_events) and the four symbols (kallsyms) and
 * uses this file instead of syscalls.c (never both in one program).
 *
 * What is read: the syscall's own arguments, from the user register frame the syscall
 * wrapper receives (struct pt_regs: the architecture's ABI, the same on every kernel;
 * SYSCALL_WRAPPER is defined when the symbol is such a wrapper), the return value, and
 * for mincore the caller's answer vector in user memory. No kernel-internal struct.
 */
#include <uapi/linux/ptrace.h>   /* struct pt_regs: the arch ABI, for the argument registers only */
#include "common.h"


/* the syscall ABI's 4th argument register differs from the C calling convention's on x86-64 */
#if defined(bpf_target_x86) || defined(__TARGET_ARCH_x86)
#define KSYS_ARG4(r) ((r)->r10)
#else
#define KSYS_ARG4(r) PT_REGS_PARM4(r)
#endif

/* The user registers of the call: a copy of the frame the wrapper points to, or ctx itself. */
static __always_inline int ksys_regs(struct pt_regs *ctx, struct pt_regs *out)
{
#ifdef SYSCALL_WRAPPER
	return bpf_probe_read_kernel(out, sizeof(*out), (void *)PT_REGS_PARM1(ctx));
#else
	return bpf_probe_read_kernel(out, sizeof(*out), ctx);
#endif
}

#ifdef FEATURE_KSYSCALLS
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

int on_ksys_enter_mmap(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct pt_regs r = {};
	if (ksys_regs(ctx, &r))
		return 0;
	u32 tid = id;
	struct mmap_args a = { .addr = PT_REGS_PARM1(&r), .len = PT_REGS_PARM2(&r), .prot = PT_REGS_PARM3(&r),
			       .flags = KSYS_ARG4(&r), .fd = PT_REGS_PARM5(&r), .off = PT_REGS_PARM6(&r) };
	lose_if_failed(mmap_inflight.update(&tid, &a), current_epoch(), LOST_INFLIGHT_FULL);
	return 0;
}

int on_ksys_exit_mmap(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tid = id;
	struct mmap_args *a = mmap_inflight.lookup(&tid);
	if (!a)
		return 0;
	struct syscall_event e = { .type = EVENT_MMAP, .tgid = id >> 32 };
	e.addr = a->addr; e.len = a->len; e.prot = a->prot;
	e.flags = a->flags; e.fd = a->fd; e.off = a->off;
	e.ret = PT_REGS_RC(ctx);
	mmap_inflight.delete(&tid);
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(ctx, &e, sizeof(e));
	return 0;
}

int on_ksys_enter_munmap(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	struct pt_regs r = {};
	if (ksys_regs(ctx, &r))
		return 0;
	struct syscall_event e = { .type = EVENT_MUNMAP, .tgid = tgid };
	e.addr = PT_REGS_PARM1(&r);
	e.len = PT_REGS_PARM2(&r);
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(ctx, &e, sizeof(e));
	return 0;
}

int on_ksys_enter_madvise(struct pt_regs *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return 0;
	struct pt_regs r = {};
	if (ksys_regs(ctx, &r))
		return 0;
	u64 advice = (u32)PT_REGS_PARM3(&r);
	if (advice != MADV_HUGEPAGE_NR && advice != MADV_NOHUGEPAGE_NR && advice != MADV_COLLAPSE_NR)
		return 0;
	struct syscall_event e = { .type = EVENT_MADVISE, .tgid = tgid };
	e.addr = PT_REGS_PARM1(&r);
	e.len = PT_REGS_PARM2(&r);
	e.flags = advice;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	syscall_events.perf_submit(ctx, &e, sizeof(e));
	return 0;
}
#endif

#ifdef FEATURE_KMINCORE
struct mincore_args {
	u64 start, len, vec, ts;
};
BPF_TABLE("lru_hash", u32, struct mincore_args, mincore_inflight, INFLIGHT_ENTRIES);

struct mincore_stats {
	u64 calls, errors, bytes, pages_examined, pages_resident, ns;
};
BPF_HASH(mincore_counts, struct tgid_key, struct mincore_stats, COMM_MAP_ENTRIES);

int on_ksys_enter_mincore(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct pt_regs r = {};
	if (ksys_regs(ctx, &r))
		return 0;
	u32 tid = id;
	struct mincore_args a = { .start = PT_REGS_PARM1(&r), .len = PT_REGS_PARM2(&r),
				  .vec = PT_REGS_PARM3(&r), .ts = bpf_ktime_get_ns() };
	lose_if_failed(mincore_inflight.update(&tid, &a), current_epoch(), LOST_INFLIGHT_FULL);
	return 0;
}

int on_ksys_exit_mincore(struct pt_regs *ctx)
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
	if (PT_REGS_RC(ctx) != 0) {
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
