"""Flush denormal floats to zero while training on the CPU.

Why: Adam's moment estimates of weights that get no gradient (in a trained MobileNetV1, many of the last blocks'
1x1 weights and of the classifier's) shrink geometrically into float32's denormal range (below 1.2e-38). x86
CPUs compute with denormal operands through a slow microcode path, so the optimizer's update grows slower as more
of its state turns denormal, and so do a run's later epochs (measured in docs/performance.md). Values that small
change no update that matters (Adam divides by sqrt(v) + 1e-8); PyTorch offers the same switch as
``torch.set_flush_denormal(True)``.

``flushed()`` sets the CPU's flush-to-zero and denormals-are-zero bits on the calling thread and paddle's OpenMP
pool for the length of a block (a training run) and puts the previous mode back after it, through the project's
operator library (float_mode.cc): the bits are per thread, so Python cannot set them. It builds that library on
first use, also for runs that use paddle's kernels. ``PADDLE_MBNET_DENORMALS=keep`` turns flushing off; without
the operators (no compiler) denormals are kept, and ``describe()`` says why.
"""
from __future__ import annotations

import contextlib
import os

from . import ops

_state = {"reason": "not requested"}  # why denormals are kept, for describe()


def _can_flush() -> bool:
    if os.environ.get("PADDLE_MBNET_DENORMALS", "") == "keep":
        _state["reason"] = "PADDLE_MBNET_DENORMALS=keep"
        return False
    if not ops.buildable():
        _state["reason"] = "the project's CPU operators did not build"
        return False
    return True


def _cache_numpy_float_limits() -> None:
    """numpy works out a float type's limits on first use of ``np.finfo`` (np.percentile uses it) and, with the
    bits set, finds the smallest subnormal to be zero and warns; computed now, they are cached as IEEE has them."""
    import numpy as np

    for dtype in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(dtype)


def flush_denormals() -> bool:
    """Flush on this thread and the pool until ``keep_denormals()``; returns whether every thread took it."""
    if not _can_flush():
        return False
    _cache_numpy_float_limits()
    _, flushing, differing = ops.float_mode("flush")
    if flushing and not differing:
        return True
    ops.float_mode("ieee")  # all or nothing: the header must not claim a setting half the threads lack
    _state["reason"] = (f"{differing} OpenMP threads did not take the setting" if flushing
                        else "not implemented for this CPU architecture")
    return False


def keep_denormals() -> None:
    """IEEE denormals again on this thread and the pool."""
    if ops.built():
        ops.float_mode("ieee")
    _state["reason"] = "turned off"


@contextlib.contextmanager
def flushed(enabled: bool = True):
    """Flush inside the block (yields whether it took), then restore the mode this thread had before: a process
    that trains and then goes on (a notebook, the test suite) gets back the arithmetic it had."""
    if not enabled or not _can_flush():
        yield False
        return
    was_flushing = ops.float_mode("read")[0]
    took = flush_denormals()
    try:
        yield took
    finally:
        if took and not was_flushing:  # a failed flush is already undone, and its reason stays for describe()
            keep_denormals()
            _state["reason"] = "not requested"


def describe() -> str:
    if ops.built() and ops.float_mode("read")[1]:
        return "denormal floats flushed to zero (PADDLE_MBNET_DENORMALS=keep turns it off)"
    return f"denormal floats kept ({_state['reason']})"
