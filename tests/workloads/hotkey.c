/* One hot key, hammered: for exact-count tests across many interval boundaries.
 *   hotkey page S     for S seconds: write one 4 KiB page, MADV_DONTNEED it (a fault each time)
 *   hotkey thp S      the same on one 2 MiB-aligned MADV_HUGEPAGE block: THP fault allocations
 *   hotkey mincore S  mincore() calls on 64 pages
 *   hotkey spread S   write 256 pages, MADV_DONTNEED them: 256 faults an iteration on 256 keys
 * Prints "ready START END" (the hot range, inside one VMA), waits for a line on stdin, runs,
 * prints "done MINFLT ITERATIONS" (getrusage minflt taken over the loop alone), then waits
 * for stdin to close. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long minflt(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	const char *mode = argv[1];
	double seconds = atof(argv[2]);
	long n = 0, len = 2L << 20;
	char *raw = mmap(NULL, 2 * len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return 1;
	char *p = (char *)(((unsigned long)raw + len - 1) & ~(len - 1));
	int pages = 1;
	if (strcmp(mode, "page") == 0 || strcmp(mode, "spread") == 0) {
		pages = strcmp(mode, "spread") == 0 ? 256 : 1;
		len = 4096L * pages;
		madvise(p, 2L << 20, MADV_NOHUGEPAGE);
	} else if (strcmp(mode, "thp") == 0) {
		madvise(p, len, MADV_HUGEPAGE);
	}
	unsigned char vec[64];
	now();                 /* the first clock read may fault the vDSO data in: not during the test */
	minflt();
	printf("ready %lx %lx\n", (unsigned long)p, (unsigned long)p + len);
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	double until = now() + seconds;
	long before = minflt();
	for (;; n++) {
		if ((n & 255) == 0 && now() >= until)
			break;
		if (strcmp(mode, "mincore") == 0) {
			mincore(p, 64 * 4096, vec);
			continue;
		}
		for (int j = 0; j < pages; j++)
			p[j * 4096] = 1;
		madvise(p, len, MADV_DONTNEED);
	}
	long faults = minflt() - before;
	printf("done %ld %ld\n", faults, n);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin))
		;
	return 0;
}
