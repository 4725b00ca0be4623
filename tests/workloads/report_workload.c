/* Builds VMAs whose truth is known, prints one line per VMA ("name start end"),
 * then waits on stdin: each line "fault" faults the THP-late region (for the
 * --duration test); "exit" or EOF ends the process.
 *
 *   report_workload TMPFS_FILE HUGETLBFS_FILE EXT4_FILE
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#define MiB (1UL << 20)
#define PMD (2 * MiB)

static char *aligned_anon(size_t len)
{
	/* over-map and trim so the region starts on a 2 MiB boundary */
	char *p = mmap(NULL, len + PMD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); exit(1); }
	char *a = (char *)(((unsigned long)p + PMD - 1) & ~(PMD - 1));
	if (a > p) munmap(p, a - p);
	munmap(a + len, (p + len + PMD) - (a + len));
	return a;
}

static void touch(char *p, size_t len)
{
	for (size_t i = 0; i < len; i += 4096)
		p[i] = 1;
}

static char *map_file(const char *path, size_t len, int flags)
{
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0) { perror(path); exit(1); }
	if (ftruncate(fd, len)) { perror("ftruncate"); exit(1); }
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
	int saved = errno;
	close(fd);
	errno = saved;
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 4) { fprintf(stderr, "usage: %s TMPFS_FILE HUGETLBFS_FILE EXT4_FILE\n", argv[0]); return 2; }
	setvbuf(stdout, NULL, _IOLBF, 0);

	char *thp = aligned_anon(64 * MiB);
	madvise(thp, 64 * MiB, MADV_HUGEPAGE);
	touch(thp, 64 * MiB);
	printf("thp %lu %lu\n", (unsigned long)thp, (unsigned long)thp + 64 * MiB);

	char *nohuge = aligned_anon(16 * MiB);
	madvise(nohuge, 16 * MiB, MADV_NOHUGEPAGE);
	touch(nohuge, 16 * MiB);
	printf("nohuge %lu %lu\n", (unsigned long)nohuge, (unsigned long)nohuge + 16 * MiB);

	char *shm = map_file(argv[1], 32 * MiB, MAP_SHARED);
	if (shm == MAP_FAILED) { perror("mmap tmpfs"); return 1; }
	touch(shm, 32 * MiB);
	printf("tmpfs %lu %lu\n", (unsigned long)shm, (unsigned long)shm + 32 * MiB);

	char *htlb = map_file(argv[2], 8 * MiB, MAP_SHARED);
	if (htlb == MAP_FAILED) { perror("mmap hugetlbfs"); return 1; }
	touch(htlb, 8 * MiB);
	printf("hugetlb %lu %lu\n", (unsigned long)htlb, (unsigned long)htlb + 8 * MiB);

	char *sync = map_file(argv[3], 4 * MiB, MAP_SHARED_VALIDATE | MAP_SYNC);
	printf("mapsync_errno %d\n", sync == MAP_FAILED ? errno : 0);
	char *plain = map_file(argv[3], 4 * MiB, MAP_SHARED);
	if (plain == MAP_FAILED) { perror("mmap ext4"); return 1; }
	touch(plain, 4 * MiB);
	printf("ext4 %lu %lu\n", (unsigned long)plain, (unsigned long)plain + 4 * MiB);

	char *late = aligned_anon(64 * MiB);
	madvise(late, 64 * MiB, MADV_HUGEPAGE);
	printf("late %lu %lu\n", (unsigned long)late, (unsigned long)late + 64 * MiB);
	printf("ready\n");

	char line[64];
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "fault", 5)) {
			touch(late, 64 * MiB);
			printf("faulted\n");
		} else if (!strncmp(line, "exit", 4)) {
			break;
		}
	}
	return 0;
}
