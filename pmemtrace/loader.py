"""The probes and their loader: the only module that imports bcc.

Builds one BPF program from probes/*.c for the features asked for, prefixed by
what this kernel says (enum values from BTF, structs from tracefs formats) and by the
constants whose one source is Python (shared_defines), loads it, attaches it, and reads
counts out of the BPF maps, one epoch at a time.

Exact by construction (why no count is lost at an interval boundary)
  Reading a map and then deleting what was read loses the increments that land in between
  (measured: 376 of 2,000,000 refaults of one page at 0.1 s intervals); an atomic add through
  the pointer lookup() returned does not take the hash bucket lock, so even
  BPF_MAP_LOOKUP_AND_DELETE_ELEM would not close that window. So the maps are double
  buffered: every count key carries the parity of the `epoch` array as the program read it,
  once, at its start. snapshot() (1) writes the next epoch, (2) waits for an RCU grace
  period: it updates the map-in-map `quiesce`, and the kernel returns from such an update
  only after synchronize_rcu() (maybe_wait_bpf_programs, so that user space knows every
  program sees the new value); every BPF tracing program (raw tracepoint, tracepoint,
  kprobe) runs inside an RCU read-side section,
  so when it returns every program that could have read the old epoch has finished, and
  every program that starts later sees the new one; (3) reads the keys of the old parity,
  which nothing writes any more, and deletes them before the epoch can come back to that
  parity. Each increment lands in exactly one epoch and is read exactly once. The `lost`
  array is split by epoch the same way (its old half is zeroed after the read).
  membarrier(MEMBARRIER_CMD_GLOBAL) is synchronize_rcu() too and is the fallback, but it
  returns at once with one CPU online (the DAX guests have one), which a preemptible-RCU
  kernel does not make safe.
  Not covered: a program the kernel skips for recursion (a BPF program already running on
  that CPU) never runs, so it is not counted anywhere; bpftool shows its recursion_misses.
  Where both are refused (no map-in-map, nohz_full) the loader says so in `missing`
  and waits QUIESCE_FALLBACK_S instead: then a program preempted longer than that inside
  its few instructions could add to a key already read (not exact by construction there).

Bounds (every map; occupancy in ProbeCounts.maps, shown by `top --json` and doctor)
  count maps (thp_faults, thp_unattributed, thp_comm, page_faults, dax_counts,
  dsync_latency, mincore_counts): hold at most two epochs' keys, because the old epoch's
  keys are deleted at each snapshot; sized in MAP_SIZES; an insert into a full map is
  counted in lost (per map: LOST_REASONS). thp_comm is a count map too: the comm of each
  tgid that took a THP fault in that epoch, so rows of exited processes keep their names
  and nothing accumulates across pids (no pid reuse question arises).
  pte_ranges, dsync_start, *_inflight: memories, not counts: LRU hash maps (the kernel
  evicts the least recently used entry when full); a failed update is counted in lost.
  stash: an array indexed by thread id, overwritten fault by fault (probes/stash.h).

Features:
  thp       every THP fault allocation attributed by address (raw tracepoints on the fault path)
  faults    every page fault counted per page (needs a pid: for report --duration and top -p)
  dax       fs_dax fault outcomes, fallbacks streamed with their fields, MAP_SYNC latency
  syscalls  mmap / munmap / madvise, streamed
  mincore   mincore callers, aggregated per process
  ksyscalls, kmincore  the same two through kprobes on the syscall functions (__x64_sys_mmap, ...),
            where the kernel has kprobes: only those calls pay, while any syscall tracepoint puts
            every syscall of every task on the slow path (probes/ksyscalls.c; see syscall_kprobes())
  devdax    device-dax PMD / PTE faults per VMA, through a kprobe on dev_dax_huge_fault where the
            kernel has kprobes (device-dax has no tracepoints); needs page_fault_user for the
            address, so it puts a program on the fault path: report (one pid) uses it, top does not
  collapse  THP collapses by khugepaged and MADV_COLLAPSE with the kernel's result (probes/collapse.c)
A tracepoint missing on this kernel drops what it feeds, listed in Probes.missing.
"""
import ctypes
import errno
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import headers, kernel, signals
from .aggregate import (DAX_OUTCOMES, EVENT_DAX_FALLBACK, LOST_REASONS, MincoreStats, ProbeCounts)
from .errors import BccMissing, NotRoot, ProbeLoadFailed
from .program import (  # noqa: F401  (loader.X stays the API for the program's tables too)
    ATTACHMENTS, Attachment, COUNT_MAPS, DEVDAX_SYMBOL, EXTRA_PROGRAMS, FEATURES, KPROBE_RETURNS,
    KPROBE_SYSCALLS, LRU_MAPS, MAP_SIZES, SOURCES, SYSCALL_PREFIXES, build_text,
    devdax_size_args, kallsyms_text, kprobe_available, plan, probes_dir, resolve_enums, shared_defines,
    source_text, stash_fits, syscall_kprobes, syscall_symbol,
)
OCCUPANCY_SECONDS = 5.0
MEMBARRIER_CMD_GLOBAL = 1
SYS_MEMBARRIER = {"x86_64": 324, "aarch64": 283, "ppc64le": 365, "s390x": 356, "riscv64": 283}
QUIESCE_FALLBACK_S = 0.05


def import_bcc():
    try:
        import bcc  # the one import of bcc in pmemtrace
    except ImportError:
        raise BccMissing("bcc is not importable: install Debian's python3-bpfcc (`sudo make install`)") from None
    return bcc


def decode_comm(raw: bytes) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace")


class Probes:
    """Loaded, attached probes. Use as a context manager so they always detach."""

    def __init__(self, features: Iterable[str], pid: Optional[int] = None):
        self.features = list(features)
        self.pid = pid
        self.bpf: Any = None              # bcc.BPF once started
        self.events: List[dict] = []
        self.lost_perf = 0
        self.epoch = 0                    # the epoch the probes count into (its parity is in the keys)
        self.quiesce_by = "map-in-map"    # how _quiesce waits for a grace period (it degrades, saying so)
        self.quiesce_seconds = 0.0        # how long the last wait took
        self._lru_read_at = -OCCUPANCY_SECONDS
        self._lru_seen: Dict[str, dict] = {}
        if os.geteuid() != 0:
            raise NotRoot("loading BPF probes needs root: run with sudo")
        self.tracefs = kernel.ensure_tracefs()
        self.text, self.attachments, self.missing = build_text(self.features, pid, self.tracefs)
        self.headers = headers.ensure_headers()

    # -- lifecycle
    def start(self) -> "Probes":
        """Compile, load and attach. A SIGINT/SIGTERM meanwhile (pmemtrace.signals) lets the attach
        finish, then detaches and raises Interrupted: bcc is never cut off half-way."""
        with signals.deferred():
            self._start()
        if signals.received() is not None:
            self.close()
            signals.check()
        return self

    def _start(self) -> None:
        os.environ.update(self.headers.bcc_env())
        bcc = import_bcc()
        try:
            self.bpf = bcc.BPF(text=self.text, cflags=["-Wno-macro-redefined", "-Wno-unused-function"])
        except Exception as e:   # bcc raises plain Exception on compile/load errors
            raise ProbeLoadFailed(f"BPF program failed to compile or load: {e} "
                                  f"(see `pmemtrace doctor`; `--ebpf` prints the program)") from None
        try:
            for att in self.attachments:
                if att.raw:
                    continue    # RAW_TRACEPOINT_PROBE functions are attached by bcc itself
                if att.category == "ksyscall":
                    symbol = syscall_symbol(att.event, kallsyms_text())
                    self.bpf.attach_kprobe(event=symbol, fn_name=f"on_ksys_enter_{att.event}")
                    if att.event in KPROBE_RETURNS:
                        self.bpf.attach_kretprobe(event=symbol, fn_name=f"on_ksys_exit_{att.event}")
                    continue
                if att.category == "kprobe":
                    self.bpf.attach_kprobe(event=att.event, fn_name="on_devdax_fault")
                    self.bpf.attach_kretprobe(event=att.event, fn_name="on_devdax_fault_ret")
                    continue
                self.bpf.attach_tracepoint(tp=att.id, fn_name=f"on_{att.event}")
            have = {a.id for a in self.attachments}
            for feature in self.features:
                for tp, fn in EXTRA_PROGRAMS.get(feature, ()):
                    owned = any(a.id == tp for f in self.features if f != feature for a in ATTACHMENTS[f])
                    if tp in have and owned:      # else the feature's own on_<event> is attached above
                        self.bpf.attach_tracepoint(tp=tp, fn_name=fn)
            self._choose_quiesce()
            for table, handler in (("dax_events", self._on_dax_event), ("syscall_events", self._on_syscall_event)):
                if self._has_table(table):
                    self.bpf[table].open_perf_buffer(handler, page_cnt=512, lost_cb=self._on_lost)
        except Exception as e:
            self.close()
            raise ProbeLoadFailed(f"attaching probes failed: {e}") from None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Detach everything; a signal meanwhile waits (bcc's cleanup must not be cut off)."""
        with signals.deferred():
            if self.bpf is not None:
                try:
                    self.bpf.cleanup()
                finally:
                    self.bpf = None

    # -- reading
    def _has_table(self, name: str) -> bool:
        try:
            self.bpf[name]
            return True
        except KeyError:
            return False

    def _on_lost(self, count):
        self.lost_perf += count

    def _on_dax_event(self, cpu, data, size):
        e = self.bpf["dax_events"].event(data)
        self.events.append({
            "type": EVENT_DAX_FALLBACK, "tgid": e.tgid, "vm_start": e.vm_start, "vm_end": e.vm_end,
            "vm_flags": e.vm_flags, "address": e.address, "pgoff": e.pgoff, "max_pgoff": e.max_pgoff,
            "ino": e.ino, "dev": e.dev, "flags": e.flags, "result": e.result, "pte_seen": bool(e.pte_seen),
            "comm": decode_comm(e.comm)})

    def _on_syscall_event(self, cpu, data, size):
        e = self.bpf["syscall_events"].event(data)
        self.events.append({
            "type": e.type, "tgid": e.tgid, "addr": e.addr, "len": e.len, "prot": e.prot,
            "flags": e.flags, "fd": e.fd, "off": e.off, "ret": e.ret, "comm": decode_comm(e.comm)})

    def poll(self, timeout_ms: int = 0) -> None:
        """Drain streamed events into self.events."""
        if self.bpf is not None and (self._has_table("dax_events") or self._has_table("syscall_events")):
            self.bpf.perf_buffer_poll(timeout=timeout_ms)

    # -- epochs (see the module docstring)
    def _quiesce(self) -> None:
        """Wait until no BPF program that read the previous epoch can still be running: an
        RCU grace period. Updating a map-in-map waits for one (the kernel's own promise to
        user space that programs see the new inner map); membarrier(MEMBARRIER_CMD_GLOBAL)
        is synchronize_rcu() too, but skips it with one CPU online, where a preemptible-RCU
        kernel could still have a reader preempted mid-program."""
        if self.quiesce_by == "map-in-map":
            # tried once at start() (_choose_quiesce); no exception is caught here, so a
            # signal handler's exception (top's SIGTERM) is never swallowed
            self.bpf["quiesce"][ctypes.c_int(0)] = ctypes.c_int(self.bpf["quiesce_inner"].get_fd())
            return
        if self.quiesce_by == "membarrier":
            libc = ctypes.CDLL(None, use_errno=True)
            nr = SYS_MEMBARRIER.get(os.uname().machine)
            if nr is not None and libc.syscall(nr, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0:
                return
            err = ctypes.get_errno() if nr is not None else errno.ENOSYS
            self.quiesce_by = "sleep"
            self.missing["quiesce:membarrier"] = (
                f"membarrier(MEMBARRIER_CMD_GLOBAL) refused ({os.strerror(err)}): interval boundaries wait "
                f"{QUIESCE_FALLBACK_S * 1000:g} ms instead of an RCU grace period, not exact by construction")
        time.sleep(QUIESCE_FALLBACK_S)

    def _choose_quiesce(self) -> None:
        """The map-in-map update where the kernel allows it, else membarrier (see _quiesce)."""
        try:
            self.bpf["quiesce"][ctypes.c_int(0)] = ctypes.c_int(self.bpf["quiesce_inner"].get_fd())
        except Exception as e:    # bcc raises plain Exception for a refused update
            self.quiesce_by = "membarrier"
            self.missing["quiesce:map-in-map"] = f"map-in-map update refused ({e}): membarrier instead"

    def _flip(self) -> int:
        """Start the next epoch; return the parity of the one that is now frozen."""
        frozen = self.epoch & 1
        self.epoch += 1
        self.bpf["epoch"][ctypes.c_int(0)] = ctypes.c_uint(self.epoch)
        t0 = time.monotonic()
        self._quiesce()
        self.quiesce_seconds = time.monotonic() - t0
        return frozen

    def _drain(self, name: str, frozen: int, occupancy: Dict[str, dict]):
        """The frozen epoch's entries of a count map, deleted once read (nothing writes them)."""
        if not self._has_table(name):
            return []
        table = self.bpf[name]
        everything = list(table.items())
        occupancy[name] = {"entries": len(everything), "max_entries": MAP_SIZES[COUNT_MAPS[name]]}
        items = [(k, v) for k, v in everything if k.epoch == frozen]
        for k, _ in items:
            del table[k]
        return items

    def _lru_occupancy(self, occupancy: Dict[str, dict]) -> None:
        now = time.monotonic()
        if now - self._lru_read_at >= OCCUPANCY_SECONDS:
            self._lru_read_at = now
            for name, size in LRU_MAPS.items():
                if self._has_table(name):
                    self._lru_seen[name] = {"entries": len(list(self.bpf[name].keys())),
                                            "max_entries": MAP_SIZES[size]}
        occupancy.update(self._lru_seen)

    def collapse_counts(self) -> List[Tuple[Dict[str, int], int, int]]:
        """Totals since attach of the collapse feature: (key fields, count, filled PTEs) per entry.
        Read, never cleared (exact by construction)."""
        if self.bpf is None or not self._has_table("collapse_counts"):
            return []
        fields = ("mm", "addr", "pfn", "tgid", "status", "file", "madvise")
        return [({f: getattr(k, f) for f in fields}, v.count, v.filled)
                for k, v in self.bpf["collapse_counts"].items()]

    def snapshot(self) -> ProbeCounts:
        """Every count of the epoch that just ended (exact: see the module docstring); events
        streamed since the last snapshot come along."""
        self.poll(0)
        frozen = self._flip()
        c = ProbeCounts()
        occ: Dict[str, dict] = {}
        for k, v in self._drain("thp_faults", frozen, occ):
            c.thp_faults[(k.tgid, k.addr)] = v.value
        for k, v in self._drain("thp_unattributed", frozen, occ):
            c.thp_unattributed[k.tgid] = v.value
        for k, v in self._drain("page_faults", frozen, occ):
            c.page_faults[(k.tgid, k.addr)] = v.value
        for k, v in self._drain("dax_counts", frozen, occ):
            c.dax[(k.tgid, DAX_OUTCOMES[k.outcome], k.vm_start)] = v.value
        for k, v in self._drain("dsync_latency", frozen, occ):
            c.dsync_latency[(k.tgid, k.vm_start, k.slot)] = v.value
        for k, v in self._drain("mincore_counts", frozen, occ):
            c.mincore[k.tgid] = MincoreStats(v.calls, v.errors, v.bytes, v.pages_examined,
                                             v.pages_resident, v.ns)
        for k, v in self._drain("thp_comm", frozen, occ):
            c.comms[k.tgid] = decode_comm(v.comm)
        self._lru_occupancy(occ)
        lost = self.bpf["lost"]
        for i, reason in enumerate(LOST_REASONS):
            slot = ctypes.c_int(frozen * len(LOST_REASONS) + i)
            n = lost[slot].value
            if n:
                c.lost_by[reason] = n
                lost[slot] = ctypes.c_ulonglong(0)    # frozen: nothing adds to it until the next flip
        self.poll(0)    # events submitted before the flip are in the buffers now
        c.events, self.events = self.events, []
        if self.lost_perf:
            c.lost_by["perf"] = self.lost_perf
        c.lost = sum(c.lost_by.values())
        self.lost_perf = 0
        c.maps = occ
        return c
