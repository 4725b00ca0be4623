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
#include "mmap_events.h"

int on_ksys_enter_mmap(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct pt_regs r = {};
	if (ksys_regs(ctx, &r))
		return 0;
	struct mmap_args a = { .addr = PT_REGS_PARM1(&r), .len = PT_REGS_PARM2(&r), .prot = PT_REGS_PARM3(&r),
			       .flags = KSYS_ARG4(&r), .fd = PT_REGS_PARM5(&r), .off = PT_REGS_PARM6(&r) };
	mmap_enter(id, &a);
	return 0;
}

int on_ksys_exit_mmap(struct pt_regs *ctx)
{
	mmap_exit(ctx, bpf_get_current_pid_tgid(), PT_REGS_RC(ctx));
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
	munmap_event(ctx, tgid, PT_REGS_PARM1(&r), PT_REGS_PARM2(&r));
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
	madvise_event(ctx, tgid, PT_REGS_PARM1(&r), PT_REGS_PARM2(&r), (u32)PT_REGS_PARM3(&r));
	return 0;
}
#endif

#ifdef FEATURE_KMINCORE
#include "mincore.h"

int on_ksys_enter_mincore(struct pt_regs *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct pt_regs r = {};
	if (ksys_regs(ctx, &r))
		return 0;
	mincore_enter(id, PT_REGS_PARM1(&r), PT_REGS_PARM2(&r), PT_REGS_PARM3(&r));
	return 0;
}

int on_ksys_exit_mincore(struct pt_regs *ctx)
{
	mincore_exit(bpf_get_current_pid_tgid(), PT_REGS_RC(ctx));
	return 0;
}
#endif
