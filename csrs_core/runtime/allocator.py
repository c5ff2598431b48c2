"""The C allocator of a sampling or training process: freed tensor memory stays in the process.

With glibc's defaults a block larger than its mmap threshold is mapped from the kernel when a tensor
needs it and unmapped when the tensor is freed, so every forward pass maps its activation buffers
afresh (4 MiB each for ResNet-20 at batch 128) and pays a page fault per 4 KiB page of them. glibc
raises that threshold by itself only after a large block has been freed, so a process that happened
to free a large block first (a batch-512 measurement) ran stage A 20-30 % faster than one planned
from the tuning cache, which spent a fifth of its time in the kernel."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 << 20   # blocks up to this size come from the heap (glibc's largest allowed on 64-bit)
TRIM_THRESHOLD = 256 << 20  # freed memory kept at the top of the heap before any is returned


def retain_freed_memory() -> bool:
    """Serve blocks up to MMAP_THRESHOLD from the heap and keep up to TRIM_THRESHOLD of freed memory
    there, for the rest of this process. Returns whether it applied (False where the C library is
    not glibc: nothing is changed there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, their own policy stays
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
