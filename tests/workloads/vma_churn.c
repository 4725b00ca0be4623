/* VMA churn for soak tests: vma_churn SECONDS
 * Keeps up to 256 mappings of 1-64 pages, and at random maps a new one (some MADV_HUGEPAGE
 * and 2 MiB), touches it, splits it with mprotect, unmaps it, ~5,000 operations a second.
 * Prints "ops N". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double until = now() + (argc > 1 ? atof(argv[1]) : 60);
	enum { SLOTS = 256 };
	char *addr[SLOTS] = { 0 };
	size_t len[SLOTS] = { 0 };
	long ops = 0, page = 4096;
	srand(1);
	while (now() < until) {
		int i = rand() % SLOTS;
		if (addr[i]) {
			if (rand() % 2 && len[i] >= 4 * page)
				mprotect(addr[i] + page, page, PROT_READ);   /* split into three */
			munmap(addr[i], len[i]);
			addr[i] = 0;
		} else {
			len[i] = (rand() % 8 == 0) ? (4L << 20) : (size_t)(1 + rand() % 64) * page;
			addr[i] = mmap(NULL, len[i], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (addr[i] == MAP_FAILED) {
				addr[i] = 0;
				continue;
			}
			if (len[i] == (4L << 20))
				madvise(addr[i], len[i], MADV_HUGEPAGE);
			for (size_t off = 0; off < len[i]; off += page * 7)
				addr[i][off] = 1;
		}
		ops++;
		if (ops % 50 == 0)
			usleep(10000);
	}
	printf("ops %ld\n", ops);
	return 0;
}
