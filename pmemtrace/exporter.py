"""`pmemtrace exporter`: the interval model (pmemtrace.interval.Model, default mode: no BPF on any
fault path) exposed as Prometheus metrics through prometheus_client's registry and HTTP server.

Each scrape steps the model once (at most once per ``--interval`` seconds; a faster scraper gets
the last state again), so gauges are the state at scrape time and counters add the deltas of every
interval since the exporter started. Counter series never go down:
  - a process's series carry ``pid``, ``comm`` and ``start`` (its start time in clock ticks after
    boot): a reused pid or a restarted program is a new series, never a reset of an old one;
  - a process that leaves the top N keeps its running totals (its series just stops being
    exposed while it is out); while out, and after it exits, its deltas go to ``pid="other"``,
    which only ever adds.
Cardinality: at most ``--max-processes`` (default 50) + 1 process label sets per metric (DAX bytes:
two kinds for each of the top N that has DAX VMAs), plus the per-VMA series of ``--vmas PID`` (one
label set per VMA of that process). See README.
"""
import ipaddress
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from . import aggregate, daxcause, interval, kernel, pagemap, procfs, sampler, vma_sampler
from .errors import PmemtraceError

DEFAULT_PORT = 19149      # outside 9100-9999, the Prometheus wiki's exporter range, which is full
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
DEFAULT_MAX_PROCESSES = 50
OTHER = "other"

MTHP_COUNTERS = {"anon_fault_alloc": "pmemtrace_mthp_anon_fault_alloc",
                 "anon_fault_fallback": "pmemtrace_mthp_anon_fault_fallback",
                 "anon_fault_fallback_charge": "pmemtrace_mthp_anon_fault_fallback_charge",
                 "shmem_alloc": "pmemtrace_mthp_shmem_alloc"}
VMSTAT_COUNTERS = {"thp_fault_alloc": "pmemtrace_thp_fault_alloc", "thp_fault_fallback": "pmemtrace_thp_fault_fallback",
                   "thp_collapse_alloc": "pmemtrace_thp_collapse_alloc",
                   "thp_collapse_alloc_failed": "pmemtrace_thp_collapse_alloc_failed",
                   # khugepaged scans that gave up on a PMD range (too many empty / swapped / shared PTEs)
                   "thp_scan_exceed_none_pte": "pmemtrace_thp_scan_exceed_none_pte",
                   "thp_scan_exceed_swap_pte": "pmemtrace_thp_scan_exceed_swap_pte",
                   "thp_scan_exceed_share_pte": "pmemtrace_thp_scan_exceed_share_pte"}
# sysfs transparent_hugepage/khugepaged/: counters khugepaged keeps (not MADV_COLLAPSE)
KHUGEPAGED_COUNTERS = {"pages_collapsed": "pmemtrace_khugepaged_pages_collapsed",
                       "full_scans": "pmemtrace_khugepaged_full_scans"}
# daxcause's causes (sentences) as short, fixed label values
FALLBACK_CAUSES = {daxcause.MISALIGNED: "misaligned", daxcause.COW: "cow", daxcause.OUTSIDE_VMA: "outside_vma",
                   daxcause.PAST_EOF: "past_eof", daxcause.PTE_PRESENT: "pte_present", daxcause.OTHER: "other"}


class ListenFailed(PmemtraceError):
    """The HTTP server could not bind (port in use, address not on this host)."""
    exit_code = 16


class BadListenAddress(PmemtraceError):
    """--listen is not ADDR:PORT."""
    exit_code = 17


def parse_listen(text: str) -> Tuple[str, int]:
    """'ADDR:PORT', ':PORT' (all addresses) or '[v6]:PORT' -> (addr, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadListenAddress(f"--listen {text!r}: expected ADDR:PORT with a port from 1 to 65535")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise BadListenAddress(f"--listen {text!r}: {host!r} is not an IP address") from None
    return host, int(port_text)


# ----------------------------------------------------------------- state kept between scrapes

@dataclass
class Totals:
    page_faults: int = 0
    huge_faults: int = 0


@dataclass
class Series:
    """What one scrape exposes (pure data; collect() turns it into metric families)."""
    processes: List[dict] = field(default_factory=list)   # top N: labels + gauges + totals
    other: dict = field(default_factory=dict)
    vmas: List[dict] = field(default_factory=list)
    dax: Dict[str, int] = field(default_factory=dict)
    dax_fallback_causes: Dict[str, int] = field(default_factory=dict)
    lost: int = 0


class State:
    """Running totals across intervals, keyed by (pid, starttime), and the top-N selection."""

    def __init__(self, max_processes: int = DEFAULT_MAX_PROCESSES):
        self.max_processes = max_processes
        self.totals: Dict[Tuple[int, int], Totals] = {}
        self.other = Totals()
        self.dax: Dict[str, int] = {}
        self.dax_fallback_causes: Dict[str, int] = {}
        self.lost = 0

    def add(self, frame: dict, current: Dict[int, sampler.Tracked]) -> Series:
        """One interval's frame (interval.Model.step) and the live processes after it."""
        live = sorted(current.values(), key=lambda t: (t.huge.rss + t.huge.hugetlb, t.pid), reverse=True)
        top = {(t.pid, t.starttime) for t in live[:self.max_processes]}
        for r in frame["processes"]:
            t = current.get(r["pid"]) if r["pid"] is not None else None
            key = (t.pid, t.starttime) if t is not None else None
            faults, huge = r.get("faults") or 0, r.get("huge_faults") or 0
            tot = self.totals.setdefault(key, Totals()) if key in top else self.other
            tot.page_faults += faults
            tot.huge_faults += huge
        alive = {(t.pid, t.starttime) for t in live}
        for key in [k for k in self.totals if k not in alive]:      # exited: their totals end with them
            del self.totals[key]
        for outcome, n in frame["system"].get("dax", {}).items():
            self.dax[outcome] = self.dax.get(outcome, 0) + n
        for cause, n in frame.get("dax_fallback_causes", {}).items():
            self.dax_fallback_causes[cause] = self.dax_fallback_causes.get(cause, 0) + n
        self.lost += frame.get("lost_events") or 0
        out = Series(dax=dict(self.dax), dax_fallback_causes=dict(self.dax_fallback_causes), lost=self.lost)
        rest = {"resident": 0, "huge": 0, "small": 0}
        for t in live:
            h = t.huge
            gauges = {"resident": h.rss + h.hugetlb, "huge": h.huge, "small": h.small}
            key = (t.pid, t.starttime)
            if key in top:
                tot = self.totals.setdefault(key, Totals())
                out.processes.append({"pid": str(t.pid), "comm": t.comm, "start": str(t.starttime), **gauges,
                                      "page_faults": tot.page_faults, "huge_faults": tot.huge_faults})
            else:
                for k in rest:
                    rest[k] += gauges[k]
        out.other = {"pid": OTHER, "comm": "", "start": "", **rest,
                     "page_faults": self.other.page_faults, "huge_faults": self.other.huge_faults}
        return out


def vma_rows(pid: int) -> List[dict]:
    """Per-VMA gauges of one process (--vmas PID), from smaps."""
    rows = []
    for b in procfs.read_smaps(pid):
        h = sampler.huge_from_counters(b.counters)
        m = b.map
        rows.append({"start": f"0x{m.start:x}", "end": f"0x{m.end:x}", "path": m.path, "perms": m.perms,
                     "resident": h.rss + h.hugetlb, "huge": h.huge, "small": h.small,
                     "vm_sync": int("sf" in b.vmflags)})
    return rows


def fallback_causes(counts: aggregate.ProbeCounts) -> Dict[str, int]:
    """One interval's DAX PMD fallbacks by cause: each fs_dax fallback event the probes streamed,
    classified by daxcause (as report --duration does per VMA)."""
    out: Dict[str, int] = {}
    for e in counts.events:
        if e.get("type") == aggregate.EVENT_DAX_FALLBACK:
            cause = FALLBACK_CAUSES[daxcause.classify(e)]
            out[cause] = out.get(cause, 0) + 1
    return out


def read_khugepaged(thp_root: str = kernel.THP_SYSFS) -> Dict[str, int]:
    """khugepaged's own counters (sysfs khugepaged/pages_collapsed, full_scans) present here."""
    out = {}
    for key in KHUGEPAGED_COUNTERS:
        try:
            with open(f"{thp_root}/khugepaged/{key}") as f:
                out[key] = int(f.read())
        except (OSError, ValueError):
            pass
    return out


def dax_bytes_of(pid: int, kinds: Dict[Tuple[Tuple[int, int], int], str]) -> Dict[str, int]:
    """DAX resident bytes of pid by kind (fsdax / devdax), from the page tables: smaps does not
    count DAX pages before ~6.15 (pagemap.dax_residency_many, as report). ``kinds``: (dev, inode)
    -> DAX verdict, shared with the model's VMA count cache (one statx per file). A kind with a
    VMA whose page tables could not be read is left out (unknown, not 0)."""
    ranges, kind_of = [], []
    for b in procfs.read_smaps_layout_only(pid):
        m = b.map
        if not m.inode:
            continue
        key = (m.dev, m.inode)
        if key not in kinds:
            kinds[key] = vma_sampler.vma_dax(pid, m)
        if kinds[key] != "none":
            ranges.append((m.start, m.end))
            kind_of.append(kinds[key])
    out: Dict[str, int] = dict.fromkeys(kind_of, 0)
    unknown = set()
    for kind, r in zip(kind_of, pagemap.dax_residency_many(pid, ranges) if ranges else []):
        if r.rss is None:
            unknown.add(kind)
        else:
            out[kind] += r.rss
    return {k: v for k, v in sorted(out.items()) if k not in unknown}


class DaxBytesCache:
    """DAX resident bytes per process, re-read only when the model re-read that process's DAX VMA
    count (``stamp``: the VmaCountCache entry's time), so the cost follows dax_vmas' rule."""

    def __init__(self, read: Callable[[int, dict], Dict[str, int]] = dax_bytes_of):
        self.read = read
        self.cache: Dict[int, tuple] = {}     # pid -> (starttime, stamp, {kind: bytes})
        self.kinds: Dict[Tuple[Tuple[int, int], int], str] = {}

    def get(self, pid: int, starttime: int, stamp) -> Optional[Dict[str, int]]:
        hit = self.cache.get(pid)
        if hit is not None and hit[0] == starttime and hit[1] == stamp:
            return hit[2]
        try:
            val = self.read(pid, self.kinds)
        except (PmemtraceError, OSError):
            return hit[2] if hit is not None and hit[0] == starttime else None
        self.cache[pid] = (starttime, stamp, val)
        return val

    def keep(self, pids) -> None:
        for pid in [p for p in self.cache if p not in pids]:
            del self.cache[pid]


# ----------------------------------------------------------------- the collector

class Collector:
    """A prometheus_client custom collector: steps the model at scrape time."""

    def __init__(self, model: interval.Model, probes, state: State, min_interval: float = 0.0,
                 vmas_pid: Optional[int] = None, thp_root: str = kernel.THP_SYSFS):
        self.model, self.probes, self.state = model, probes, state
        self.min_interval, self.vmas_pid, self.thp_root = min_interval, vmas_pid, thp_root
        self.lock = threading.Lock()
        self.last_step = 0.0
        self.series: Optional[Series] = None
        self.vma_counts: Dict[int, tuple] = {}   # pid -> (starttime, vm_sync VMAs, DAX VMAs)
        self.dax_cache = DaxBytesCache()
        self.dax_cache.kinds = getattr(model.vma_cache, "dax_cache", self.dax_cache.kinds)
        self.dax_bytes: Dict[int, Dict[str, int]] = {}   # pid -> {kind: bytes}, top N with DAX VMAs
        self.scrape_seconds = 0.0
        self.scrapes = 0

    def step(self) -> Series:
        with self.lock:
            now = time.monotonic()
            if self.series is None or now - self.last_step >= self.min_interval:
                self.probes.poll(0)
                counts = self.probes.snapshot()
                frame = self.model.step(counts)
                causes = dict.fromkeys(FALLBACK_CAUSES.values(), 0) if self.model.fallbacks_known else {}
                causes.update(fallback_causes(counts))
                frame["dax_fallback_causes"] = causes     # every cause a series from 0 where the probe is on
                self.series = self.state.add(frame, self.model.procs.state)
                self.last_step = now
                for r in frame["processes"]:
                    if r["pid"] is not None and r.get("vm_sync_vmas") is not None:
                        t = self.model.procs.state.get(r["pid"])
                        if t is not None:
                            self.vma_counts[r["pid"]] = (t.starttime, r["vm_sync_vmas"], r.get("dax_vmas"))
                self._refresh_dax_bytes(self.series)
            return self.series

    def _refresh_dax_bytes(self, s: Series) -> None:
        """DAX resident bytes of the exported processes that have DAX VMAs (none read for the others)."""
        self.dax_bytes = {}
        for p in s.processes:
            pid = int(p["pid"])
            vc = self.vma_counts.get(pid)
            if vc is None or str(vc[0]) != p["start"] or not vc[2]:
                continue
            entry = self.model.vma_cache.cache.get(pid)
            val = self.dax_cache.get(pid, vc[0], entry[1] if entry is not None else None)
            if val is not None:
                self.dax_bytes[pid] = val
        self.dax_cache.keep(self.dax_bytes)

    def collect(self) -> Iterable:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
        t0 = time.perf_counter()
        s = self.step()
        labels = ["pid", "comm", "start"]
        resident = GaugeMetricFamily("pmemtrace_resident_bytes", "Resident bytes (Rss + hugetlb) of the process",
                                     labels=labels)
        huge = GaugeMetricFamily("pmemtrace_huge_bytes", "Bytes mapped by PMD/PUD leaves or hugetlb "
                                 "(smaps AnonHugePages + ShmemPmdMapped + FilePmdMapped + *_Hugetlb)", labels=labels)
        small = GaugeMetricFamily("pmemtrace_small_bytes", "Resident bytes mapped by 4 KiB PTEs", labels=labels)
        dax_vmas = GaugeMetricFamily("pmemtrace_dax_vmas", "DAX VMAs of the process (fs-dax, device-dax)",
                                     labels=labels)
        dax_bytes = GaugeMetricFamily("pmemtrace_dax_bytes", "DAX resident bytes of the process by kind, from the "
                                      "page tables (processes with DAX VMAs)", labels=labels + ["kind"])
        sync = GaugeMetricFamily("pmemtrace_vm_sync_vmas", "VM_SYNC (MAP_SYNC) VMAs of the process", labels=labels)
        faults = CounterMetricFamily("pmemtrace_page_faults", "Page faults (minflt + majflt) counted while exported",
                                     labels=labels)
        hfaults = CounterMetricFamily("pmemtrace_huge_faults", "Huge-page faults: PMD-mapped / hugetlb bytes gained "
                                      "over page size, plus DAX PMD faults", labels=labels)
        for p in s.processes + [s.other]:
            lv = [p["pid"], p["comm"], p["start"]]
            resident.add_metric(lv, p["resident"])
            huge.add_metric(lv, p["huge"])
            small.add_metric(lv, p["small"])
            faults.add_metric(lv, p["page_faults"])
            hfaults.add_metric(lv, p["huge_faults"])
            if p["pid"] != OTHER:
                vc = self.vma_counts.get(int(p["pid"]))
                if vc is not None and str(vc[0]) == p["start"]:
                    sync.add_metric(lv, vc[1])
                    if vc[2] is not None:
                        dax_vmas.add_metric(lv, vc[2])
                for kind, n in self.dax_bytes.get(int(p["pid"]), {}).items():
                    dax_bytes.add_metric(lv + [kind], n)
        yield from (resident, huge, small, dax_vmas, dax_bytes, sync, faults, hfaults)

        policy = kernel.thp_policy(self.thp_root)
        info = InfoMetricFamily("pmemtrace_thp_policy", "THP policy (sysfs transparent_hugepage)")
        info.add_metric([], {"enabled": policy.enabled or "", "defrag": policy.defrag or "",
                             "shmem_enabled": policy.shmem_enabled or ""})
        yield info
        mthp = sampler.read_mthp_stats(self.thp_root)
        for key, name in MTHP_COUNTERS.items():
            c = CounterMetricFamily(name, f"mTHP {key} per folio size (hugepages-*/stats/{key})",
                                    labels=["size_bytes"])
            for size, stats in sorted(mthp.items()):
                if key in stats:
                    c.add_metric([str(size)], stats[key])
            yield c
        vm = kernel.read_vmstat()
        for key, name in VMSTAT_COUNTERS.items():
            if key in vm:
                c = CounterMetricFamily(name, f"/proc/vmstat {key}")
                c.add_metric([], vm[key])
                yield c
        khp = read_khugepaged(self.thp_root)
        for key, name in KHUGEPAGED_COUNTERS.items():
            if key in khp:
                c = CounterMetricFamily(name, f"sysfs transparent_hugepage/khugepaged/{key}")
                c.add_metric([], khp[key])
                yield c
        dax = CounterMetricFamily("pmemtrace_dax_faults", "DAX faults by outcome (fs_dax tracepoints)",
                                  labels=["outcome"])
        for outcome, n in sorted(s.dax.items()):
            dax.add_metric([outcome], n)
        yield dax
        fb = CounterMetricFamily("pmemtrace_dax_fallbacks", "DAX PMD faults that fell back, by cause",
                                 labels=["cause"])
        for cause, n in sorted(s.dax_fallback_causes.items()):
            fb.add_metric([cause], n)
        yield fb
        lost = CounterMetricFamily("pmemtrace_lost_events", "Probe events lost (perf buffer overruns, full maps)")
        lost.add_metric([], s.lost)
        yield lost
        if self.vmas_pid is not None:
            vlabels = ["pid", "start", "end", "perms", "path"]
            vh = GaugeMetricFamily("pmemtrace_vma_huge_bytes", "Huge-mapped bytes of one VMA (--vmas)", labels=vlabels)
            vr = GaugeMetricFamily("pmemtrace_vma_resident_bytes", "Resident bytes of one VMA (--vmas)",
                                   labels=vlabels)
            try:
                rows = vma_rows(self.vmas_pid)
            except PmemtraceError:
                rows = []
            for r in rows:
                lv = [str(self.vmas_pid), r["start"], r["end"], r["perms"], r["path"]]
                vh.add_metric(lv, r["huge"])
                vr.add_metric(lv, r["resident"])
            yield vh
            yield vr
        self.scrapes += 1
        self.scrape_seconds += time.perf_counter() - t0
        dur = CounterMetricFamily("pmemtrace_scrape_duration_seconds", "Wall-clock seconds spent building scrapes "
                                  "(this one up to here)")
        dur.add_metric([], self.scrape_seconds)
        yield dur
        scrapes = CounterMetricFamily("pmemtrace_scrapes", "Scrapes served")
        scrapes.add_metric([], self.scrapes)
        yield scrapes


def open_probes():
    """Only the DAX tracepoints (rare paths): no BPF on any page-fault path, no syscall tracepoints."""
    from . import loader
    return loader.Probes(["dax"], None).start()


def build(max_processes: int = DEFAULT_MAX_PROCESSES, interval_s: float = 0.0, vmas_pid: Optional[int] = None,
          probes=None, proc_sampler=None, thp_root: str = kernel.THP_SYSFS):
    """A registry holding the collector (the model started: the first scrape has deltas)."""
    from prometheus_client import CollectorRegistry
    probes = probes if probes is not None else interval.NoProbes()
    fallbacks_known = "dax" in probes.features and "fs_dax:dax_pmd_fault_done" not in probes.missing
    model = interval.Model(fallbacks_known=fallbacks_known, proc_sampler=proc_sampler)
    model.start()
    probes.snapshot()
    collector = Collector(model, probes, State(max_processes), interval_s, vmas_pid, thp_root)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry, collector


def run(listen: str = DEFAULT_LISTEN, interval_s: float = 0.0, max_processes: int = DEFAULT_MAX_PROCESSES,
        vmas_pid: Optional[int] = None, bpf: bool = True, ready=None) -> int:
    from prometheus_client import start_http_server
    host, port = parse_listen(listen)
    if os.geteuid() != 0:
        from .errors import NotRoot
        raise NotRoot("the exporter reads every process's smaps_rollup: run as root")
    if vmas_pid is not None:
        procfs.check_pid(vmas_pid)
    probes = open_probes() if bpf else None

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)     # systemd stops us with SIGTERM: detach the probes cleanly
    try:
        registry, _ = build(max_processes, interval_s, vmas_pid, probes)
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as e:
            raise ListenFailed(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        if ready is not None:
            ready()
        try:
            while thread.is_alive():
                thread.join(1.0)
        except KeyboardInterrupt:
            pass
        server.shutdown()
    finally:
        if probes is not None:
            probes.close()
    return 0
