"""Speed of `pmemtrace pages` on a 16 GiB mapped range: PAGEMAP_SCAN vs pagemap+kpageflags.

    sudo /opt/pmemtrace/venv/bin/python bench/pages_bench.py [--gib 16] [--every 4] [--small]

A child process maps GIB GiB of anonymous memory (MAP_NORESERVE, 2 MiB-aligned) and writes
one byte into every EVERY-th 2 MiB block: with MADV_HUGEPAGE (default) each touched block
becomes a PMD-mapped THP, so 16 GiB with --every 4 holds 4 GiB resident in 2048 THPs and
12 GiB mapped but untouched. With --small the range is MADV_NOHUGEPAGE and each touched
block gets one 4K page (the page-table walk's worst case per resident byte); --fill writes
every 4K page of a touched block (with --small: many scattered PFNs for kpageflags).

Both readers classify the same range; the script prints the best of several runs of
each, the ratio, and checks both saw the same present bytes. Target: PAGEMAP_SCAN <= 0.3 s.
Root is needed (kpageflags, and pagemap PFNs).
"""
import argparse
import io
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pmemtrace import pagemap  # noqa: E402
from pmemtrace.pagemap import VmaFacts  # noqa: E402
from pmemtrace.views import pages  # noqa: E402

CHILD = r"""
import ctypes, mmap, sys
gib, every, small, fill = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
H = 2 << 20
size = gib << 30
MAP_NORESERVE = 0x4000
p = libc.mmap(None, size + H, mmap.PROT_READ | mmap.PROT_WRITE,
              mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
assert p not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
a = (p + H - 1) & ~(H - 1)
if a > p:
    libc.munmap(p, a - p)
if p + size + H > a + size:
    libc.munmap(a + size, p + size + H - (a + size))
advice = mmap.MADV_NOHUGEPAGE if small else mmap.MADV_HUGEPAGE
assert libc.madvise(a, size, advice) == 0, ctypes.get_errno()
for blk in range(0, size, H * every):
    for off in range(blk, blk + (H if fill else 1), 4096):
        ctypes.c_char.from_address(a + off).value = b"x"
print(a, size, flush=True)
sys.stdin.read()
"""


def best_of(n, fn):
    times, result = [], None
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=int, default=16, help="size of the mapped range (GiB)")
    ap.add_argument("--every", type=int, default=4, help="touch every N-th 2 MiB block")
    ap.add_argument("--small", action="store_true", help="MADV_NOHUGEPAGE: one 4K page per touched block")
    ap.add_argument("--fill", action="store_true", help="write every 4K page of a touched block, not one")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if not pagemap.scan_supported():
        sys.exit("this kernel has no PAGEMAP_SCAN: nothing to compare")

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(args.gib), str(args.every), str(int(args.small)),
                              str(int(args.fill))],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        lo, size = map(int, child.stdout.readline().split())
        hi = lo + size
        pid = child.pid
        facts = VmaFacts("anon")
        resident = (size // (2 << 20) + args.every - 1) // args.every
        print(f"range: {size >> 30} GiB mapped at {lo:#x} (MAP_NORESERVE, "
              f"{'MADV_NOHUGEPAGE' if args.small else 'MADV_HUGEPAGE'}), 1 in {args.every} 2 MiB blocks "
              f"touched: {resident} blocks")

        t_scan, m_scan, runs = best_of(args.runs, lambda: pagemap.scan(pid, lo, hi, facts))
        t_hs, m_hs, (huge, small) = best_of(args.runs, lambda: pagemap.huge_small_bytes(pid, lo, hi))
        t_view, m_view, _ = best_of(args.runs, lambda: pages.collect(pid, f"{lo:#x}-{hi:#x}"))
        def render():
            from rich.console import Console
            comm, source, sections = pages.collect(pid, f"{lo:#x}-{hi:#x}")
            pages.render(Console(file=io.StringIO(), width=120), pid, comm, source, sections)
        t_text, m_text, _ = best_of(args.runs, render)
        t_fb, m_fb, fb = best_of(max(1, args.runs // 2), lambda: pagemap.scan_fallback(pid, lo, hi, facts))

        present = sum(r.length for r in runs if r.present)
        present_fb = sum(r.length for r in fb if r.present)
        print(f"present: {present >> 20} MiB (huge {huge >> 20} MiB, small {small >> 20} MiB); "
              f"{len(runs)} runs from PAGEMAP_SCAN, {len(fb)} from pagemap+kpageflags")
        print(f"PAGEMAP_SCAN  pagemap.scan          best {t_scan:.4f} s  median {m_scan:.4f} s")
        print(f"PAGEMAP_SCAN  huge_small_bytes      best {t_hs:.4f} s  median {m_hs:.4f} s")
        print(f"PAGEMAP_SCAN  pages view (collect)  best {t_view:.4f} s  median {m_view:.4f} s")
        print(f"PAGEMAP_SCAN  pages text output     best {t_text:.4f} s  median {m_text:.4f} s")
        print(f"pagemap+kpageflags scan_fallback    best {t_fb:.4f} s  median {m_fb:.4f} s")
        print(f"ratio fallback / PAGEMAP_SCAN: {t_fb / t_scan:.1f}x")
        print(f"target PAGEMAP_SCAN <= 0.3 s: {'met' if t_scan <= 0.3 else 'MISSED'}")
        if present != present_fb:
            sys.exit(f"readers disagree on present bytes: {present} vs {present_fb}")
    finally:
        child.stdin.close()
        child.wait()


if __name__ == "__main__":
    main()
