"""Where the fault address is kept between tracepoints: one array indexed by thread id on
every kernel (probes/stash.h), its word checked against the thread's high bits."""
import os

from pmemtrace import loader


def test_stash_word_fits_every_thread_id():
    """tid / STASH_ENTRIES must stay below the valid bit that sits in a page address's free
    low bits, for the largest pid_max Linux allows and the smallest page (4 KiB)."""
    entries = loader.MAP_SIZES["STASH_ENTRIES"]
    assert loader.stash_fits(entries, 12)
    assert not loader.stash_fits(entries + 1, 12)           # not a power of two: the mask is wrong
    assert not loader.stash_fits(1024, 12)                  # 4096 high-bit values > 2048
    assert loader.stash_fits(2048, 12)


def test_no_task_storage_anywhere():
    """One mechanism on 5.10 and 7.2 alike: nothing needs BPF task storage or task BTF."""
    for name in ("faults.c", "devdax.c", "stash.h"):
        with open(os.path.join(loader.probes_dir(), name)) as f:
            code = "\n".join(line for line in f if not line.lstrip().startswith(("*", "/*")))
        assert "task_storage" not in code and "bpf_get_current_task_btf" not in code, name
