/* A process with N VMAs: one anonymous mapping of N pages split by mprotect into N VMAs
 * (alternate pages PROT_READ / PROT_READ|PROT_WRITE), every page touched so each VMA is
 * resident. Prints "ready" on stdout, then waits for stdin to close.
 *     many_vmas N
 */
#include <stdio.h>
#include <stdlib.h>
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
	char buf[64];
	while (read(0, buf, sizeof buf) > 0)
		;
	return 0;
}
