/* bench/folios_bench.py's process: THP_GIB GiB of PMD-mapped THPs (MADV_HUGEPAGE) and SMALL_GIB GiB
 * of 4 KiB pages (MADV_NOHUGEPAGE), all touched; prints "ready" and waits for EOF on stdin. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PMD (2UL << 20)

static char *region(size_t len, int advice)
{
	char *p = mmap(NULL, len + PMD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); exit(1); }
	char *a = (char *)(((unsigned long)p + PMD - 1) & ~(PMD - 1));
	madvise(a, len, advice);
	for (size_t i = 0; i < len; i += 4096)
		a[i] = 1;
	return a;
}

int main(int argc, char **argv)
{
	if (argc != 3) { fprintf(stderr, "usage: %s THP_GIB SMALL_GIB\n", argv[0]); return 2; }
	region(strtoul(argv[1], NULL, 10) << 30, MADV_HUGEPAGE);
	region(strtoul(argv[2], NULL, 10) << 30, MADV_NOHUGEPAGE);
	printf("ready\n");
	fflush(stdout);
	char buf[16];
	while (read(0, buf, sizeof buf) > 0)
		;
	return 0;
}
