"""Allocator settings that keep numpy's large per-step temporaries from costing page faults."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Makes glibc serve arrays below `mmap_threshold` from the heap and keep up to `trim_threshold` freed.

    A batched step allocates and frees tens of MB of temporaries (N=20, E=256); with glibc's defaults
    much of it goes back to the OS and returns as fresh zeroed pages every step, which halves the
    engine's speed. Call once per process (an explorer's or a benchmark's start); it is process-wide
    and keeps at most `trim_threshold` bytes of freed memory around. No-op on non-glibc systems.

    Returns:
      whether the settings were applied.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _done
