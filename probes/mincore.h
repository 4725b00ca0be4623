/* SPDX-License-Identifier: Apache-2.0 */
/* mincore callers, aggregated per process: shared by the syscall tracepoints (syscalls.c) and
 * the kprobes on the syscall function (ksyscalls.c), which differ only in where the arguments
 * and the return value come from. The answer vector is read from user memory, bounded. */
#ifndef PMEMTRACE_MINCORE_H
#define PMEMTRACE_MINCORE_H
#include "common.h"

struct mincore_args {
	u64 start, len, vec, ts;
};
BPF_TABLE("lru_hash", u32, struct mincore_args, mincore_inflight, INFLIGHT_ENTRIES);

struct mincore_stats {
	u64 calls, errors, bytes, pages_examined, pages_resident, ns;
};
BPF_HASH(mincore_counts, struct tgid_key, struct mincore_stats, COMM_MAP_ENTRIES);

static __always_inline void mincore_enter(u64 id, u64 start, u64 len, u64 vec)
{
	u32 tid = id;
	struct mincore_args a = { .start = start, .len = len, .vec = vec, .ts = bpf_ktime_get_ns() };
	lose_if_failed(mincore_inflight.update(&tid, &a), current_epoch(), LOST_INFLIGHT_FULL);
}

static __always_inline void mincore_exit(u64 id, long ret)
{
	u32 tid = id, tgid = id >> 32;
	struct mincore_args *a = mincore_inflight.lookup(&tid);
	if (!a)
		return;
	u32 ep = current_epoch();
	struct tgid_key t = { .tgid = tgid, .epoch = ep };
	struct mincore_stats zero = {}, *st = mincore_counts.lookup_or_try_init(&t, &zero);
	if (!st) {
		count_lost(ep, LOST_MINCORE_COUNTS_FULL);
		mincore_inflight.delete(&tid);
		return;
	}
	__sync_fetch_and_add(&st->calls, 1);
	__sync_fetch_and_add(&st->ns, bpf_ktime_get_ns() - a->ts);
	if (ret != 0) {
		__sync_fetch_and_add(&st->errors, 1);
		mincore_inflight.delete(&tid);
		return;
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
}

#endif /* PMEMTRACE_MINCORE_H */
