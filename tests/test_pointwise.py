"""PointwiseConv2D: 1x1 convs as one matmul equal paddle's conv2d, forward and both gradients."""
import numpy as np
import paddle
import pytest

import paddle_mbnet as pm
from paddle_mbnet.models.layers import PointwiseConv2D, resolve_pointwise


@pytest.mark.parametrize("n, c_in, c_out, h, w",
                         [(1, 3, 5, 1, 1), (4, 16, 24, 4, 4), (3, 8, 8, 7, 5), (2, 32, 16, 2, 2)])
def test_matmul_matches_conv2d(n, c_in, c_out, h, w):
    conv, mm = PointwiseConv2D(c_in, c_out, impl="paddle"), PointwiseConv2D(c_in, c_out, impl="matmul")
    mm.set_state_dict(conv.state_dict())
    x = paddle.randn([n, c_in, h, w])
    gy = paddle.randn([n, c_out, h, w])
    out = []
    for layer in (conv, mm):
        xi = x.clone()
        xi.stop_gradient = False
        y = layer(xi)
        (y * gy).sum().backward()
        out.append((y.numpy(), xi.grad.numpy(), layer.weight.grad.numpy()))
    for ref, got in zip(*out):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_auto_takes_matmul_on_small_maps_only(monkeypatch):
    layer = PointwiseConv2D(8, 4, impl="auto")
    calls = []
    monkeypatch.setattr(paddle, "matmul", lambda *a, **k: calls.append(1) or paddle.tensor.matmul(*a, **k))
    layer(paddle.randn([2, 8, 4, 4]))
    assert calls == [1]  # 16 pixels
    layer(paddle.randn([2, 8, 5, 4]))
    assert calls == [1]  # 20 pixels: conv2d


def test_auto_stays_auto_on_cpu_and_choices_are_checked():
    assert resolve_pointwise("auto") == "auto"
    assert pm.MobileNetV2(pointwise="paddle").pointwise_impl == "paddle"
    with pytest.raises(ValueError, match="pointwise='gemm'.*'auto', 'paddle', 'matmul'"):
        pm.MobileNetV1(pointwise="gemm")


def test_every_1x1_conv_of_the_mobilenets_takes_the_setting():
    for model in (pm.MobileNetV1(pointwise="matmul"), pm.MobileNetV2(pointwise="matmul")):
        ones = [m for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D) and m._kernel_size == [1, 1]]
        assert ones and all(isinstance(m, PointwiseConv2D) and m.impl == "matmul" for m in ones)
