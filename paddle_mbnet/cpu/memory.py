"""Let glibc's malloc reuse freed memory instead of handing large blocks back to the OS.

Why: paddle's CPU tensors come from malloc, and glibc serves large blocks with fresh mmap'd
pages that it unmaps again on free, and gives the free top of its heap back to the OS. Every
large activation and gradient is then page-faulted in anew at every step (a 64 MB paddle
tensor freed and created again faults in all its 16384 pages; tests/test_cpu_memory.py), which
costs a training step a measurable share of its time (docs/performance.md). PyTorch users get the
same advice in the form of jemalloc/tcmalloc; mallopt needs no extra library.

``keep_freed_memory()`` sets M_MMAP_MAX = 0 (no mmap'd blocks) and a 2 GB trim threshold, so a
training process keeps its peak footprint instead of returning memory between steps. It acts on
glibc only (Linux); ``PADDLE_MBNET_MALLOC=default`` turns it off. ``release_freed_memory()`` hands the kept
pages back when a process's heavy work is over.
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


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc's ``malloc_trim``); returns whether it ran.

    For a process whose heavy work is done but which lives on, such as compare.py once its timing is over and its
    training runs go on in child processes: with the setting above it would otherwise keep its peak footprint."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim(0)
    return True


def describe() -> str:
    return ("malloc keeps freed memory (mallopt M_MMAP_MAX=0; PADDLE_MBNET_MALLOC=default turns it off)"
            if _state["active"] else "malloc as the system sets it")
