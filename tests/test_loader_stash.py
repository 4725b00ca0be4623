"""Where the fault address is stashed between tracepoints: BPF task storage (5.11+) or, on
older kernels (5.10: no BPF_MAP_TYPE_TASK_STORAGE in BTF), a bounded LRU hash by thread id."""
import os

from pmemtrace import loader


def test_task_storage_when_btf_has_it():
    missing = {}
    assert loader.stash_defines({"BPF_MAP_TYPE_TASK_STORAGE_VALUE": 29}, missing) == ["#define HAVE_TASK_STORAGE 1"]
    assert missing == {}


def test_lru_hash_and_a_note_without_task_storage():
    missing = {}
    defines = loader.stash_defines({"BPF_MAP_TYPE_TASK_STORAGE_VALUE": -1}, missing)
    assert defines == []          # the LRU branch of stash.h, sized by MAP_SIZES like every map
    assert "STASH_ENTRIES" in loader.MAP_SIZES and loader.LRU_MAPS["stash"] == "STASH_ENTRIES"
    assert "5.11" in missing["bpf:task_storage"] and "LRU hash" in missing["bpf:task_storage"]


def test_every_task_storage_use_is_guarded():
    """No task_storage_get / bpf_get_current_task_btf outside #ifdef HAVE_TASK_STORAGE."""
    for name in ("faults.c", "devdax.c", "stash.h"):
        with open(os.path.join(loader.probes_dir(), name)) as f:
            depth, guarded = 0, False
            for line in f:
                s = line.strip()
                if s.startswith("#ifdef HAVE_TASK_STORAGE"):
                    guarded, depth = True, 1
                    continue
                if guarded and s.startswith("#if"):
                    depth += 1
                elif guarded and s.startswith("#endif"):
                    depth -= 1
                    guarded = depth > 0
                elif guarded and s.startswith("#else") and depth == 1:
                    guarded = False
                    depth = 0
                if s.startswith("*") or s.startswith("/*"):
                    continue
                if "task_storage_get" in s or "bpf_get_current_task_btf" in s or "BPF_TASK_STORAGE(" in s:
                    assert guarded, f"{name}: unguarded: {s}"
