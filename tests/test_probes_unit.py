"""probes/*.c and the loader's side of them, without root: one source per shared constant,
each file standalone (its own includes), every map bounded with an eviction rule."""
import re
from pathlib import Path

import pytest

from pmemtrace import aggregate, loader

PROBES = Path(loader.probes_dir())
FILES = sorted(p.name for p in PROBES.iterdir() if p.suffix in (".c", ".h"))
MAP_DECL = re.compile(r'BPF_(HASH|ARRAY|TABLE|TASK_STORAGE|PERF_OUTPUT)\(\s*("(\w+)",\s*)?([^;]*)\);')


def declared_maps():
    """name -> (kind, key type text) of every map in probes/."""
    out = {}
    for name in FILES:
        for m in MAP_DECL.finditer((PROBES / name).read_text()):
            macro, table_kind, args = m.group(1), m.group(3), [a.strip() for a in m.group(4).split(",")]
            if macro == "TABLE":
                out[args[2]] = (table_kind, args[0])
            else:
                out[args[0]] = (macro.lower(), args[1] if len(args) > 1 else "")
    return out


@pytest.mark.parametrize("name", FILES)
def test_spdx_line_first(name):
    assert (PROBES / name).read_text().splitlines()[0] == "/* SPDX-License-Identifier: Apache-2.0 */"


def test_shared_constants_come_from_python():
    d = loader.shared_defines()
    assert [d[f"DAX_{o.upper()}"] for o in aggregate.DAX_OUTCOMES] == list(range(len(aggregate.DAX_OUTCOMES)))
    assert d["LOST_REASONS"] == len(aggregate.LOST_REASONS)
    assert {d[f"MADV_{n}_NR"] for n in aggregate.MADVISE_NAMES.values()} == set(aggregate.MADVISE_NAMES)
    assert d["PMD_SHIFT_BITS"] == 21 and d["PAGE_SHIFT_BITS"] == 12
    text = "".join((PROBES / n).read_text() for n in FILES)
    # no second copy of a shared fact in C: no outcome enum, no literal page / PMD masks or shifts
    assert "enum dax_outcome" not in text
    assert not re.search(r"0xfff|>> ?(9|12|21)\b|\b4095\b|\b(14|15|25)\b.*MADV", text)
    # every LOST_* / DAX_* / MADV_* / EVENT_* the probes use is generated
    used = set(re.findall(r"\b((?:LOST|DAX|MADV|EVENT)_[A-Z_]+)\b", text))
    generated = set(d) | set(loader.MAP_SIZES)
    assert used - generated == set()


def test_vm_fault_names_say_they_hold_masks():
    text = "".join((PROBES / n).read_text() for n in FILES)
    assert "VM_FAULT_" in text and not re.search(r"VM_FAULT_\w+_BIT", text)
    assert {"VM_FAULT_NOPAGE_MASK", "VM_FAULT_FALLBACK_MASK", "VM_FAULT_NEEDDSYNC_MASK"} <= set(
        re.findall(r"VM_FAULT_\w+", text))


@pytest.mark.parametrize("name", [n for n in FILES if n.endswith(".c")])
def test_each_probe_file_includes_what_it_uses(name):
    """Expanded with its own includes only, a file declares every map and helper it calls."""
    text = loader.source_text(name, str(PROBES), set())
    assert "#include \"" not in text
    calls = set(re.findall(r"\b(\w+)\.(?:lookup|lookup_or_try_init|update|delete|task_storage_get|perf_submit)\(",
                           text))
    declared = {m.group(4).split(",")[2 if m.group(1) == "TABLE" else 0].strip() for m in MAP_DECL.finditer(text)}
    assert calls - declared == set()
    for helper in ("dax_count", "count_lost", "add_or_lose", "current_epoch", "pid_wanted"):
        if re.search(rf"\b{helper}\(", text):
            assert re.search(rf"static __always_inline \w+ {helper}\(", text), helper


def test_headers_are_included_once_per_program():
    seen: set = set()
    first = loader.source_text("dax.c", str(PROBES), seen)
    second = loader.source_text("devdax.c", str(PROBES), seen)
    assert first.count("BPF_HASH(dax_counts") == 1 and "BPF_HASH(dax_counts" not in second
    assert second.count("BPF_ARRAY(stash") == 1


def test_every_map_has_a_bound_and_an_eviction_rule():
    """Hash maps: either a count map drained by epoch (its key carries the epoch) or an LRU
    map; arrays are fixed; both kinds report occupancy (loader.COUNT_MAPS / LRU_MAPS)."""
    maps = declared_maps()
    text = "".join((PROBES / n).read_text() for n in FILES)
    hashes = {n for n, (kind, _) in maps.items() if kind in ("hash", "lru_hash")}
    assert hashes == set(loader.COUNT_MAPS) | set(loader.LRU_MAPS)
    for name in loader.LRU_MAPS:
        assert maps[name][0] == "lru_hash", name
    for name in loader.COUNT_MAPS:
        kind, key = maps[name]
        assert kind == "hash"
        struct = re.search(rf"{re.escape(key)} \{{([^}}]*)\}}", text)
        assert struct and re.search(r"\bu32 epoch;", struct.group(1)), (name, key)
    for size in set(loader.COUNT_MAPS.values()) | set(loader.LRU_MAPS.values()):
        assert loader.MAP_SIZES[size] > 0


def test_merge_adds_lost_reasons():
    a = aggregate.ProbeCounts(lost=2, lost_by={"thp_comm_full": 2})
    b = aggregate.ProbeCounts(lost=3, lost_by={"thp_comm_full": 1, "perf": 2},
                              maps={"thp_faults": {"entries": 3, "max_entries": 8}})
    aggregate.merge(a, b)
    assert a.lost == 5 and a.lost_by == {"thp_comm_full": 3, "perf": 2}
    assert a.maps == {"thp_faults": {"entries": 3, "max_entries": 8}}
