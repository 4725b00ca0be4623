"""The BPF program for a set of features on this kernel, as text: which tracepoints and kprobes
exist here (plan), the #defines whose one source is Python (shared_defines, map sizes, enum values
from BTF), structs generated from tracefs formats, and probes/*.c with their includes (build_text).
Pure given tracefs, BTF and probes/: no bcc here (pmemtrace.loader loads and reads the program).
"""
import os
import re
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from . import btf, kernel
from .aggregate import (DAX_OUTCOMES, EVENT_DAX_FALLBACK, EVENT_MADVISE, EVENT_MMAP, EVENT_MUNMAP,
                        LOST_REASONS, MADVISE_NAMES)
from .errors import ProbeLoadFailed

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
             "STASH_ENTRIES": 65536, "COLLAPSE_MAP_ENTRIES": 16384}
# the maps snapshot() drains by epoch (name -> its MAP_SIZES entry)
COUNT_MAPS = {"thp_faults": "THP_MAP_ENTRIES", "thp_unattributed": "COMM_MAP_ENTRIES",
              "thp_comm": "COMM_MAP_ENTRIES", "page_faults": "FAULT_MAP_ENTRIES",
              "dax_counts": "DAX_MAP_ENTRIES", "dsync_latency": "DSYNC_HIST_ENTRIES",
              "mincore_counts": "COMM_MAP_ENTRIES",
              "collapse_counts": "COLLAPSE_MAP_ENTRIES"}   # read whole, never drained: Probes.collapse_counts
# LRU maps (memories, not counts): occupancy counted every OCCUPANCY_SECONDS (a full walk)
LRU_MAPS = {"pte_ranges": "PTE_RANGE_ENTRIES", "dsync_start": "DSYNC_START_ENTRIES",
            "mmap_inflight": "INFLIGHT_ENTRIES", "mincore_inflight": "INFLIGHT_ENTRIES",
            "devdax_inflight": "INFLIGHT_ENTRIES", "collapse_madvise": "INFLIGHT_ENTRIES"}


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
              "VM_FAULT_NEEDDSYNC_MASK": "VM_FAULT_NEEDDSYNC"}     # enum vm_fault_reason holds masks
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


# tid high bits in the free low bits of a page address (probes/stash.h): pid_max <= 2^22
PID_MAX_LIMIT = 1 << 22        # thread ids are below it


def stash_fits(entries: int, page_shift: int) -> bool:
    """The stash word keeps tid / STASH_ENTRIES below its valid bit, 1 << (page_shift - 1)."""
    return entries & (entries - 1) == 0 and (PID_MAX_LIMIT - 1) // entries < 1 << (page_shift - 1)
