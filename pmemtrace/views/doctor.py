"""`pmemtrace doctor`: what pmemtrace needs on this machine, each line a verdict, what it means and the fix.

Checks are plain functions returning Check records (tests build them from fakes and temp
dirs); rendering is separate. Exit status 1 when any check FAILs: pmemtrace cannot run.
FAIL is kept for what stops pmemtrace (not root, no bcc, no headers, no tracefs, probes
that do not load); a lost feature (a missing tracepoint, no BTF, no PAGEMAP_SCAN) is WARN
and says what is lost.
"""
import ctypes.util
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .. import btf, headers, kernel
from ..errors import PmemtraceError
from .text import console as text_console, human_bytes, printable

OK, WARN, FAIL = "OK", "WARN", "FAIL"

DAX_BUS = "/sys/bus/dax/devices"
MOUNTINFO = "/proc/self/mountinfo"

# What a kernel needs for each tracepoint category pmemtrace uses.
TRACEPOINT_NEEDS = {
    "exceptions": "x86 kernels only (arch/x86/mm/fault.c)",
    "memcg": "a kernel with CONFIG_MEMCG",
    "fs_dax": "a kernel with CONFIG_FS_DAX",
    "syscalls": "a kernel with CONFIG_FTRACE_SYSCALLS",
    "huge_memory": "a kernel with CONFIG_TRANSPARENT_HUGEPAGE",
}

# Enum values the probes take from BTF, and what is lost without each.
BTF_VALUES = (
    ("THP_FAULT_ALLOC", "vm_event_item", "THP fault allocations per task/VMA (--duration, --exact)"),
    ("THP_FILE_ALLOC", "vm_event_item", "file/shmem THP allocations per task/VMA (--duration, --exact)"),
    ("VM_FAULT_NOPAGE", "vm_fault_reason", "DAX fault outcomes: mapped"),
    ("VM_FAULT_FALLBACK", "vm_fault_reason", "DAX fault outcomes: PMD fallback"),
    ("VM_FAULT_NEEDDSYNC", "vm_fault_reason", "DAX fault outcomes: MAP_SYNC NEEDDSYNC"),
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str        # OK / WARN / FAIL
    detail: str        # what was found and what it means
    fix: str = ""


# ------------------------------------------------------------------ checks

def check_root(euid: Optional[int] = None) -> List[Check]:
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return [Check("root", OK, "running as root: probes can load, other processes' page tables are readable")]
    return [Check("root", FAIL, f"running as uid {euid}: loading BPF probes and reading other processes' "
                  "pagemap needs root", "run it with sudo: `sudo pmemtrace doctor`")]


def check_bcc(find_spec: Callable = importlib.util.find_spec,
              find_library: Callable = ctypes.util.find_library) -> List[Check]:
    """bcc importable, without importing it (only loader.py imports bcc)."""
    fix = "run `sudo make install` (installs Debian's python3-bpfcc and a venv that sees it)"
    try:
        spec = find_spec("bcc")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return [Check("bcc", FAIL, f"the bcc Python module is not importable by {sys.executable}", fix)]
    where = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(where, "libbcc.py")):
        return [Check("bcc", FAIL, f"{where} is not BCC (PyPI's `bcc` is an unrelated package)",
                      f"`{sys.executable} -m pip uninstall bcc`, then {fix}")]
    if not find_library("bcc"):
        return [Check("bcc", FAIL, f"bcc's Python module is at {where} but libbcc.so is missing", fix)]
    return [Check("bcc", OK, f"bcc importable from {where}")]


def check_headers(is_root: bool, find: Callable = headers.find_headers,
                  ensure: Callable = headers.ensure_headers) -> List[Check]:
    fix = f"run `sudo make install` (installs linux-headers-{headers.machine_arches()[1]})"
    if is_root:
        try:
            h = ensure()
        except PmemtraceError as e:
            return [Check("kernel headers", FAIL, str(e), fix)]
    else:
        h = find()
    if h.kind == "exact":
        return [Check("kernel headers", OK, h.detail)]
    if h.kind == "fallback":
        return [Check("kernel headers", OK, f"fallback: {h.detail}; {headers.SAFE_WHY}")]
    return [Check("kernel headers", FAIL, h.detail, fix)]


def tracefs_mounts(mountinfo_text: str) -> List[str]:
    """Mount points of tracefs, from /proc/self/mountinfo text."""
    out = []
    for line in mountinfo_text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["tracefs"] and len(fields) >= 5:
            out.append(_unoctal(fields[4]))
    return out


def check_tracefs(is_root: bool, ensure: Callable = kernel.ensure_tracefs,
                  mountinfo: str = MOUNTINFO) -> Tuple[List[Check], Optional[str]]:
    """As root: find or mount tracefs (as pmemtrace itself does). Otherwise only say whether
    it is mounted: tracefs is readable by root only, and mounting needs root."""
    if not is_root:
        try:
            with open(mountinfo) as f:
                where = tracefs_mounts(f.read())
        except OSError:
            where = []
        if where:
            return [Check("tracefs", OK, f"mounted at {', '.join(where)} (readable by root only)")], None
        return [Check("tracefs", WARN, "not mounted; pmemtrace mounts it when run as root",
                      "run as root")], None
    try:
        root = ensure()
    except PmemtraceError as e:
        return [Check("tracefs", FAIL, str(e),
                      "as root: `mount -t tracefs nodev /sys/kernel/tracing` (kernel needs CONFIG_TRACING)")], None
    return [Check("tracefs", OK, f"mounted at {root}")], root


def check_tracepoints(root: Optional[str], tracepoints: Iterable[kernel.Tracepoint] = kernel.TRACEPOINTS,
                      exists: Callable = kernel.tracepoint_exists) -> List[Check]:
    tracepoints = list(tracepoints)
    if not root or not os.access(os.path.join(root, "events"), os.R_OK | os.X_OK):
        why = "no readable tracefs" if not root else f"{root}/events is not readable"
        return [Check("tracepoints", WARN, f"{len(tracepoints)} tracepoints not checked ({why})",
                      "run as root with tracefs mounted")]
    checks = []
    for tp in tracepoints:
        name = f"tracepoint {tp.id}"
        if exists(tp.category, tp.name, root):
            checks.append(Check(name, OK, f"present: {tp.feeds}"))
        else:
            checks.append(Check(name, WARN, f"absent: lost: {tp.feeds}",
                                f"needs {TRACEPOINT_NEEDS.get(tp.category, 'a kernel that has it')}"))
    return checks


def check_btf(path: str = btf.VMLINUX) -> List[Check]:
    try:
        btf.load(path)
    except btf.BtfError as e:
        lost = "; ".join(sorted({what for _n, _e, what in BTF_VALUES}))
        return [Check("BTF", WARN, f"{e}; lost: {lost}", "a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    found, missing = [], []
    for value_name, enum_name, what in BTF_VALUES:
        try:
            value = btf.enum_values(enum_name, path).get(value_name)
        except KeyError:
            value = None
        if value is None:
            missing.append(f"{value_name} (lost: {what})")
        else:
            shown = f"{value:#x}" if value_name.startswith("VM_FAULT_") else str(value)
            found.append(f"{value_name}={shown}")
    detail = f"{path}: " + ", ".join(found) if found else f"{path}"
    if missing:
        return [Check("BTF", WARN, f"{detail}; not in this kernel's BTF: " + "; ".join(missing),
                      "a kernel with CONFIG_TRANSPARENT_HUGEPAGE (THP_*_ALLOC) and CONFIG_DEBUG_INFO_BTF")]
    return [Check("BTF", OK, detail)]


def check_pagemap_scan(supported: Optional[Callable[[], bool]] = None) -> List[Check]:
    if supported is None:
        try:
            from .. import pagemap
        except ImportError as e:
            return [Check("PAGEMAP_SCAN", WARN, f"cannot check: {e}")]
        supported = pagemap.scan_supported
    try:
        ok = supported()
    except OSError as e:
        return [Check("PAGEMAP_SCAN", WARN, f"cannot check: {e.strerror or e}")]
    release = kernel.release()
    if ok:
        return [Check("PAGEMAP_SCAN", OK, f"supported ({release}): huge/small bytes per VMA come from the "
                      "page tables, DAX pages included")]
    return [Check("PAGEMAP_SCAN", WARN, f"not supported ({release}; needs Linux 6.7+): huge/small bytes come "
                  "from smaps; DAX RSS from the present bits of /proc/PID/pagemap; the mapping size of DAX "
                  "pages is known only where no 2 MiB block can be PMD-mapped, else unknown (report "
                  "--duration observes DAX faults)", "a 6.7 or newer kernel")]


def check_thp(policy: kernel.ThpPolicy) -> List[Check]:
    if policy.enabled is None:
        return [Check("THP", WARN, "this kernel has no transparent huge pages "
                      f"({kernel.THP_SYSFS} missing): only hugetlb and DAX can map huge",
                      "a kernel with CONFIG_TRANSPARENT_HUGEPAGE")]
    meaning = {
        "always": "every eligible anonymous mapping may get huge pages",
        "madvise": "only regions with madvise(MADV_HUGEPAGE) get huge pages",
        "never": "no anonymous mapping gets PMD-size THP",
    }.get(policy.enabled, "")
    fix = ""
    status = OK
    if policy.enabled == "never":
        status = WARN
        fix = f"echo madvise > {kernel.THP_SYSFS}/enabled"
    checks = [Check("THP enabled", status, f"{policy.enabled}: {meaning}".rstrip(": "), fix),
              Check("THP defrag", OK, str(policy.defrag)),
              Check("THP shmem_enabled", OK, f"{policy.shmem_enabled} (tmpfs mounts also have their own huge= option)")]
    if policy.mthp:
        groups: Dict[str, List[str]] = {}
        for size, setting in policy.mthp.items():
            groups.setdefault("not for anon" if setting == "?" else setting, []).append(human_bytes(size, exact=True))
        checks.append(Check("THP sizes (anon)", OK, "; ".join(f"{k}: {' '.join(v)}" for k, v in groups.items())
                            + f" (inherit = the global '{policy.enabled}')"))
    return checks


def check_hugetlb(pools: List[kernel.HugetlbPool]) -> List[Check]:
    if not pools:
        return [Check("hugetlb", OK, "no hugetlb page sizes (kernel without CONFIG_HUGETLBFS)")]
    checks = []
    for p in pools:
        detail = f"{p.total} pages, {p.free} free, {p.reserved} reserved, {p.surplus} surplus"
        fix = ""
        if p.total == 0:
            detail += ": hugetlb mappings of this size fail until pages are reserved"
            fix = (f"echo N > {kernel.HUGETLB_SYSFS}/hugepages-{p.page_size // 1024}kB/nr_hugepages"
                   " (if you use hugetlb)")
        checks.append(Check(f"hugetlb {human_bytes(p.page_size, exact=True)}", OK, detail, fix))
    return checks


def _unoctal(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040 \\011 \\012 \\134."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def dax_mounts(mountinfo_text: str) -> List[Tuple[str, str, str]]:
    """(mount point, fs type, dax option) for mounts with dax, dax=always or dax=inode."""
    out = []
    for line in mountinfo_text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 6 or len(rfields) < 3:
            continue
        opts = fields[5].split(",") + rfields[2].split(",")
        dax = [o for o in opts if o == "dax" or (o.startswith("dax=") and o != "dax=never")]
        if dax:
            out.append((_unoctal(fields[4]), rfields[0], dax[0]))
    return out


def device_dax(bus: str = DAX_BUS, dev: str = "/dev") -> List[Tuple[str, Optional[int], bool]]:
    """(name, size in bytes, has a /dev node) of each device-dax device."""
    try:
        names = sorted(os.listdir(bus))
    except OSError:
        names = []
    out = []
    for name in names:
        size = kernel.read_sysfs(os.path.join(bus, name, "size"))
        out.append((name, int(size) if size and size.isdigit() else None, os.path.exists(os.path.join(dev, name))))
    try:
        extra = sorted(n for n in os.listdir(dev) if n.startswith("dax") and n not in names)
    except OSError:
        extra = []
    out.extend((n, None, True) for n in extra)
    return out


def check_dax(bus: str = DAX_BUS, dev: str = "/dev", mountinfo: str = MOUNTINFO,
              tracefs: Optional[str] = None) -> List[Check]:
    devices = device_dax(bus, dev)
    if devices:
        shown = ", ".join(f"{n} ({human_bytes(s, exact=True) if s else '?'}, "
                           f"{'/dev/' + n if node else 'no /dev node: kmem/system-ram'})"
                          for n, s, node in devices)
        checks = [Check("device-dax", OK, shown)]
    else:
        checks = [Check("device-dax", OK, f"no device-dax devices ({bus}, {dev}/dax*)")]
    try:
        with open(mountinfo) as f:
            mounts = dax_mounts(f.read())
    except OSError as e:
        mounts = []
        checks.append(Check("dax mounts", WARN, f"cannot read {mountinfo}: {e.strerror}"))
    else:
        if mounts:
            checks.append(Check("dax mounts", OK, ", ".join(f"{mp} ({fs}, {opt})" for mp, fs, opt in mounts)))
        else:
            checks.append(Check("dax mounts", OK, "no filesystem mounted with dax (fsdax columns will read none)"))
    if not tracefs:
        checks.append(Check("device-dax faults", WARN, "kprobe support not checked (no readable tracefs)",
                            "run as root"))
    elif os.path.exists(os.path.join(tracefs, "kprobe_events")):
        checks.append(Check("device-dax faults", OK, "dev_dax_huge_fault kprobe possible"))
    else:
        checks.append(Check("device-dax faults", OK, "no kprobes here: device-dax faults seen through page-fault "
                            "counts and PAGEMAP_SCAN"))
    return checks


EXACT_FLOOR_COST = ("8% of 4 KiB fault throughput in bench/bench.py on a 6.18 VM, where "
                    "count_memcg_events fires twice a fault")
SYSCALL_TRACEPOINT_COST = "a getppid loop at about 0.7 of untraced in bench/bench.py"


def check_top_mechanisms(kprobes: Tuple[bool, str], tracefs: Optional[str],
                         exists: Callable = kernel.tracepoint_exists) -> List[Check]:
    """Which mechanism each of top's features uses on this machine, and why.

    ``kprobes`` is loader.syscall_kprobes(): (usable, why)."""
    if not tracefs:
        return [Check("top mechanisms", WARN, "not checked (no readable tracefs)", "run as root")]
    ok, why = kprobes
    checks = [Check("top: faults", OK, "per process from /proc/PID/stat (minflt + majflt) and smaps_rollup "
                    "(huge bytes gained): no BPF on the fault path; --exact adds the raw tracepoints "
                    "exceptions:page_fault_user and memcg:count_memcg_events, which fire on every fault "
                    f"(the kernel's call into BPF costs ~{EXACT_FLOOR_COST}, whatever the program does)")]
    dax = exists("fs_dax", "dax_pmd_fault_done", tracefs)
    checks.append(Check("top: DAX faults", OK if dax else WARN,
                        "fs_dax tracepoints (they fire on DAX faults only)" if dax
                        else "no fs_dax tracepoints on this kernel: no DAX fault outcomes"))
    have_tp = exists("syscalls", "sys_enter_mmap", tracefs)
    if ok:
        checks.append(Check("top: mmap/munmap/madvise/mincore", OK,
                            f"{why}: only these calls pay, so default top watches them (MAP_SYNC "
                            "refusals, madvise calls, the mincore panel); syscall tracepoints are not used "
                            f"(any one of them slows every syscall of every task, {SYSCALL_TRACEPOINT_COST})"))
    elif have_tp:
        checks.append(Check("top: mmap/munmap/madvise/mincore", WARN,
                            f"{why}, and fentry is not used: the only way to watch these calls here is "
                            "syscall tracepoints, which slow every syscall of every task "
                            f"({SYSCALL_TRACEPOINT_COST}), so default top does not: MAP_SYNC refusals, "
                            "madvise calls and mincore are null",
                            "`pmemtrace top --syscalls` when that cost is acceptable"))
    else:
        checks.append(Check("top: mmap/munmap/madvise/mincore", WARN,
                            f"{why}, and no syscall tracepoints: MAP_SYNC refusals, madvise calls and "
                            "mincore cannot be watched", "a kernel with kprobes or CONFIG_FTRACE_SYSCALLS"))
    checks.append(Check("top: MAP_SYNC / madvise state", OK,
                        "smaps VmFlags sf (VM_SYNC: mapped with MAP_SYNC), hg / nh (MADV_HUGEPAGE / "
                        "MADV_NOHUGEPAGE), per process at most every 10 s, in every mode"))
    return checks


def _syscall_kprobes(tracefs: Optional[str]) -> Tuple[bool, str]:
    from .. import loader
    return loader.syscall_kprobes(tracefs=tracefs)


def _load_all_probes() -> Tuple[int, Dict[str, str], List[str]]:
    """Compile, load and attach every probe pmemtrace has (the 'faults' feature is the same
    programs filtered by pid), then detach. Only loader.py touches bcc. The syscall watch is
    loaded in the one form top uses here (kprobes where usable, else the tracepoints)."""
    from .. import loader
    skip = {"faults", "devdax"}                          # devdax: its own line
    skip |= {"syscalls", "mincore"} if loader.syscall_kprobes()[0] else {"ksyscalls", "kmincore"}
    features = [f for f in loader.FEATURES if f not in skip]
    probes = loader.Probes(features)
    probes.start()
    probes.close()
    return len(probes.attachments), dict(probes.missing), features


def check_probes(ready: bool, load: Callable = _load_all_probes) -> List[Check]:
    """The whole chain at once: tracefs formats -> generated structs -> headers -> clang -> verifier."""
    if not ready:
        return [Check("probes load", WARN, "not tried: fix the FAIL lines above first")]
    try:
        n, missing, features = load()
    except PmemtraceError as e:
        return [Check("probes load", FAIL, str(e), "see the lines above; `pmemtrace top --ebpf` prints the program")]
    checks = [Check("probes load", OK, f"{n} probes compiled, loaded and attached "
                    f"({', '.join(features)}), then detached")]
    if missing:
        checks.append(Check("probes skipped", WARN, "; ".join(f"{k}: {v}" for k, v in sorted(missing.items()))))
    return checks


# ------------------------------------------------------------------ all of it

def collect() -> List[Check]:
    checks = check_root()
    is_root = checks[0].status == OK
    checks += check_bcc()
    checks += check_headers(is_root)
    tracefs_checks, root = check_tracefs(is_root)
    checks += tracefs_checks
    checks += check_tracepoints(root)
    checks += check_btf()
    checks += check_pagemap_scan()
    checks += check_thp(kernel.thp_policy())
    checks += check_hugetlb(kernel.hugetlb_pools())
    checks += check_dax(tracefs=root)
    checks += check_top_mechanisms(_syscall_kprobes(root) if root else (False, "no tracefs"), root)
    checks += check_folios() + check_thp_fallback_attribution()
    checks += check_probes(not any(c.status == FAIL for c in checks))
    return checks


def check_folios(kpageflags: str = "/proc/kpageflags") -> List[Check]:
    """Folio sizes (report's folio keys, `pmemtrace folios`) need PAGEMAP_SCAN and kpageflags."""
    try:
        with open(kpageflags, "rb") as f:
            f.read(8)
    except OSError as e:
        return [Check("folio sizes", WARN, f"{kpageflags} cannot be read ({e.strerror or e}): folio sizes of "
                      "PTE-mapped memory are reported unknown (null); PMD/PUD-mapped bytes stay known",
                      "run as root on a kernel with CONFIG_PROC_PAGE_MONITOR=y")]
    return [Check("folio sizes", OK, "PAGEMAP_SCAN + /proc/kpageflags: folio size of every resident byte per VMA")]


def check_thp_fallback_attribution() -> List[Check]:
    """Anonymous THP fault fallbacks per process: there is no exact signal (see README)."""
    return [Check("THP fallbacks per process", WARN,
                  "no exact per-process signal: THP_FAULT_FALLBACK is a global vm event and a per-size mTHP "
                  "stat, never a memcg event (memcg:count_memcg_events does not fire for it), and no tracepoint "
                  "lies on the fallback path; fallbacks are counted system-wide only (top's header)")]


def exit_status(checks: Iterable[Check]) -> int:
    return 1 if any(c.status == FAIL for c in checks) else 0


STYLE = {OK: "green", WARN: "yellow", FAIL: "bold red"}


def render(checks: List[Check], console) -> None:
    """One row per check: verdict, check, finding; the fix (when there is one) under the finding."""
    from rich.table import Table
    from rich.text import Text
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding and fix", overflow="fold")
    for c in checks:
        text = Text(printable(c.detail))
        if c.fix:
            text.append("\nfix:", style="bold")
            text.append(f" {printable(c.fix)}")
        table.add_row(Text(c.status, style=STYLE[c.status]), Text(printable(c.name)), text)
    console.print(table)
    failed = [c.name for c in checks if c.status == FAIL]
    if failed:
        console.print(Text.assemble(("pmemtrace cannot run here", "bold red"),
                                    f": fix {printable(', '.join(failed))} (the FAIL lines)"))
    else:
        warned = sum(c.status == WARN for c in checks)
        tail = f"; {warned} WARN line(s) say what is lost" if warned else ""
        console.print(Text.assemble(("pmemtrace can run here", "green"), tail))


def run() -> int:
    checks = collect()
    render(checks, text_console(160))
    return exit_status(checks)
