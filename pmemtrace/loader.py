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
  stash: task-local storage, freed with its task.

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
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from . import btf, headers, kernel, signals
from .aggregate import (DAX_OUTCOMES, EVENT_DAX_FALLBACK, EVENT_MADVISE, EVENT_MMAP, EVENT_MUNMAP,
                        LOST_REASONS, MADVISE_NAMES, MincoreStats, ProbeCounts)
from .errors import BccMissing, NotRoot, ProbeLoadFailed

FEATURES = ("thp", "faults", "dax", "syscalls", "mincore", "devdax", "collapse", "ksyscalls", "kmincore")
KPROBE_SYSCALLS = {"ksyscalls": ("mmap", "munmap", "madvise"), "kmincore": ("mincore",)}
KPROBE_RETURNS = ("mmap", "mincore")       # these also need the return value (a kretprobe)
DEVDAX_SYMBOL = "dev_dax_huge_fault"


@dataclass(frozen=True)
class Attachment:
    category: str
    event: str
    raw: bool                         # raw tracepoint (scalar args) or classic (generated struct)
    needs_fields: Tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.category}:{self.event}"

    @property
    def struct(self) -> str:
        return f"tp_{self.category}__{self.event}"


ATTACHMENTS: Dict[str, Tuple[Attachment, ...]] = {
    "thp": (Attachment("exceptions", "page_fault_user", True),
            Attachment("memcg", "count_memcg_events", True)),
    "dax": (Attachment("fs_dax", "dax_pmd_fault_done", False,
                       ("vm_start", "vm_end", "vm_flags", "address", "pgoff", "max_pgoff", "ino", "dev",
                        "flags", "result")),
            Attachment("fs_dax", "dax_pte_fault_done", False, ("address", "pgoff", "ino", "dev", "result")),
            Attachment("fs_dax", "dax_load_hole", False, ("address", "pgoff", "ino", "dev")),
            Attachment("fs_dax", "dax_pmd_load_hole", False, ("address",)),
            Attachment("fs_dax", "dax_pmd_load_hole_fallback", False, ("address",)),
            Attachment("fs_dax", "dax_insert_pfn_mkwrite", False, ("address",))),
    "syscalls": (Attachment("syscalls", "sys_enter_mmap", False, ("addr", "len", "prot", "flags", "fd", "off")),
                 Attachment("syscalls", "sys_exit_mmap", False, ("ret",)),
                 Attachment("syscalls", "sys_enter_munmap", False, ("addr", "len")),
                 Attachment("syscalls", "sys_enter_madvise", False, ("start", "len_in", "behavior"))),
    "mincore": (Attachment("syscalls", "sys_enter_mincore", False, ("start", "len", "vec")),
                Attachment("syscalls", "sys_exit_mincore", False, ("ret",))),
}
ATTACHMENTS["collapse"] = (
    Attachment("huge_memory", "mm_khugepaged_scan_pmd", False, ("mm", "pfn", "none_or_zero", "status")),
    Attachment("huge_memory", "mm_khugepaged_scan_file", False, ("mm", "pfn", "present", "swap", "result")),
    Attachment("syscalls", "sys_enter_madvise", False, ("start", "len_in", "behavior")),
    Attachment("syscalls", "sys_exit_madvise", False, ("ret",)))
# programs put on a tracepoint beside the one named on_<event> (another feature may own that name)
EXTRA_PROGRAMS = {"collapse": (("syscalls:sys_enter_madvise", "on_collapse_madvise_enter"),)}
ATTACHMENTS["faults"] = ATTACHMENTS["thp"][:1]      # page_fault_user alone
ATTACHMENTS["devdax"] = ATTACHMENTS["thp"][:1]      # + the kprobe, see kprobe_available()
for _feature, _calls in KPROBE_SYSCALLS.items():
    ATTACHMENTS[_feature] = tuple(Attachment("ksyscall", call, False) for call in _calls)
SOURCES = {"thp": "faults.c", "faults": "faults.c", "dax": "dax.c", "syscalls": "syscalls.c",
           "mincore": "syscalls.c", "devdax": "devdax.c", "collapse": "collapse.c", "ksyscalls": "ksyscalls.c",
           "kmincore": "ksyscalls.c"}

# max_entries of each map (count maps hold two epochs: twice what one interval adds)
MAP_SIZES = {"THP_MAP_ENTRIES": 65536, "FAULT_MAP_ENTRIES": 262144, "DAX_MAP_ENTRIES": 131072,
             "COMM_MAP_ENTRIES": 16384, "DSYNC_HIST_ENTRIES": 16384, "PTE_RANGE_ENTRIES": 65536,
             "DSYNC_START_ENTRIES": 65536, "INFLIGHT_ENTRIES": 10240, "MINCORE_VEC_WORDS": 512,
             "STASH_ENTRIES": 16384, "COLLAPSE_MAP_ENTRIES": 16384}
# the maps snapshot() drains by epoch (name -> its MAP_SIZES entry)
COUNT_MAPS = {"thp_faults": "THP_MAP_ENTRIES", "thp_unattributed": "COMM_MAP_ENTRIES",
              "thp_comm": "COMM_MAP_ENTRIES", "page_faults": "FAULT_MAP_ENTRIES",
              "dax_counts": "DAX_MAP_ENTRIES", "dsync_latency": "DSYNC_HIST_ENTRIES",
              "mincore_counts": "COMM_MAP_ENTRIES",
              "collapse_counts": "COLLAPSE_MAP_ENTRIES"}   # read whole, never drained: Probes.collapse_counts
# LRU maps (memories, not counts): occupancy counted every OCCUPANCY_SECONDS (a full walk)
LRU_MAPS = {"pte_ranges": "PTE_RANGE_ENTRIES", "dsync_start": "DSYNC_START_ENTRIES",
            "mmap_inflight": "INFLIGHT_ENTRIES", "mincore_inflight": "INFLIGHT_ENTRIES",
            "devdax_inflight": "INFLIGHT_ENTRIES", "collapse_madvise": "INFLIGHT_ENTRIES",
            "stash": "STASH_ENTRIES"}     # only before 5.11: task storage (freed with its task) after
OCCUPANCY_SECONDS = 5.0
MEMBARRIER_CMD_GLOBAL = 1
SYS_MEMBARRIER = {"x86_64": 324, "aarch64": 283, "ppc64le": 365, "s390x": 356, "riscv64": 283}
QUIESCE_FALLBACK_S = 0.05


def shared_defines() -> Dict[str, int]:
    """The C side of constants whose one source is Python (aggregate.py, kernel.py)."""
    out: Dict[str, int] = {}
    for i, name in enumerate(DAX_OUTCOMES):
        out[f"DAX_{name.upper()}"] = i
    out.update(EVENT_DAX_FALLBACK=EVENT_DAX_FALLBACK, EVENT_MMAP=EVENT_MMAP, EVENT_MUNMAP=EVENT_MUNMAP,
               EVENT_MADVISE=EVENT_MADVISE)
    for i, name in enumerate(LOST_REASONS):
        out[f"LOST_{name.upper()}"] = i
    out["LOST_REASONS"] = len(LOST_REASONS)
    for nr, name in MADVISE_NAMES.items():
        out[f"MADV_{name}_NR"] = nr
    out["PAGE_SHIFT_BITS"] = kernel.PAGE_SIZE.bit_length() - 1
    out["PMD_SHIFT_BITS"] = kernel.pmd_size().bit_length() - 1
    return out


_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)


def source_text(name: str, pdir: str, seen: set) -> str:
    """A probe file with its local #include "x.h" lines replaced by x.h itself, each header
    once per program (bcc rewrites map calls in the main file only, so it gets one file)."""
    with open(os.path.join(pdir, name)) as f:
        text = f.read()

    def include(m):
        header = m.group(1)
        if header in seen:
            return f"/* {header}: already included */"
        seen.add(header)
        return f"/* ---- probes/{header} ---- */\n" + source_text(header, pdir, seen)
    return _INCLUDE.sub(include, text)


def probes_dir() -> str:
    """probes/ beside the package in a checkout, or share/pmemtrace/probes in an install."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(os.path.dirname(here), "probes"),
                      os.path.join(sys.prefix, "share", "pmemtrace", "probes")):
        if os.path.isfile(os.path.join(candidate, "common.h")):
            return candidate
    raise ProbeLoadFailed("cannot find the probes/ directory (reinstall with `sudo make install`)")


def kprobe_available(symbol: str, tracefs: Optional[str] = None) -> bool:
    """kprobes built in (tracefs has kprobe_events) and the symbol known to kallsyms."""
    root = tracefs or kernel.tracefs_root()
    if not root or not os.path.exists(f"{root}/kprobe_events"):
        return False
    try:
        with open("/proc/kallsyms") as f:
            return any(line.split()[2:3] == [symbol] for line in f)
    except OSError:
        return False


SYSCALL_PREFIXES = ("__x64_sys_", "__arm64_sys_", "__riscv_sys_", "__s390x_sys_", "sys_")
_kallsyms_cache: Dict[str, str] = {}


def kallsyms_text(path: str = "/proc/kallsyms") -> str:
    """/proc/kallsyms, read once per process (about 10 MB of text; searched with str.find)."""
    if path not in _kallsyms_cache:
        try:
            with open(path) as f:
                _kallsyms_cache[path] = f.read()
        except OSError:
            _kallsyms_cache[path] = ""
    return _kallsyms_cache[path]


def syscall_symbol(call: str, kallsyms: str) -> Optional[str]:
    """The function behind a syscall in kallsyms text: the arch's wrapper (__x64_sys_mmap,
    which receives the user registers) or, on kernels without wrappers, sys_mmap; else None."""
    for prefix in SYSCALL_PREFIXES:
        if f" {prefix}{call}\n" in kallsyms:
            return prefix + call
    return None


def syscall_kprobes(calls: Iterable[str] = ("mmap", "munmap", "madvise", "mincore"), tracefs: Optional[str] = None,
                    kallsyms: Optional[str] = None) -> Tuple[bool, str]:
    """(usable, why): can the syscall functions be kprobed here (kprobes built in, each symbol
    known)? Decides whether top watches mmap/munmap/madvise/mincore by default."""
    root = tracefs if tracefs is not None else kernel.tracefs_root()
    if not root or not os.path.exists(f"{root}/kprobe_events"):
        return False, "this kernel has no kprobes (no kprobe_events in tracefs)"
    text = kallsyms_text() if kallsyms is None else kallsyms
    lacking = [c for c in calls if syscall_symbol(c, text) is None]
    if lacking:
        return False, f"kprobes, but no syscall function for {', '.join(lacking)} in /proc/kallsyms"
    return True, "kprobes on " + ", ".join(str(syscall_symbol(c, text)) for c in calls)


def devdax_size_args() -> Dict[str, int]:
    """dev_dax_huge_fault's size argument: enum page_entry_size before 6.6, an order since."""
    try:
        sizes = btf.enum_values("page_entry_size")
        return {"DEVDAX_PTE_ARG": sizes["PE_SIZE_PTE"], "DEVDAX_PMD_ARG": sizes["PE_SIZE_PMD"]}
    except (KeyError, btf.BtfError):
        order = (kernel.pmd_size() // kernel.PAGE_SIZE).bit_length() - 1
        return {"DEVDAX_PTE_ARG": 0, "DEVDAX_PMD_ARG": order}


def resolve_enums() -> Dict[str, int]:
    """Enum values this kernel build uses: never hard-coded, they differ between builds."""
    wanted = {"THP_FAULT_ALLOC_ITEM": "THP_FAULT_ALLOC", "THP_FILE_ALLOC_ITEM": "THP_FILE_ALLOC",
              "VM_FAULT_NOPAGE_MASK": "VM_FAULT_NOPAGE", "VM_FAULT_FALLBACK_MASK": "VM_FAULT_FALLBACK",
              "VM_FAULT_NEEDDSYNC_MASK": "VM_FAULT_NEEDDSYNC",     # enum vm_fault_reason holds masks
              "BPF_MAP_TYPE_TASK_STORAGE_VALUE": "BPF_MAP_TYPE_TASK_STORAGE"}
    out = {}
    for macro, name in wanted.items():
        try:
            value = btf.enum_value(name)
        except btf.BtfError:
            value = None      # no BTF: the features that need these values drop out, with a note
        out[macro] = -1 if value is None else value
    return out


def plan(features: Iterable[str], tracefs: Optional[str] = None):
    """Which attachments can be made here: (usable, formats, missing id -> what is lost)."""
    usable: List[Attachment] = []
    formats: Dict[str, list] = {}
    missing: Dict[str, str] = {}
    feeds = {tp.id: tp.feeds for tp in kernel.TRACEPOINTS}
    seen = set()
    for feature in features:
        for att in ATTACHMENTS[feature]:
            if att.id in seen:
                continue
            seen.add(att.id)
            if att.category == "ksyscall":
                ok, why = syscall_kprobes((att.event,), tracefs)
                if not ok:
                    missing[att.id] = why
                else:
                    usable.append(att)
                continue
            if not kernel.tracepoint_exists(att.category, att.event, tracefs):
                missing[att.id] = f"absent on this kernel: no {feeds.get(att.id, att.id)}"
                continue
            if not att.raw:
                fields = kernel.tracepoint_format(att.category, att.event, tracefs) or []
                names = {f.name for f in fields}
                lacking = [f for f in att.needs_fields if f not in names]
                if lacking:
                    missing[att.id] = (f"format lacks {', '.join(lacking)}: no "
                                       f"{feeds.get(att.id, att.id)}")
                    continue
                formats[att.id] = fields
            usable.append(att)
    return usable, formats, missing


def build_text(features: Iterable[str], pid: Optional[int] = None, tracefs: Optional[str] = None,
               enums: Optional[Dict[str, int]] = None):
    """The program text and the attachments it needs; pure given tracefs, BTF and probes/."""
    features = list(dict.fromkeys(features))
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown probe features: {sorted(unknown)}")
    if "faults" in features and pid is None:
        raise ValueError("the 'faults' feature counts every fault and needs a pid")
    if {"syscalls", "mincore"} & set(features) and {"ksyscalls", "kmincore"} & set(features):
        raise ValueError("syscall tracepoints and syscall kprobes are alternatives: ask for one")
    usable, formats, missing = plan(features, tracefs)
    have = {a.id for a in usable}
    enums = resolve_enums() if enums is None else enums
    # THP attribution needs both raw tracepoints and THP_FAULT_ALLOC's value; the per-page
    # fault count needs only page_fault_user
    pfu, memcg = ATTACHMENTS["thp"]
    thp_attribution = ("thp" in features and pfu.id in have and memcg.id in have
                       and enums.get("THP_FAULT_ALLOC_ITEM", -1) >= 0)
    if "thp" in features and not thp_attribution:
        if pfu.id in have and memcg.id in have:
            missing["btf:THP_FAULT_ALLOC"] = "enum value not found in BTF: no per-address THP fault attribution"
        elif pfu.id in have:
            missing.setdefault(memcg.id, "absent on this kernel")
            missing[memcg.id] += ": no per-address THP fault attribution (faults are still counted)"
    faults_counted = "faults" in features and pfu.id in have
    devdax = False
    if "devdax" in features:
        if not kprobe_available(DEVDAX_SYMBOL, tracefs):
            missing[f"kprobe:{DEVDAX_SYMBOL}"] = ("no kprobes (or no device-dax driver) here: device-dax faults "
                                                  "are seen only as page faults and in PAGEMAP_SCAN")
        elif pfu.id not in have or "dax" not in features or "btf:VM_FAULT_*" in missing:
            missing[f"kprobe:{DEVDAX_SYMBOL}"] = "needs page_fault_user and the dax feature: no device-dax counts"
        else:
            devdax = True
    usable = [a for a in usable if a is not memcg or thp_attribution]
    usable = [a for a in usable if a is not pfu or thp_attribution or faults_counted or devdax]
    if "dax" in features and min(enums.get(k, -1) for k in
                                 ("VM_FAULT_NOPAGE_MASK", "VM_FAULT_FALLBACK_MASK", "VM_FAULT_NEEDDSYNC_MASK")) < 0:
        missing["btf:VM_FAULT_*"] = "enum values not found in BTF: no DAX fault outcomes"
        usable = [a for a in usable if a.category != "fs_dax"]
    defines = [f"#define {k} {v}" for k, v in {**enums, **shared_defines(), **MAP_SIZES}.items()]
    if pid is not None:
        defines.append(f"#define PID_FILTER {int(pid)}")
    for feature in features:
        if (feature != "faults" or faults_counted) and (feature != "devdax" or devdax):
            defines.append(f"#define FEATURE_{feature.upper()} 1")
    if devdax:
        defines += [f"#define {k} {v}" for k, v in devdax_size_args().items()]
    if thp_attribution:
        defines.append("#define THP_ATTRIBUTION 1")
    ksys = [a for a in usable if a.category == "ksyscall"]
    if ksys and not str(syscall_symbol(ksys[0].event, kallsyms_text())).startswith("sys_"):
        defines.append("#define SYSCALL_WRAPPER 1")
    if thp_attribution or devdax:
        defines += stash_defines(enums, missing)
    structs = []
    for att in usable:
        if not att.raw and att.category != "ksyscall":
            structs.append(kernel.c_struct(att.struct, formats[att.id]))
            defines.append(f"#define HAVE_{att.struct} 1")
    pdir = probes_dir()
    parts = ["/* generated by pmemtrace.loader for this kernel */", *defines, *structs]
    seen: set = {"common.h"}
    parts.append("/* ---- probes/common.h ---- */\n" + source_text("common.h", pdir, seen))
    wanted_sources = []
    for feature in features:
        src = SOURCES[feature]
        if src == "faults.c" and not any(a.raw for a in usable):
            continue
        if src == "devdax.c" and not devdax:
            continue
        if src == "ksyscalls.c" and not ksys:
            continue
        if src not in wanted_sources:
            wanted_sources.append(src)
    if devdax and "faults.c" not in wanted_sources:
        wanted_sources.append("faults.c")         # the address stash
    source_order = ("faults.c", "dax.c", "syscalls.c", "devdax.c", "collapse.c", "ksyscalls.c")
    for src in sorted(wanted_sources, key=source_order.index):
        parts.append(f"/* ---- probes/{src} ---- */\n" + source_text(src, pdir, seen))
    if devdax:
        usable.append(Attachment("kprobe", DEVDAX_SYMBOL, False))
    return "\n".join(parts) + "\n", usable, missing


TASK_STORAGE_NOTE = "bpf:task_storage"


def stash_defines(enums: Dict[str, int], missing: Dict[str, str]) -> List[str]:
    """How the fault address travels from page_fault_user to its consumers: BPF task storage
    (5.11+, with bpf_get_current_task_btf), else an LRU hash keyed by thread id, noted."""
    if enums.get("BPF_MAP_TYPE_TASK_STORAGE_VALUE", 0) >= 0:
        return ["#define HAVE_TASK_STORAGE 1"]
    missing[TASK_STORAGE_NOTE] = (f"no BPF task storage (Linux 5.11+): fault addresses are kept in an LRU hash "
                                  f"of {MAP_SIZES['STASH_ENTRIES']} threads instead; with more threads faulting at "
                                  f"once the oldest lose their address (THP faults then count as unattributed)")
    return []


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
                if name == "stash" and TASK_STORAGE_NOTE not in self.missing:
                    continue        # task storage: no keys to walk, bounded by the tasks
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
