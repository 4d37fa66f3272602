"""What every tool does before paddle starts: fix the CPU thread count of paddle's OpenMP and MKL pools."""
import os


def set_threads(n: int) -> int:
    """Set OMP_NUM_THREADS and MKL_NUM_THREADS to ``n`` (0 = every available core); returns the count."""
    from paddle_mbnet.training.config import resolve_threads

    n = resolve_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    return n
