"""The floor under `top --exact`: empty BPF programs on the raw tracepoints it attaches.

    sudo /opt/pmemtrace/venv/bin/python bench/floor_probes.py

bench.py runs it as the `floor` configuration. Each program returns at once, so a traced phase
costs the workload only what the kernel charges to call a raw tracepoint's BPF program: the
least any probe on these tracepoints can cost, whatever it does. Prints "Attached" once both
are attached, then waits for SIGINT/SIGTERM. Compiles its own program (a bench tool, not part of the
package), through pmemtrace's bcc import and kernel-header fallback.
"""
import signal
import sys
import os

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pmemtrace import headers, loader  # noqa: E402

TEXT = """
RAW_TRACEPOINT_PROBE(page_fault_user) { return 0; }
RAW_TRACEPOINT_PROBE(count_memcg_events) { return 0; }
"""


def main():
    os.environ.update(headers.ensure_headers().bcc_env())
    b = loader.import_bcc().BPF(text=TEXT)
    signal.signal(signal.SIGTERM, signal.default_int_handler)     # SIGTERM ends it like SIGINT
    try:
        print("Attached", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
