"""Kernel headers for bcc: the running kernel's own, or Debian's generic ones merged into one tree.

bcc compiles probes with clang against kernel headers. When the distribution has
headers for the running kernel, /lib/modules/<release>/build (and source) holds them
and bcc finds them itself. Otherwise (a custom or cloud kernel) pmemtrace uses the
distribution's generic headers: Debian ships them as two packages,
linux-headers-<ver>-<flavour> (config, generated headers) and linux-headers-<ver>-common
(the sources), meant to be combined by kbuild. bcc wants one directory
(BCC_KERNEL_SOURCE), so the two are merged into one tree of symlinks, built once
under /var/cache/pmemtrace/kernel-headers-<ver>/.

Why a version mismatch is safe here: pmemtrace's probes never read kernel structs.
They read tracepoint fields through structs generated from tracefs format files and
raw-tracepoint scalar arguments; the headers only supply types and helper macros.
"""
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from .errors import HeadersMissing

MODULES_DIR = "/lib/modules"
SRC_DIR = "/usr/src"
CACHE_DIR = "/var/cache/pmemtrace"
STAMP = ".pmemtrace-merged"

SAFE_WHY = ("safe: pmemtrace's probes read only tracepoint fields (layouts from tracefs) and "
            "raw-tracepoint scalar arguments, never kernel structs, so other headers cannot misread memory")

# uname -m -> (kernel arch directory, Debian architecture)
ARCHES = {
    "x86_64": ("x86", "amd64"),
    "aarch64": ("arm64", "arm64"),
    "ppc64le": ("powerpc", "ppc64el"),
    "s390x": ("s390", "s390x"),
    "riscv64": ("riscv", "riscv64"),
    "i686": ("x86", "i386"),
}

# A tree bcc can compile against has these (kconfig.h is what bcc itself checks for).
REQUIRED = ("include/linux/kconfig.h", "include/generated/autoconf.h")


@dataclass
class Headers:
    path: Optional[str]
    kind: str          # "exact" | "fallback" | "missing"
    detail: str

    def bcc_env(self) -> Dict[str, str]:
        """Environment for bcc. Exact headers: nothing (bcc finds /lib/modules/<release>/build
        and source itself; pointing BCC_KERNEL_SOURCE at build alone would lose the split
        source tree). Fallback: BCC_KERNEL_SOURCE=<merged tree>."""
        if self.kind == "fallback" and self.path:
            return {"BCC_KERNEL_SOURCE": self.path}
        return {}


def machine_arches(machine: Optional[str] = None) -> Tuple[str, str]:
    machine = machine or os.uname().machine
    return ARCHES.get(machine, (machine, machine))


def _complete(tree: str, karch: str) -> bool:
    return all(os.path.isfile(os.path.join(tree, p)) for p in REQUIRED) and \
        os.path.isdir(os.path.join(tree, "arch", karch, "include", "generated"))


def _exact(release: str, modules_dir: str) -> Optional[Headers]:
    kdir = os.path.join(modules_dir, release)
    build, source = os.path.join(kdir, "build"), os.path.join(kdir, "source")
    if not os.path.isdir(build):
        return None
    # bcc's own rule: with both build and source it compiles in source (kbuild adds build).
    where = source if os.path.isdir(source) else build
    if not os.path.isfile(os.path.join(where, "include/linux/kconfig.h")):
        return None
    how = f"{build} and {source}" if where == source else build
    return Headers(build, "exact", f"headers for the running kernel {release}: {how}")


def _version_key(text: str) -> List[Tuple[int, object]]:
    """Natural sort key: '6.1.0-56' > '6.1.0-9'."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[^\d.\-]+", text)]


@dataclass(frozen=True)
class Pair:
    release: str             # e.g. 6.1.0-56-amd64 (the flavour package's kernel release)
    arch_dir: str            # /usr/src/linux-headers-6.1.0-56-amd64
    common_dir: Optional[str]  # /usr/src/linux-headers-6.1.0-56-common (None: arch_dir is self-contained)

    @property
    def sources(self) -> List[str]:
        """Merge order: later wins on files present in both (the arch-specific package)."""
        return [self.common_dir, self.arch_dir] if self.common_dir else [self.arch_dir]


def _common_of(arch_dir: str) -> Optional[str]:
    """Debian's flavour Makefile is one line: `include /usr/src/linux-headers-<ver>-common/Makefile`."""
    try:
        with open(os.path.join(arch_dir, "Makefile")) as f:
            text = f.read(4096)
    except OSError:
        return None
    m = re.search(r"^include\s+(\S+)/Makefile\s*$", text, re.M)
    if m:
        common = m.group(1)
        if not os.path.isabs(common):
            common = os.path.normpath(os.path.join(arch_dir, common))
        if os.path.isdir(common):
            return common
    return None


def generic_pairs(src_dir: str = SRC_DIR, machine: Optional[str] = None) -> List[Pair]:
    """Usable distribution header sets under src_dir for this machine's architecture, best first:
    newest version, then the plain flavour (e.g. amd64 before cloud-amd64, rt-amd64)."""
    karch, debarch = machine_arches(machine)
    try:
        names = os.listdir(src_dir)
    except OSError:
        return []
    found = []
    for name in names:
        m = re.fullmatch(r"linux-headers-(.+)", name)
        if not m or "common" in name:
            continue
        arch_dir = os.path.join(src_dir, name)
        if not os.path.isfile(os.path.join(arch_dir, "include/generated/autoconf.h")) or \
                not os.path.isdir(os.path.join(arch_dir, "arch", karch)):
            continue
        common = _common_of(arch_dir)
        if common is None and not os.path.isfile(os.path.join(arch_dir, "include/linux/kconfig.h")):
            continue            # neither a Debian pair nor a self-contained tree
        release = m.group(1)
        flavour_rank = 0 if release.endswith("-" + debarch) and \
            not re.search(r"-(cloud|rt)-", release) else 1
        found.append((_version_key(re.sub(r"-[a-z][\w-]*$", "", release)), -flavour_rank, release,
                      Pair(release, arch_dir, common)))
    found.sort(key=lambda t: (t[0], t[1], t[2]), reverse=True)
    return [t[3] for t in found]


def _stamp_text(pair: Pair) -> str:
    return "\n".join(os.path.realpath(s) for s in pair.sources) + "\n"


def tree_path(pair: Pair, cache_dir: str = CACHE_DIR) -> str:
    return os.path.join(cache_dir, f"kernel-headers-{pair.release}")


def tree_ready(tree: str, pair: Pair, karch: str) -> bool:
    try:
        with open(os.path.join(tree, STAMP)) as f:
            if f.read() != _stamp_text(pair):
                return False
    except OSError:
        return False
    return _complete(tree, karch)


def find_headers(release: Optional[str] = None, modules_dir: str = MODULES_DIR, src_dir: str = SRC_DIR,
                 cache_dir: str = CACHE_DIR, machine: Optional[str] = None,
                 environ: Optional[Mapping[str, str]] = None) -> Headers:
    """What bcc will compile against, without building anything."""
    release = release or os.uname().release
    environ = os.environ if environ is None else environ
    user = environ.get("BCC_KERNEL_SOURCE")
    if user:
        if os.path.isfile(os.path.join(user, "include/linux/kconfig.h")):
            return Headers(user, "exact", f"BCC_KERNEL_SOURCE={user} (set in the environment)")
        return Headers(None, "missing", f"BCC_KERNEL_SOURCE={user} has no include/linux/kconfig.h")
    exact = _exact(release, modules_dir)
    if exact:
        return exact
    pairs = generic_pairs(src_dir, machine)
    if not pairs:
        _karch, debarch = machine_arches(machine)
        return Headers(None, "missing",
                       f"no headers for kernel {release} in {modules_dir}/{release}/build, and no "
                       f"generic linux-headers-*-{debarch} in {src_dir}")
    pair = pairs[0]
    karch, _ = machine_arches(machine)
    if pair.common_dir is None:
        return Headers(pair.arch_dir, "fallback",
                       f"no headers for kernel {release}; using {pair.arch_dir}")
    tree = tree_path(pair, cache_dir)
    state = "built" if tree_ready(tree, pair, karch) else "built on first use"
    return Headers(tree, "fallback",
                   f"no headers for kernel {release}; using {os.path.basename(pair.arch_dir)} + "
                   f"{os.path.basename(pair.common_dir)} merged into {tree} ({state})")


def merge(dst: str, sources: List[str]) -> int:
    """Make dst one tree of symlinks over sources. A name that is a directory in more than
    one source becomes a real directory, merged recursively; otherwise it is a symlink to
    the last source that has it (so the arch-specific package, listed last, wins).
    Returns the number of symlinks made."""
    os.makedirs(dst, exist_ok=True)
    names: Dict[str, List[str]] = {}
    for src in sources:
        for name in sorted(os.listdir(src)):
            names.setdefault(name, []).append(os.path.realpath(os.path.join(src, name)))
    made = 0
    for name, paths in names.items():
        target = os.path.join(dst, name)
        dirs: List[str] = []
        for p in paths:
            if os.path.isdir(p) and p not in dirs:
                dirs.append(p)
        if len(dirs) > 1:
            made += merge(target, dirs)
        else:
            os.symlink(paths[-1], target)
            made += 1
    return made


def build_tree(pair: Pair, cache_dir: str = CACHE_DIR, machine: Optional[str] = None) -> str:
    """Build (or rebuild, if incomplete or made from other packages) the merged tree for pair.
    Built in a temporary directory next to it and renamed into place, so a reader never sees
    half a tree; a concurrent builder that wins the rename is fine."""
    karch, _ = machine_arches(machine)
    tree = tree_path(pair, cache_dir)
    if tree_ready(tree, pair, karch):
        return tree
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(tree)}.", dir=cache_dir)
    except OSError as e:
        raise HeadersMissing(f"cannot build the kernel header tree in {cache_dir}: {e.strerror} "
                             "(run pmemtrace as root)") from None
    try:
        merge(tmp, pair.sources)
        with open(os.path.join(tmp, STAMP), "w") as f:
            f.write(_stamp_text(pair))
        if not _complete(tmp, karch):
            missing = [p for p in REQUIRED if not os.path.isfile(os.path.join(tmp, p))]
            raise HeadersMissing(f"{' + '.join(pair.sources)} do not make a complete header tree "
                                 f"(missing {', '.join(missing) or f'arch/{karch}/include/generated'}); "
                                 "reinstall them: run `sudo make install`")
        os.chmod(tmp, 0o755)
        if os.path.lexists(tree):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(tree)}.old.", dir=cache_dir)
            os.rename(tree, os.path.join(old, "tree"))
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, tree)
        except OSError:
            if tree_ready(tree, pair, karch):      # another process got there first
                shutil.rmtree(tmp, ignore_errors=True)
                return tree
            raise
        return tree
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_headers(release: Optional[str] = None, modules_dir: str = MODULES_DIR, src_dir: str = SRC_DIR,
                   cache_dir: str = CACHE_DIR, machine: Optional[str] = None,
                   environ: Optional[Dict[str, str]] = None) -> Headers:
    """Headers bcc can use now: exact ones, or the fallback tree (built if needed).
    Raises HeadersMissing with the fix when there are none."""
    h = find_headers(release, modules_dir, src_dir, cache_dir, machine, environ)
    if h.kind == "missing":
        _karch, debarch = machine_arches(machine)
        raise HeadersMissing(f"{h.detail}: run `sudo make install` (installs linux-headers-{debarch})")
    if h.kind == "exact":
        return h
    pair = generic_pairs(src_dir, machine)[0]
    if pair.common_dir is None:
        return h
    tree = build_tree(pair, cache_dir, machine)
    return Headers(tree, "fallback", h.detail.replace("(built on first use)", "(built)"))
