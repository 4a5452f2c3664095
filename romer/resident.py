"""Resident memory that loading a checkpoint and programming a chip leave behind on a CPU, given back to the system.

transformers loads safetensors through a private memory map. Parameters whose dtype and layout match the file stay
views of that map; the rest are copies, built by reading the map (each family's per-expert tensors, fused into one
3-D parameter per layer). The pages those copies were read from stay mapped and resident as file pages after loading:
on OLMoE-1B-7B in bfloat16 about 12 GB beside the 12.9 GB of weights, counted in the process's resident set until the
kernel reclaims them. `release_checkpoint_pages` asks the kernel to reclaim every page of a mapped checkpoint file that
no live parameter or buffer lies in, and `paging_out_checkpoints` does so for every such page twice a second while a
checkpoint loads (madvise MADV_PAGEOUT: a hint that never loses data; a clean file page is read again from the file
if it is touched, and on anonymous memory without swap it does nothing, so a mapping that changed meanwhile is safe).
`keep_heap_small` and `trim_heap` make glibc give freed blocks back. Linux only; elsewhere every function is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from torch import nn

MADV_PAGEOUT = 21  # Linux 5.4: reclaim these pages now; clean file pages are read again on access, nothing is lost


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library (glibc: madvise, mallopt, malloc_trim), loaded once (trim_heap runs on hot paths), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.malloc_trim, libc.mallopt  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _mapped_regions(suffix: str) -> list[tuple[int, int]]:
    """(begin, end) of every private mapping of a file whose name ends with `suffix`."""
    regions = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[-1].endswith(suffix) and fields[1].endswith("p"):
            begin, end = (int(x, 16) for x in fields[0].split("-"))
            regions.append((begin, end))
    return regions


def _live_ranges(model: nn.Module) -> list[tuple[int, int]]:
    page = mmap.PAGESIZE
    ranges = []
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type != "cpu":
            continue
        storage = tensor.untyped_storage()
        begin = storage.data_ptr()
        ranges.append((begin // page * page, -(-(begin + storage.nbytes()) // page) * page))
    return sorted(ranges)


def release_checkpoint_pages(model: nn.Module, suffix: str = ".safetensors") -> int:
    """Drop the resident pages of mapped `suffix` files outside every live CPU tensor of `model`; the bytes released
    from the mappings (0 where the system offers no way)."""
    libc = _libc()
    if libc is None:
        return 0
    live = _live_ranges(model)
    released = 0
    for begin, end in _mapped_regions(suffix):
        cursor = begin
        for low, high in live:
            if high <= cursor or low >= end:
                continue
            if low > cursor:
                libc.madvise(cursor, low - cursor, MADV_PAGEOUT)
                released += low - cursor
            cursor = max(cursor, high)
        if cursor < end:
            libc.madvise(cursor, end - cursor, MADV_PAGEOUT)
            released += end - cursor
    return released


@contextmanager
def paging_out_checkpoints(suffix: str = ".safetensors", every_s: float = 0.5) -> Iterator[None]:
    """While the block runs (a checkpoint loading), page out the mapped `suffix` files' pages every `every_s`: the
    fused copies are built from pages read once, which would otherwise stay resident until the load ends (OLMoE-1B-7B
    in bfloat16: up to 8 GB of file pages beside the weights being built)."""
    libc = _libc()
    if libc is None:
        yield
        return
    done = threading.Event()

    def page_out() -> None:
        while not done.wait(every_s):
            for begin, end in _mapped_regions(suffix):
                libc.madvise(begin, end - begin, MADV_PAGEOUT)

    pager = threading.Thread(target=page_out, name="romer-pager", daemon=True)
    pager.start()
    try:
        yield
    finally:
        done.set()
        pager.join()


M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 2**20


def keep_heap_small() -> None:
    """Blocks of 1 MiB and more come from mappings of their own, given back to the system when freed. glibc's default
    threshold rises to 32 MiB as a process frees large blocks; after that, the activations of a block-wise fit and the
    scratch of programming stay in the heap once freed, in pieces no trim gives back: one OLMoE-1B-7B layer in
    bfloat16 (1.25 GB of weights, 2.2 GB of live tensors) held 7.5 GB of anonymous memory during its fit by default,
    4.3 GB with this threshold. Called by `load_model` on a CPU and by the command line; process-wide."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def _trimming() -> bool:
    """`ROMER_TRIM_HEAP=0` turns the trims off (for measuring what they cost: at one OLMoE-1B-7B layer nothing,
    150.2 s against 150.7 s for a chip's outlier-retune; at sixteen layers not yet measured)."""
    return os.environ.get("ROMER_TRIM_HEAP", "1") != "0"


def trim_heap() -> None:
    """Give the heap's free pages back to the system. Programming a fused expert tensor allocates and frees an expert
    slot's float32 scratch (8-32 MiB blocks, two slots at a time, in the worker threads' own heaps); glibc keeps such
    blocks once its mmap threshold has risen, and tensor after tensor the kept scratch grew to 7 GB above the weights
    while one OLMoE-1B-7B chip was programmed in bfloat16. Called after each expert slot programmed, each block-wise
    fit step and each pass over the model."""
    libc = _libc()
    if libc is not None and _trimming():
        libc.malloc_trim(0)
