// kernel_regress: issue 10's kernel case (c), one process holding the same memory on every
// kernel, recorded in the DAX guests (tests/dax/guest/test_record_kernel.py) and diffed on the host.
//   anon     32 MiB private anonymous, 2 MiB aligned, MADV_HUGEPAGE
//   sync     16 MiB fs-dax file DIR/kr-sync.dat, fallocated (unwritten), MAP_SYNC, 2 MiB aligned
//   pte_a    4 MiB fs-dax file DIR/kr-pte.dat, written through, MAP_SHARED at 2 MiB + 4 KiB
//            (misaligned: every fault maps 4 KiB and leaves 4 KiB entries in the file)
//   pte_b    the same file mapped MAP_SYNC 2 MiB aligned: fully present aligned blocks that are
//            PTE-mapped (4 KiB entries already present). 6.1 still sizes them statically (pagemap
//            sets PM_FILE on DAX PMD leaves only); 5.10 cannot. What 6.1 cannot read is folio sizes.
// Prints "VMA name=<n> addr=0x.. len=.." per mapping and MAPPED, waits for a line on stdin,
// writes once per 4 KiB in the order above, prints TOUCHED, then holds until stdin EOF.
//   kernel_regress DIR
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
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
#define MB (1UL << 20)
#define TWO_MB (2 * MB)

static char *aligned_va(size_t len) {
    char *r = mmap(NULL, len + 2 * TWO_MB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) { perror("reserve"); exit(1); }
    return (char *)(((uintptr_t)r + TWO_MB - 1) & ~(TWO_MB - 1));
}

static int make_file(const char *path, size_t size, int prewrite) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { fprintf(stderr, "open %s: %s\n", path, strerror(errno)); exit(1); }
    int e = posix_fallocate(fd, 0, size);
    if (e) { fprintf(stderr, "fallocate %s: %s\n", path, strerror(e)); exit(1); }
    if (prewrite) {
        static char buf[1 << 16];
        memset(buf, 0x5a, sizeof buf);
        for (size_t off = 0; off < size; off += sizeof buf)
            if (pwrite(fd, buf, sizeof buf, off) != (ssize_t)sizeof buf) { perror("pwrite"); exit(1); }
    }
    fsync(fd);
    return fd;
}

static char *map_at(const char *name, char *addr, size_t len, int flags, int fd) {
    char *p = mmap(addr, len, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, 0);
    if (p == MAP_FAILED) { fprintf(stderr, "mmap %s: %s\n", name, strerror(errno)); exit(3); }
    printf("VMA name=%s addr=0x%lx len=%zu\n", name, (unsigned long)p, len);
    return p;
}

static void touch(char *p, size_t len) {
    for (size_t off = 0; off < len; off += 4096) p[off] = (char)(off >> 12);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s DAX_DIR\n", argv[0]); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    char path[512];
    char *anon = map_at("anon", aligned_va(32 * MB), 32 * MB, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    if (madvise(anon, 32 * MB, MADV_HUGEPAGE)) { perror("madvise"); return 1; }
    snprintf(path, sizeof path, "%s/kr-sync.dat", argv[1]);
    char *sync = map_at("sync", aligned_va(16 * MB), 16 * MB, MAP_SHARED_VALIDATE | MAP_SYNC,
                        make_file(path, 16 * MB, 0));
    snprintf(path, sizeof path, "%s/kr-pte.dat", argv[1]);
    int fd = make_file(path, 4 * MB, 1);
    char *pte_a = map_at("pte_a", aligned_va(4 * MB) + 4096, 4 * MB, MAP_SHARED, fd);
    char *pte_b = map_at("pte_b", aligned_va(4 * MB), 4 * MB, MAP_SHARED_VALIDATE | MAP_SYNC, fd);
    printf("MAPPED\n");
    char buf[64];
    if (!fgets(buf, sizeof buf, stdin)) return 0;
    touch(anon, 32 * MB);
    touch(sync, 16 * MB);
    touch(pte_a, 4 * MB);
    touch(pte_b, 4 * MB);
    printf("TOUCHED\n");
    while (fgets(buf, sizeof buf, stdin)) { }
    return 0;
}
