/* top_syscalls MINCORE MADVISE MAPSYNC FILE: the calls default `top` watches, a known number of
 * times each, after a line on stdin: MINCORE mincore() calls on a 1 MiB anonymous range (first
 * half resident), MADVISE madvise(MADV_HUGEPAGE) calls on it, MAPSYNC mmap(MAP_SHARED_VALIDATE |
 * MAP_SYNC) of FILE (a file on a filesystem without DAX: each one refused with EOPNOTSUPP).
 * Prints "ready", then "done refused=N" and waits for stdin to close. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 5) { fprintf(stderr, "usage: %s MINCORE MADVISE MAPSYNC FILE\n", argv[0]); return 2; }
	setvbuf(stdout, NULL, _IOLBF, 0);
	long nmincore = atol(argv[1]), nmadvise = atol(argv[2]), nsync = atol(argv[3]);
	size_t len = 1 << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); return 1; }
	for (size_t i = 0; i < len / 2; i += 4096)
		p[i] = 1;
	unsigned char vec[256];
	int fd = open(argv[4], O_RDWR | O_CREAT, 0600);
	if (fd < 0 || ftruncate(fd, 4096)) { perror(argv[4]); return 1; }
	printf("ready\n");
	getchar();
	for (long i = 0; i < nmincore; i++)
		if (mincore(p, len, vec)) { perror("mincore"); return 1; }
	for (long i = 0; i < nmadvise; i++)
		if (madvise(p, len, MADV_HUGEPAGE)) { perror("madvise"); return 1; }
	long refused = 0;
	for (long i = 0; i < nsync; i++) {
		void *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
		if (q == MAP_FAILED && errno == EOPNOTSUPP)
			refused++;
		else if (q != MAP_FAILED)
			munmap(q, 4096);
	}
	printf("done refused=%ld\n", refused);
	getchar();
	return 0;
}
