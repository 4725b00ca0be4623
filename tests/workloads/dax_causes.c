// dax_causes: one process holding, in each DIR given (dax mounts), one VMA per DAX fault
// scenario: MAP_SYNC first writes and re-faults, and every PMD-fallback cause. One process so
// that one `pmemtrace report PID --duration` observes them all. Files are fallocated and
// written through first (except sync_first); mappings are MAP_SHARED unless said otherwise.
// After mapping it prints one line per VMA and MAPPED, waits for a line on stdin, touches
// the VMAs in order (one write per 4 KiB), prints TOUCHED and holds until stdin EOF.
//   VMA dir=<DIR> name=<name> addr=0x.. len=.. file=<path>
//
// sync_first  64 MiB fresh (fallocated, unwritten) file, MAP_SYNC  -> 32 NEEDDSYNC
// sync_again  the same file, a second MAP_SYNC VMA touched after   -> 32 PMD (NOPAGE)
// misaligned  4 MiB file mapped at 2 MiB + 4 KiB            -> not congruent modulo 2 MiB
// pte_setup   4 MiB file P mapped at 2 MiB + 4 KiB           -> (misaligned; leaves 4 KiB entries in P)
// pte_present the same file P mapped 2 MiB aligned           -> 4 KiB entry already present
// outside     4 MiB file, only 3 MiB mapped (aligned)        -> 2nd block extends outside the VMA
// past_eof    3 MiB file, 4 MiB mapped (aligned), 3 MiB touched -> 2nd block crosses EOF
// cow         4 MiB file mapped MAP_PRIVATE, written          -> write to a private mapping
// nohuge      4 MiB file, MADV_NOHUGEPAGE                     -> no PMD attempt at all
// An argument naming a character device (/dev/daxX.Y) instead of a directory maps 64 MiB of
// it MAP_SYNC at a 2 MiB-aligned address as one VMA named devdax (-> 32 PMD-size faults).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MB (1UL << 20)
#define TWO_MB (2 * MB)

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#define NV 9

struct vma { const char *name; char *addr; size_t len; size_t touch; char file[512]; const char *dir; };

static char *reserve_aligned(size_t len) {
    char *r = mmap(NULL, len + 2 * TWO_MB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) { perror("reserve"); exit(1); }
    return (char *)(((uintptr_t)r + TWO_MB - 1) & ~(TWO_MB - 1));
}

static int make_file(const char *path, size_t size, int prewrite) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { fprintf(stderr, "open %s: %s\n", path, strerror(errno)); exit(1); }
    int e = posix_fallocate(fd, 0, size);
    if (e) { fprintf(stderr, "fallocate %s: %s\n", path, strerror(e)); exit(1); }
    if (!prewrite) { fsync(fd); return fd; }
    // write the blocks so no fault has to convert unwritten extents
    static char buf[1 << 16];
    memset(buf, 0x5a, sizeof buf);
    for (size_t off = 0; off < size; off += sizeof buf)
        if (pwrite(fd, buf, sizeof buf, off) != (ssize_t)sizeof buf) { perror("pwrite"); exit(1); }
    fsync(fd);
    return fd;
}

static void map(struct vma *v, int fd, size_t misalign, int flags) {
    char *at = reserve_aligned(v->len) + misalign;
    v->addr = mmap(at, v->len, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, 0);
    if (v->addr == MAP_FAILED) { fprintf(stderr, "mmap %s: %s\n", v->name, strerror(errno)); exit(3); }
    printf("VMA dir=%s name=%s addr=0x%lx len=%zu file=%s\n", v->dir, v->name, (unsigned long)v->addr, v->len,
           v->file);
}

static struct vma *setup(const char *dir) {
    static const struct vma proto[NV] = {
        {"sync_first", 0, 64 * MB, 64 * MB, "", 0},
        {"sync_again", 0, 64 * MB, 64 * MB, "", 0},
        {"misaligned", 0, 4 * MB, 4 * MB, "", 0},
        {"pte_setup", 0, 4 * MB, 4 * MB, "", 0},
        {"pte_present", 0, 4 * MB, 4 * MB, "", 0},
        {"outside", 0, 3 * MB, 3 * MB, "", 0},
        {"past_eof", 0, 4 * MB, 3 * MB, "", 0},
        {"cow", 0, 4 * MB, 4 * MB, "", 0},
        {"nohuge", 0, 4 * MB, 4 * MB, "", 0},
    };
    struct vma *v = malloc(sizeof proto);
    memcpy(v, proto, sizeof proto);
    for (int i = 0; i < NV; i++) {
        v[i].dir = dir;
        // sync_again maps sync_first's file, pte_present maps pte_setup's
        const char *f = i == 1 ? "sync_first" : i == 4 ? "pte_setup" : v[i].name;
        snprintf(v[i].file, sizeof v[i].file, "%s/causes-%s.dat", dir, f);
    }
    int fd;
    fd = make_file(v[0].file, 64 * MB, 0); map(&v[0], fd, 0, MAP_SHARED_VALIDATE | MAP_SYNC);
    map(&v[1], fd, 0, MAP_SHARED_VALIDATE | MAP_SYNC);
    fd = make_file(v[2].file, 4 * MB, 1); map(&v[2], fd, 4096, MAP_SHARED);
    fd = make_file(v[3].file, 4 * MB, 1); map(&v[3], fd, 4096, MAP_SHARED);
    map(&v[4], fd, 0, MAP_SHARED);
    fd = make_file(v[5].file, 4 * MB, 1); map(&v[5], fd, 0, MAP_SHARED);
    fd = make_file(v[6].file, 3 * MB, 1); map(&v[6], fd, 0, MAP_SHARED);
    fd = make_file(v[7].file, 4 * MB, 1); map(&v[7], fd, 0, MAP_PRIVATE);
    fd = make_file(v[8].file, 4 * MB, 1); map(&v[8], fd, 0, MAP_SHARED);
    if (madvise(v[8].addr, v[8].len, MADV_NOHUGEPAGE)) { perror("madvise"); exit(1); }
    return v;
}

static struct vma *setup_devdax(const char *dev, int *n) {
    struct vma *v = calloc(1, sizeof *v);
    v->name = "devdax"; v->dir = dev; v->len = v->touch = 64 * MB;
    snprintf(v->file, sizeof v->file, "%s", dev);
    int fd = open(dev, O_RDWR);
    if (fd < 0) { fprintf(stderr, "open %s: %s\n", dev, strerror(errno)); exit(1); }
    map(v, fd, 0, MAP_SHARED_VALIDATE | MAP_SYNC);
    *n = 1;
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s DIR|/dev/daxX.Y...\n", argv[0]); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int nd = argc - 1;
    struct vma **sets = calloc(nd, sizeof *sets);
    int *counts = calloc(nd, sizeof *counts);
    for (int d = 0; d < nd; d++) {
        struct stat st;
        if (stat(argv[d + 1], &st) == 0 && S_ISCHR(st.st_mode))
            sets[d] = setup_devdax(argv[d + 1], &counts[d]);
        else {
            sets[d] = setup(argv[d + 1]);
            counts[d] = NV;
        }
    }
    printf("MAPPED\n");

    char line[64];
    if (!fgets(line, sizeof line, stdin)) { }
    for (int d = 0; d < nd; d++)
        for (int i = 0; i < counts[d]; i++)
            for (size_t off = 0; off < sets[d][i].touch; off += 4096) sets[d][i].addr[off] = (char)i;
    printf("TOUCHED\n");
    while (fgets(line, sizeof line, stdin)) { }
    return 0;
}
