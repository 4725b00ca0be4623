/* mincore_calls N MIB: map MIB MiB, make the first half resident, wait for a line
 * on stdin, then call mincore N times on the whole range and print "done". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) { fprintf(stderr, "usage: %s N MIB\n", argv[0]); return 2; }
	setvbuf(stdout, NULL, _IOLBF, 0);
	long n = atol(argv[1]);
	size_t len = (size_t)atol(argv[2]) << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); return 1; }
	madvise(p, len, MADV_NOHUGEPAGE);
	for (size_t i = 0; i < len / 2; i += 4096)
		p[i] = 1;
	unsigned char *vec = malloc(len / 4096);
	printf("ready\n");
	getchar();
	for (long i = 0; i < n; i++)
		if (mincore(p, len, vec)) { perror("mincore"); return 1; }
	printf("done\n");
	getchar();
	return 0;
}
