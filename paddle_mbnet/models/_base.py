"""What MobileNetV1 and V2 share: argument checks, the classifier head, forward."""
from __future__ import annotations

import numbers

import paddle
from paddle import nn

from ..errors import ArgumentError
from .layers import (
    ConvBNAct,
    check_depthwise,
    check_input,
    check_pointwise,
    forward_nhwc,
    own_forward,
    resolve_batchnorm,
    resolve_depthwise,
    resolve_layout,
    resolve_pointwise,
    runs_channels_last,
)


def check_table(rows, header: str, name: str) -> None:
    """Fail loudly on a malformed architecture table, showing the bad row."""
    width = len(header.split(","))
    if not rows:
        raise ArgumentError(f"{name}: the architecture table is empty")
    for row in rows:
        if len(row) != width or not all(isinstance(v, numbers.Integral) and v > 0 for v in row):
            raise ArgumentError(f"{name}: table row {row!r} must be {width} positive integers ({header})")
        if row[-1] not in (1, 2):
            raise ArgumentError(f"{name}: table row {row!r} has stride {row[-1]}; strides are 1 or 2")


class MobileNetBase(nn.Layer):
    """Subclasses build ``self.features`` and return the width of its output."""

    def __init__(self, scale, num_classes, with_pool, depthwise, pointwise, batchnorm, layout="auto"):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not scale > 0:
            raise ArgumentError(f"scale (width multiplier) must be a number > 0, got {scale!r}; "
                             f"the papers use 1.0, 0.75, 0.5, 0.25")
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise ArgumentError(f"num_classes must be an integer >= 0 (0 drops the classifier), got {num_classes!r}")
        self.scale = float(scale)
        self.num_classes = int(num_classes)
        self.with_pool = with_pool
        self.depthwise = check_depthwise(depthwise)
        self.depthwise_impl = resolve_depthwise(depthwise)
        self.pointwise = check_pointwise(pointwise)
        self.pointwise_impl = resolve_pointwise(pointwise)
        self.batchnorm = batchnorm
        self.batchnorm_impl = resolve_batchnorm(batchnorm)
        self.layout = layout
        self.layout_impl = resolve_layout(layout, self.depthwise_impl, self.pointwise_impl, self.batchnorm_impl)
        self.conv_impls = {"depthwise_impl": self.depthwise_impl, "pointwise_impl": self.pointwise_impl,
                           "batchnorm_impl": self.batchnorm_impl}
        self.min_input_size = 1
        self._size_hint = ""
        self._channels_last_now = False  # set by __call__ for the call in progress

    def _make_head(self, channels: int, dropout: float = 0.0) -> None:
        self.out_channels = channels
        if self.with_pool:
            self.pool = nn.AdaptiveAvgPool2D(1)
        if self.num_classes > 0:
            fc = nn.Linear(channels, self.num_classes)
            self.classifier = nn.Sequential(nn.Dropout(dropout), fc) if dropout > 0 else fc

    def _check_layout(self) -> None:
        """Called by subclasses once ``features`` is built: an explicit NHWC must be able to run, and an 'auto'
        one that cannot (Table 4's full convolutions) says NCHW, as the trainer's first line reports it."""
        if self.layout_impl == "NHWC" and not all(runs_channels_last(block)
                                                  for block in list(self.features.children())[1:]):
            if self.layout == "NHWC":
                raise ArgumentError("layout='NHWC' needs depthwise-separable blocks (not full_conv=True); "
                                    "use layout='NCHW' or 'auto'")
            self.layout_impl = "NCHW"

    def uses_channels_last(self, x) -> bool:
        """The NHWC path runs in eager mode on a float32 CPU batch when every block after the stem supports it
        (quantization wrappers and hooks such as paddle.flops' need the layers called one by one, in NCHW) and
        ``forward`` is the class's own (paddle.jit.to_static replaces it)."""
        return (self.layout_impl == "NHWC" and paddle.in_dynamic_mode() and own_forward(self)
                and x.place.is_cpu_place()
                and x.dtype == paddle.float32 and self._unwatched_average_pool()
                and type(self.features).forward is nn.Sequential.forward and own_forward(self.features)
                and not (self.features._forward_pre_hooks or self.features._forward_post_hooks)
                and all(runs_channels_last(block) for block in list(self.features.children())[1:]))

    def _unwatched_average_pool(self) -> bool:
        """The head pools as ``_features_nhwc`` does (a global average), and nothing watches the pool."""
        if not self.with_pool:
            return True
        pool = self.pool
        return (type(pool) is nn.AdaptiveAvgPool2D and pool._output_size in (1, [1, 1], (1, 1))
                and not (pool._forward_pre_hooks or pool._forward_post_hooks))

    def _features_nhwc(self, x):
        """``features`` with activations channels-last after the stem: 1x1 convs become single GEMMs and no layer
        transposes. Returns the pooled [N, C, 1, 1] (with_pool) or the NCHW feature map, as the NCHW path does."""
        blocks = list(self.features.children())
        stem = blocks[0]
        if isinstance(stem, ConvBNAct) and stem.runs_stem_channels_last(x):
            x = stem.stem_nhwc(x)
        else:  # paddle's conv, e.g. for an input that needs a gradient (our stem operator gives it none)
            x = stem(x).transpose([0, 2, 3, 1]).contiguous()
        for block in blocks[1:]:
            x = forward_nhwc(block, x)
        if self.with_pool:
            return x.mean(axis=[1, 2], keepdim=True).transpose([0, 3, 1, 2]).contiguous()
        return x.transpose([0, 3, 1, 2]).contiguous()

    def __call__(self, *inputs, **kwargs):
        # The layout is chosen here, outside ``forward``: paddle.jit.to_static replaces ``forward`` on the instance
        # and translates it, and its translator (SOT) fails on these checks; such a model runs the NCHW layers.
        x = inputs[0] if inputs else kwargs.get("x")
        self._channels_last_now = isinstance(x, paddle.Tensor) and self.uses_channels_last(x)
        try:
            return super().__call__(*inputs, **kwargs)
        finally:
            self._channels_last_now = False  # a direct ``forward()`` call takes the NCHW layers

    def forward(self, x):
        check_input(x, self.min_input_size, type(self).__name__, self._size_hint)
        if self._channels_last_now:
            x = self._features_nhwc(x)
        else:
            x = self.features(x)
            if self.with_pool:
                x = self.pool(x)
        if self.num_classes > 0:
            x = self.classifier(paddle.flatten(x, 1))
        return x
