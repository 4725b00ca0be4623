"""Command line: parses arguments, calls one view per command, turns errors into exit codes.

Every command's work lives in pmemtrace/views/<command>.py; this module only wires
options to those functions and owns the one place that prints an error and exits.
"""
import functools
import sys

import click

from . import __version__
from .errors import PmemtraceError
from .interval import SORT_KEYS as TOP_SORT_KEYS


EXAMPLES_TOP = """\b
Examples:
  pmemtrace top               # all processes, refresh every second
  pmemtrace top 5 10          # 10 refreshes, 5 s apart
  pmemtrace top -p 1234       # one process, per VMA
  pmemtrace top --exact       # every THP fault attributed by address (costs more)
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
        except PmemtraceError as e:
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
    from .views import report as view
    view.run(pid, show_all=show_all, as_json=as_json, duration=duration, ebpf=ebpf)


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
@click.option("--ebpf", is_flag=True, hidden=True, help="Print the BPF program and exit.")
@handle_errors
def top(interval, count, noclear, maxrows, sort_key, pid, comm, dax_only, exact, as_json, ebpf):
    """Live huge-page vs small-page faults, per process (or per VMA with -p)."""
    from .views import top as view
    view.run(interval=interval, count=count, noclear=noclear, maxrows=maxrows, sort_key=sort_key,
             pid=pid, comm=comm, dax_only=dax_only, exact=exact, as_json=as_json, ebpf=ebpf)


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


def main():
    cli()
