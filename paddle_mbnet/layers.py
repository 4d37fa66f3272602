"""Building blocks shared by our MobileNetV1 and MobileNetV2."""
from __future__ import annotations

import paddle
from paddle import nn

DEPTHWISE_IMPLS = ("auto", "paddle", "custom")


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


def check_depthwise(depthwise: str) -> str:
    if depthwise not in DEPTHWISE_IMPLS:
        raise ValueError(
            f"depthwise={depthwise!r} is not a depthwise implementation; "
            f"use one of {', '.join(map(repr, DEPTHWISE_IMPLS))}")
    return depthwise


def resolve_depthwise(depthwise: str) -> str:
    """'auto' / 'custom' / 'paddle' -> the implementation that will actually run."""
    check_depthwise(depthwise)
    if depthwise == "paddle":
        return "paddle"
    from .ops import custom_depthwise_available

    if depthwise == "custom":
        custom_depthwise_available(required=True)
        return "custom"
    # auto: our kernel only helps on CPU; on GPU paddle's cuDNN kernel is the fast one.
    if paddle.device.is_compiled_with_cuda() and paddle.get_device().startswith("gpu"):
        return "paddle"
    return "custom" if custom_depthwise_available(required=False) else "paddle"


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
            from .ops import depthwise_conv2d

            return depthwise_conv2d(x, self.weight, stride=self._dw_stride, padding=self._dw_padding)
        return super().forward(x)


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm -> activation; ``act=None`` gives the linear bottleneck."""

    def __init__(self, in_c, out_c, kernel_size=1, stride=1, groups=1, act=nn.ReLU, depthwise_impl="paddle"):
        if groups > 1 and groups == in_c == out_c:
            conv = DepthwiseConv2D(in_c, kernel_size, stride, impl=depthwise_impl)
        else:
            conv = nn.Conv2D(in_c, out_c, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                             groups=groups, bias_attr=False)
        layers = [conv, nn.BatchNorm2D(out_c)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def check_input(x, min_size: int, model_name: str, hint: str = "") -> None:
    """Turn wrong inputs into an error that says what to pass, before a conv fails obscurely."""
    shape = list(x.shape)
    if len(shape) != 4:
        raise ValueError(
            f"{model_name} expects a 4-D NCHW batch [N, 3, H, W], got shape {shape}; "
            f"add a batch axis with x.unsqueeze(0) for a single image")
    if shape[1] >= 0 and shape[1] != 3:
        raise ValueError(
            f"{model_name} expects 3 input channels (RGB, NCHW layout), got shape {shape}; "
            f"convert grayscale/RGBA images to RGB, or transpose NHWC to NCHW")
    h, w = shape[2], shape[3]
    if 0 <= min(h, w) < min_size:
        raise ValueError(
            f"{model_name}: input {h}x{w} is smaller than the network's total stride "
            f"({min_size}); feed at least {min_size}x{min_size} images{hint}")
