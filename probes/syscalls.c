/* SPDX-License-Identifier: Apache-2.0 */
/* Rare paths: mmap / munmap / madvise (streamed, one event each) and mincore
 * (aggregated per process in the kernel, with the resident fraction of the answer).
 * Syscall tracepoints put every syscall of every task on the slow path while
 * attached; bench/bench.py measures that on a syscall-heavy loop. What is done with the
 * arguments is shared with ksyscalls.c: mmap_events.h, mincore.h.
 */
#include "common.h"

#ifdef FEATURE_SYSCALLS
#include "mmap_events.h"

#ifdef HAVE_tp_syscalls__sys_enter_mmap
int on_sys_enter_mmap(struct tp_syscalls__sys_enter_mmap *args)
{
	u64 id = bpf_get_current_pid_tgid();
	if (!pid_wanted(id >> 32))
		return 0;
	struct mmap_args a = { .addr = args->addr, .len = args->len, .prot = args->prot,
			       .flags = args->flags, .fd = args->fd, .off = args->off };
	mmap_enter(id, &a);
	return 0;
}
#endif

#ifdef HAVE_tp_syscalls__sys_exit_mmap
int on_sys_exit_mmap(struct tp_syscalls__sys_exit_mmap *args)
{
	mmap_exit(args, bpf_get_current_pid_tgid(), args->ret);
	return 0;
}
#endif

#ifdef HAVE_tp_syscalls__sys_enter_munmap
int on_sys_enter_munmap(struct tp_syscalls__sys_enter_munmap *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pid_wanted(tgid))
		munmap_event(args, tgid, args->addr, args->len);
	return 0;
}
#endif

#ifdef HAVE_tp_syscalls__sys_enter_madvise
int on_sys_enter_madvise(struct tp_syscalls__sys_enter_madvise *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (pid_wanted(tgid))
		madvise_event(args, tgid, args->start, args->len_in, args->behavior);
	return 0;
}
#endif
#endif

#ifdef FEATURE_MINCORE
#include "mincore.h"

#ifdef HAVE_tp_syscalls__sys_enter_mincore
int on_sys_enter_mincore(struct tp_syscalls__sys_enter_mincore *args)
{
	u64 id = bpf_get_current_pid_tgid();
	if (pid_wanted(id >> 32))
		mincore_enter(id, args->start, args->len, (u64)args->vec);
	return 0;
}
#endif

#ifdef HAVE_tp_syscalls__sys_exit_mincore
int on_sys_exit_mincore(struct tp_syscalls__sys_exit_mincore *args)
{
	mincore_exit(bpf_get_current_pid_tgid(), args->ret);
	return 0;
}
#endif
#endif
