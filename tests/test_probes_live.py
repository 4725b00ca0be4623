"""Each probe file compiles and loads on its own (root, bcc): the generated prefix for this
kernel plus that one file and the headers it includes, nothing from another .c file."""
import os

import pytest

from pmemtrace import headers, kernel, loader

pytestmark = pytest.mark.live
SOURCES = ("faults.c", "dax.c", "syscalls.c", "devdax.c")


@pytest.mark.parametrize("name", SOURCES)
def test_probe_file_compiles_alone(name):
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root")
        pytest.skip("needs root")
    bcc = loader.import_bcc()
    text, _, _ = loader.build_text(["thp", "faults", "dax", "syscalls", "mincore"], pid=1,
                                   tracefs=kernel.ensure_tracefs())
    prefix = text.split("/* ---- probes/common.h ---- */")[0]
    if "DEVDAX_PMD_ARG" not in prefix:       # no device-dax kprobe on this kernel: its defines by hand
        prefix += "".join(f"#define {k} {v}\n" for k, v in loader.devdax_size_args().items())
    if name == "devdax.c":
        prefix += "#define FEATURE_DEVDAX 1\n"
    source = prefix + loader.source_text(name, loader.probes_dir(), set())
    os.environ.update(headers.ensure_headers().bcc_env())
    b = bcc.BPF(text=source, cflags=["-Wno-macro-redefined", "-Wno-unused-function"])
    try:
        fns = [line.split("(")[0].split()[-1] for line in source.splitlines()
               if line.startswith("int on_")]
        for fn in fns:
            kind = bcc.BPF.KPROBE if name == "devdax.c" else bcc.BPF.TRACEPOINT
            b.load_func(fn, kind)        # the verifier accepts each program of the file
        assert b["epoch"] is not None and b["lost"] is not None
    finally:
        b.cleanup()
