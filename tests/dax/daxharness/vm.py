"""Boot one DAX guest under QEMU TCG and collect what it wrote to its /out share.

pmem: two `memmap=1G!...` e820 regions (fsdax: ext4 and xfs) and one QEMU nvdimm
(ACPI NFIT; devdax). KVM on these machines is a nested hypervisor that cannot run
stock kernels, hence `-accel tcg,thread=multi -cpu max`.
"""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import initramfs

GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
STAGE2 = GUEST_DIR / "stage2.sh"
CHECKOUT = Path(__file__).resolve().parents[3]
DEFAULT_TIMEOUT = int(os.environ.get("PMEMTRACE_DAX_TIMEOUT", "600"))
# RAM 0-3G and 4G-6G (pc machine); pmem carved at 1G-2G and 4G-5G: two separate regions
MEMORY = "5G"
MEMMAP = "memmap=1G!1G memmap=1G!4G"
NVDIMM_SIZE = "1G"
# One vCPU: with two, TCG (multi-threaded) once let a vCPU hit the int3 of a kernel text
# patch in flight (7.2 guest: "Oops: int3" in __schedule while a tracepoint was enabled).
SMP = os.environ.get("PMEMTRACE_DAX_SMP", "1")


@dataclass
class GuestRun:
    kernel: object
    out: Path
    rc: int = None
    timed_out: bool = False
    wall_seconds: float = 0.0
    results: dict = field(default_factory=dict)
    pytest_rc: int = None
    command: list = field(default_factory=list)

    def text(self, name):
        p = self.out / name
        return p.read_text(errors="replace") if p.exists() else ""

    def console_tail(self, lines=60):
        text = re.sub(r"\x1b(\[[0-9;?]*[a-zA-Z]|c)", "", self.text("console.log"))
        return "\n".join(text.splitlines()[-lines:])

    def guest_log_tail(self, lines=60):
        return "\n".join(self.text("guest.log").splitlines()[-lines:])

    def diagnosis(self):
        why = (f"guest {self.kernel.abi}: qemu rc={self.rc} timed_out={self.timed_out} "
               f"wall={self.wall_seconds:.0f}s pytest_rc={self.pytest_rc}")
        return (f"{why}\n--- console tail ({self.out / 'console.log'}):\n{self.console_tail()}"
                f"\n--- pytest tail ({self.out / 'pytest.log'}):\n"
                + "\n".join(self.text("pytest.log").splitlines()[-40:]))


def qemu_command(kernel, initrd, out):
    nvimg = out / "nvdimm0.img"
    with open(nvimg, "wb") as f:
        f.truncate(1 << 30)
    append = " ".join([
        "console=ttyS0", "panic=-1", "oops=panic", "loglevel=4", "nokaslr",
        MEMMAP, f"guest_init={STAGE2}",
    ])
    return [
        "qemu-system-x86_64",
        "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", SMP,
        "-machine", "pc,nvdimm=on", "-m", f"{MEMORY},slots=2,maxmem=16G",
        "-object", f"memory-backend-file,id=nvmem0,share=on,mem-path={nvimg},size={NVDIMM_SIZE},align=2M",
        "-device", "nvdimm,id=nvdimm0,memdev=nvmem0",
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", kernel.vmlinuz, "-initrd", str(initrd),
        "-append", append,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=out,security_model=none,multidevs=remap",
    ]


def run(kernel, out, timeout=DEFAULT_TIMEOUT, guest_pytest_args="", python=None):
    """Boot `kernel` with the guest tests; return a GuestRun (never raises for guest failures)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    initrd = initramfs.build(kernel)
    python = python or sys.executable
    (out / "config.env").write_text("".join(f"{k}={shlex.quote(str(v))}\n" for k, v in {
        "CHECKOUT": CHECKOUT, "PYTHON": python, "KVER": kernel.abi, "KROOT": kernel.root,
        "GUEST_PYTEST_ARGS": guest_pytest_args,
    }.items()))
    g = GuestRun(kernel=kernel, out=out)
    g.command = qemu_command(kernel, initrd, out)
    (out / "qemu.cmd").write_text(" ".join(shlex.quote(c) for c in g.command) + "\n")
    t0 = time.monotonic()
    with open(out / "console.log", "wb") as con:
        p = subprocess.Popen(g.command, stdin=subprocess.DEVNULL, stdout=con, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            g.rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            g.timed_out = True
            os.killpg(p.pid, signal.SIGKILL)
            g.rc = p.wait()
    g.wall_seconds = time.monotonic() - t0
    (out / "nvdimm0.img").unlink(missing_ok=True)
    if (out / "results.json").exists():
        try:
            g.results = json.loads((out / "results.json").read_text())
        except ValueError:
            g.results = {}
    rc = g.text("pytest.rc").strip()
    g.pytest_rc = int(rc) if rc.isdigit() else None
    (out / "timing.json").write_text(json.dumps({
        "kernel": kernel.name, "abi": kernel.abi, "qemu_rc": g.rc, "timed_out": g.timed_out,
        "wall_seconds": round(g.wall_seconds, 1), "fetch_seconds": kernel.fetch_seconds,
        "guest_tests": len(g.results), "pytest_rc": g.pytest_rc}))
    return g
