"""Page-table reader: which pages of a range are present, and mapped by which page size.

Two sources, one result type (``PageRun``: a run of pages in the same state):

* ``PAGEMAP_SCAN`` (Linux 6.7+): an ioctl on /proc/PID/pagemap that walks the page
  tables and returns *merged* runs of pages with equal categories (PAGE_IS_*). It is
  the only interface that says whether a page is mapped by a PMD leaf (THP, DAX) or
  by a PTE: PAGE_IS_HUGE is set for PMD-mapped THP / DAX and for hugetlb entries.
* /proc/PID/pagemap (one 64-bit word per page) + /proc/kpageflags (one word per PFN),
  for older kernels. It knows present / swapped / soft-dirty / file and the folio type
  behind each PFN, but not the mapping size of a THP (a PMD-order folio may be mapped
  by PTEs) nor of DAX memory: those facts come back as ``None`` (unknown), never guessed.

The ioctl layer (``scan_regions``) returns raw ``(start, end, categories)`` triples;
``classify`` turns them into ``PageRun``s given what the caller knows about the VMA
(``VmaFacts``: backing kind, hugetlb page size). ``facts_from_smaps`` derives those facts
from a procfs.Smaps block.

Page size of a run (``PageRun.page_size``, bytes; None for absent pages):
  hugetlb VMA -> the VMA's KernelPageSize from smaps (the hstate size: 2 MiB, 1 GiB ...);
  PAGE_IS_HUGE in any other VMA -> the PMD size (hpage_pmd_size, 2 MiB on x86-64);
  otherwise the base page size.
A PUD leaf outside hugetlb (1 GiB device-DAX) is never reported as such: PAGEMAP_SCAN (and
the pagemap read) register no PUD callback, and mm/pagewalk.c then calls split_huge_pud()
before walking the PMDs below, which for DAX unmaps the PUD: the range reads as absent and
the next access faults it in again. So 1G is only reported for 1 GiB hugetlb VMAs.

Layout (a package; every name is re-exported here, so ``pagemap.X`` is the API):
  uapi.py        PAGE_IS_*, the PAGEMAP_SCAN ioctl, pagemap word bits, KPF_* flags
  runs.py        PageRun, VmaFacts, classify, facts_from_smaps
  scanner.py     PageMap (the open file) and the PAGEMAP_SCAN reader
  words.py       pagemap words + kpageflags: the fallback reader, DAX residency
"""
from .uapi import (  # noqa: F401  (re-exported: pagemap.X is the API)
    CATEGORY_NAMES, KPAGEFLAGS, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_HUGE, KPF_NOPAGE, KPF_THP,
    KPF_ZERO_PAGE, PAGEMAP_MAGIC, PAGEMAP_SCAN, PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_HUGE, PAGE_IS_PFNZERO,
    PAGE_IS_PRESENT, PAGE_IS_SOFT_DIRTY, PAGE_IS_SWAPPED, PAGE_IS_WPALLOWED, PAGE_IS_WRITTEN, PM_FILE,
    PM_GUARD_REGION, PM_PFN_MASK, PM_PRESENT, PM_SOFT_DIRTY, PM_SWAP, PM_UFFD_WP, PageRegion, PmScanArg,
    SOURCE_FALLBACK, SOURCE_SCAN, _CATEGORY_GENERATIONS, _ioc_layout, ioc, iowr,
)
from .runs import (  # noqa: F401  (re-exported: pagemap.X is the API)
    PageRun, VmaFacts, _STATE_FIELDS, _page_run, classify, facts_from_smaps, merge_regions, merge_runs,
    region_state, run_page_size,
)
from .scanner import (  # noqa: F401  (re-exported: pagemap.X is the API)
    PageMap, _exited, _ioctl_scan, _open_pagemap, _pagemap, _pread_all, _require_scan, _scan_errors,
    _sorted_disjoint, _vmas_in, _words, default_vec_len, huge_small_bytes, huge_small_many, present_regions, process_alive,
    scan, scan_regions, scan_regions_fd, scan_split, scan_supported, soft_dirty_tracked, split_huge_small,
    supported_categories,
)
from .words import (  # noqa: F401  (re-exported: pagemap.X is the API)
    DaxResidency, FALLBACK_CHUNK, KPF_GAP, SOURCE_PAGEMAP_PRESENT, _chunks, _dax_fallback_chunk,
    _read_kpageflags, _run_from_state, _zero_pfns, dax_candidate_blocks, dax_fallback_classify,
    dax_huge_small, dax_pmd_sets_file, dax_residency_from_words, dax_residency_many, dax_size_classes,
    fallback_classify, fallback_page_state, fallback_range, fallback_regions, pfn_spans, scan_fallback,
)

from ..kernel import PAGE_SIZE, pmd_size  # noqa: F401  (as before the split)
