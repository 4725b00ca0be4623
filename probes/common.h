/* Shared by every pmemtrace probe. The loader prepends, before this file:
 *   - #defines for configuration (PID_FILTER, FEATURE_*) and for enum values
 *     resolved from this kernel's BTF (THP_FAULT_ALLOC_ITEM, VM_FAULT_*);
 *   - structs generated from tracefs formats (struct tp_<category>__<event>).
 * Probes never read kernel structs: only those fields and raw-tracepoint scalars,
 * so the generic headers bcc compiles against cannot misread memory.
 */
#define PMD_SHIFT_BITS 21
#define PMD_MASK_ADDR (~((1ULL << PMD_SHIFT_BITS) - 1))

/* Counters for things we had to drop: read by the loader as "lost events". */
enum lost_reason { LOST_MAP_FULL = 0, LOST_REASONS = 1 };
BPF_ARRAY(lost, u64, LOST_REASONS);

static __always_inline void count_lost(int reason)
{
	u64 *v = lost.lookup(&reason);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int pid_wanted(u32 tgid)
{
#ifdef PID_FILTER
	return tgid == PID_FILTER;
#else
	return 1;
#endif
}

/* Adding to a count in a hash map is written out at each map (bcc cannot
 * rewrite map calls inside macros): lookup_or_try_init, then an atomic add;
 * a full map is counted in lost[], never dropped silently. */
static __always_inline void add_or_lose(u64 *v, u64 n)
{
	if (v)
		__sync_fetch_and_add(v, n);
	else
		count_lost(LOST_MAP_FULL);
}
