"""flush_denormals: denormal floats read and written as zero on the main thread and in paddle's OpenMP pool."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from helpers import ROOT
from paddle_mbnet.cpu import denormals
from paddle_mbnet.cpu.ops import custom_ops_available, depthwise_conv2d, set_float_mode

pytestmark = pytest.mark.skipif(not custom_ops_available(), reason="the project's CPU operators did not build")

DENORMAL = 1e-39  # below float32's smallest normal, 1.18e-38


@pytest.fixture
def ieee_afterwards():
    yield
    denormals.keep_denormals()


def _main_thread_product():
    return paddle.full([64], DENORMAL, dtype="float32") * 0.5  # paddle's elementwise kernel on this thread


def _pool_threads_product():
    # 16 channels spread over the pool's threads by the depthwise operator; a 1x1 window multiplies by 0.5
    images = paddle.full([2, 16, 4, 4], DENORMAL, dtype="float32")
    return depthwise_conv2d(images, paddle.full([16, 1, 1, 1], 0.5, dtype="float32"), stride=1, padding=0)


def test_flushing_zeroes_denormals_everywhere_and_can_be_undone(ieee_afterwards):
    paddle.base.core.set_num_threads(2)
    assert denormals.flush_denormals()
    assert set_float_mode(True) == (True, 0)  # the bits read back on this thread, and no pool thread differs
    assert not _main_thread_product().numpy().any()
    assert not _pool_threads_product().numpy().any()
    assert "flushed to zero" in denormals.describe()
    denormals.keep_denormals()
    assert np.allclose(_main_thread_product().numpy(), DENORMAL / 2, rtol=1e-3, atol=0)
    assert np.allclose(_pool_threads_product().numpy(), DENORMAL / 2, rtol=1e-3, atol=0)
    assert "kept" in denormals.describe()


def _run(code, **env_vars):
    env = dict(os.environ, PYTHONPATH=ROOT, **env_vars)
    return subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_numpy_limits_stay_ieee_after_flushing():
    # a fresh process, so numpy has not met float64's limits yet; warnings are errors
    code = ("import numpy as np; from paddle_mbnet.cpu import denormals; print(denormals.flush_denormals()); "
            "smallest = np.finfo(np.float64).smallest_subnormal; print(np.array(smallest).view(np.uint64))")
    # compared as bits: with denormals-are-zero set, even ``smallest > 0`` reads it as zero
    assert _run(code) == ["True", "1"]


def test_the_environment_keeps_denormals():
    code = "from paddle_mbnet.cpu import denormals; print(denormals.flush_denormals()); print(denormals.describe())"
    assert _run(code, PADDLE_MBNET_DENORMALS="keep") == ["False", "denormal floats kept (PADDLE_MBNET_DENORMALS=keep)"]
