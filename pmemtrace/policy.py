"""The system's huge-page policy as one flat {key: value} dict, so two runs can be compared
line by line: every THP sysfs setting (per-size mTHP and khugepaged included, statistics
left out), the hugetlb pools, the kernel release, and the huge-page parameters of the kernel
command line.

Keys: "kernel", "thp/<file>", "thp/hugepages-<N>kB/<file>", "thp/khugepaged/<file>",
"hugetlb/<N>kB/<file>", "cmdline/<param>". Values are strings, as sysfs shows them, with a
[selected] choice reduced to the selection ("always [madvise] never" -> "madvise").
"""
import os
import re
from typing import Dict, Iterable, Optional

from . import kernel

CMDLINE_PARAMS = re.compile(r"^(transparent_hugepage\w*|thp_\w+|hugepages|hugepagesz|default_hugepagesz|"
                            r"hugetlb_\w+|hugetlb_free_vmemmap)$")
SKIP_DIRS = ("stats",)            # counters, not policy
SKIP_FILES = ("khugepaged/full_scans", "khugepaged/pages_collapsed")     # counters too
HUGETLB_FILES = ("nr_hugepages", "nr_overcommit_hugepages")             # the configured pools


def _sysfs_tree(root: str, prefix: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        rel = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            value = kernel.read_sysfs(os.path.join(dirpath, name))
            if value is None:
                continue
            key = name if rel == "." else f"{rel}/{name}"
            if key in SKIP_FILES:
                continue
            out[f"{prefix}/{key}"] = (kernel.selected(value) or value) if "[" in value else value
    return out


def cmdline_params(cmdline: str) -> Dict[str, str]:
    """Huge-page parameters of a kernel command line ("hugepages=4" -> {"cmdline/hugepages": "4"});
    a parameter given twice keeps every value, comma-joined, as the kernel sees them in order."""
    out: Dict[str, str] = {}
    for word in cmdline.split():
        if word == "--":
            break                      # the rest belongs to init
        name, _, value = word.partition("=")
        if CMDLINE_PARAMS.match(name):
            key = f"cmdline/{name}"
            out[key] = f"{out[key]},{value}" if key in out else value
    return out


def read(thp_root: str = kernel.THP_SYSFS, hugetlb_root: str = kernel.HUGETLB_SYSFS,
         cmdline_path: str = "/proc/cmdline", release: Optional[str] = None) -> Dict[str, str]:
    out = {"kernel": release or kernel.release()}
    out.update(_sysfs_tree(thp_root, "thp"))
    for size, path in kernel.size_dirs(hugetlb_root):
        for leaf in HUGETLB_FILES:
            value = kernel.read_sysfs(f"{path}/{leaf}")
            if value is not None:
                out[f"hugetlb/{size // 1024}kB/{leaf}"] = value
    try:
        with open(cmdline_path) as f:
            out.update(cmdline_params(f.read()))
    except OSError:
        pass
    return out


def from_report(data: dict) -> Dict[str, str]:
    """The policy of a report --json document; older documents only had "thp" and "kernel"."""
    if isinstance(data.get("policy"), dict):
        return {str(k): str(v) for k, v in data["policy"].items()}
    out = {"kernel": str(data.get("kernel"))}
    for k, v in (data.get("thp") or {}).items():
        out[f"thp/{k}"] = str(v)
    return out


def changes(base: Dict[str, str], new: Dict[str, str], skip: Iterable[str] = ()) -> list:
    """[{"key", "base", "new"}] for every key whose value differs (absent: None), sorted by key."""
    keys = sorted((set(base) | set(new)) - set(skip))
    return [{"key": k, "base": base.get(k), "new": new.get(k)} for k in keys if base.get(k) != new.get(k)]
