// dax_map: map a file on a DAX mount (or /dev/daxX.Y) and touch it, one write per 4 KiB,
// for the DAX guest tests. Output lines (stdout, flushed):
//   STATX dax=<0|1> attributes=0x.. mask=0x..        (files only)
//   MAPPED addr=0x.. len=.. flags=<MAP_SYNC|MAP_SHARED|MAP_PRIVATE>
//   MMAP-FAILED errno=<name>                        (exit 3)
//   TOUCHED pages=.. minflt=..
//
//   dax_map PATH SIZE_MiB [option...]
//     misaligned   virtual address = 2 MiB aligned + 4 KiB, file offset 0
//     nosync       MAP_SHARED instead of MAP_SHARED_VALIDATE|MAP_SYNC
//     private      MAP_PRIVATE (writes COW)
//     noalloc      open an existing file as is (no create, no fallocate)
//     read         touch by reading instead of writing
//     offset=K     map from file offset K KiB (file is sized SIZE + K KiB)
//     wait         after MAPPED, wait for one line on stdin before touching
//     hold         after TOUCHED, wait for stdin EOF before exiting
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000
#endif
#define TWO_MB (2UL << 20)

static long minflt(void) { struct rusage r; getrusage(RUSAGE_SELF, &r); return r.ru_minflt; }

static void wait_line(void) {
    char buf[64];
    if (!fgets(buf, sizeof buf, stdin)) { /* EOF also means go */ }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PATH SIZE_MiB [misaligned|nosync|private|noalloc|read|offset=K|wait|hold]...\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    size_t len = strtoul(argv[2], 0, 0) << 20;
    int misaligned = 0, nosync = 0, priv = 0, noalloc = 0, rd = 0, wait = 0, hold = 0;
    off_t offset = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "misaligned")) misaligned = 1;
        else if (!strcmp(argv[i], "nosync")) nosync = 1;
        else if (!strcmp(argv[i], "private")) priv = 1;
        else if (!strcmp(argv[i], "noalloc")) noalloc = 1;
        else if (!strcmp(argv[i], "read")) rd = 1;
        else if (!strncmp(argv[i], "offset=", 7)) offset = (off_t)strtoul(argv[i] + 7, 0, 0) << 10;
        else if (!strcmp(argv[i], "wait")) wait = 1;
        else if (!strcmp(argv[i], "hold")) hold = 1;
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct stat st;
    int is_chr = stat(path, &st) == 0 && S_ISCHR(st.st_mode);
    int fd = open(path, O_RDWR | ((noalloc || is_chr) ? 0 : O_CREAT), 0644);
    if (fd < 0) { fprintf(stderr, "open %s: %s\n", path, strerror(errno)); return 1; }
    if (!noalloc && !is_chr) {
        int e = posix_fallocate(fd, 0, (off_t)len + offset);
        if (e) { fprintf(stderr, "fallocate: %s\n", strerror(e)); return 1; }
        fsync(fd);
    }
    if (!is_chr) {
        struct statx sx;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx) == 0)
            printf("STATX dax=%d attributes=0x%llx mask=0x%llx\n", (sx.stx_attributes & STATX_ATTR_DAX) ? 1 : 0,
                   (unsigned long long)sx.stx_attributes, (unsigned long long)sx.stx_attributes_mask);
        else
            printf("STATX error=%s\n", strerror(errno));
    }

    // reserve VA, pick a 2 MiB aligned address (+4 KiB when misaligned)
    char *res = mmap(NULL, len + 2 * TWO_MB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (res == MAP_FAILED) { perror("mmap reserve"); return 1; }
    uintptr_t a = ((uintptr_t)res + TWO_MB - 1) & ~(TWO_MB - 1);
    if (misaligned) a += 4096;
    const char *fname = priv ? "MAP_PRIVATE" : nosync ? "MAP_SHARED" : "MAP_SYNC";
    int flags = (priv ? MAP_PRIVATE : nosync ? MAP_SHARED : (MAP_SHARED_VALIDATE | MAP_SYNC)) | MAP_FIXED;
    char *p = mmap((void *)a, len, PROT_READ | PROT_WRITE, flags, fd, offset);
    if (p == MAP_FAILED) {
        int e = errno;
        printf("MMAP-FAILED errno=%s (%s)\n", e == EOPNOTSUPP ? "EOPNOTSUPP" : e == EINVAL ? "EINVAL" : "other",
               strerror(e));
        return 3;
    }
    printf("MAPPED addr=0x%lx len=%zu flags=%s\n", (unsigned long)p, len, fname);
    if (wait) wait_line();

    long f0 = minflt();
    volatile unsigned long sum = 0;
    for (size_t off = 0; off < len; off += 4096) {
        if (rd) sum += (unsigned char)p[off];
        else p[off] = (char)(off >> 12);
    }
    long f1 = minflt();
    printf("TOUCHED pages=%zu minflt=%ld\n", len / 4096, f1 - f0);
    if (hold) {
        char buf[64];
        while (fgets(buf, sizeof buf, stdin)) { }
    }
    munmap(p, len);
    close(fd);
    return 0;
}
