/* THP collapses whose outcome is known, driven line by line from stdin.
 * Prints "madv START END" and "sparse START END", then "ready"; then:
 *   collapse    MADV_COLLAPSE of madv (4 PMD ranges, each with its last 16 pages never touched,
 *               so each collapse fills 16 empty PTEs); answers "collapse RET"
 *   hugepage    MADV_HUGEPAGE on sparse (2 PMD ranges, only the first page of each touched):
 *               khugepaged may now scan it; answers "hugepage RET"
 *   nohugepage  MADV_NOHUGEPAGE on sparse: khugepaged stops; answers "nohugepage RET"
 *   exit / EOF
 * Run with THP enabled=madvise (and no mTHP size enabled): madv has no MADV_HUGEPAGE, so its faults
 * are 4 KiB and khugepaged never scans it; sparse is MADV_NOHUGEPAGE until "hugepage".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define PMD (2UL << 20)

static char *guarded(size_t len)
{
	char *r = mmap(NULL, len + 4 * PMD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED) { perror("mmap"); exit(1); }
	char *a = (char *)((((unsigned long)r + 2 * PMD) & ~(PMD - 1)));
	if (mmap(a, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
		perror("mmap fixed"); exit(1);
	}
	return a;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	size_t madv_len = 4 * PMD, sparse_len = 2 * PMD;
	char *madv = guarded(madv_len);
	for (size_t pmd = 0; pmd < madv_len; pmd += PMD)
		for (size_t off = 0; off < PMD - 16 * 4096; off += 4096)
			madv[pmd + off] = 1;
	char *sparse = guarded(sparse_len);
	madvise(sparse, sparse_len, MADV_NOHUGEPAGE);
	for (size_t pmd = 0; pmd < sparse_len; pmd += PMD)
		sparse[pmd] = 1;
	printf("madv %lu %lu\n", (unsigned long)madv, (unsigned long)madv + madv_len);
	printf("sparse %lu %lu\n", (unsigned long)sparse, (unsigned long)sparse + sparse_len);
	printf("ready\n");
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		if (!strncmp(line, "collapse", 8))
			printf("collapse %d\n", madvise(madv, madv_len, MADV_COLLAPSE));
		else if (!strncmp(line, "hugepage", 8))
			printf("hugepage %d\n", madvise(sparse, sparse_len, MADV_HUGEPAGE));
		else if (!strncmp(line, "nohugepage", 10))
			printf("nohugepage %d\n", madvise(sparse, sparse_len, MADV_NOHUGEPAGE));
		else if (!strncmp(line, "exit", 4))
			break;
	}
	return 0;
}
