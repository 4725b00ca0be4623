/* Workload for the `top` live tests: 64 MiB of THP (2 MiB aligned, MADV_HUGEPAGE,
 * every page touched: 32 PMD faults) and 16 MiB of MADV_NOHUGEPAGE 4 KiB pages
 * (4096 faults). Prints the two ranges and "ready", then holds its memory.
 *
 *   top_thp HOLD_SECONDS   hold that long, then exit (0: exit at once)
 *   top_thp -              hold until stdin reaches EOF
 *   top_thp HOLD gate      map first, print "mapped", wait for a line on stdin, then touch
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1UL << 20)

static char *map_aligned(size_t len, size_t align)
{
	char *raw = mmap(NULL, len + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	uintptr_t start = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
	if (start > (uintptr_t)raw)
		munmap(raw, start - (uintptr_t)raw);
	uintptr_t end = start + len, raw_end = (uintptr_t)raw + len + align;
	if (raw_end > end)
		munmap((void *)end, raw_end - end);
	return (char *)start;
}

static void touch(char *p, size_t len)
{
	long page = sysconf(_SC_PAGESIZE);
	for (size_t off = 0; off < len; off += page)
		p[off] = 1;
}

int main(int argc, char **argv)
{
	size_t pmd = 2 * MIB;
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "r");
	if (f) {
		unsigned long v;
		if (fscanf(f, "%lu", &v) == 1)
			pmd = v;
		fclose(f);
	}
	char *thp = map_aligned(64 * MIB, pmd);
	if (madvise(thp, 64 * MIB, MADV_HUGEPAGE)) {
		perror("madvise(MADV_HUGEPAGE)");
		return 1;
	}
	/* Small pages in their own VMA, away from the THP one (a guard gap keeps them apart). */
	char *small = map_aligned(16 * MIB, pmd);
	if (madvise(small, 16 * MIB, MADV_NOHUGEPAGE)) {
		perror("madvise(MADV_NOHUGEPAGE)");
		return 1;
	}
	if (argc > 2 && strcmp(argv[2], "gate") == 0) {
		char line[64];
		printf("mapped\n");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			return 1;
	}
	touch(thp, 64 * MIB);
	touch(small, 16 * MIB);
	printf("thp 0x%lx 0x%lx\nsmall 0x%lx 0x%lx\nready\n", (unsigned long)thp, (unsigned long)thp + 64 * MIB,
	       (unsigned long)small, (unsigned long)small + 16 * MIB);
	fflush(stdout);
	if (argc > 1 && strcmp(argv[1], "-") == 0) {
		char buf[64];
		while (read(0, buf, sizeof(buf)) > 0)
			;
	} else if (argc > 1) {
		double s = atof(argv[1]);
		if (s > 0)
			usleep((useconds_t)(s * 1e6));
	}
	return 0;
}
