"""`pmemtrace exporter` scraped while a real DAX workload runs (tests/workloads/kernel_regress.c on
ext4 -o dax): the DAX series against the kernel's own truth.

- pmemtrace_dax_bytes{pid, kind="fsdax"}: the workload's fs-dax bytes written and held, 24 MiB
  (16 MiB MAP_SYNC + 2 x 4 MiB of one file), from the page tables; pmemtrace_dax_vmas 3 and
  pmemtrace_vm_sync_vmas 2 from smaps' VmFlags;
- pmemtrace_dax_fallbacks{cause}: the increase over the touch equals the FALLBACK results of
  fs_dax:dax_pmd_fault_done (a private tracefs instance filtered to the workload) in the
  misaligned mapping (cause "misaligned") and in the aligned mapping of the same file, whose
  4 KiB entries the misaligned one left (cause "pte_present");
- pmemtrace_dax_faults{outcome="pmd_needdsync"}: the increase equals the NEEDDSYNC results in the
  MAP_SYNC mapping of the fallocated, unwritten file.
"""
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from guestlib import CHECKOUT, TraceInstance, parse_kv

MiB = 1 << 20
LISTEN = "127.0.0.1:19151"
EVENTS = ["fs_dax/dax_pmd_fault_done"]


def scrape():
    with urllib.request.urlopen(f"http://{LISTEN}/metrics", timeout=60) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m, name, **labels):
    """The sample of `name` whose labels include `labels` (None if absent)."""
    want = set(labels.items())
    hits = [v for (n, ls), v in m.items() if n == name and want <= set(ls)]
    assert len(hits) <= 1, f"{name} {labels}: {len(hits)} samples"
    return hits[0] if hits else None


def test_exporter_dax_series_exact(setup_facts, workload_dir):
    if "fsdax-ext4" not in setup_facts:
        pytest.fail("stage2 did not set up fs-dax ext4 (see guest.log)")
    mnt = os.path.join(setup_facts["fsdax-ext4"][1], "exporter")
    os.makedirs(mnt, exist_ok=True)
    exe = str(workload_dir / "kernel_regress")
    if not os.path.exists(exe):
        subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, str(CHECKOUT / "tests/workloads/kernel_regress.c")],
                       check=True)
    # stage2 brings up no network: loopback (and 127.0.0.1 with it) is down until asked
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    w = subprocess.Popen([exe, mnt], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    exp = subprocess.Popen([sys.executable, "-m", "pmemtrace", "exporter", "--listen", LISTEN], cwd=CHECKOUT,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t = None
    try:
        vmas = {}
        for line in w.stdout:
            if line.startswith("VMA "):
                kv = parse_kv(line)
                vmas[kv["name"]] = (int(kv["addr"], 16), int(kv["len"]))
            if line.startswith("MAPPED"):
                break
        t = TraceInstance(f"pmtexp{os.getpid()}", EVENTS, pid=w.pid)
        deadline, m0, why = time.monotonic() + 240, None, None      # bcc compiles under TCG first
        while m0 is None:
            assert exp.poll() is None, f"exporter exited rc={exp.returncode}: {exp.stderr.read()[-3000:]}"
            if time.monotonic() > deadline:
                exp.terminate()
                pytest.fail(f"exporter did not serve /metrics within 240 s (last: {why}); its stderr: "
                            f"{exp.communicate(timeout=60)[1][-3000:]}", pytrace=False)
            try:
                m0 = scrape()
            except OSError as e:
                why = e
                time.sleep(1)
        w.stdin.write("go\n")
        w.stdin.flush()
        assert w.stdout.readline().startswith("TOUCHED")
        # dax_bytes follow the DAX VMA counts' refresh (10 s): scrape until the page tables' bytes show
        deadline, m1 = time.monotonic() + 60, scrape()
        while value(m1, "pmemtrace_dax_bytes", pid=str(w.pid), kind="fsdax") != 24 * MiB \
                and time.monotonic() < deadline:
            time.sleep(2)
            m1 = scrape()
        pid = str(w.pid)
        truth = {name: t.in_range("dax_pmd_fault_done", a, a + n) for name, (a, n) in vmas.items()}
    finally:
        w.kill()
        w.wait()
        exp.terminate()
        exp.wait(timeout=60)
        if t is not None:
            t.close()
        for name in ("kr-sync.dat", "kr-pte.dat"):
            if os.path.exists(f"{mnt}/{name}"):
                os.unlink(f"{mnt}/{name}")
    assert value(m1, "pmemtrace_dax_bytes", pid=pid, kind="fsdax") == 24 * MiB
    assert value(m1, "pmemtrace_dax_vmas", pid=pid) == 3
    assert value(m1, "pmemtrace_vm_sync_vmas", pid=pid) == 2

    def delta(name, **labels):
        return value(m1, name, **labels) - (value(m0, name, **labels) or 0)
    assert truth["pte_a"]["FALLBACK"] > 0 and truth["pte_b"]["FALLBACK"] > 0, truth
    assert delta("pmemtrace_dax_fallbacks_total", cause="misaligned") == truth["pte_a"]["FALLBACK"], truth
    assert delta("pmemtrace_dax_fallbacks_total", cause="pte_present") == truth["pte_b"]["FALLBACK"], truth
    assert truth["sync"]["NEEDDSYNC"] == 8, truth
    assert delta("pmemtrace_dax_faults_total", outcome="pmd_needdsync") == 8
    assert truth["anon"] == {}                       # anonymous memory: no DAX fault at all
