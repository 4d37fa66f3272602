"""Building blocks shared by our MobileNetV1 and MobileNetV2."""
from __future__ import annotations

import warnings

import paddle
from paddle import nn

from ..errors import ArgumentError

DEPTHWISE_IMPLS = ("auto", "paddle", "custom")
POINTWISE_IMPLS = ("auto", "paddle", "matmul")
BATCHNORM_IMPLS = ("auto", "paddle", "custom")
LAYOUTS = ("auto", "NCHW", "NHWC")

# paddle's BatchNorm warns "When training, we now always track global mean and variance" on training forwards,
# again after every evaluation; it describes paddle's documented behaviour and asks nothing of the caller.
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never going below 90 %.

    This is the rule of the TensorFlow reference implementation of MobileNetV2
    (``_make_divisible`` in tensorflow/models ``slim/nets/mobilenet/mobilenet.py``),
    which torchvision and paddle.vision copy; keeping it identical is what makes
    paddle.vision checkpoints load at every width.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _check_impl(kind: str, value: str, choices) -> str:
    if value not in choices:
        raise ArgumentError(f"{kind}={value!r} is not a {kind} implementation; "
                            f"use one of {', '.join(map(repr, choices))}")
    return value


def check_depthwise(depthwise: str) -> str:
    return _check_impl("depthwise", depthwise, DEPTHWISE_IMPLS)


def check_pointwise(pointwise: str) -> str:
    return _check_impl("pointwise", pointwise, POINTWISE_IMPLS)


def check_batchnorm(batchnorm: str) -> str:
    return _check_impl("batchnorm", batchnorm, BATCHNORM_IMPLS)


def check_layout(layout: str) -> str:
    return _check_impl("layout", layout, LAYOUTS)


def _on_gpu() -> bool:
    return paddle.device.is_compiled_with_cuda() and paddle.get_device().startswith("gpu")


def _resolve_custom(keyword: str, value: str) -> str:
    """'auto' / 'custom' / 'paddle' -> the implementation that will actually run."""
    if value == "paddle":
        return "paddle"
    from ..cpu.ops import custom_ops_available

    if value == "custom":
        custom_ops_available(required=True, keyword=keyword)
        return "custom"
    # auto: our kernels only help on CPU; on GPU paddle's cuDNN kernels are the fast ones.
    if _on_gpu():
        return "paddle"
    return "custom" if custom_ops_available(required=False) else "paddle"


def resolve_depthwise(depthwise: str) -> str:
    return _resolve_custom("depthwise", check_depthwise(depthwise))


def resolve_batchnorm(batchnorm: str) -> str:
    return _resolve_custom("batchnorm", check_batchnorm(batchnorm))


def resolve_layout(layout: str, depthwise_impl: str, pointwise_impl: str, batchnorm_impl: str) -> str:
    """'auto' / 'NCHW' / 'NHWC' -> the layout of the activations between the stem and the pool.

    NHWC runs on our CPU operators only; 'auto' picks it when they run and 1x1 convs may be matrix products."""
    check_layout(layout)
    ours = depthwise_impl == "custom" and batchnorm_impl == "custom"
    if layout == "NHWC" and not ours:
        raise ArgumentError("layout='NHWC' runs on the project's CPU operators: set depthwise='custom' and "
                            "batchnorm='custom' (or 'auto' on CPU), or use layout='NCHW'")
    if layout == "NHWC" and pointwise_impl == "paddle":
        raise ArgumentError("layout='NHWC' runs 1x1 convs as matrix products, not paddle's conv2d: set "
                            "pointwise='auto' or 'matmul', or use layout='NCHW'")
    if layout == "auto":
        return "NHWC" if ours and pointwise_impl != "paddle" else "NCHW"
    return layout


def resolve_pointwise(pointwise: str) -> str:
    """'auto' / 'matmul' / 'paddle' -> how 1x1 convs will run ('auto' stays: it decides per input size)."""
    check_pointwise(pointwise)
    if pointwise == "auto" and _on_gpu():
        return "paddle"  # cuDNN's 1x1 convs are fast already
    return pointwise


class DepthwiseConv2D(nn.Conv2D):
    """``nn.Conv2D(groups=C)`` whose forward may run our CPU kernel instead.

    Subclassing keeps the parameter layout ``[C, 1, k, k]`` of ``nn.Conv2D``, so
    checkpoints and paddle.vision weights load whichever implementation runs.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, impl: str = "paddle"):
        super().__init__(channels, channels, kernel_size, stride=stride,
                         padding=(kernel_size - 1) // 2, groups=channels, bias_attr=False)
        self.impl = impl
        self._dw_stride, self._dw_padding = stride, (kernel_size - 1) // 2

    def forward(self, x):
        # Static graphs (jit.to_static / export) always take paddle's kernel, so
        # exported inference models carry no custom operator and stay portable.
        if self.impl == "custom" and paddle.in_dynamic_mode() and x.place.is_cpu_place():
            from ..cpu.ops import depthwise_conv2d

            return depthwise_conv2d(x, self.weight, stride=self._dw_stride, padding=self._dw_padding)
        return super().forward(x)

    def forward_nhwc(self, x):
        # only ever called on the network's channels-last path, which exists only where impl is "custom"
        from ..cpu.ops import depthwise_conv2d_nhwc

        return depthwise_conv2d_nhwc(x, self.weight, stride=self._dw_stride, padding=self._dw_padding)


class PointwiseConv2D(nn.Conv2D):
    """1x1 ``nn.Conv2D`` (stride 1, no bias) whose forward may run as one matrix product.

    Why: paddle's CPU conv2d runs one GEMM per sample (``[C_out, C_in] @ [C_in, H*W]``), which on
    the late 4x4 and 2x2 maps of a CIFAR MobileNet is tiny, and sums N such products for the weight
    gradient. Viewed as ``[N*H*W, C_in] @ [C_in, C_out]`` the layer is one large GEMM forward and two
    backward (paddle's matmul and its autograd), at the price of copies to and from NHWC, which cost
    more than they save from 8x8 maps up (docs/performance.md).
    ``impl``: "paddle" = conv2d; "matmul" = always the matrix product; "auto" = the matrix product
    on maps of at most ``MATMUL_MAX_PIXELS`` pixels. Parameters keep the ``nn.Conv2D`` layout.
    """

    MATMUL_MAX_PIXELS = 16

    def __init__(self, in_c: int, out_c: int, impl: str = "paddle"):
        super().__init__(in_c, out_c, 1, bias_attr=False)
        self.impl = impl

    def forward(self, x):
        n, _, h, w = x.shape
        # Static graphs (jit.to_static / export) keep conv2d, which inference engines fuse with BN.
        if paddle.in_dynamic_mode() and (
                self.impl == "matmul" or (self.impl == "auto" and h * w <= self.MATMUL_MAX_PIXELS)):
            rows = x.transpose([0, 2, 3, 1]).reshape([-1, self._in_channels])
            y = paddle.matmul(rows, self.weight.reshape([self._out_channels, self._in_channels]), transpose_y=True)
            # transpose is a strided view in paddle, and BN and the next layers run slowly on one
            return y.reshape([n, h, w, self._out_channels]).transpose([0, 3, 1, 2]).contiguous()
        return super().forward(x)

    def forward_nhwc(self, x):
        """The layer on a channels-last batch: one matrix product over all pixels, no copies."""
        n, h, w, _ = x.shape
        y = paddle.matmul(x.reshape([-1, self._in_channels]),
                          self.weight.reshape([self._out_channels, self._in_channels]), transpose_y=True)
        return y.reshape([n, h, w, self._out_channels])


class BatchNormAct2D(nn.BatchNorm2D):
    """``nn.BatchNorm2D`` that, with ``impl="custom"``, can run fused with the activation after it.

    ``fused_forward(x, act)`` is BatchNorm + ``act`` ("relu", "relu6" or None) as one CPU operator in
    eager mode (cpu/ops/batchnorm_act.cc), updating the running statistics as paddle's batch_norm does;
    anywhere else (static graphs, GPU, other layouts) it returns None and the caller runs the layers.
    Parameters and buffers are ``nn.BatchNorm2D``'s, so checkpoints load either way.
    """

    def __init__(self, channels: int, impl: str = "paddle"):
        super().__init__(channels)
        self.impl = impl

    def fused_forward(self, x, act, channels_last: bool = False):
        """``channels_last``: ``x`` is NHWC (the network's channels-last path), else NCHW like the layer's own."""
        if not (self.impl == "custom" and paddle.in_dynamic_mode() and x.place.is_cpu_place()
                and x.dtype == paddle.float32 and self._data_format == "NCHW" and self._use_global_stats is None):
            return None
        from ..cpu.ops import batchnorm_act

        y, mean, variance = batchnorm_act(x, self.weight, self.bias, self._mean, self._variance,
                                          self._epsilon, self.training, act, channels_last)
        if self.training:
            with paddle.no_grad():  # paddle's rule: running = momentum * running + (1 - momentum) * batch
                paddle.assign(self._mean * self._momentum + mean * (1 - self._momentum), self._mean)
                paddle.assign(self._variance * self._momentum + variance * (1 - self._momentum), self._variance)
        return y


_FUSED_ACTS = {None: None, nn.ReLU: "relu", nn.ReLU6: "relu6"}  # activation layer type -> the op's name
_UNFUSED = "unfused"  # not None, which means "no activation"


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm -> activation; ``act=None`` gives the linear bottleneck.

    ``depthwise_impl`` / ``pointwise_impl`` choose how depthwise 3x3 and 1x1 convs run, ``batchnorm_impl``
    whether BatchNorm and the activation run as one operator ("custom") or as paddle's layers.
    """

    def __init__(self, in_c, out_c, kernel_size=1, stride=1, groups=1, act=nn.ReLU, depthwise_impl="paddle",
                 pointwise_impl="paddle", batchnorm_impl="paddle"):
        if groups > 1 and groups == in_c == out_c:
            conv = DepthwiseConv2D(in_c, kernel_size, stride, impl=depthwise_impl)
        elif kernel_size == 1 and stride == 1 and groups == 1:
            conv = PointwiseConv2D(in_c, out_c, impl=pointwise_impl)
        else:
            conv = nn.Conv2D(in_c, out_c, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                             groups=groups, bias_attr=False)
        layers = [conv, BatchNormAct2D(out_c, impl=batchnorm_impl)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)
        self._fused_act = _FUSED_ACTS.get(act, _UNFUSED) if batchnorm_impl == "custom" else _UNFUSED

    def _fusable(self) -> bool:
        """The BatchNorm and activation are still the built ones, and nothing watches them: hooks (paddle.flops,
        paddle.summary, profilers) and replaced layers (quantization) need the layers to run one by one."""
        tail = list(self.children())[1:]
        if self._fused_act == _UNFUSED or type(tail[0]) is not BatchNormAct2D:
            return False
        if tail[1:] and _FUSED_ACTS.get(type(tail[1]), _UNFUSED) != self._fused_act:
            return False
        return not any(layer._forward_pre_hooks or layer._forward_post_hooks for layer in tail)

    def runs_channels_last(self) -> bool:
        """Whether ``forward_nhwc`` can run this layer: our depthwise operator or a 1x1 conv, then the fused
        BatchNorm + activation, all of them the built layers with no hooks."""
        conv, bn = self[0], self[1]
        if type(conv) is DepthwiseConv2D:
            ok = conv.impl == "custom"
        else:
            ok = type(conv) is PointwiseConv2D
        return (ok and self._fusable() and bn.impl == "custom" and bn._use_global_stats is None
                and not (conv._forward_pre_hooks or conv._forward_post_hooks
                         or self._forward_pre_hooks or self._forward_post_hooks))

    def runs_stem_channels_last(self, x) -> bool:
        """Whether ``stem_nhwc`` can run this layer on the NCHW image batch ``x``: a plain full conv (our stem
        operator, which gives no input gradient, so only for an ``x`` that needs none) then the fused BatchNorm +
        activation, all of them the built layers with no hooks, and ``forward`` the class's own."""
        bn = self[1]
        return (_plain_conv(self[0]) and x.stop_gradient and self._fusable() and bn.impl == "custom"
                and bn._use_global_stats is None and bn._data_format == "NCHW" and own_forward(self)
                and _defined_in(type(self), "forward") is _defined_in(type(self), "stem_nhwc")
                and not (self._forward_pre_hooks or self._forward_post_hooks))

    def stem_nhwc(self, x):
        """The layer on an NCHW image batch, returned channels-last (see ``runs_stem_channels_last``)."""
        from ..cpu import ops

        conv = self[0]
        y = ops.stem_conv2d_nhwc(x, conv.weight, stride=conv._stride[0], padding=conv._updated_padding[0])
        y = self[1].fused_forward(y, self._fused_act, channels_last=True)
        if y is None:  # only the callers' checks (runs_stem_channels_last, a float32 CPU batch) make this unreachable
            raise RuntimeError("ConvBNAct.stem_nhwc ran where the fused BatchNorm cannot")
        return y

    def forward_nhwc(self, x):
        y = self[1].fused_forward(self[0].forward_nhwc(x), self._fused_act, channels_last=True)
        if y is None:  # only the callers' checks (runs_channels_last, a float32 CPU batch) make this unreachable
            raise RuntimeError("ConvBNAct.forward_nhwc ran where the fused BatchNorm cannot")
        return y

    def forward(self, x):
        x = self[0](x)
        if self._fusable():
            y = self[1].fused_forward(x, self._fused_act)
            if y is not None:
                return y
        for layer in list(self.children())[1:]:
            x = layer(x)
        return x


def _plain_conv(conv) -> bool:
    """A built ``nn.Conv2D`` our stem operator computes alike: float32, no groups, bias or dilation, zero padding
    the same on every side, one stride, NCHW, no hooks."""
    return (type(conv) is nn.Conv2D and own_forward(conv) and conv._groups == 1 and conv.bias is None
            and conv.weight.dtype == paddle.float32 and list(conv._dilation) == [1, 1]
            and conv._padding_mode == "zeros" and conv._data_format == "NCHW"
            and conv._padding_algorithm == "EXPLICIT" and len(set(conv._updated_padding)) == 1
            and len(set(conv._stride)) == 1 and not (conv._forward_pre_hooks or conv._forward_post_hooks))


def _defined_in(cls, name):
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


def own_forward(layer) -> bool:
    """``layer.forward`` is its class's: not replaced on the instance (paddle.jit.to_static does that), except by
    the class's own method bound to it (paddle.flops leaves one)."""
    method = vars(layer).get("forward")
    return method is None or getattr(method, "__func__", None) is type(layer).forward


def runs_channels_last(layer) -> bool:
    """Whether ``forward_nhwc`` below can run ``layer`` and everything in it, with no hook bypassed and no
    ``forward`` skipped: one replaced on the instance, or overridden by a subclass that kept ``forward_nhwc``."""
    if layer._forward_pre_hooks or layer._forward_post_hooks or not own_forward(layer):
        return False
    cls = type(layer)
    if hasattr(layer, "forward_nhwc"):
        if _defined_in(cls, "forward") is not _defined_in(cls, "forward_nhwc"):
            return False
        if isinstance(layer, ConvBNAct):
            return layer.runs_channels_last()
        return all(runs_channels_last(child) for child in layer.children())
    if cls.forward is nn.Sequential.forward:
        return all(runs_channels_last(child) for child in layer.children())
    return False


def forward_nhwc(layer, x):
    """Run ``layer`` (a ConvBNAct, a block with ``forward_nhwc``, or an ``nn.Sequential`` of them) on NHWC ``x``."""
    if hasattr(layer, "forward_nhwc"):
        return layer.forward_nhwc(x)
    for child in layer.children():
        x = forward_nhwc(child, x)
    return x


def check_input(x, min_size: int, model_name: str, hint: str = "") -> None:
    """Turn wrong inputs into an error that says what to pass, before a conv fails obscurely."""
    shape = list(x.shape)
    if len(shape) != 4:
        raise ArgumentError(
            f"{model_name} expects a 4-D NCHW batch [N, 3, H, W], got shape {shape}; "
            f"add a batch axis with x.unsqueeze(0) for a single image")
    if shape[1] >= 0 and shape[1] != 3:
        raise ArgumentError(
            f"{model_name} expects 3 input channels (RGB, NCHW layout), got shape {shape}; "
            f"convert grayscale/RGBA images to RGB, or transpose NHWC to NCHW")
    h, w = shape[2], shape[3]
    if 0 <= min(h, w) < min_size:
        raise ArgumentError(
            f"{model_name}: input {h}x{w} is smaller than the network's total stride "
            f"({min_size}); feed at least {min_size}x{min_size} images{hint}")
