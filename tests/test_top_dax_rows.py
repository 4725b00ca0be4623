"""top -p's DAX rows (interval.Model._vma_rows) take huge/small from the page tables, never from
smaps (which counts no DAX pages before 6.15), and are never hidden: an unknown size is None."""
from pmemtrace import aggregate, interval
from pmemtrace.errors import KernelFeatureMissing
from pmemtrace.vma_sampler import VmaDelta

MIB = 1 << 20
DAX = VmaDelta(0x7f0000000000, 0x7f0004000000, "rw-s", "/mnt/ext4/f", 0, 0, 0, 0, True, frozenset({"sf"}),
               (259, 1), 12)


class OneSample:
    def __init__(self, deltas):
        self.deltas = deltas

    def sample(self):
        return self.deltas


def rows(huge_small):
    m = interval.Model(pid=5, vma_sampler=OneSample([DAX]), huge_small=huge_small)
    m.dax_kind[(DAX.dev, DAX.inode)] = "fsdax"
    return m._vma_rows(aggregate.ProbeCounts())


def test_dax_row_sizes_from_the_page_tables():
    seen = []
    r = rows(lambda pid, s, e: seen.append((pid, s, e)) or (64 * MIB, 0))
    assert seen == [(5, DAX.start, DAX.end)]
    assert [(v["start"], v["huge_bytes"], v["small_bytes"], v["dax"]) for v in r] == [(DAX.start, 64 * MIB, 0, "fsdax")]


def test_dax_row_unknown_size_is_shown_as_none():
    r = rows(lambda pid, s, e: (None, None))
    assert [(v["huge_bytes"], v["small_bytes"]) for v in r] == [(None, None)]


def test_dax_row_unreadable_page_tables_are_unknown_not_smaps_zero():
    def fail(pid, s, e):
        raise KernelFeatureMissing("no pagemap")
    r = rows(fail)
    assert [(v["huge_bytes"], v["small_bytes"]) for v in r] == [(None, None)]
