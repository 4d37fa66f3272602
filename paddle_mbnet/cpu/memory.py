"""Let glibc's malloc reuse freed memory instead of handing large blocks back to the OS.

Why: paddle's CPU tensors come from malloc, and glibc serves large blocks with fresh mmap'd
pages that it unmaps again on free, and gives the free top of its heap back to the OS. Every
large activation and gradient is then page-faulted in anew at every step (a 64 MB paddle
tensor freed and created again faults in all its 16384 pages; tests/test_cpu_memory.py), which
costs a training step a measurable share of its time (docs/performance.md). PyTorch users get the
same advice in the form of jemalloc/tcmalloc; mallopt needs no extra library.

``keep_freed_memory()`` sets M_MMAP_MAX = 0 (no mmap'd blocks) and a 2 GB trim threshold, so a
training process keeps its peak footprint instead of returning memory between steps. It acts on
glibc only (Linux); ``PADDLE_MBNET_MALLOC=default`` turns it off.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # from glibc's malloc.h
_state = {"active": False}


def keep_freed_memory() -> bool:
    """Apply the setting once for this process; returns whether it is active."""
    if _state["active"]:
        return True
    if os.environ.get("PADDLE_MBNET_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave malloc alone
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _state["active"] = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _state["active"]


def describe() -> str:
    return ("malloc keeps freed memory (mallopt M_MMAP_MAX=0; PADDLE_MBNET_MALLOC=default turns it off)"
            if _state["active"] else "malloc as the system sets it")
