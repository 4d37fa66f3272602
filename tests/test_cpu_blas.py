"""cpu_blas: MKL's AVX2 switch is set on AMD CPUs with AVX2 only, never over the user's choice, and is exact."""
import os
import subprocess
import sys

import pytest

from helpers import ROOT
from paddle_mbnet.cpu.blas import wants_avx2_switch

AMD = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
INTEL = AMD.replace("AuthenticAMD", "GenuineIntel").replace("AMD EPYC", "Intel Xeon")
OLD_AMD = AMD.replace(" fma avx2", "")


@pytest.mark.parametrize("cpuinfo, environ, expected", [
    (AMD, {}, True),
    (INTEL, {}, False),  # MKL already takes its best path on Intel
    (OLD_AMD, {}, False),  # no AVX2: forcing that path would crash
    (AMD, {"MKL_DEBUG_CPU_TYPE": "2"}, False),  # the user's own choice stands
    (AMD, {"PADDLE_MBNET_MKL": "default"}, False),
    ("", {}, False),  # no /proc/cpuinfo
])
def test_switch_only_where_it_helps(cpuinfo, environ, expected):
    assert wants_avx2_switch(cpuinfo, environ) is expected


# In a fresh process: what importing paddle_mbnet sets, and a GEMM through paddle's MKL against numpy.
CODE = """
import os
import numpy as np
import paddle_mbnet, paddle
rng = np.random.default_rng(0)
a, b = rng.standard_normal((96, 200), dtype="float32"), rng.standard_normal((200, 70), dtype="float32")
err = np.abs(paddle.matmul(paddle.to_tensor(a), paddle.to_tensor(b)).numpy() - a @ b).max()
print(os.environ.get("MKL_DEBUG_CPU_TYPE", "unset"), err < 1e-3)
"""


def _run(**env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "PADDLE_MBNET_MKL")}
    env.update(PYTHONPATH=ROOT, **env_extra)
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads the CPU from /proc/cpuinfo")
def test_import_sets_the_switch_on_this_machine_and_results_stay_exact():
    with open("/proc/cpuinfo") as f:
        expected = "5" if wants_avx2_switch(f.read(16384), {}) else "unset"
    assert _run() == [expected, "True"]
    assert _run(PADDLE_MBNET_MKL="default") == ["unset", "True"]
    assert _run(MKL_DEBUG_CPU_TYPE="0") == ["0", "True"]
