"""BatchNorm + activation as one CPU operator (models.layers.BatchNormAct2D) against paddle's layers."""
import numpy as np
import paddle
import pytest
from paddle import nn

import paddle_mbnet as pm
from paddle_mbnet.cpu import ops
from paddle_mbnet.errors import ArgumentError
from paddle_mbnet.models.layers import ConvBNAct, resolve_batchnorm

pytestmark = pytest.mark.skipif(not ops.custom_ops_available(), reason="no C++ compiler to build the op")


def _run(block, x_np, training, grad_seed=1):
    block.train() if training else block.eval()
    x = paddle.to_tensor(x_np, stop_gradient=False)
    y = block(x)
    (y * paddle.to_tensor(np.random.RandomState(grad_seed).randn(*y.shape).astype("float32"))).sum().backward()
    bn = block[1]
    return {"y": y.numpy(), "dx": x.grad.numpy(), "dconv": block[0].weight.grad.numpy(),
            "dgamma": bn.weight.grad.numpy(), "dbeta": bn.bias.grad.numpy(),
            "running_mean": bn._mean.numpy(), "running_var": bn._variance.numpy()}


def _pair(act, out_c=16):
    paddle.seed(0)
    ours = ConvBNAct(8, out_c, 3, 1, act=act, batchnorm_impl="custom")
    reference = ConvBNAct(8, out_c, 3, 1, act=act, batchnorm_impl="paddle")
    state = ours.state_dict()
    # a scale and shift away from 1 and 0, so both matter and ReLU6's upper kink is reached
    state["1.weight"] = paddle.linspace(0.5, 4.0, out_c)
    state["1.bias"] = paddle.linspace(-1.0, 3.0, out_c)
    state["1._mean"] = paddle.linspace(-0.5, 0.5, out_c)
    state["1._variance"] = paddle.linspace(0.5, 2.0, out_c)
    ours.set_state_dict(state)
    reference.set_state_dict(state)
    return ours, reference


def _away_from_kinks(reference, shape, training):
    """An input none of whose pre-activations lies within 1e-5 of ReLU's or ReLU6's kinks: there the two
    sides' float rounding may put a value on different sides, which changes that gradient element outright
    (and, through the batch means, its channel's). The seed search is deterministic."""
    bn = reference[1]
    for seed in range(50):
        x = (np.random.RandomState(seed).randn(*shape) * 3 + 1).astype("float32")
        with paddle.no_grad():
            conv_out = reference[0](paddle.to_tensor(x)).numpy().astype("float64")
        if training:
            mean, var = conv_out.mean(axis=(0, 2, 3)), conv_out.var(axis=(0, 2, 3))
        else:
            mean, var = bn._mean.numpy(), bn._variance.numpy()
        scale = bn.weight.numpy() / np.sqrt(var + bn._epsilon)
        pre = (conv_out - mean[:, None, None]) * scale[:, None, None] + bn.bias.numpy()[:, None, None]
        if min(np.abs(pre).min(), np.abs(pre - 6).min()) > 1e-5:
            return x
    raise AssertionError("no seed gives an input away from the kinks")


@pytest.mark.parametrize("act", [None, nn.ReLU, nn.ReLU6])
@pytest.mark.parametrize("training", [True, False])
# (input shape, BatchNorm channels). The operator takes channels in blocks: 100 on 2x2 maps (blocks of 12, the
# last of 4), 76 on 4x4 (blocks of 9, the last of 4), 24 on 9x9 (blocks of 3), 25 on 4x4 (the last block one
# channel); the others run one channel per block.
@pytest.mark.parametrize("shape,channels", [((1, 8, 5, 5), 16), ((2, 8, 32, 32), 16), ((3, 8, 1, 1), 16),
                                            ((2, 8, 7, 3), 16), ((2, 8, 2, 2), 100), ((3, 8, 4, 4), 76),
                                            ((2, 8, 9, 9), 24), ((2, 8, 4, 4), 25)])
def test_fused_matches_paddle_batchnorm_and_activation(act, training, shape, channels):
    """Output, the input / conv weight / scale / shift gradients and the running statistics, within 1e-4."""
    if training and shape[0] * shape[2] * shape[3] == 1:
        pytest.skip("paddle's batch_norm needs more than one value per channel in training")
    ours, reference = _pair(act, channels)
    x = _away_from_kinks(reference, shape, training)
    got, want = _run(ours, x, training), _run(reference, x, training)
    for key in want:
        scale = max(1.0, float(np.abs(want[key]).max()))
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4 * scale, err_msg=key)
    if act is nn.ReLU6:
        assert (want["y"] == 6).any() and (want["y"] == 0).any()  # both kinks were exercised


@pytest.fixture
def op_calls(monkeypatch):
    """Calls of the fused operator: how the tests see which path a block took."""
    calls = []
    original = ops.batchnorm_act

    def counted(*args, **kwargs):
        calls.append(kwargs.get("act", args[-1] if len(args) > 7 else None))
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "batchnorm_act", counted)
    return calls


def test_fused_op_really_runs_and_keeps_the_layer_layout(op_calls):
    """Eager CPU float32 takes the fused path, and the parameters and buffers keep nn.BatchNorm2D's names, so
    checkpoints move between the two."""
    ours, reference = _pair(nn.ReLU)
    ours(paddle.randn([2, 8, 6, 6]))
    assert len(op_calls) == 1
    assert list(ours.state_dict()) == list(reference.state_dict())


def test_hooks_and_replaced_layers_run_the_layers_one_by_one(op_calls):
    """A hook on the BatchNorm or the activation (paddle.flops, paddle.summary, profilers), or an activation
    replaced after construction, must see its layer run: the block then steps aside."""
    x = paddle.randn([2, 8, 6, 6])
    for index in (1, 2):
        ours, _ = _pair(nn.ReLU)
        seen = []
        ours[index].register_forward_post_hook(lambda *a: seen.append(1))
        ours(x)
        assert seen == [1]
    ours, _ = _pair(nn.ReLU)
    ours._sub_layers["2"] = nn.ReLU6()
    ours(x)
    assert op_calls == []
    fused, plain = (pm.MobileNetV1(scale=0.25, batchnorm=impl) for impl in ("custom", "paddle"))
    assert pm.paddle_flops(fused, (3, 32, 32)) == pm.paddle_flops(plain, (3, 32, 32))  # BatchNorms counted too


@pytest.mark.parametrize("full_graph", [True, False])
def test_fused_op_steps_aside_where_it_does_not_apply(op_calls, full_graph):
    """Global statistics forced on, or a whole static graph: paddle's layers run, with the same result. Under
    SOT (full_graph=False, as Global.to_static trains) the block may still call the operator eagerly; the
    output and the running statistics must then equal paddle's."""
    ours, reference = _pair(nn.ReLU)
    ours[1]._use_global_stats = reference[1]._use_global_stats = True
    x = np.random.RandomState(4).randn(2, 8, 6, 6).astype("float32")
    np.testing.assert_allclose(_run(ours, x, True)["y"], _run(reference, x, True)["y"], rtol=1e-5, atol=1e-5)
    assert op_calls == []
    ours, reference = _pair(nn.ReLU6)
    ours.train(), reference.train()
    static = paddle.jit.to_static(ours, input_spec=[paddle.static.InputSpec([None, 8, 6, 6], "float32")],
                                  full_graph=full_graph)
    np.testing.assert_allclose(static(paddle.to_tensor(x)).numpy(), reference(paddle.to_tensor(x)).numpy(),
                               rtol=1e-5, atol=1e-5)
    for name in ("_mean", "_variance"):
        np.testing.assert_allclose(getattr(ours[1], name).numpy(), getattr(reference[1], name).numpy(),
                                   rtol=1e-5, atol=1e-6)
    if full_graph:
        assert op_calls == []


def test_batchnorm_keyword_is_checked():
    with pytest.raises(ArgumentError, match="batchnorm='fused' is not a batchnorm implementation"):
        resolve_batchnorm("fused")
    assert resolve_batchnorm("paddle") == "paddle"
    assert resolve_batchnorm("auto") == "custom"  # on CPU, where the op builds
