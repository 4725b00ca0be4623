"""Fetch and cache Debian stock kernels (image + matching headers) for the DAX guests.

Downloads go through a PRIVATE apt configuration per suite (its own sources.list,
lists and archive cache under the cache directory); the machine's apt sources and
state are never touched. The Debian mirror URI is the one the machine already uses.
Packages are unpacked with `dpkg -x` into <cache>/kernels/<suite>/<abi>/root and
`depmod -b` is run there so modprobe can resolve dependencies.
"""
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, asdict
from pathlib import Path

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_URI = "http://deb.debian.org/debian"

# name -> Debian suite. "newest" is whatever sid's linux-image-amd64 points at today.
SUITES = {
    "bullseye": "bullseye",            # 5.10 (stock; no task storage, no PAGEMAP_SCAN)
    "bookworm": "bookworm",            # 6.1 (stock)
    "backports": "bookworm-backports",  # 6.12
    "sid": "sid",                      # newest (7.x at the time of writing)
}
CI_DEFAULT = ("bookworm", "sid")
REFRESH_SECONDS = 7 * 24 * 3600


class FetchError(RuntimeError):
    pass


@dataclass
class Kernel:
    name: str           # bookworm | backports | sid
    suite: str
    abi: str            # e.g. 6.1.0-41-amd64 (= uname -r in the guest)
    root: str           # dpkg -x tree
    vmlinuz: str
    modules: str        # <root>/lib/modules/<abi> (real directory)
    headers: str        # <root>/usr/src/linux-headers-<abi>
    packages: list
    fetch_seconds: float = 0.0

    @property
    def version_tuple(self):
        m = re.match(r"(\d+)\.(\d+)", self.abi)
        return (int(m.group(1)), int(m.group(2)))


def cache_dir():
    env = os.environ.get("PMEMTRACE_DAX_CACHE")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent / "cache"


def selected_kernels():
    """Kernel names chosen by PMEMTRACE_DAX_KERNELS (comma list; 'all'); default:
    all four, or 6.1 + newest under CI=true (the tier's CI budget)."""
    env = os.environ.get("PMEMTRACE_DAX_KERNELS", "").strip()
    if env:
        if env == "all":
            return list(SUITES)
        names = [n.strip() for n in env.split(",") if n.strip()]
        aliases = {"5.10": "bullseye", "6.1": "bookworm", "6.12": "backports", "newest": "sid", "7": "sid"}
        names = [aliases.get(n, n) for n in names]
        bad = [n for n in names if n not in SUITES]
        if bad:
            raise FetchError(f"PMEMTRACE_DAX_KERNELS: unknown kernel(s) {bad}; known: {list(SUITES)}")
        return names
    if os.environ.get("CI", "").lower() == "true":
        return list(CI_DEFAULT)
    return list(SUITES)


def machine_debian_uri():
    """The Debian archive URI from the machine's own apt sources (read only)."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    texts = []
    if deb822.exists():
        for para in deb822.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", para, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", para, re.M)
            if uris and suites and "security" not in uris.group(1) and "-security" not in suites.group(1):
                return uris.group(1).rstrip("/")
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if f.exists():
            texts.append(f.read_text())
    for line in "\n".join(texts).splitlines():
        m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
        if m and "security" not in m.group(1) and "debian" in m.group(1):
            return m.group(1).rstrip("/")
    return DEFAULT_URI


def _run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if p.returncode != 0:
        raise FetchError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout[-3000:]}")
    return p.stdout


class PrivateApt:
    """apt-get/apt-cache confined to <cache>/apt/<suite>."""

    def __init__(self, base: Path, suite: str, uri: str):
        self.base = base
        self.suite = suite
        self.uri = uri
        self.sources = base / "sources.list"
        self.lists = base / "lists"
        self.cache = base / "cache"
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        # an empty dpkg status: the machine's installed packages must not become candidates
        self.status = base / "status"
        self.status.touch()
        self.sources.write_text(f"deb [signed-by={KEYRING}] {uri} {suite} main\n")

    def opts(self):
        return [
            "-o", f"Dir::Etc::SourceList={self.sources}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", "Dir::Etc::PreferencesParts=/dev/null",
            "-o", f"Dir::State::Lists={self.lists}",
            "-o", f"Dir::Cache={self.cache}",
            "-o", f"Dir::State::status={self.status}",
            "-o", "Acquire::Languages=none",
            "-o", "APT::Sandbox::User=root",
            "-o", "Debug::NoLocking=1",
            "-q",
        ]

    def update(self):
        _run(["apt-get", *self.opts(), "update"])

    def depends(self, pkg):
        out = _run(["apt-cache", *self.opts(), "depends", pkg])
        return re.findall(r"^\s+(?:Pre)?Depends:\s+<?([^\s>]+)>?", out, re.M)

    def version(self, pkg):
        out = _run(["apt-cache", *self.opts(), "policy", pkg])
        m = re.search(r"Candidate:\s+(\S+)", out)
        return m.group(1) if m else None

    def download(self, pkgs, dest: Path):
        dest.mkdir(parents=True, exist_ok=True)
        _run(["apt-get", *self.opts(), "download", *pkgs], cwd=dest)
        return sorted(dest.glob("*.deb"))


_KPKG = re.compile(r"linux-(image|headers|kbuild|base|binary|modules)-\d")


def resolve_packages(apt: PrivateApt):
    """(abi, [packages]) for the suite's current stock amd64 kernel: the image and its
    headers, plus what they depend on from the same kernel build (newer Debian splits
    the image into linux-binary/-modules/-base; headers need -common and linux-kbuild)."""
    deps = apt.depends("linux-image-amd64")
    images = [d for d in deps if re.match(r"linux-image-\d.*-amd64$", d)]
    if not images:
        raise FetchError(f"{apt.suite}: linux-image-amd64 has no linux-image-<abi>-amd64 dependency: {deps}")
    abi = images[0][len("linux-image-"):]
    todo, seen = [images[0], f"linux-headers-{abi}"], []
    while todo:
        pkg = todo.pop(0)
        if pkg in seen:
            continue
        seen.append(pkg)
        todo += [d for d in apt.depends(pkg) if _KPKG.match(d) and d not in seen]
    return abi, seen


def _manifest_path(name):
    return cache_dir() / "kernels" / name / "current.json"


def fetch(name, refresh=None):
    """Return the cached Kernel for `name`, downloading + unpacking it if needed
    (under a lock: several test sessions may share the cache)."""
    if name not in SUITES:
        raise FetchError(f"unknown kernel {name!r}")
    lockfile = cache_dir() / "kernels" / f"{name}.lock"
    lockfile.parent.mkdir(parents=True, exist_ok=True)
    with open(lockfile, "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        return _fetch(name, refresh)


def _fetch(name, refresh):
    refresh = os.environ.get("PMEMTRACE_DAX_REFRESH") == "1" if refresh is None else refresh
    man = _manifest_path(name)
    if man.exists() and not refresh:
        try:
            k = Kernel(**json.loads(man.read_text()))
        except (TypeError, ValueError):   # manifest of an older harness: fetch again
            k = None
        fresh = time.time() - man.stat().st_mtime < REFRESH_SECONDS
        if k and Path(k.vmlinuz).exists() and Path(k.modules, "modules.dep").exists() and fresh:
            k.fetch_seconds = 0.0
            return k
    t0 = time.monotonic()
    suite = SUITES[name]
    apt = PrivateApt(cache_dir() / "apt" / name, suite, machine_debian_uri())
    apt.update()
    abi, pkgs = resolve_packages(apt)
    kdir = cache_dir() / "kernels" / name / abi
    root = kdir / "root"
    ready = kdir / "unpacked.ok"
    if not ready.exists() or ready.read_text().split() != pkgs:
        shutil.rmtree(kdir, ignore_errors=True)
        debs = apt.download(pkgs, kdir / "debs")
        root.mkdir(parents=True)
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(root)])
        # merged-/usr packages install modules under usr/lib/modules; depmod -b wants lib/modules
        if not (root / "lib").exists() and (root / "usr" / "lib" / "modules").exists():
            (root / "lib").symlink_to("usr/lib")
        _run(["depmod", "-b", str(root), abi])
        ready.write_text(" ".join(pkgs) + "\n")
        shutil.rmtree(kdir / "debs", ignore_errors=True)   # unpacked; keep the cache small
        # old ABIs of this suite are useless now
        for old in (cache_dir() / "kernels" / name).iterdir():
            if old.is_dir() and old.name != abi:
                shutil.rmtree(old, ignore_errors=True)
    vmlinuz = next(iter(sorted(root.glob(f"boot/vmlinuz-{abi}")) + sorted(root.glob(f"usr/lib/*/vmlinuz-{abi}"))
                        + sorted(root.glob(f"usr/lib/modules/{abi}/vmlinuz"))), None)
    if vmlinuz is None:
        raise FetchError(f"{name}: no vmlinuz-{abi} in the unpacked {ready.read_text().split()}")
    modules = (root / "lib" / "modules" / abi).resolve()
    k = Kernel(name=name, suite=suite, abi=abi, root=str(root), vmlinuz=str(vmlinuz),
               modules=str(modules), headers=str(root / "usr" / "src" / f"linux-headers-{abi}"),
               packages=ready.read_text().split(),
               fetch_seconds=round(time.monotonic() - t0, 1))
    man.write_text(json.dumps(asdict(k), indent=1))
    return k


if __name__ == "__main__":  # python tests/dax/daxharness/kernels.py [names...]
    import sys
    for n in sys.argv[1:] or selected_kernels():
        k = fetch(n)
        print(json.dumps(asdict(k), indent=1))
