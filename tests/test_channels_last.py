"""The channels-last (NHWC) path: its operators against paddle's float64 kernels, when the networks take it, and
when they fall back to NCHW. Whole networks on it against paddle's kernels: tests/test_cpu_kernels_networks.py."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_mbnet as pm
from paddle_mbnet.cpu import ops
from paddle_mbnet.errors import ArgumentError

from helpers import count_stem_operator_calls, shift_batchnorms

pytestmark = pytest.mark.skipif(not ops.custom_ops_available(), reason="no C++ compiler to build the op")


def _close(ours, reference, tol=1e-4):
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol * scale)


def _nhwc(t):
    return paddle.to_tensor(np.ascontiguousarray(t.numpy().transpose(0, 2, 3, 1)).astype("float32"),
                            stop_gradient=False)


def _nchw(t):
    return t.numpy().transpose(0, 3, 1, 2)


@pytest.mark.parametrize("n,c,h,w,k,stride,pad", [
    (2, 32, 8, 8, 3, 1, 1),  # two full 16-channel vectors
    (2, 24, 7, 9, 3, 2, 1),  # a vector and a scalar tail, odd sizes at stride 2
    (1, 19, 5, 5, 3, 1, 1),  # batch 1, a vector and three channels past it
    (3, 48, 4, 4, 3, 2, 1),
    (2, 16, 2, 2, 3, 1, 1),  # every pixel at a border
    (2, 64, 1, 1, 3, 1, 1),  # one pixel
    (2, 20, 9, 8, 5, 1, 2),  # another kernel size: the runtime-size code
    (2, 16, 9, 8, 3, 1, 0),  # no padding
    (2, 8, 9, 8, 3, 2, 2),  # more padding than the usual
    (2, 16, 7, 7, 3, 3, 1),  # stride 3
])
def test_depthwise_nhwc_matches_paddles_conv(n, c, h, w, k, stride, pad):
    """Forward, input and weight gradients against F.conv2d(groups=C) in float64."""
    x = paddle.randn([n, c, h, w], dtype="float64")
    weight = paddle.randn([c, 1, k, k], dtype="float64")
    x.stop_gradient = weight.stop_gradient = False
    y = F.conv2d(x, weight, stride=stride, padding=pad, groups=c)
    grad_y = paddle.randn(y.shape, dtype="float64")
    ref_x, ref_w = paddle.grad([y], [x, weight], [grad_y])
    x_ours, w_ours = _nhwc(x), paddle.to_tensor(weight.numpy().astype("float32"), stop_gradient=False)
    y_ours = ops.depthwise_conv2d_nhwc(x_ours, w_ours, stride, pad)
    got_x, got_w = paddle.grad([y_ours], [x_ours, w_ours], [_nhwc(grad_y)])
    _close(_nchw(y_ours), y.numpy())
    _close(_nchw(got_x), ref_x.numpy())
    _close(got_w.numpy(), ref_w.numpy())


@pytest.mark.parametrize("n,ci,h,w,co,k,stride,pad", [
    (2, 3, 32, 32, 32, 3, 1, 1),  # the CIFAR stem: two 16-channel vectors, pixels in fours
    (1, 3, 34, 30, 32, 3, 2, 1),  # the ImageNet stem's stride, odd sizes
    (3, 3, 7, 9, 20, 3, 2, 1),  # a vector and a scalar tail of channels, a pixel past the last four
    (2, 1, 5, 6, 7, 3, 1, 1),  # one input channel, channels below one vector
    (2, 3, 8, 8, 16, 5, 1, 2),  # another kernel size
    (2, 2, 6, 5, 16, 3, 1, 0),  # no padding
    (1, 3, 2, 2, 16, 3, 1, 1),  # every pixel at a border
    (2, 3, 9, 8, 16, 3, 2, 2),  # more padding than the usual, at stride 2
    (2, 3, 9, 9, 16, 5, 2, 0),  # another kernel size at stride 2, no padding
    (2, 3, 6, 7, 24, 1, 1, 0),  # a 1x1 kernel
])
def test_stem_nhwc_matches_paddles_conv(n, ci, h, w, co, k, stride, pad):
    """Forward (returned NHWC) and weight gradient against F.conv2d in float64; the stem's input gets none."""
    x = paddle.randn([n, ci, h, w], dtype="float64")
    weight = paddle.randn([co, ci, k, k], dtype="float64")
    weight.stop_gradient = False
    y = F.conv2d(x, weight, stride=stride, padding=pad)
    grad_y = paddle.randn(y.shape, dtype="float64")
    (ref_w,) = paddle.grad([y], [weight], [grad_y])
    w_ours = paddle.to_tensor(weight.numpy().astype("float32"), stop_gradient=False)
    y_ours = ops.stem_conv2d_nhwc(x.astype("float32"), w_ours, stride, pad)
    (got_w,) = paddle.grad([y_ours], [w_ours], [_nhwc(grad_y)])
    _close(_nchw(y_ours), y.numpy())
    _close(got_w.numpy(), ref_w.numpy())


def test_the_stem_operator_runs_only_for_inputs_without_gradient(monkeypatch):
    """The image batch (no gradient) takes the stem operator; an input that needs a gradient (saliency maps,
    adversarial examples) takes paddle's conv, and its gradient matches the NCHW model's."""
    calls = count_stem_operator_calls(monkeypatch)
    paddle.seed(0)
    ours = pm.MobileNetV2(num_classes=10, small_input=True, scale=0.25)
    reference = pm.MobileNetV2(num_classes=10, small_input=True, scale=0.25, layout="NCHW")
    reference.set_state_dict(ours.state_dict())
    ours.eval(), reference.eval()  # the classifier's dropout would draw different masks
    x = paddle.randn([2, 3, 32, 32])
    _close(ours(x).numpy(), reference(x).numpy())
    assert len(calls) == 1
    grads = []
    for model in (ours, reference):
        x_grad = x.detach()
        x_grad.stop_gradient = False
        model(x_grad).sum().backward()
        grads.append(x_grad.grad.numpy())
    assert len(calls) == 1 and np.abs(grads[1]).max() > 0
    _close(grads[0], grads[1])


@pytest.mark.parametrize("act", [None, "relu", "relu6"])
@pytest.mark.parametrize("training", [True, False])
# (8, 16, 16): 2048 rows, four chunks of rows split over the threads, whose sums are added up
@pytest.mark.parametrize("n,c,h", [(3, 40, 5), (2, 144, 4), (2, 7, 3), (1, 96, 2), (8, 16, 16)])
def test_batchnorm_act_nhwc_matches_paddle(act, training, n, c, h):
    """BatchNorm + activation on NHWC input against F.batch_norm (+ the activation) in float64: output, the
    statistics it normalised with, and the gradients of input, scale and shift."""
    rng = np.random.RandomState(c)
    x = paddle.to_tensor(rng.randn(n, c, h, h) * 2 + 1, stop_gradient=False)
    gamma = paddle.to_tensor(rng.rand(c) + 0.5, stop_gradient=False)
    beta = paddle.to_tensor(rng.randn(c), stop_gradient=False)
    mean, var = paddle.to_tensor(rng.randn(c) * 0.1), paddle.to_tensor(rng.rand(c) + 0.5)
    y = F.batch_norm(x, mean, var, gamma, beta, training=training, epsilon=1e-5)
    y = {None: y, "relu": F.relu(y), "relu6": F.relu6(y)}[act]
    grad_y = paddle.to_tensor(rng.randn(*y.shape))
    reference = paddle.grad([y], [x, gamma, beta], [grad_y])

    def f32(t):
        return paddle.to_tensor(t.numpy().astype("float32"), stop_gradient=t.stop_gradient)

    x_ours, gamma_ours, beta_ours = _nhwc(x), f32(gamma), f32(beta)
    y_ours, used_mean, used_var = ops.batchnorm_act(x_ours, gamma_ours, beta_ours, f32(mean), f32(var), 1e-5,
                                                    training, act, channels_last=True)
    got = paddle.grad([y_ours], [x_ours, gamma_ours, beta_ours], [_nhwc(grad_y)])
    _close(_nchw(y_ours), y.numpy())
    _close(_nchw(got[0]), reference[0].numpy())
    _close(got[1].numpy(), reference[1].numpy())
    _close(got[2].numpy(), reference[2].numpy())
    expected_mean = x.numpy().mean(axis=(0, 2, 3)) if training else mean.numpy()
    expected_var = x.numpy().var(axis=(0, 2, 3)) if training else var.numpy()
    _close(used_mean.numpy(), expected_mean)
    _close(used_var.numpy(), expected_var)


def test_auto_layout_follows_the_operators():
    assert pm.MobileNetV1().layout_impl == "NHWC"  # CPU, our operators built
    assert pm.MobileNetV2(batchnorm="paddle").layout_impl == "NCHW"
    assert pm.MobileNetV2(pointwise="paddle").layout_impl == "NCHW"  # paddle's 1x1 conv2d asked for
    assert pm.MobileNetV1(layout="NCHW").layout_impl == "NCHW"


def test_bad_layouts_say_what_to_pass():
    with pytest.raises(ArgumentError, match="layout='NHWC' runs on the project's CPU operators"):
        pm.MobileNetV1(layout="NHWC", depthwise="paddle")
    with pytest.raises(ArgumentError, match="layout='channels_last' is not a layout.*'auto', 'NCHW', 'NHWC'"):
        pm.MobileNetV2(layout="channels_last")
    with pytest.raises(ArgumentError, match="layout='NHWC' needs depthwise-separable blocks"):
        pm.MobileNetV1(layout="NHWC", full_conv=True)
    with pytest.raises(ArgumentError, match="layout="):
        pm.build_model("resnet18", layout="nhwc")


def test_full_conv_auto_runs_nchw():
    model = pm.MobileNetV1(num_classes=10, small_input=True, scale=0.25, full_conv=True)
    x = paddle.randn([2, 3, 32, 32])
    assert not model.uses_channels_last(x)
    assert model(x).shape == [2, 10]


def test_without_pool_the_features_come_back_nchw():
    paddle.seed(0)
    ours = pm.MobileNetV2(num_classes=0, with_pool=False, small_input=True, scale=0.5)
    reference = pm.MobileNetV2(num_classes=0, with_pool=False, small_input=True, scale=0.5, layout="NCHW")
    reference.set_state_dict(ours.state_dict())
    ours.eval(), reference.eval()
    x = paddle.randn([2, 3, 32, 32])
    assert ours.uses_channels_last(x)
    out = ours(x)
    assert out.shape == [2, 1280, 4, 4]
    _close(out.numpy(), reference(x).numpy())


def test_hooks_take_the_nchw_layers():
    """paddle.flops counts with hooks on every layer, which the NHWC path would bypass; it falls back, so the
    count equals an NCHW model's. A forward hook on any block does the same."""
    model = pm.MobileNetV1(num_classes=10, small_input=True, scale=0.25)
    reference = pm.MobileNetV1(num_classes=10, small_input=True, scale=0.25, layout="NCHW")
    assert paddle.flops(model, [1, 3, 32, 32]) == paddle.flops(reference, [1, 3, 32, 32])
    x = paddle.randn([1, 3, 32, 32])
    assert model.uses_channels_last(x)
    seen = []
    handle = model.features[3].register_forward_post_hook(lambda layer, inputs, output: seen.append(output.shape))
    assert not model.uses_channels_last(x)
    model(x)
    assert seen == [[1, 32, 16, 16]]  # NCHW, as the hook's owner expects
    handle.remove()
    assert model.uses_channels_last(x)
    assert not model.uses_channels_last(x.astype("float64"))


def test_global_statistics_take_the_nchw_layers():
    """A BatchNorm told to use its running statistics in training is paddle's layer: the network falls back."""
    model = pm.MobileNetV1(num_classes=10, small_input=True, scale=0.25)
    model.features[2][1][1]._use_global_stats = True
    x = paddle.randn([2, 3, 32, 32])
    assert not model.uses_channels_last(x)
    assert model(x).shape == [2, 10]


def test_inputs_smaller_than_the_kernel_are_refused():
    for op, shape in ((ops.depthwise_conv2d_nhwc, [1, 2, 2, 16]), (ops.depthwise_conv2d, [1, 16, 2, 2])):
        with pytest.raises(Exception, match="input is smaller than the kernel"):
            op(paddle.randn(shape), paddle.randn([16, 1, 3, 3]), 2, 0)
    with pytest.raises(Exception, match="input is smaller than the kernel"):
        ops.stem_conv2d_nhwc(paddle.randn([1, 3, 2, 2]), paddle.randn([16, 3, 3, 3]), 2, 0)


def test_the_stem_operator_refuses_an_input_that_needs_a_gradient():
    x = paddle.randn([1, 3, 8, 8])
    x.stop_gradient = False
    with pytest.raises(ArgumentError, match="gives its input no gradient"):
        ops.stem_conv2d_nhwc(x, paddle.randn([16, 3, 3, 3]), 1, 1)
    with paddle.no_grad():  # nothing to differentiate: allowed
        assert ops.stem_conv2d_nhwc(x, paddle.randn([16, 3, 3, 3]), 1, 1).shape == [1, 8, 8, 16]


def test_a_watched_or_changed_stem_takes_paddles_conv(monkeypatch):
    """A hook on the stem or on its conv sees the NCHW layers run, and a subclass's own ``forward`` for the stem is
    honoured; the blocks after it stay channels-last either way."""
    from paddle_mbnet.models.layers import ConvBNAct

    calls = count_stem_operator_calls(monkeypatch)
    model = pm.MobileNetV1(num_classes=10, small_input=True, scale=0.25)  # training mode: outputs of order 1
    x = paddle.randn([2, 3, 32, 32])
    expected = model(x).numpy()
    assert len(calls) == 1
    for layer in (model.features[0], model.features[0][0]):
        seen = []
        handle = layer.register_forward_post_hook(lambda layer, inputs, output: seen.append(output.shape))
        assert model.uses_channels_last(x)
        _close(model(x).numpy(), expected)
        handle.remove()
        assert len(calls) == 1 and seen == [[2, 8, 32, 32]]  # NCHW, as the hook's owner expects

    class Shifted(ConvBNAct):
        def forward(self, x):
            return super().forward(x) + 1

    model.features[0].__class__ = Shifted
    shifted = model(x).numpy()
    assert len(calls) == 1 and np.abs(shifted - expected).max() > 1e-3
    model.features[0].__class__ = ConvBNAct
    reference = pm.MobileNetV1(num_classes=10, small_input=True, scale=0.25, layout="NCHW")
    reference.set_state_dict(model.state_dict())
    reference.features[0].__class__ = Shifted
    _close(shifted, reference(x).numpy())


def test_nhwc_with_paddles_1x1_conv_is_refused_and_full_conv_says_nchw():
    with pytest.raises(ArgumentError, match="layout='NHWC' runs 1x1 convs as matrix products"):
        pm.MobileNetV1(layout="NHWC", pointwise="paddle")
    assert pm.MobileNetV1(full_conv=True).layout_impl == "NCHW"  # what the trainer's first line reports


def test_pooled_features_match_nchw_in_training():
    """num_classes=0 with the pool: [N, C, 1, 1] as in NCHW, in training (batch statistics) too."""
    paddle.seed(0)
    ours = pm.MobileNetV1(num_classes=0, small_input=True, scale=0.25)
    reference = pm.MobileNetV1(num_classes=0, small_input=True, scale=0.25, layout="NCHW")
    reference.set_state_dict(ours.state_dict())
    x = paddle.randn([2, 3, 32, 32])
    out = ours(x)
    assert ours.uses_channels_last(x) and out.shape == [2, 256, 1, 1]
    _close(out.numpy(), reference(x).numpy())


def test_a_subclass_that_overrides_forward_falls_back():
    """A block whose subclass changes ``forward`` (say, drop-path) but inherits ``forward_nhwc`` must not be run by
    the inherited one; nor a layer whose ``forward`` was replaced on the instance."""
    from paddle_mbnet.models.mobilenet_v2 import InvertedResidual

    class Doubled(InvertedResidual):
        def forward(self, x):
            return 2 * super().forward(x)

    model = pm.MobileNetV2(num_classes=10, small_input=True, scale=0.25)
    x = paddle.randn([2, 3, 32, 32])
    assert model.uses_channels_last(x)
    model.features[2].__class__ = Doubled
    assert not model.uses_channels_last(x)
    model.features[2].__class__ = InvertedResidual
    block = model.features[3]
    block.forward = block.forward  # the class's own method, bound (paddle.flops leaves one): still the NHWC path
    assert model.uses_channels_last(x)
    block.forward = lambda inputs: 2 * InvertedResidual.forward(block, inputs)
    assert not model.uses_channels_last(x)


def test_to_static_training_step_matches_eager():
    """Global.to_static wraps the model in paddle.jit.to_static (SOT), which replaces its forward: it runs the NCHW
    layers, and a training step's loss and gradients equal the eager channels-last model's."""
    paddle.seed(0)
    eager = pm.MobileNetV2(num_classes=10, small_input=True, scale=0.25, dropout=0.0)
    shift_batchnorms(eager)  # gradients comparable to float32 rounding, not to a chance mask (see helpers)
    static_model = pm.MobileNetV2(num_classes=10, small_input=True, scale=0.25, dropout=0.0)
    static_model.set_state_dict(eager.state_dict())
    static = paddle.jit.to_static(static_model)
    x, labels = paddle.randn([4, 3, 32, 32]), paddle.to_tensor([1, 2, 3, 4])
    losses = []
    for model, params in ((eager, eager), (static, static_model)):
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        losses.append((float(loss), {n: p.grad.numpy() for n, p in params.named_parameters() if p.grad is not None}))
    assert eager.uses_channels_last(x) and not static_model.uses_channels_last(x)
    assert abs(losses[0][0] - losses[1][0]) < 1e-4
    assert losses[0][1].keys() == losses[1][1].keys() and losses[0][1]
    for name, grad in losses[0][1].items():
        _close(losses[1][1][name], grad, tol=1e-3)
