"""Lets ``python tools/x.py`` import paddle_mbnet from the repo root without installing it."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def set_threads(n: int) -> int:
    """Fix the CPU thread count before paddle starts its pools (0 = every available core); returns it."""
    from paddle_mbnet.config import resolve_threads

    n = resolve_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    return n
