"""The engine process's heap, on glibc (no-ops elsewhere).

Two opposite needs: a running engine should keep the memory it frees (a decode step
gathers its K/V into new buffers, tens of MiB at 64 calls of 512 tokens; glibc returned
each freed buffer to the OS and the next step faulted every page back in: 380,000 faults
and 3x the step at that size; vLLM's CPU backend preloads tcmalloc for the same reason;
buffers above glibc's largest threshold, 32 MiB, still come from the OS, so a step's
layers share theirs, engine/model/attention.py), while a model whose weights were just
replaced by packed copies should give the originals back at once.
"""

from __future__ import annotations

import ctypes
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def keep_freed_memory() -> None:
    """Have glibc keep freed heap memory instead of returning it to the OS."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest: buffers below it use the heap
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and the heap keeps up to 1 GiB of free memory


def return_freed_memory() -> None:
    """Give the heap's free pages back to the OS now."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
