"""Whole networks with our CPU kernels (the depthwise operator, small-map 1x1 convs as one matmul) against
paddle's kernels: training-mode outputs and every parameter's gradient, both MobileNets, batch 1 and 2, 32 and
224 px. The operators alone are checked to 1e-4 in tests/test_depthwise_op.py and tests/test_pointwise.py."""
import numpy as np
import paddle
import pytest

import paddle_mbnet as pm
from paddle_mbnet.cpu import ops

pytestmark = pytest.mark.skipif(not ops.custom_depthwise_available(), reason="no C++ compiler to build the op")


def _close(ours, reference, tol=1e-4):
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("size,batch", [(32, 1), (32, 2), (224, 2)])
def test_networks_with_our_operators_match_paddles_kernels(name, size, batch):
    """Training-mode forward and every parameter's gradient, our CPU kernels vs paddle's. In a whole network the two sides' float32 rounding (~1e-6) moves a few activations
    that sit at a ReLU's kink to its other side, which changes those gradient elements outright, and some
    gradients are zero up to rounding (a BatchNorm bias whose output only feeds another BatchNorm, which removes
    any shift). So the outputs are compared to 1e-4, and each gradient as a vector: the difference within 5 % of
    its own norm plus 1e-4 of the largest gradient norm in the network."""
    paddle.seed(3)
    kwargs = {"num_classes": 10, "small_input": size == 32, "scale": 0.25 if size == 224 else 0.5}
    ours = pm.build_model(name, depthwise="custom", pointwise="auto", **kwargs)
    reference = pm.build_model(name, depthwise="paddle", pointwise="paddle", **kwargs)
    reference.set_state_dict(ours.state_dict())
    x = paddle.randn([batch, 3, size, size])
    outputs, grads = [], []
    for model in (ours, reference):
        model.train()
        for layer in model.sublayers():
            if isinstance(layer, paddle.nn.Dropout):
                layer.eval()  # the same dropout mask cannot be drawn twice
        out = model(x)
        (out * paddle.linspace(-1, 1, out.size).reshape(out.shape)).sum().backward()
        outputs.append(out.numpy())
        grads.append({n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None})
    _close(outputs[0], outputs[1])
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len([p for p in ours.parameters()
                                                                           if not p.stop_gradient])
    largest = max(np.linalg.norm(g) for g in grads[1].values())
    for key in grads[0]:
        difference, norm = np.linalg.norm(grads[0][key] - grads[1][key]), np.linalg.norm(grads[1][key])
        assert difference <= 0.05 * norm + 1e-4 * largest, (key, difference, norm, largest)
