/*
 * pages_workload: builds VMAs whose page-table shape is known, prints them, waits.
 *
 *   pages_workload [HUGETLB_MIB [GIGANTIC_PAGES]]
 *
 * Prints one line per region, "NAME START LENGTH" (hex start, decimal length), then
 * "ready", then serves stdin until it closes: a line "write ADDR" (hex) stores one byte
 * at ADDR and answers "done". Regions:
 *   thp      64 MiB, 2 MiB-aligned, MADV_HUGEPAGE, every page touched
 *   split    the same, then mprotect(PROT_READ) of one page in the middle of the
 *            huge page at offset 32 MiB (the kernel splits that PMD)
 *   sparse   64 MiB + 1 MiB, MADV_HUGEPAGE; one byte written in each of the first
 *            16 2-MiB blocks, and one in the last (partial) MiB
 *   nohuge   16 MiB, MADV_NOHUGEPAGE, every page touched
 *   hugetlb  HUGETLB_MIB MiB of MAP_HUGETLB (default page size), touched (skipped if 0)
 *   hugetlb1g  GIGANTIC_PAGES GiB of MAP_HUGETLB|MAP_HUGE_1GB, touched (skipped if 0)
 *   file     this program's own file, MAP_PRIVATE, whole pages only: every page read,
 *            then the first page written (a private anonymous copy replaces it)
 *   shmem    2 MiB memfd, MAP_SHARED, every page written
 *   zero     4 MiB, 2 MiB-aligned, MADV_HUGEPAGE, one byte of each 2 MiB block read (never
 *            written): the huge zero page, where THP's use_zero_page allows it
 *   guard    16 pages written, then MADV_GUARD_INSTALL on pages 4-7 (printed only where the
 *            kernel has guard regions, 6.13+)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_1GB
#define MAP_HUGE_1GB (30 << MAP_HUGE_SHIFT)
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define MIB (1UL << 20)
#define HPAGE (2 * MIB)

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* len bytes at a 2 MiB-aligned address: over-map, then unmap the slack. */
static char *map_aligned(size_t len)
{
	size_t big = len + HPAGE;
	char *p = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	char *a = (char *)(((unsigned long)p + HPAGE - 1) & ~(HPAGE - 1));
	if (a > p)
		munmap(p, a - p);
	size_t tail = (p + big) - (a + len);
	if (tail)
		munmap(a + len, tail);
	return a;
}

static void touch(char *p, size_t len, size_t step)
{
	for (size_t off = 0; off < len; off += step)
		p[off] = 1;
}

static void advise(char *p, size_t len, int advice)
{
	if (madvise(p, len, advice))
		die("madvise");
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t hugetlb_len = (argc > 1 ? strtoul(argv[1], NULL, 0) : 0) * MIB;
	size_t gigantic_len = (argc > 2 ? strtoul(argv[2], NULL, 0) : 0) * 1024 * MIB;

	char *thp = map_aligned(64 * MIB);
	advise(thp, 64 * MIB, MADV_HUGEPAGE);
	touch(thp, 64 * MIB, page);

	char *split = map_aligned(64 * MIB);
	advise(split, 64 * MIB, MADV_HUGEPAGE);
	touch(split, 64 * MIB, page);
	if (mprotect(split + 32 * MIB + MIB, page, PROT_READ))
		die("mprotect");

	size_t sparse_len = 64 * MIB + MIB;
	char *sparse = map_aligned(sparse_len);
	advise(sparse, sparse_len, MADV_HUGEPAGE);
	touch(sparse, 32 * MIB, HPAGE);
	sparse[64 * MIB] = 1;

	char *nohuge = map_aligned(16 * MIB);
	advise(nohuge, 16 * MIB, MADV_NOHUGEPAGE);
	touch(nohuge, 16 * MIB, page);

	char *hugetlb = NULL;
	if (hugetlb_len) {
		hugetlb = mmap(NULL, hugetlb_len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (hugetlb == MAP_FAILED)
			die("mmap MAP_HUGETLB");
		touch(hugetlb, hugetlb_len, page);
	}

	char *gigantic = NULL;
	if (gigantic_len) {
		gigantic = mmap(NULL, gigantic_len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_1GB, -1, 0);
		if (gigantic == MAP_FAILED)
			die("mmap MAP_HUGETLB|MAP_HUGE_1GB");
		touch(gigantic, gigantic_len, page);
	}

	int fd = open("/proc/self/exe", O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die("/proc/self/exe");
	size_t file_len = st.st_size / page * page;
	char *file = mmap(NULL, file_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (file == MAP_FAILED)
		die("mmap file");
	volatile char sink = 0;
	for (size_t off = 0; off < file_len; off += page)
		sink += file[off];
	file[0] = sink;

	int mfd = memfd_create("pages_workload", 0);
	if (mfd < 0 || ftruncate(mfd, 2 * MIB))
		die("memfd");
	char *shmem = mmap(NULL, 2 * MIB, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (shmem == MAP_FAILED)
		die("mmap memfd");
	touch(shmem, 2 * MIB, page);

	char *zero = map_aligned(4 * MIB);
	advise(zero, 4 * MIB, MADV_HUGEPAGE);
	for (size_t off = 0; off < 4 * MIB; off += HPAGE)
		sink += *(volatile char *)(zero + off);

	char *guard = mmap(NULL, 16 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (guard == MAP_FAILED)
		die("mmap guard");
	touch(guard, 16 * page, page);
	int have_guard = madvise(guard + 4 * page, 4 * page, MADV_GUARD_INSTALL) == 0;

	printf("zero %lx %zu\n", (unsigned long)zero, (size_t)(4 * MIB));
	if (have_guard)
		printf("guard %lx %zu\n", (unsigned long)guard, (size_t)(16 * page));
	printf("file %lx %zu\n", (unsigned long)file, file_len);
	printf("shmem %lx %zu\n", (unsigned long)shmem, (size_t)(2 * MIB));
	printf("thp %lx %zu\n", (unsigned long)thp, (size_t)(64 * MIB));
	printf("split %lx %zu\n", (unsigned long)split, (size_t)(64 * MIB));
	printf("sparse %lx %zu\n", (unsigned long)sparse, sparse_len);
	printf("nohuge %lx %zu\n", (unsigned long)nohuge, (size_t)(16 * MIB));
	if (hugetlb)
		printf("hugetlb %lx %zu\n", (unsigned long)hugetlb, hugetlb_len);
	if (gigantic)
		printf("hugetlb1g %lx %zu\n", (unsigned long)gigantic, gigantic_len);
	printf("ready\n");
	fflush(stdout);

	char line[128];
	unsigned long addr;
	while (fgets(line, sizeof(line), stdin)) {
		if (sscanf(line, "write %lx", &addr) == 1) {
			*(volatile char *)addr = 2;
			printf("done\n");
			fflush(stdout);
		}
	}
	return 0;
}
