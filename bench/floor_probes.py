"""The floor under `top --exact`: empty BPF programs on the raw tracepoints it attaches.

    sudo /opt/pmemtrace/venv/bin/python bench/floor_probes.py

bench.py runs it as the `floor` configuration. Each program returns at once, so a traced phase
costs the workload only what the kernel charges to call a raw tracepoint's BPF program: the
least any probe on these tracepoints can cost, whatever it does. Prints "Attached" once both
are attached, then waits for SIGINT/SIGTERM. Uses bcc directly (a bench tool, not part of the
package), with the same kernel-header fallback as pmemtrace.
"""
import signal
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pmemtrace import headers  # noqa: E402

TEXT = """
RAW_TRACEPOINT_PROBE(page_fault_user) { return 0; }
RAW_TRACEPOINT_PROBE(count_memcg_events) { return 0; }
"""


def main():
    os.environ.update(headers.ensure_headers().bcc_env())
    import bcc
    b = bcc.BPF(text=TEXT)
    print("Attached", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    b.cleanup()


if __name__ == "__main__":
    main()
