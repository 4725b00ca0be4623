/* VMAs whose folios are known by construction, one line per VMA ("name start end"), then waits
 * for "exit" / EOF on stdin. Each VMA sits between PROT_NONE guards so it never merges.
 *
 *   folio_workload MTHP_MIB [TMPFS_FILE]
 *
 * A negative MTHP_MIB maps the mthp VMA but leaves it untouched until a "touch" line arrives on
 * stdin (answered "touched"), so a test can read the mTHP counters just around its faults.
 *
 *   mthp       MTHP_MIB MiB anon, 64 KiB aligned, touched page by page: with
 *              hugepages-64kB/enabled=always every folio is 64 KiB
 *   unaligned  256 KiB of 64 KiB folios moved by mremap to an address 4 KiB past a 64 KiB boundary
 *   partial    256 KiB of 64 KiB folios, 16 KiB in the middle of the second dropped (MADV_DONTNEED)
 *   thp        8 MiB MADV_HUGEPAGE, 2 MiB aligned: 4 PMD-mapped THPs
 *   ptethp     2 MiB MADV_HUGEPAGE THP whose PMD was split by an mprotect round trip: one whole
 *              2 MiB folio mapped by 512 PTEs
 *   small      1 MiB MADV_NOHUGEPAGE: order-0 pages
 *   tmpfs      (with TMPFS_FILE) 8 MiB MAP_SHARED of a file on tmpfs huge=always, touched
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KiB 1024UL
#define MiB (1024 * KiB)

static char *guarded(size_t len, size_t align, size_t offset)
{
	/* PROT_NONE reservation with room for guards, then the VMA placed at align + offset */
	size_t span = len + 2 * align + 2 * MiB;
	char *r = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED) { perror("mmap"); exit(1); }
	char *a = (char *)((((unsigned long)r + align + MiB) & ~(align - 1)) + offset);
	if (mmap(a, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
		perror("mmap fixed"); exit(1);
	}
	return a;
}

static void touch(char *p, size_t len)
{
	for (size_t i = 0; i < len; i += 4096)
		p[i] = 1;
}

static void show(const char *name, char *p, size_t len)
{
	printf("%s %lu %lu\n", name, (unsigned long)p, (unsigned long)p + len);
}

int main(int argc, char **argv)
{
	if (argc < 2) { fprintf(stderr, "usage: %s MTHP_MIB [TMPFS_FILE]\n", argv[0]); return 2; }
	setvbuf(stdout, NULL, _IOLBF, 0);
	long mib = strtol(argv[1], NULL, 10);
	size_t mthp_len = (size_t)(mib < 0 ? -mib : mib) * MiB;

	char *mthp = guarded(mthp_len, 64 * KiB, 0);
	if (mib > 0)
		touch(mthp, mthp_len);
	show("mthp", mthp, mthp_len);

	char *src = guarded(256 * KiB, 64 * KiB, 0);
	touch(src, 256 * KiB);
	char *dst = guarded(256 * KiB, 64 * KiB, 4 * KiB);
	char *un = mremap(src, 256 * KiB, 256 * KiB, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	if (un == MAP_FAILED) { perror("mremap"); return 1; }
	mprotect(src, 256 * KiB, PROT_NONE);
	show("unaligned", un, 256 * KiB);

	char *part = guarded(256 * KiB, 64 * KiB, 0);
	touch(part, 256 * KiB);
	madvise(part + 64 * KiB + 16 * KiB, 16 * KiB, MADV_DONTNEED);
	show("partial", part, 256 * KiB);

	char *thp = guarded(8 * MiB, 2 * MiB, 0);
	madvise(thp, 8 * MiB, MADV_HUGEPAGE);
	touch(thp, 8 * MiB);
	show("thp", thp, 8 * MiB);

	char *pte = guarded(2 * MiB, 2 * MiB, 0);
	madvise(pte, 2 * MiB, MADV_HUGEPAGE);
	touch(pte, 2 * MiB);
	mprotect(pte + 64 * KiB, 4096, PROT_READ);
	mprotect(pte + 64 * KiB, 4096, PROT_READ | PROT_WRITE);
	madvise(pte, 2 * MiB, MADV_NOHUGEPAGE);   /* khugepaged must not map it by a PMD again */
	show("ptethp", pte, 2 * MiB);

	char *small = guarded(1 * MiB, 64 * KiB, 0);
	madvise(small, 1 * MiB, MADV_NOHUGEPAGE);
	touch(small, 1 * MiB);
	show("small", small, 1 * MiB);

	if (argc > 2) {
		int fd = open(argv[2], O_RDWR | O_CREAT, 0600);
		if (fd < 0 || ftruncate(fd, 8 * MiB)) { perror(argv[2]); return 1; }
		char *hint = guarded(8 * MiB, 2 * MiB, 0);
		char *f = mmap(hint, 8 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
		if (f == MAP_FAILED) { perror("mmap tmpfs"); return 1; }
		close(fd);
		touch(f, 8 * MiB);
		show("tmpfs", f, 8 * MiB);
	}
	printf("ready\n");
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		if (!strncmp(line, "exit", 4))
			break;
		if (!strncmp(line, "touch", 5)) {
			touch(mthp, mthp_len);
			printf("touched\n");
		}
	}
	return 0;
}
