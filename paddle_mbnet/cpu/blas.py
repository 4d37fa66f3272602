"""Let the Intel MKL inside paddle's CPU wheel run its AVX2 code on AMD CPUs.

Why: paddle's CPU wheels do their matrix products (conv2d, matmul, linear) in the MKL build
they ship (``paddle/libs/libmklml_intel.so``). That MKL chooses its code path by CPU *vendor*:
on an AMD CPU it takes a generic path even when the CPU has AVX2 and FMA, and every paddle GEMM
runs several times slower than the hardware allows (measured in docs/performance.md).
``MKL_DEBUG_CPU_TYPE=5`` is MKL's own switch for its AVX2 path; this MKL honours it (newer MKL
releases dropped it, and also no longer need it).

MKL reads the variable once, at its first call, so it has to be in the environment before
paddle's first matrix product: ``import paddle_mbnet`` sets it (see ``__init__``), and child
processes inherit it. It is set only on AMD CPUs that have AVX2 and FMA, never over a value the
user chose; ``PADDLE_MBNET_MKL=default`` leaves MKL alone. On Intel CPUs nothing changes.
"""
from __future__ import annotations

import os

_VAR, _AVX2 = "MKL_DEBUG_CPU_TYPE", "5"
_state = {"set_here": False}


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read(16384)  # the first processor's block is enough
    except OSError:  # not Linux: leave MKL's own choice
        return ""


def wants_avx2_switch(cpuinfo: str, environ) -> bool:
    """Whether MKL should be told to use AVX2: an AMD CPU with AVX2 + FMA, and nobody chose otherwise."""
    if environ.get("PADDLE_MBNET_MKL", "") == "default" or _VAR in environ:
        return False
    vendor = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("vendor_id")), "")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return vendor == "AuthenticAMD" and "avx2" in flags and "fma" in flags


def use_avx2_mkl_on_amd() -> bool:
    """Set MKL_DEBUG_CPU_TYPE=5 for this process and its children when it helps; returns whether it did."""
    if not _state["set_here"] and wants_avx2_switch(_read_cpuinfo(), os.environ):
        os.environ[_VAR] = _AVX2
        _state["set_here"] = True
    return _state["set_here"]


def describe() -> str:
    if _state["set_here"]:
        return f"MKL on its AVX2 path ({_VAR}={_AVX2} for this AMD CPU; PADDLE_MBNET_MKL=default turns it off)"
    if _VAR in os.environ:
        return f"{_VAR}={os.environ[_VAR]} (set outside paddle_mbnet)"
    return "MKL picks its own code path"
