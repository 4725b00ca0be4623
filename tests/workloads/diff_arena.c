/* Two "releases" of one program, for `pmemtrace diff` (the cactusBSSN pattern of kernel 6.7):
 *
 *   diff_arena aligned   one 2 MiB-aligned 64 MiB arena, MADV_HUGEPAGE: 64 MiB huge
 *   diff_arena split     the same 64 MiB as 32 mappings of 2 MiB, each starting 1 MiB off the
 *                        2 MiB grid with a 2 MiB hole between them (so they never merge),
 *                        MADV_HUGEPAGE: none can hold a PMD, 0 huge
 *   diff_arena plain     one aligned 64 MiB arena without any madvise (huge only under
 *                        THP enabled=always)
 *
 * Every byte is touched; prints "ready START END" and waits for EOF on stdin.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MiB (1UL << 20)
#define PMD (2 * MiB)
#define ARENA (64 * MiB)

static char *reserve_aligned(size_t len)
{
	char *p = mmap(NULL, len + PMD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); exit(1); }
	char *a = (char *)(((unsigned long)p + PMD - 1) & ~(PMD - 1));
	if (a > p) munmap(p, a - p);
	munmap(a + len, (p + len + PMD) - (a + len));
	return a;
}

static void touch(char *p, size_t len)
{
	for (size_t i = 0; i < len; i += 4096)
		p[i] = 1;
}

static char *arena(int advise)
{
	char *a = reserve_aligned(ARENA);
	if (mmap(a, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
		perror("mmap arena"); exit(1);
	}
	if (advise && madvise(a, ARENA, MADV_HUGEPAGE)) { perror("madvise"); exit(1); }
	touch(a, ARENA);
	return a;
}

int main(int argc, char **argv)
{
	if (argc != 2) { fprintf(stderr, "usage: %s aligned|split|plain\n", argv[0]); return 2; }
	setvbuf(stdout, NULL, _IOLBF, 0);
	char *start, *end;
	if (!strcmp(argv[1], "aligned") || !strcmp(argv[1], "plain")) {
		start = arena(!strcmp(argv[1], "aligned"));
		end = start + ARENA;
	} else if (!strcmp(argv[1], "split")) {
		/* 32 chunks of 2 MiB at 1 MiB + k * 4 MiB from a 2 MiB boundary */
		char *base = reserve_aligned(32 * 4 * MiB);
		munmap(base, 32 * 4 * MiB);
		start = base + MiB;
		for (int k = 0; k < 32; k++) {
			char *want = base + MiB + (size_t)k * 4 * MiB;
			char *p = mmap(want, 2 * MiB, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (p != want) { perror("mmap chunk"); return 1; }
			if (madvise(p, 2 * MiB, MADV_HUGEPAGE)) { perror("madvise"); return 1; }
			touch(p, 2 * MiB);
		}
		end = base + MiB + 31 * 4 * MiB + 2 * MiB;
	} else {
		fprintf(stderr, "unknown mode %s\n", argv[1]);
		return 2;
	}
	printf("ready %lu %lu\n", (unsigned long)start, (unsigned long)end);
	char buf[64];
	while (fgets(buf, sizeof buf, stdin))
		;
	return 0;
}
