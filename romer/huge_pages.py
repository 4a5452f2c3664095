"""Transparent huge pages for PyTorch's large CPU tensors, asked for before torch allocates anything.

Every tensor of 1 MiB and more is a mapping of its own (`romer.resident.keep_heap_small`), so each is faulted in page
by page when first written: 4 KiB at a time, the kernel zeroing each. PyTorch's CPU allocator aligns blocks of 2 MiB and
more to 2 MiB and advises huge pages for them when `THP_MEM_ALLOC_ENABLE=1`, 512 times fewer faults. It reads that
variable once, at its first allocation, so it is set here, when romer is imported, unless the user set it already
(`THP_MEM_ALLOC_ENABLE=0` turns it off). Measured with `python bench/huge_pages.py` on this project's 2-core machine:
writing 300 fresh 64 MiB tensors took 5.22 s (7.5 s of kernel time) with 4 KiB pages and 2.28 s (2.8 s) with huge
pages; beside a 16 GiB resident tensor 6.48 s against 1.96 s. Needs the kernel's transparent_hugepage mode `madvise`
or `always` (/sys/kernel/mm/transparent_hugepage/enabled); under `never` nothing changes.
"""

from __future__ import annotations

import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def ask_for_huge_pages() -> None:
    os.environ.setdefault(VARIABLE, "1")


def huge_pages_asked() -> bool:
    return os.environ.get(VARIABLE, "0") not in ("0", "")
