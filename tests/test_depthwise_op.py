"""The custom CPU depthwise operator against paddle's grouped conv2d, and how the library of our CPU operators
is built, cached and given up on."""
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_mbnet as pm
from paddle_mbnet.cpu import ops

pytestmark = pytest.mark.skipif(not ops.custom_ops_available(), reason="no C++ compiler to build the op")


def _grads(fn, x, w):
    x = x.detach()
    w = w.detach()
    x.stop_gradient = False
    w.stop_gradient = False
    y = fn(x, w)
    g = paddle.randn(y.shape, dtype="float32")  # same seed for both sides via the caller
    (y * g).sum().backward()
    return y.numpy(), x.grad.numpy(), w.grad.numpy()


def _match_conv2d(shape, k, stride, pad):
    """Forward and both gradients of our op equal F.conv2d(groups=C) on random data."""
    c = shape[1]
    x = paddle.randn(shape)
    wt = paddle.randn([c, 1, k, k])
    paddle.seed(1)
    ours = _grads(lambda a, b: ops.depthwise_conv2d(a, b, stride, pad), x, wt)
    paddle.seed(1)
    ref = _grads(lambda a, b: F.conv2d(a, b, stride=stride, padding=pad, groups=c), x, wt)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        _close(a, b)


def _close(a, b, rtol=1e-4):
    scale = max(np.abs(b).max(), 1e-6)
    assert np.abs(a - b).max() / scale < rtol


# The op works on blocks of 8 channels: C = 3, 4, 5 leave a partly filled block, 24 three full ones.
@pytest.mark.parametrize("n,c,h,w", [(1, 3, 7, 7), (4, 8, 8, 6), (2, 5, 1, 1), (3, 16, 9, 10), (17, 4, 32, 32),
                                     (3, 16, 4, 4), (2, 24, 1, 1), (5, 8, 7, 5), (2, 16, 2, 2)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
def test_forward_and_gradients_match_conv2d(n, c, h, w, stride, k):
    _match_conv2d([n, c, h, w], k, stride, (k - 1) // 2)


@pytest.mark.parametrize("k,pad,stride", [(3, 0, 1), (3, 0, 2), (3, 2, 1), (3, 3, 2), (3, 1, 3), (5, 1, 1), (1, 0, 1),
                                          (2, 0, 1)])
@pytest.mark.parametrize("c", [4, 8])  # a partly filled and a full channel block
def test_other_paddings_and_kernel_sizes(k, pad, stride, c):
    """Kernel sizes other than 3 run the runtime-size code; paddings other than (k - 1) // 2 move the border."""
    _match_conv2d([3, c, 9, 8], k, stride, pad)


def test_non_contiguous_input():
    x = paddle.randn([2, 6, 8, 8]).transpose([0, 1, 3, 2])
    wt = paddle.randn([6, 1, 3, 3])
    _close(ops.depthwise_conv2d(x, wt).numpy(), F.conv2d(x, wt, padding=1, groups=6).numpy())


def test_wrong_weight_shape_is_an_error():
    with pytest.raises(Exception, match="weight must be"):
        ops.depthwise_conv2d(paddle.randn([1, 4, 8, 8]), paddle.randn([3, 1, 3, 3]))


def test_auto_picks_the_custom_op_on_cpu():
    assert pm.MobileNetV1(depthwise="auto").depthwise_impl == "custom"
    assert pm.MobileNetV1(depthwise="paddle").depthwise_impl == "paddle"


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_models_train_as_accurately_with_either_kernel(name):
    """Our depthwise op and matmul 1x1 convs against paddle's convs. Gradients of a whole net through
    ~30 BatchNorms on a batch of 4 are ill-conditioned: float32 round-off alone moves them by ~1 %.
    So both float32 versions are compared with a float64 run, and ours must be no further from it
    than paddle's own kernels (plus slack)."""
    paddle.seed(3)
    kw = dict(num_classes=10, small_input=True, scale=0.5)
    custom = pm.build_model(name, depthwise="custom", pointwise="matmul", layout="NCHW", **kw)
    plain = pm.build_model(name, depthwise="paddle", pointwise="paddle", batchnorm="paddle", **kw)
    exact = pm.build_model(name, depthwise="paddle", pointwise="paddle", batchnorm="paddle", **kw)
    plain.set_state_dict(custom.state_dict())
    exact.set_state_dict(custom.state_dict())
    exact.to(dtype="float64")
    x = paddle.randn([4, 3, 32, 32])
    results = []
    for m in (custom, plain, exact):
        m.train()
        paddle.seed(5)  # same dropout mask
        y = m(x.astype(m.parameters()[0].dtype))
        (y ** 2).mean().backward()
        results.append((y.numpy().astype("float64"),
                        [p.grad.numpy().astype("float64") for p in m.parameters() if not p.stop_gradient]))
    _close(results[0][0], results[2][0])

    def error(k):
        return max(np.abs(a - b).max() for a, b in zip(results[k][1], results[2][1]))

    top = max(np.abs(g).max() for g in results[2][1])
    assert error(0) <= 2 * error(1) + 1e-4 * top


def test_export_falls_back_to_paddle_kernel(tmp_path):
    """jit.save traces the static graph, where our layers use paddle's kernels: the model needs no custom op."""
    model = pm.MobileNetV2(num_classes=10, small_input=True, scale=0.5, depthwise="custom", pointwise="matmul",
                           batchnorm="custom")
    model.eval()
    path = str(tmp_path / "inference")
    paddle.jit.save(model, path, input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32")])
    loaded = paddle.jit.load(path)
    x = paddle.randn([2, 3, 32, 32])
    _close(loaded(x).numpy(), model(x).numpy())
    program_files = list(tmp_path.iterdir())
    for op_name in (b"mbnet_depthwise_conv2d", b"mbnet_batchnorm_act"):
        assert not any(op_name in f.read_bytes() for f in program_files if f.is_file())


def test_built_op_is_reused_from_another_checkout(tmp_path):
    """The op is compiled once per source/paddle/CPU: a copy of the package elsewhere (a second clone,
    a notebook's working copy) loads the cached library instead of rebuilding it."""
    so = os.path.join(ops._build_dir(), "mbnet_ops", "mbnet_ops.so")
    before = os.stat(so).st_mtime_ns
    shutil.copytree(os.path.dirname(pm.__file__), tmp_path / "paddle_mbnet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import paddle, paddle_mbnet.cpu.ops as o; o.custom_ops_available(required=True); "
            "x = paddle.ones([1, 2, 4, 4]); print(float(o.depthwise_conv2d(x, paddle.ones([2, 1, 3, 3])).sum()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) == 2 * (4 * 4 + 8 * 6 + 4 * 9)  # corners 4, edges 6, middle 9 taps
    assert os.stat(so).st_mtime_ns == before, "the op was rebuilt"
    assert "running build" not in out.stderr and "Compiling" not in out.stdout  # loading says nothing


def test_a_failed_build_falls_back_with_one_notice_and_names_the_compiler_error(tmp_path):
    """A source that does not compile: 'auto' prints one notice and runs paddle's kernels; 'custom' refuses
    with the compiler's own message."""
    package = tmp_path / "paddle_mbnet"
    shutil.copytree(os.path.dirname(pm.__file__), package, ignore=shutil.ignore_patterns("__pycache__"))
    # A missing header ends each compile at once; the build compiles every source, and a later error costs the
    # full compile of the others.
    for source in (package / "cpu" / "ops").glob("*.cc"):
        source.write_text('#include "deliberately_broken_source.h"\n' + source.read_text())
    code = ("import paddle_mbnet as pm\n"
            "m = pm.build_model('mobilenet_v1', num_classes=10, small_input=True, scale=0.25)\n"
            "print(m.depthwise_impl, m.batchnorm_impl)\n"
            "pm.build_model('mobilenet_v1', num_classes=10, batchnorm='custom')\n")
    env = {**os.environ, "PADDLE_MBNET_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["paddle", "paddle"]
    assert out.stderr.count("custom CPU operators unavailable") == 1
    assert out.returncode != 0 and "batchnorm='custom' needs the project's C++ operators" in out.stderr
    assert "deliberately_broken_source.h" in out.stderr


@pytest.mark.skipif(not os.path.isfile(os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so")),
                    reason="this paddle wheel ships no Intel OpenMP runtime")
def test_op_shares_paddles_openmp_runtime():
    """Linked to paddle's libiomp5, not GCC's libgomp: two OpenMP thread pools in one process spin on the
    same cores (a MobileNetV1 step ran ~1.5x slower that way on the project's VM)."""
    with open(os.path.join(ops._build_dir(), "mbnet_ops", "mbnet_ops.so"), "rb") as f:
        library = f.read()
    assert b"libiomp5.so" in library and b"libgomp.so" not in library
