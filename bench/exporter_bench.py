"""Scrape cost of `pmemtrace exporter` with 1,000 processes at a 15 s scrape interval.

Starts N processes (default 1,000: half idle `sleep`s, half small C loops that touch a fresh page
every 0.5 s, so their fault counts move and their smaps_rollup is re-read every scrape), builds the
exporter's registry in this process (as `pmemtrace exporter --no-bpf` does), pins it with taskset
to one CPU, and times R scrapes (generate_latest: model step + exposition) in CPU seconds.
Prints min / median / max CPU seconds per scrape, the share of one core at one scrape per 15 s
(target <= 1%), and the series count (bounded by --max-processes). Run as root.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pmemtrace import exporter

TOUCHER_C = r"""
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    size_t len = 64UL << 20, off = 0;
    char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (;;) { p[off] = 1; off = (off + 4096) % len; usleep(500000); }
}
"""


def build_toucher(path="/tmp/pmemtrace_bench_toucher"):
    subprocess.run(["gcc", "-O2", "-x", "c", "-o", path, "-"], input=TOUCHER_C, text=True, check=True)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=10)
    ap.add_argument("--scrape-interval", type=float, default=15.0, help="the Prometheus scrape interval modeled")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds between the timed scrapes")
    ap.add_argument("--max-processes", type=int, default=50)
    args = ap.parse_args(argv)
    from prometheus_client import generate_latest
    toucher = build_toucher()
    procs = []
    try:
        for i in range(args.processes):
            procs.append(subprocess.Popen(["sleep", "3600"] if i % 2 else [toucher]))
        time.sleep(3)
        os.sched_setaffinity(0, {0})            # pinned like taskset -c 0 (after the children started)
        registry, _ = exporter.build(args.max_processes)
        generate_latest(registry)
        cpu = []
        series = 0
        for _ in range(args.scrapes):
            time.sleep(args.gap)
            c0 = time.process_time()
            text = generate_latest(registry)
            cpu.append(time.process_time() - c0)
            series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        med = statistics.median(cpu)
        print(f"{args.processes} processes ({args.processes // 2} faulting every 0.5 s), "
              f"{args.scrapes} scrapes: CPU s/scrape min {min(cpu):.4f} median {med:.4f} max {max(cpu):.4f}")
        print(f"share of one core at one scrape per {args.scrape_interval:g} s: median "
              f"{100 * med / args.scrape_interval:.3f}%  max {100 * max(cpu) / args.scrape_interval:.3f}% "
              f"(target <= 1%)")
        print(f"series in one scrape: {series} (--max-processes {args.max_processes})")
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
