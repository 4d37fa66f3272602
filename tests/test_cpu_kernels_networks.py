"""Whole networks with our CPU kernels (the depthwise operator, small-map 1x1 convs as one matmul, BatchNorm
fused with its activation), on NCHW and on channels-last (NHWC) activations, against paddle's kernels:
outputs and every parameter's gradient in training and evaluation mode, both MobileNets, batch 1 and 2, 32
and 224 px. The operators alone are checked to 1e-4 in
tests/test_depthwise_op.py, tests/test_pointwise.py and tests/test_batchnorm_act.py."""
import numpy as np
import paddle
import pytest

import paddle_mbnet as pm
from paddle_mbnet.cpu import ops

from helpers import count_stem_operator_calls, shift_batchnorms

pytestmark = pytest.mark.skipif(not ops.custom_ops_available(), reason="no C++ compiler to build the op")


def _close(ours, reference, tol=1e-4):
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("size,batch", [(32, 1), (32, 2), (224, 1), (224, 2)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_networks_with_our_operators_match_paddles_kernels(name, size, batch, mode, monkeypatch):
    """Forward, every parameter's gradient and (in training) the BatchNorm running statistics, our CPU
    kernels vs paddle's (the channels-last model with its stem as our operator). Outputs and statistics must
    agree within 1e-4. Gradients are judged against paddle's kernels in float64, with every BatchNorm's shift
    set to 2 (``helpers.shift_batchnorms``): at the default 0, in training at batch 1 or 2, a channel that is
    nearly constant over its few values normalises to rounding noise sitting on the ReLU's kink, so float32
    rounding decides its mask and the BatchNorm's 1/sqrt(eps) then magnifies that into percents of every
    gradient below it, in paddle's float32 kernels as in ours, at random (in many inputs on some CPUs). Over
    five inputs our median error (all gradients as one vector, relative to the float64 one) must be within
    twice paddle's float32 median error plus 1e-4."""
    kwargs = {"num_classes": 10, "small_input": size == 32, "scale": 0.25 if size == 224 else 0.5}
    errors = {"ours": [], "ours NCHW": [], "paddle": []}
    # the channels-last model runs its stem as our operator, whose weight gradient is then checked here
    stem_calls = count_stem_operator_calls(monkeypatch)
    for seed in range(5):
        paddle.seed(seed)
        models = {impl: pm.build_model(name, depthwise=impl, pointwise="auto" if impl == "custom" else impl,
                                       batchnorm=impl, **kwargs) for impl in ("custom", "paddle")}
        models["custom NCHW"] = pm.build_model(name, depthwise="custom", pointwise="auto", batchnorm="custom",
                                               layout="NCHW", **kwargs)
        models["exact"] = pm.build_model(name, depthwise="paddle", pointwise="paddle", batchnorm="paddle", **kwargs)
        shift_batchnorms(models["custom"])
        for model in models.values():
            model.set_state_dict(models["custom"].state_dict())
        models["exact"].to(dtype="float64")
        x = paddle.randn([batch, 3, size, size])
        runs = {impl: _run(model, x.astype("float64") if impl == "exact" else x, mode)
                for impl, model in models.items()}
        if seed == 0:
            assert models["custom"].layout_impl == "NHWC" and models["custom"].uses_channels_last(x)
            assert not models["custom NCHW"].uses_channels_last(x)
            _close(runs["custom"]["out"], runs["paddle"]["out"])
            _close(runs["custom NCHW"]["out"], runs["paddle"]["out"])
            assert runs["custom"]["buffers"].keys() == runs["paddle"]["buffers"].keys() and runs["custom"]["buffers"]
            for key, value in runs["paddle"]["buffers"].items():
                _close(runs["custom"]["buffers"][key], value)
                _close(runs["custom NCHW"]["buffers"][key], value)
            trainable = [n for n, p in models["custom"].named_parameters() if not p.stop_gradient]
            assert all(runs[impl]["grads"].keys() == set(trainable) for impl in runs)
        exact = np.concatenate([g.ravel() for _, g in sorted(runs["exact"]["grads"].items())])
        for impl, label in (("custom", "ours"), ("custom NCHW", "ours NCHW"), ("paddle", "paddle")):
            flat = np.concatenate([g.ravel() for _, g in sorted(runs[impl]["grads"].items())])
            errors[label].append(np.linalg.norm(flat - exact) / np.linalg.norm(exact))
    assert len(stem_calls) == 5  # once per input, by the channels-last model only
    for ours in ("ours", "ours NCHW"):
        assert np.median(errors[ours]) <= 2 * np.median(errors["paddle"]) + 1e-4, errors


def _run(model, x, mode):
    model.train() if mode == "train" else model.eval()
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Dropout):
            layer.eval()  # the same dropout mask cannot be drawn twice
    out = model(x)
    (out * paddle.linspace(-1, 1, out.size, dtype=out.dtype).reshape(out.shape)).sum().backward()
    return {"out": out.numpy(),
            "grads": {n: p.grad.numpy().astype("float64") for n, p in model.named_parameters() if p.grad is not None},
            "buffers": {k: v.numpy() for k, v in model.state_dict().items() if k.endswith(("_mean", "_variance"))}}
