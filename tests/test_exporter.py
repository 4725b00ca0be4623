"""`pmemtrace exporter`, scraped by a real Prometheus.

Unit: counters never go down across pid reuse and top-N changes; bad --listen values; the
shipped rules pass `promtool check rules`. Live (root): Debian's prometheus (make test-deps
installs it) started by the test on 127.0.0.1 with a temporary storage dir and a 1 s scrape
interval; a PromQL query returns the workload's exact huge bytes (64 MiB of THP -> 67108864);
the shipped PmemtraceHugeShareDropped rule fires for a coverage drop the test makes;
`promtool check metrics` passes on the exposition.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from pmemtrace import aggregate, daxcause, exporter, interval, sampler, vma_sampler
from pmemtrace.errors import NotRoot
from testkit import ROOT, cannot_run, run_cli

DEPLOY = ROOT / "pmemtrace" / "deploy"
RULES = DEPLOY / "pmemtrace-rules.yml"
MIB = 1 << 20


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make test-deps` (apt-get install prometheus)")
    return path


# ----------------------------------------------------------------- unit

def frame(rows):
    return {"processes": [{"pid": p, "faults": f, "huge_faults": h} for p, f, h in rows],
            "system": {"dax": {}}, "lost_events": 0}


def counters(series):
    out = {(p["pid"], p["start"]): (p["page_faults"], p["huge_faults"]) for p in series.processes}
    out[("other", "")] = (series.other["page_faults"], series.other["huge_faults"])
    return out


def test_counters_never_go_down_across_pid_reuse_and_top_n():
    fields = sampler.Tracked.__dataclass_fields__
    if "huge" not in fields:
        pytest.fail(f"sampler.Tracked changed: {list(fields)}")

    def t(pid, start, rss):
        kw = {k: 0 for k in fields if k not in ("pid", "starttime", "comm", "huge")}
        return sampler.Tracked(pid=pid, starttime=start, comm=f"c{pid}", huge=sampler.HugeBytes(rss=rss), **kw)

    st = exporter.State(max_processes=1)
    seen = {}

    def check(series):
        for key, vals in counters(series).items():
            prev = seen.get(key, (0, 0))
            assert vals[0] >= prev[0] and vals[1] >= prev[1], (key, prev, vals)
            seen[key] = vals

    # pid 10 is the biggest: its own series; pid 11 goes to "other"
    check(st.add(frame([(10, 5, 1), (11, 7, 0)]), {10: t(10, 100, 50), 11: t(11, 200, 10)}))
    assert counters(st.add(frame([]), {10: t(10, 100, 50), 11: t(11, 200, 10)}))[("10", "100")] == (5, 1)
    # 11 grows past 10: 10 leaves the top N (its totals are kept, not exposed), 11's series starts at 0
    s = st.add(frame([(10, 3, 0), (11, 4, 0)]), {10: t(10, 100, 50), 11: t(11, 200, 90)})
    check(s)
    assert counters(s)[("11", "200")] == (4, 0) and counters(s)[("other", "")] == (7 + 3, 0)
    # 10 comes back on top: continues from 5, never from 0
    s = st.add(frame([(10, 1, 0)]), {10: t(10, 100, 99), 11: t(11, 200, 90)})
    check(s)
    assert counters(s)[("10", "100")] == (6, 1)
    # pid 10 exits and is reused by another program: a new series (new start), the old one is gone
    s = st.add(frame([(None, 2, 0), (10, 9, 0)]), {10: t(10, 300, 99)})
    check(s)
    assert counters(s)[("10", "300")] == (9, 0) and ("10", "100") not in counters(s)
    assert counters(s)[("other", "")] == (12, 0)         # the (exited) row adds to other


@pytest.mark.parametrize("listen,code", [("foo", 17), ("1.2.3.4:0", 17), (":99999", 17),
                                         ("not-an-ip:9", 17), ("1.2.3.4:9", None)])
def test_parse_listen(listen, code):
    if code is None:
        assert exporter.parse_listen(listen) == ("1.2.3.4", 9)
    else:
        with pytest.raises(exporter.BadListenAddress) as e:
            exporter.parse_listen(listen)
        assert e.value.exit_code == code


def test_bad_listen_is_one_line_and_its_own_exit_code():
    r = run_cli("exporter", "--listen", "nonsense")
    assert r.returncode == 17 and r.stdout == ""
    assert r.stderr.startswith("pmemtrace: --listen 'nonsense'") and r.stderr.count("\n") == 1


def test_not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NotRoot):
        exporter.run(listen="127.0.0.1:1", bpf=False)


def test_shipped_rules_pass_promtool():
    r = subprocess.run([need("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 4 rules found" in r.stdout


def test_exposition_passes_promtool_check_metrics():
    from prometheus_client import generate_latest
    registry, _ = exporter.build(max_processes=5, probes=None)
    text = generate_latest(registry)
    r = subprocess.run([need("promtool"), "check", "metrics"], input=text, capture_output=True)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    names = set(re.findall(rb"^# TYPE (\S+)", text, re.M))
    assert {b"pmemtrace_huge_bytes", b"pmemtrace_page_faults_total", b"pmemtrace_thp_policy_info",
            b"pmemtrace_lost_events_total", b"pmemtrace_scrape_duration_seconds_total",
            b"pmemtrace_mthp_anon_fault_alloc_total", b"pmemtrace_dax_faults_total"} <= names
    # bounded: 5 processes + other per process metric
    assert len(re.findall(rb"^pmemtrace_resident_bytes\{", text, re.M)) <= 6


# ----------------------------------------------------------------- unit: the Collector with fakes
# (no DAX on this machine: the DAX series are tested with a fake model, fake probes and a fake reader)

class FakeModel:
    """interval.Model's surface the Collector uses: step(), procs.state, vma_cache, fallbacks_known."""
    fallbacks_known = True

    def __init__(self, tracked, rows):
        self.procs = SimpleNamespace(state=tracked)
        self.vma_cache = SimpleNamespace(cache={}, dax_cache={})
        self.rows = rows

    def step(self, counts):
        return {"processes": [dict(r) for r in self.rows], "system": {"dax": {}}, "lost_events": counts.lost}


class FakeProbes(interval.NoProbes):
    def __init__(self, batches):
        self.batches = list(batches)

    def snapshot(self):
        return aggregate.ProbeCounts(events=self.batches.pop(0) if self.batches else [])


def tracked(pid, start, rss):
    fields = sampler.Tracked.__dataclass_fields__
    kw = {k: 0 for k in fields if k not in ("pid", "starttime", "comm", "huge")}
    return sampler.Tracked(pid=pid, starttime=start, comm=f"c{pid}", huge=sampler.HugeBytes(rss=rss), **kw)


def fake_thp_root(tmp_path, pages_collapsed="7", full_scans="3"):
    for name, text in (("enabled", "always [madvise] never"), ("defrag", "[madvise] never"),
                       ("shmem_enabled", "always [never]")):
        (tmp_path / name).write_text(text + "\n")
    (tmp_path / "khugepaged").mkdir()
    (tmp_path / "khugepaged" / "pages_collapsed").write_text(pages_collapsed + "\n")
    (tmp_path / "khugepaged" / "full_scans").write_text(full_scans + "\n")
    return str(tmp_path)


def scrape(collector):
    from prometheus_client import CollectorRegistry, generate_latest
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    raw = generate_latest(registry)
    r = subprocess.run([need("promtool"), "check", "metrics"], input=raw, capture_output=True)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    text = raw.decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_dax_bytes_only_for_processes_with_dax_vmas_and_refreshed_with_them(tmp_path):
    rows = [{"pid": 10, "faults": 0, "huge_faults": 0, "vm_sync_vmas": 1, "dax_vmas": 2},
            {"pid": 11, "faults": 0, "huge_faults": 0, "vm_sync_vmas": 0, "dax_vmas": 0},
            {"pid": 12, "faults": 0, "huge_faults": 0, "vm_sync_vmas": None, "dax_vmas": None}]
    model = FakeModel({10: tracked(10, 100, 9), 11: tracked(11, 110, 8), 12: tracked(12, 120, 7)}, rows)
    model.vma_cache.cache = {10: (100, 1.0, None), 11: (110, 1.0, None)}
    reads = []

    def read(pid, kinds):
        reads.append(pid)
        assert kinds is model.vma_cache.dax_cache        # one statx per file, shared with dax_vmas
        return {"devdax": 4 * MIB * len(reads), "fsdax": 2 * MIB}

    c = exporter.Collector(model, interval.NoProbes(), exporter.State(3), thp_root=fake_thp_root(tmp_path))
    c.dax_cache.read = read
    m = scrape(c)
    assert m['pmemtrace_dax_bytes{comm="c10",kind="devdax",pid="10",start="100"}'] == 4 * MIB
    assert m['pmemtrace_dax_bytes{comm="c10",kind="fsdax",pid="10",start="100"}'] == 2 * MIB
    assert [k for k in m if k.startswith("pmemtrace_dax_bytes{")] == [
        'pmemtrace_dax_bytes{comm="c10",kind="devdax",pid="10",start="100"}',
        'pmemtrace_dax_bytes{comm="c10",kind="fsdax",pid="10",start="100"}']
    assert reads == [10]                                  # 11 (no DAX VMA) and 12 (not yet known): no read
    scrape(c)
    assert reads == [10]                                  # dax_vmas not re-read: cached
    model.vma_cache.cache[10] = (100, 11.0, None)         # the model re-read pid 10's VMA counts
    m = scrape(c)
    assert reads == [10, 10]
    assert m['pmemtrace_dax_bytes{comm="c10",kind="devdax",pid="10",start="100"}'] == 8 * MIB
    model.procs.state = {10: tracked(10, 999, 9)}         # pid reused: no series from the old process
    model.rows = [{"pid": 10, "faults": 0, "huge_faults": 0, "vm_sync_vmas": 0, "dax_vmas": 0}]
    m = scrape(c)
    assert not [k for k in m if k.startswith("pmemtrace_dax_bytes{")] and c.dax_cache.cache == {}


def test_dax_bytes_of_sums_page_table_residency_by_kind(monkeypatch):
    from pmemtrace import pagemap, procfs

    def block(start, end, inode):
        return SimpleNamespace(map=procfs.MapEntry(start, end, "rw-s", 0, (259, 1), inode, f"/f{inode}"))

    blocks = [block(0x1000, 0x3000, 0), block(0x200000, 0x600000, 5), block(0x800000, 0xa00000, 6),
              block(0xc00000, 0xe00000, 7), block(0xe00000, 0xf00000, 8)]
    kinds = {((259, 1), 5): "fsdax", ((259, 1), 6): "devdax", ((259, 1), 7): "fsdax"}
    monkeypatch.setattr(procfs, "read_smaps_layout_only", lambda pid: blocks)
    monkeypatch.setattr(vma_sampler, "vma_dax", lambda pid, m: "none")      # inode 8: not DAX
    res = {0x200000: pagemap.DaxResidency(3 * MIB, 2 * MIB, MIB, "pagemap"),
           0x800000: pagemap.DaxResidency(None, None, None, "pagemap"),
           0xc00000: pagemap.DaxResidency(4096, 0, 4096, "pagemap")}
    monkeypatch.setattr(pagemap, "dax_residency_many", lambda pid, ranges: [res[s] for s, _ in ranges])
    # devdax: its one VMA's page tables unreadable -> unknown, left out (never 0)
    assert exporter.dax_bytes_of(1, kinds) == {"fsdax": 3 * MIB + 4096}
    assert kinds[((259, 1), 8)] == "none"


def fallback_event(**kw):
    e = {"type": aggregate.EVENT_DAX_FALLBACK, "tgid": 10, "vm_start": 0x200000, "vm_end": 0x800000,
         "address": 0x400000, "pgoff": 0x200, "max_pgoff": 0x1000, "flags": 0, "vm_flags": 0x8, "pte_seen": False}
    e.update(kw)
    return e


def test_dax_fallbacks_counted_by_cause_from_streamed_events(tmp_path):
    model = FakeModel({}, [])
    batches = [[fallback_event(pgoff=0x201), fallback_event(flags=1, vm_flags=0), fallback_event(pgoff=0x201)],
               [fallback_event(pte_seen=True), {"type": aggregate.EVENT_MUNMAP, "tgid": 10}]]
    c = exporter.Collector(model, FakeProbes(batches), exporter.State(3), thp_root=fake_thp_root(tmp_path))
    m = scrape(c)
    fb = {k: v for k, v in m.items() if k.startswith("pmemtrace_dax_fallbacks_total")}
    assert fb == {'pmemtrace_dax_fallbacks_total{cause="cow"}': 1,
                  'pmemtrace_dax_fallbacks_total{cause="misaligned"}': 2,
                  'pmemtrace_dax_fallbacks_total{cause="other"}': 0,
                  'pmemtrace_dax_fallbacks_total{cause="outside_vma"}': 0,
                  'pmemtrace_dax_fallbacks_total{cause="past_eof"}': 0,
                  'pmemtrace_dax_fallbacks_total{cause="pte_present"}': 0}
    m = scrape(c)
    assert m['pmemtrace_dax_fallbacks_total{cause="misaligned"}'] == 2
    assert m['pmemtrace_dax_fallbacks_total{cause="pte_present"}'] == 1
    assert set(exporter.FALLBACK_CAUSES) == set(daxcause.CAUSES)


def test_khugepaged_counters_from_sysfs(tmp_path):
    c = exporter.Collector(FakeModel({}, []), interval.NoProbes(), exporter.State(3),
                           thp_root=fake_thp_root(tmp_path, "7", "3"))
    m = scrape(c)
    assert m["pmemtrace_khugepaged_pages_collapsed_total"] == 7
    assert m["pmemtrace_khugepaged_full_scans_total"] == 3
    assert exporter.read_khugepaged(str(tmp_path / "nowhere")) == {}


# ----------------------------------------------------------------- live: a real Prometheus

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def promql(base, query):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(fn, timeout, what):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last})")


@pytest.fixture
def prometheus_and_exporter(tmp_path):
    prom = need("prometheus")
    eport, pport = free_port(), free_port()
    # the shipped rules, with the alert's `for: 10m` shortened so that the test need not wait
    rules = tmp_path / "rules.yml"
    rules.write_text(re.sub(r"for: \d+m", "for: 0s", RULES.read_text()))
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {rules}\n"
        "scrape_configs:\n  - job_name: pmemtrace\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{eport}']\n")
    exp = subprocess.Popen([sys.executable, "-m", "pmemtrace", "exporter", "--listen", f"127.0.0.1:{eport}",
                            "--no-bpf", "--max-processes", "50"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    srv = subprocess.Popen([prom, f"--config.file={tmp_path / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{pport}"],
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    try:
        wait_http(f"http://127.0.0.1:{eport}/metrics")
        wait_http(f"http://127.0.0.1:{pport}/-/ready")
        yield f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{eport}/metrics"
    finally:
        for p in (srv, exp):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        assert exp.returncode in (0, -15), exp.stderr.read() if exp.stderr else ""


HUGE_DROP = r"""
import mmap, sys
open("/proc/self/comm", "w").write(sys.argv[1])
MIB = 1 << 20
# private: mmap.mmap(-1, n) alone is MAP_SHARED, i.e. shmem, which THP's shmem_enabled (never here)
# governs, not MADV_HUGEPAGE
m = mmap.mmap(-1, 66 * MIB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_HUGEPAGE)
for off in range(0, len(m), 4096):
    m[off] = 1
print("huge", flush=True)
sys.stdin.readline()
m.madvise(mmap.MADV_DONTNEED)          # every THP gone ...
m.madvise(mmap.MADV_NOHUGEPAGE)        # ... and faulted back as 4 KiB pages
for off in range(0, len(m), 4096):
    m[off] = 1
print("small", flush=True)
sys.stdin.readline()
"""


@pytest.mark.live
def test_real_prometheus_exact_huge_bytes_and_alert(prometheus_and_exporter, build_workload, tmp_path):
    base, metrics_url = prometheus_and_exporter
    thp = subprocess.Popen([build_workload("top_thp"), "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    comm = "pmt_drop_" + str(os.getpid() % 10000)
    script = tmp_path / "drop.py"
    script.write_text(HUGE_DROP)
    drop = subprocess.Popen([sys.executable, str(script), comm],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        while "ready" not in thp.stdout.readline():
            pass
        assert drop.stdout.readline().strip() == "huge"
        # 1. exact huge bytes of the workload, through PromQL
        q = f'pmemtrace_huge_bytes{{pid="{thp.pid}"}}'
        res = wait_for(lambda: [r for r in promql(base, q) if r["value"][1] == str(64 * MIB)], 30, q)
        assert res[0]["value"][1] == "67108864"
        assert res[0]["metric"]["comm"] == "top_thp" and res[0]["metric"]["job"] == "pmemtrace"

        # 2. the exposition itself passes promtool
        text = urllib.request.urlopen(metrics_url, timeout=5).read()
        r = subprocess.run([need("promtool"), "check", "metrics"], input=text, capture_output=True)
        assert r.returncode == 0, (r.stdout + r.stderr).decode()

        # 3. a coverage drop the test makes: the shipped alert fires for that comm, and only after the drop
        share = f'pmemtrace:huge_share:comm{{comm="{comm}"}}'
        wait_for(lambda: [x for x in promql(base, share) if float(x["value"][1]) > 0.5], 30, share)
        assert not firing(base, comm)
        drop.stdin.write("\n")
        drop.stdin.flush()
        assert drop.stdout.readline().strip() == "small"
        alert = wait_for(lambda: firing(base, comm), 60, "PmemtraceHugeShareDropped firing")
        assert alert[0]["labels"]["alertname"] == "PmemtraceHugeShareDropped"
    finally:
        for p in (thp, drop):
            p.stdin.close()
            p.wait(10)


@pytest.mark.live
def test_default_path_with_dax_probes_serves_and_detaches_on_sigterm():
    """The default exporter (the rare-path fs_dax probes attached, no --no-bpf) starts here as root,
    serves an exposition promtool accepts, and leaves no BPF program behind after SIGTERM."""
    if os.geteuid() != 0:
        cannot_run("needs root")
    from test_signals_live import loaded_progs, progs_of
    port = free_port()
    exp = subprocess.Popen([sys.executable, "-m", "pmemtrace", "exporter", "--listen", f"127.0.0.1:{port}"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ours = set()
    try:
        text = wait_http(f"http://127.0.0.1:{port}/metrics", 60)
        ours = progs_of(exp.pid)
        assert ours and ours <= loaded_progs(), "the DAX probes are not attached"
        r = subprocess.run([need("promtool"), "check", "metrics"], input=text, capture_output=True)
        assert r.returncode == 0, (r.stdout + r.stderr).decode()
        # the fs_dax PMD probe is on: every fallback cause is a series from 0 (no DAX on this machine)
        for cause in exporter.FALLBACK_CAUSES.values():
            assert f'pmemtrace_dax_fallbacks_total{{cause="{cause}"}} 0.0'.encode() in text
        assert b'pmemtrace_dax_faults_total{outcome="pmd_huge"} 0.0' in text
    finally:
        exp.send_signal(signal.SIGTERM)
        _, err = exp.communicate(timeout=30)
    assert exp.returncode == 0, err
    assert err == ""
    assert not ours & loaded_progs(), "BPF programs left after SIGTERM"


def firing(base, comm):
    with urllib.request.urlopen(f"{base}/api/v1/alerts", timeout=5) as r:
        alerts = json.load(r)["data"]["alerts"]
    return [a for a in alerts if a["state"] == "firing" and a["labels"].get("comm") == comm]


def test_deploy_files_are_package_data():
    assert {p.name for p in DEPLOY.iterdir()} >= {"prometheus.yml", "pmemtrace-rules.yml",
                                                  "pmemtrace-exporter.service"}
    assert "pmemtrace exporter" in (DEPLOY / "pmemtrace-exporter.service").read_text()
    cfg = (ROOT / "setup.cfg").read_text()
    assert "pmemtrace = deploy/*" in cfg and "prometheus_client" in cfg
    assert Path(exporter.__file__).parent / "deploy" == DEPLOY
