"""Build the guest's busybox initramfs for one unpacked kernel.

Stage 1 (this initramfs's /init) loads the modules the guest needs (virtio/9p/overlay
to reach the host root, nvdimm/dax/ext4/xfs for the tests), mounts the host root
read-only over 9p with a tmpfs overlay on top and switch_roots into the stage-2
script named by guest_init= on the kernel command line.
Modules are decompressed here (.ko.xz / .ko.zst) so busybox insmod can load them.
"""
import gzip
import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# nfit before nd_e820: the QEMU nvdimm region becomes region0 (-> /dev/dax0.0)
MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay",
           "nfit", "nd_e820", "nd_pmem", "dax_pmem", "device_dax", "ext4", "xfs"]
INIT = Path(__file__).with_name("init.sh")
BUSYBOX_APPLETS = ["sh", "mount", "umount", "mkdir", "insmod", "switch_root", "echo", "cat",
                   "sleep", "poweroff", "ls"]


class InitramfsError(RuntimeError):
    pass


def find_busybox():
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(p):
            out = subprocess.run(["file", "-L", p], capture_output=True, text=True).stdout \
                if shutil.which("file") else "statically linked"
            if "dynamically" not in out:
                return p
    raise InitramfsError("no static busybox (apt-get install busybox-static; `make deps` does)")


def module_files(kernel):
    """Module paths for MODULES and their dependencies, in load order (builtins skipped)."""
    order = []
    for m in MODULES:
        p = subprocess.run(["modprobe", "-C", "/dev/null", "-d", kernel.root, "-S", kernel.abi,
                            "--show-depends", m], capture_output=True, text=True)
        if p.returncode != 0:
            raise InitramfsError(f"{kernel.abi}: modprobe --show-depends {m}: {p.stderr.strip()}")
        for line in p.stdout.splitlines():
            parts = line.split()
            if parts and parts[0] == "insmod" and parts[1] not in order:
                order.append(parts[1])
    return order


def _decompress(src, dst):
    if src.endswith(".xz"):
        data = lzma.open(src).read()
    elif src.endswith(".zst"):
        data = subprocess.run(["zstd", "-dc", src], check=True, capture_output=True).stdout
    elif src.endswith(".gz"):
        data = gzip.open(src).read()
    else:
        data = Path(src).read_bytes()
    Path(dst).write_bytes(data)


def build(kernel):
    """Return the path of the kernel's initramfs (beside its unpacked tree; rebuilt when
    init.sh or this file changes; written atomically, so concurrent sessions can share it)."""
    out = Path(kernel.root).parent / "initramfs.cpio.gz"
    out_dir = out.parent
    if out.exists() and out.stat().st_mtime > INIT.stat().st_mtime \
            and out.stat().st_mtime > Path(__file__).stat().st_mtime:
        return out
    busybox = find_busybox()
    with tempfile.TemporaryDirectory(dir=out_dir) as w:
        w = Path(w)
        for d in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules"):
            (w / d).mkdir()
        shutil.copy2(busybox, w / "bin" / "busybox")
        for a in BUSYBOX_APPLETS:
            (w / "bin" / a).symlink_to("busybox")
        names = []
        for f in module_files(kernel):
            name = os.path.basename(f)
            for ext in (".xz", ".zst", ".gz"):
                if name.endswith(ext):
                    name = name[: -len(ext)]
            _decompress(f, w / "modules" / name)
            names.append(name)
        (w / "modlist").write_text("\n".join(names) + "\n")
        shutil.copy2(INIT, w / "init")
        os.chmod(w / "init", 0o755)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        files = subprocess.run(["find", "."], cwd=w, capture_output=True, check=True).stdout
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=w, input=files,
                              capture_output=True, check=True).stdout
        tmp.write_bytes(gzip.compress(cpio, compresslevel=1))
        tmp.rename(out)
    return out
