"""Denormal floats read and written as zero inside ``flushed()``, on the calling thread and in paddle's OpenMP pool,
and IEEE arithmetic again after it. Values are built and checked as bit patterns: with denormals-are-zero set,
numpy's own comparisons on this thread would read a denormal as zero."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from helpers import ROOT
from paddle_mbnet.cpu import denormals
from paddle_mbnet.cpu.ops import custom_ops_available

pytestmark = pytest.mark.skipif(not custom_ops_available(), reason="the project's CPU operators did not build")

DENORMAL_BITS = 0x000AE398  # a float32 of about 1e-39, below the smallest normal (1.18e-38)


def _denormals(count):
    return paddle.to_tensor(np.full(count, DENORMAL_BITS, np.uint32).view(np.float32))


def _bits(tensor):
    return tensor.numpy().ravel().view(np.uint32)


def test_flushed_zeroes_denormals_on_this_thread_and_restores_ieee_after(monkeypatch):
    monkeypatch.delenv("PADDLE_MBNET_DENORMALS", raising=False)
    ieee_half = _bits(_denormals(64) * 0.5)  # paddle's elementwise kernel, on this thread
    assert ieee_half.all() and (ieee_half < DENORMAL_BITS).all()  # a smaller denormal, not zero
    with denormals.flushed() as took:
        assert took and "flushed to zero" in denormals.describe()
        assert not _bits(_denormals(64) * 0.5).any()
    assert (_bits(_denormals(64) * 0.5) == ieee_half).all()
    assert denormals.describe() == "denormal floats kept (not requested)"


# The depthwise operator spreads 16 channels over the pool's two threads; a 1x1 window multiplies by 0.5. Intel's
# OpenMP runtime would copy this thread's bits into the pool at each parallel region: KMP_INHERIT_FP_CONTROL=false
# turns that off, so the pool's threads flush only if the operator set their own bits.
POOL_CODE = f"""
import numpy as np, paddle
from paddle_mbnet.cpu import denormals
from paddle_mbnet.cpu.ops import depthwise_conv2d
paddle.base.core.set_num_threads(2)
images = paddle.to_tensor(np.full([2, 16, 4, 4], {DENORMAL_BITS}, np.uint32).view(np.float32))
def pool_half():
    return depthwise_conv2d(images, paddle.full([16, 1, 1, 1], 0.5), stride=1, padding=0).numpy().view(np.uint32)
print(int(pool_half().all()), denormals.flush_denormals(), int(pool_half().any()))
denormals.keep_denormals()
print(int(pool_half().all()))
"""


def _run(code, **env_vars):
    env = {key: value for key, value in os.environ.items() if key != "PADDLE_MBNET_DENORMALS"}
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS="2", **env_vars)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_the_pool_threads_flush_by_the_operator_not_by_inheritance():
    # IEEE before: every output a denormal; flushed: none nonzero; IEEE again after keep_denormals()
    assert _run(POOL_CODE, KMP_INHERIT_FP_CONTROL="false") == ["1", "True", "0", "1"]


def test_numpy_limits_stay_ieee_after_flushing():
    # a fresh process, so numpy has not met float64's limits yet; its warnings are errors
    code = ("import warnings; import numpy as np; from paddle_mbnet.cpu import denormals; "
            "print(denormals.flush_denormals()); warnings.simplefilter('error'); "
            "smallest = np.finfo(np.float64).smallest_subnormal; print(np.array(smallest).view(np.uint64))")
    assert _run(code) == ["True", "1"]


def test_the_environment_keeps_denormals():
    code = "from paddle_mbnet.cpu import denormals; print(denormals.flush_denormals()); print(denormals.describe())"
    assert _run(code, PADDLE_MBNET_DENORMALS="keep") == ["False", "denormal", "floats", "kept",
                                                           "(PADDLE_MBNET_DENORMALS=keep)"]


def test_a_failed_flush_is_undone_and_its_reason_outlives_the_block(monkeypatch):
    monkeypatch.delenv("PADDLE_MBNET_DENORMALS", raising=False)
    real = denormals.ops.float_mode

    def one_pool_thread_refuses(mode):
        before, after, _ = real(mode)
        return before, after, 1 if mode == "flush" else 0

    monkeypatch.setattr(denormals.ops, "float_mode", one_pool_thread_refuses)
    with denormals.flushed() as took:
        assert not took and not real("read")[1]  # all or nothing: this thread is back to IEEE too
    assert denormals.describe() == "denormal floats kept (1 OpenMP threads did not take the setting)"
