"""Command line: parses arguments, calls one view per command, turns errors into exit codes.

Every command's work lives in pmemtrace/views/<command>.py; this module only wires
options to those functions and owns the one place that prints an error and exits.
"""
import functools
import signal
import sys

import click

from . import __version__, signals
from .errors import Interrupted, PmemtraceError
from .aggregate import SORT_KEYS as TOP_SORT_KEYS


EXAMPLES_TOP = """\b
Examples:
  pmemtrace top               # all processes, refresh every second
  pmemtrace top 5 10          # 10 refreshes, 5 s apart
  pmemtrace top -p 1234       # one process, per VMA
  pmemtrace top --exact       # every THP fault attributed by address (costs more)
  pmemtrace top --syscalls    # also count madvise / MAP_SYNC / mincore calls without kprobes
  pmemtrace top 1 3 --json    # machine-readable, one object per interval
"""

EXAMPLES_REPORT = """\b
Examples:
  sudo pmemtrace report 1234                # huge vs small bytes, DAX, VM_SYNC, THP per VMA
  sudo pmemtrace report 1234 --all          # also VMAs with nothing resident
  sudo pmemtrace report 1234 --duration 10  # plus the faults the probes see in 10 s
  sudo pmemtrace report 1234 --json         # the documented JSON schema
"""

EXAMPLES_PAGES = """\b
Examples:
  sudo pmemtrace pages 1234                         # every VMA: runs and a map strip
  sudo pmemtrace pages 1234 --vma 0x7f6aefa00000    # the VMA containing that address
  sudo pmemtrace pages 1234 0x7f6aefa00000+64M      # 64 MiB from that address
  sudo pmemtrace pages 1234 0x7f0000000000-0x7f0040000000 --json
"""

EXAMPLES_DOCTOR = """\b
Examples:
  sudo pmemtrace doctor       # one verdict per line, with the fix; exit 1 if pmemtrace cannot run
"""

EXAMPLES_FOLIOS = """\b
Examples:
  sudo pmemtrace folios 1234                     # one process: folio sizes, PMD- / PTE-mapped
  sudo pmemtrace folios --rollup                 # the whole system, summed
  sudo pmemtrace folios --cgroup /sys/fs/cgroup --json --vmas   # a cgroup and its descendants
"""


def handle_errors(fn):
    """Run a command body; a PmemtraceError becomes one line on stderr and its exit code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (PmemtraceError, Interrupted) as e:
            click.echo(f"pmemtrace: {e}", err=True)
            sys.exit(e.exit_code)
        except BrokenPipeError:
            sys.stderr.close()
            sys.exit(0)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pmemtrace")
def cli():
    """Why is this mapping not using huge pages? Per-VMA huge/small page mapping,
    DAX and MAP_SYNC (VM_SYNC) truth, from the page tables and kernel tracepoints."""


@cli.command(epilog=EXAMPLES_REPORT)
@click.argument("pid", type=int)
@click.option("--all", "show_all", is_flag=True, help="Also show VMAs with no resident pages.")
@click.option("--json", "as_json", is_flag=True, help="Print the documented JSON schema instead of a table.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Attach the probes this long and add per-VMA fault columns.")
@click.option("--ebpf", is_flag=True, hidden=True, help="Print the BPF program and exit.")
@handle_errors
def report(pid, show_all, as_json, duration, ebpf):
    """One row per VMA of PID: RSS, bytes mapped huge / small, DAX, VM_SYNC, THP eligibility."""
    # SIGINT/SIGTERM: detach cleanly, one line, exit 130/143 (pmemtrace.signals)
    installed = signals.install() if duration is not None else False
    try:
        ahead = smaps = None
        if as_json and duration is None and not ebpf:
            # started before the view's imports, so the children read while those run: one the
            # page tables, one smaps (a big process and 2+ CPUs only)
            from . import procfs
            from .folio_reader import prefetch
            ahead = prefetch(pid)
            smaps = procfs.start_smaps(pid) if ahead is not None else None
        from .views import report as view
        view.run(pid, show_all=show_all, as_json=as_json, duration=duration, ebpf=ebpf, scanned=ahead, smaps=smaps)
        signals.check()
    finally:
        if installed:
            signals.uninstall()


@cli.command(epilog=EXAMPLES_TOP)
@click.argument("interval", type=click.FloatRange(min=0.1), default=1.0, required=False)
@click.argument("count", type=click.IntRange(min=1), default=None, required=False)
@click.option("-C", "--noclear", is_flag=True, help="Don't clear the screen between refreshes.")
@click.option("-r", "--maxrows", type=click.IntRange(min=1), default=20, show_default=True, help="Rows to show.")
@click.option("-s", "--sort", "sort_key", default="huge_faults", show_default=True,
              type=click.Choice(TOP_SORT_KEYS), help="Sort column.")
@click.option("-p", "--pid", type=int, default=None, help="Show one process, per VMA.")
@click.option("--comm", default=None, help="Only processes whose comm contains this text.")
@click.option("--dax-only", is_flag=True, help="Only processes with DAX mappings or DAX faults.")
@click.option("--exact", is_flag=True, help="Attribute every THP fault by its address (BPF on the fault path).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per interval.")
@click.option("--syscalls", is_flag=True,
              help="Count mmap MAP_SYNC refusals, madvise and mincore calls also where the kernel has no "
                   "kprobes, through syscall tracepoints: every syscall of every task then takes the slow path "
                   "(measured: a getppid loop at about 0.7 of untraced). Where kprobes exist they are on by default at "
                   "no such cost; `pmemtrace doctor` says which applies here.")
@click.option("--ebpf", is_flag=True, hidden=True, help="Print the BPF program and exit.")
@handle_errors
def top(interval, count, noclear, maxrows, sort_key, pid, comm, dax_only, exact, as_json, syscalls, ebpf):
    """Live huge-page vs small-page faults, per process (or per VMA with -p)."""
    installed = signals.install()    # SIGINT/SIGTERM at any moment: detach cleanly, exit 0 (pmemtrace.signals)
    try:
        from .views import top as view
        view.run(interval=interval, count=count, noclear=noclear, maxrows=maxrows, sort_key=sort_key,
                 pid=pid, comm=comm, dax_only=dax_only, exact=exact, as_json=as_json, ebpf=ebpf,
                 syscalls=syscalls)
    finally:
        if installed:
            signals.uninstall()


@cli.command(epilog=EXAMPLES_PAGES)
@click.argument("pid", type=int)
@click.argument("range_spec", metavar="[RANGE]", required=False)
@click.option("--vma", "vma_addr", default=None, metavar="ADDR", help="The VMA containing ADDR.")
@click.option("--json", "as_json", is_flag=True, help="Print runs as JSON.")
@handle_errors
def pages(pid, range_spec, vma_addr, as_json):
    """A mincore2 for any process: page size behind every page, as runs.

    RANGE is START-END or START+LEN (hex with 0x, or decimal; LEN may end in K/M/G)."""
    from .views import pages as view
    view.run(pid, range_spec=range_spec, vma_addr=vma_addr, as_json=as_json)


@cli.command(epilog=EXAMPLES_FOLIOS)
@click.argument("pids", type=int, nargs=-1)
@click.option("--cgroup", type=click.Path(exists=True, file_okay=False), default=None, metavar="PATH",
              help="Only processes in this cgroup directory and its descendants.")
@click.option("--rollup", is_flag=True, help="Only the sum over all selected processes.")
@click.option("--vmas", "with_vmas", is_flag=True, help="With --json: each process's VMAs too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def folios(pids, cgroup, rollup, with_vmas, as_json):
    """Folio sizes (4K, mTHP, THP, hugetlb) and how they are mapped, per process or rolled up:
    all processes, the PIDS given, or a cgroup (like the kernel's tools/mm/thpmaps)."""
    from .views import folios as view
    view.run(pids, cgroup=cgroup, rollup=rollup, as_json=as_json, with_vmas=with_vmas)


@cli.command(epilog=EXAMPLES_DOCTOR)
@handle_errors
def doctor():
    """Check what pmemtrace needs on this machine; each line a verdict and the fix."""
    from .views import doctor as view
    sys.exit(view.run())


EXAMPLES_DIFF = """\b
Examples:
  pmemtrace diff base.json 1234                # a saved report --json against the live process
  pmemtrace diff base.json new.json --fail-on-drop 5   # exit 12 if the huge share fell > 5 points
  pmemtrace diff run.db new.db --at 30 --json  # record files: the snapshots at 30 s
"""


@cli.command(epilog=EXAMPLES_DIFF)
@click.argument("base")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON (schema 1).")
@click.option("--fail-on-drop", type=click.FloatRange(min=0), default=None, metavar="PCT",
              help="Exit 12 when the huge share fell by more than PCT percentage points.")
@click.option("--at", default=None, metavar="TIME",
              help="For record files: the snapshot in force at TIME (seconds from the start, or ISO time).")
@click.option("-p", "--pid", type=int, default=None, help="For record files: the process to compare.")
@handle_errors
def diff(base, new, as_json, fail_on_drop, at, pid):
    """Huge-page coverage of BASE vs NEW (report --json files, record files or live PIDs),
    VMAs matched by identity, not address."""
    from .views import diff as view
    sys.exit(view.run(base, new, as_json=as_json, fail_on_drop=fail_on_drop, at=at, pid=pid))


EXAMPLES_RECORD = """\b
Examples:
  pmemtrace record -o run.db -p 1234             # until 1234 exits or Ctrl-C
  pmemtrace record -o run.db --comm redis --duration 3600
  pmemtrace record -o run.db --all --interval 5
"""

EXAMPLES_REPLAY = """\b
Examples:
  pmemtrace replay run.db                        # top's screen; <- -> step through time
  pmemtrace replay run.db --json                 # every frame, top's JSON schema
  pmemtrace replay run.db --at 90 --json         # the frame 90 s into the recording
"""

EXAMPLES_PLOT = """\b
Examples:
  pmemtrace plot run.db -o run.html              # huge share over time per VMA group
  pmemtrace plot pages.json -o space.svg         # pages --json: the address space in 2 MiB blocks
"""


@cli.command(epilog=EXAMPLES_RECORD)
@click.option("-o", "--output", required=True, metavar="FILE",
              help="The record file to write (SQLite). An existing FILE is refused (exit 18) unless --force.")
@click.option("--force", is_flag=True, help="Replace an existing FILE.")
@click.option("-p", "--pid", "pids", type=int, multiple=True, help="Watch this process (repeatable).")
@click.option("--comm", default=None, help="Watch processes whose comm contains this text.")
@click.option("--all", "all_", is_flag=True, help="All processes; VMA snapshots of the largest.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, metavar="S")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Stop after this long (default: Ctrl-C, or when the watched processes exit).")
@click.option("--exact", is_flag=True, help="Attribute every THP fault by its address, as top --exact.")
@handle_errors
def record(output, pids, comm, all_, interval, duration, exact, force):
    """Record top's frames and the watched processes' per-VMA snapshots into FILE."""
    if sum((bool(pids), comm is not None, all_)) != 1:
        raise click.UsageError("give exactly one of -p PID..., --comm NAME or --all")
    from .views import record as view
    sys.exit(view.run(output, list(pids), comm, all_, interval=interval, duration=duration, exact=exact,
                      force=force))


@cli.command(epilog=EXAMPLES_REPLAY)
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded frames in top's JSON schema.")
@click.option("--at", default=None, metavar="TIME",
              help="Only the frame at TIME (seconds from the start, or ISO time).")
@click.option("-r", "--maxrows", type=click.IntRange(min=1), default=20, show_default=True, help="Rows to show.")
@handle_errors
def replay(file, as_json, at, maxrows):
    """Show a record file on top's screen, with keys to step through time."""
    from .views import replay as view
    sys.exit(view.run(file, as_json=as_json, at=at, maxrows=maxrows))


@cli.command(epilog=EXAMPLES_PLOT)
@click.argument("file")
@click.option("-o", "--output", required=True, metavar="OUT.html|OUT.svg", help="The picture to write.")
@handle_errors
def plot(file, output):
    """Draw FILE: a record file (huge share over time per VMA group, THP / DAX rates), or a
    pages / report --json document (the address space in 2 MiB blocks). Self-contained SVG or HTML."""
    if not output.endswith((".svg", ".html", ".htm")):
        raise click.BadParameter("must end in .svg or .html", param_hint="-o")
    from .views import plot as view
    sys.exit(view.run(file, output))


def _quiet_exit(signum, frame):
    raise SystemExit(128 + signum)



@cli.command(epilog="""\b
Examples:
  pmemtrace exporter                          # :19149/metrics, top 50 processes by RSS
  pmemtrace exporter --listen 127.0.0.1:9999 --max-processes 20
  pmemtrace exporter --vmas 1234              # also per-VMA series of pid 1234
""")
@click.option("--listen", default="0.0.0.0:19149", show_default=True, metavar="ADDR:PORT",
              help="Address and port of the /metrics HTTP server.")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="SECONDS", help="Reuse the last sample for scrapes closer together than this.")
@click.option("--max-processes", type=click.IntRange(min=0), default=50, show_default=True,
              help="Per-process series for this many processes by RSS; the rest sum into pid=\"other\".")
@click.option("--vmas", "vmas_pid", type=int, default=None, metavar="PID", help="Also export per-VMA series of PID.")
@click.option("--bpf/--no-bpf", default=True, show_default=True,
              help="Attach the DAX tracepoints (rare paths only) for DAX fault and fallback counters.")
@handle_errors
def exporter(listen, interval_s, max_processes, vmas_pid, bpf):
    """Serve Prometheus metrics on /metrics: per-process huge/small bytes and faults (top N by RSS),
    THP policy, mTHP and DAX counters. No BPF on any page-fault path."""
    from . import exporter as view
    sys.exit(view.run(listen=listen, interval_s=interval_s, max_processes=max_processes, vmas_pid=vmas_pid,
                      bpf=bpf))


def main():
    # Ctrl-C before (or without) a command's own handling leaves quietly, 130, not with a traceback;
    # top and report --duration then install pmemtrace.signals.
    signal.signal(signal.SIGINT, _quiet_exit)
    signals.keep_until_exit()     # top / report --duration keep recording signals to the end...
    try:
        cli()
    finally:
        signals.ignore_from_now()  # ...and a signal while Python exits does not change the exit code
