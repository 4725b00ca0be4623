/* Fault-throughput toucher for bench/bench.py: for S seconds, mmap LEN MiB, touch
 * every 4 KiB page, munmap; MODE "small" (MADV_NOHUGEPAGE) or "thp" (MADV_HUGEPAGE,
 * 2 MiB aligned, one touch per PMD), or "syscall" (getppid in a loop).
 * Prints "<operations per second> <operations> <CPU seconds used>" (user + system time of
 * this process: on a busy machine ops per CPU second is the steadier measure).
 *   top_toucher MODE S [LEN_MIB] */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	const char *mode = argv[1];
	double secs = atof(argv[2]);
	size_t len = (argc > 3 ? atol(argv[3]) : 256) << 20;
	size_t pmd = 2UL << 20, page = sysconf(_SC_PAGESIZE);
	unsigned long ops = 0;
	double t0 = now(), t;
	if (strcmp(mode, "syscall") == 0) {
		do {
			for (int i = 0; i < 10000; i++)
				getppid();
			ops += 10000;
		} while ((t = now()) - t0 < secs);
		printf("%.0f %lu %.6f\n", ops / (t - t0), ops, cpu());
		return 0;
	}
	int thp = strcmp(mode, "thp") == 0;
	do {
		char *raw = mmap(NULL, len + pmd, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (raw == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		char *p = (char *)(((uintptr_t)raw + pmd - 1) & ~(uintptr_t)(pmd - 1));
		madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		size_t step = thp ? pmd : page;
		for (size_t off = 0; off < len; off += step)
			p[off] = 1;
		ops += len / step;
		munmap(raw, len + pmd);
	} while ((t = now()) - t0 < secs);
	printf("%.0f %lu %.6f\n", ops / (t - t0), ops, cpu());
	return 0;
}
