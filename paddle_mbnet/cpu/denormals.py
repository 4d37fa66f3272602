"""Flush denormal floats to zero while training on the CPU.

Why: Adam's moment estimates of weights that stop receiving gradient (the pointwise weights reading a channel that
ReLU has switched off, rows of the classifier) decay geometrically, and with beta2 = 0.999 they spend thousands of
steps in float32's denormal range (below 1.2e-38). x86 CPUs compute with denormal operands through a slow microcode
path, so the optimizer's update, cheap at the start of a run, grows several times slower as more of its state turns
denormal, and the training step slows down epoch after epoch (measured in docs/performance.md). Such values are
far below anything that changes an update (Adam divides by sqrt(v) + 1e-8), so reading and writing them as zero
changes no result that matters; PyTorch users get the same with ``torch.set_flush_denormal(True)``.

``flush_denormals()`` sets the CPU's FTZ and DAZ bits on the calling thread and on paddle's OpenMP pool through the
project's operator library (float_mode.cc). ``PADDLE_MBNET_DENORMALS=keep`` turns it off. Without the operators
(no compiler) it does nothing and says so in ``describe()``.
"""
from __future__ import annotations

import os

_state = {"active": False, "reason": "not requested"}


def flush_denormals() -> bool:
    """Apply the setting for this process (idempotent); returns whether it is active."""
    if _state["active"]:
        return True
    if os.environ.get("PADDLE_MBNET_DENORMALS", "") == "keep":
        _state["reason"] = "PADDLE_MBNET_DENORMALS=keep"
        return False
    from .ops import _load, set_float_mode

    if _load() is None:
        _state["reason"] = "the project's CPU operators did not build"
        return False
    _cache_numpy_float_limits()
    flushed, disagreeing = set_float_mode(True)
    _state["active"] = flushed and disagreeing == 0
    if not _state["active"]:
        _state["reason"] = "this CPU has no flush-to-zero switch" if not flushed else (
            f"{disagreeing} OpenMP threads kept denormals")
    return _state["active"]


def _cache_numpy_float_limits() -> None:
    """numpy works out a float type's limits on first use of ``np.finfo`` (np.percentile uses it) and, with the
    bits set, finds the smallest subnormal to be zero and warns; computed now, they are cached as IEEE has them."""
    import numpy as np

    for dtype in (np.float16, np.float32, np.float64, np.longdouble):
        np.finfo(dtype)


def keep_denormals() -> None:
    """Undo ``flush_denormals()`` (IEEE denormals again), for tests and comparisons."""
    from .ops import _load, set_float_mode

    if _load() is not None:
        set_float_mode(False)
    _state["active"], _state["reason"] = False, "turned off"


def describe() -> str:
    if _state["active"]:
        return "denormal floats flushed to zero (PADDLE_MBNET_DENORMALS=keep turns it off)"
    return f"denormal floats kept ({_state['reason']})"
