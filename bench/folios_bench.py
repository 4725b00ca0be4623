"""Speed of folio sizes per VMA: pmemtrace's method vs tools/mm/thpmaps' method.

    sudo flock /tmp/pmemtrace-live.lock /opt/pmemtrace/venv/bin/python bench/folios_bench.py \
        [--thp-gib 8] [--small-gib 4] [--rounds 5] [--pin 1]

A child process (bench/folios_workload.c) holds THP_GIB GiB of PMD-mapped THPs and SMALL_GIB GiB
of 4 KiB pages. Each round times, alternately, on the same process:

  pmemtrace  folio_reader.read_process: PAGEMAP_SCAN finds the present ranges and the PMD leaves; only the
             PTE-mapped present pages are read from pagemap and looked up in kpageflags;
  thpmaps    thpmaps' method: the pagemap word of every page of every VMA, and kpageflags of every
             present PFN, classified by the same code (folios.classify_ptes), so the difference
             measured is the method, not the language. (thpmaps itself needs numpy, which this
             machine does not have.)

Both must find the same folio_bytes for the process. Prints min / median / max seconds of each
and the ratio of medians. Root is needed (kpageflags, pagemap PFNs).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pmemtrace import folio_reader, folios, pagemap
from pmemtrace.kernel import pmd_size

HERE = os.path.dirname(os.path.abspath(__file__))


def pmemtrace_method(pid):
    pf = folio_reader.read_process(pid, folio_reader.specs_from_maps(pid))
    return folios.total(s for _spec, s in pf.vmas)[0].folio_bytes, pf.pages_read


def thpmaps_method(pid):
    """Every page of every VMA (pagemap), kpageflags for every present PFN."""
    kflags = folios.KpageFlags.open()
    assert kflags is not None
    total, pages = folios.FolioStats(), 0
    try:
        with pagemap.PageMap(pid) as pm:
            for spec in folio_reader.specs_from_maps(pid):
                if spec.skip:
                    continue
                words = pm.words(spec.start, spec.end)
                pages += len(words)
                ptes = folios.classify_ptes([(spec.start, words)], kflags)
                if ptes is not None:
                    total = folios.add(total, ptes)
    finally:
        kflags.close()
    return total.folio_bytes, pages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--thp-gib", type=int, default=8)
    ap.add_argument("--small-gib", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pin", type=int, default=None, help="CPU to pin this process to (taskset)")
    args = ap.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "folios_workload")
        subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "folios_workload.c")], check=True)
        child = subprocess.Popen([exe, str(args.thp_gib), str(args.small_gib)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            times = {"pmemtrace": [], "thpmaps": []}
            answers = {}
            for _ in range(args.rounds):
                for name, fn in (("pmemtrace", pmemtrace_method), ("thpmaps", thpmaps_method)):
                    t = time.perf_counter()
                    answers[name] = fn(child.pid)
                    times[name].append(time.perf_counter() - t)
        finally:
            child.stdin.close()
            child.wait()
    ours, theirs = answers["pmemtrace"][0], answers["thpmaps"][0]
    print(f"process: {args.thp_gib} GiB THP + {args.small_gib} GiB 4 KiB, {args.rounds} rounds, "
          f"PMD {pmd_size() >> 20} MiB")
    print(f"folio_bytes: {ours}")
    assert ours == theirs, f"methods disagree: {ours} vs {theirs}"
    for name in ("pmemtrace", "thpmaps"):
        ts = times[name]
        print(f"{name:10s} pages read {answers[name][1]:>9d}  min {min(ts):.3f}s  "
              f"median {statistics.median(ts):.3f}s  max {max(ts):.3f}s")
    print(f"ratio thpmaps/pmemtrace (medians): "
          f"{statistics.median(times['thpmaps']) / statistics.median(times['pmemtrace']):.2f}x")


if __name__ == "__main__":
    main()
