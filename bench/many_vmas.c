/* A process with N VMAs: one anonymous mapping of N pages split by mprotect into N VMAs
 * (alternate pages PROT_READ / PROT_READ|PROT_WRITE), every page touched so each VMA is
 * resident. Prints "ready" on stdout, then waits for stdin to close.
 *     many_vmas N [busy]
 * With "busy" it keeps faulting while it waits: every 50 ms one page is dropped (MADV_DONTNEED)
 * and touched again, so its fault count moves in every interval of `top -p` (no quiet interval).
 */
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 60000;
	long pg = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, n * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); return 1; }
	for (long i = 0; i < n; i++)
		p[i * pg] = 1;
	for (long i = 0; i < n; i += 2)
		if (mprotect(p + i * pg, pg, PROT_READ)) { perror("mprotect"); return 1; }
	printf("ready %ld\n", n);
	fflush(stdout);
	int busy = argc > 2 && !strcmp(argv[2], "busy");
	char buf[64];
	struct pollfd in = { .fd = 0, .events = POLLIN };
	for (long k = 1;; k += 2) {
		if (poll(&in, 1, busy ? 50 : -1) > 0) {
			if (read(0, buf, sizeof buf) <= 0)
				break;
			continue;
		}
		char *page = p + (k % n) * pg;       /* an odd page: a PROT_READ|PROT_WRITE VMA */
		madvise(page, pg, MADV_DONTNEED);
		page[0] = 1;
	}
	return 0;
}
