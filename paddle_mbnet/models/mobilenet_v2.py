"""MobileNetV2 (Sandler et al., 2018, https://arxiv.org/abs/1801.04381).

The network of the paper's Table 2: a 3x3 stride-2 convolution, 17 inverted
residual blocks, a 1x1 convolution to 1280 channels, global average pooling,
dropout and a fully connected classifier. Each block expands with a 1x1 conv
(ReLU6, skipped when t = 1), filters with a 3x3 depthwise conv (ReLU6) and
projects with a *linear* 1x1 conv. The residual is the identity and exists only
when stride is 1 and input and output widths match: the paper has no 1x1
projection shortcut, although several tutorials add one.
"""
from __future__ import annotations

from paddle import nn

from ._base import MobileNetBase, check_table
from .layers import ConvBNAct, forward_nhwc, make_divisible

STEM_CHANNELS = 32
LAST_CHANNELS = 1280

# Table 2 of the paper: t = expansion factor, c = output channels, n = repeats,
# s = stride of the first block of the row.
INVERTED_RESIDUAL_SETTING = [
    # t, c, n, s
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class InvertedResidual(nn.Layer):
    def __init__(self, in_c, out_c, stride, expand_ratio, conv_impls):
        super().__init__()
        hidden = int(round(in_c * expand_ratio))
        self.use_residual = stride == 1 and in_c == out_c
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_c, hidden, 1, act=nn.ReLU6, **conv_impls))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6, **conv_impls),
            ConvBNAct(hidden, out_c, 1, act=None, **conv_impls),  # linear bottleneck: no activation
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)

    def forward_nhwc(self, x):
        """``forward`` on the network's channels-last path (models/_base.py)."""
        y = forward_nhwc(self.conv, x)
        return x + y if self.use_residual else y


class MobileNetV2(MobileNetBase):
    """MobileNetV2.

    Args:
        scale: width multiplier (> 0); widths are rounded to multiples of 8
            with ``make_divisible`` as the reference implementations do.
        num_classes: classifier outputs; 0 returns the pooled features.
        with_pool: global average pool before the classifier.
        small_input: adapt to 32x32 inputs (CIFAR): the stem and the first
            stride-2 row of the table run at stride 1. Off by default (the paper).
        depthwise: "paddle", "custom" or "auto" (see ``paddle_mbnet.ops``).
        pointwise: 1x1 convs as "paddle" conv2d, "matmul", or "auto" = matmul on small maps on CPU
            (see ``layers.PointwiseConv2D``).
        batchnorm: BatchNorm + ReLU6 as paddle's layers ("paddle"), as one CPU operator ("custom"), or
            "auto" = the operator on CPU when it builds (see ``layers.BatchNormAct2D``).
        layout: activations between the stem and the pool as "NCHW", channels-last "NHWC" (our CPU operators
            and 1x1 convs as single GEMMs, no transposes), or "auto" = NHWC when those operators run.
            Inputs, outputs and parameters keep paddle's layouts either way.
        dropout: dropout before the classifier (0.2 in paddle.vision/torchvision).
    """

    def __init__(self, scale=1.0, num_classes=1000, with_pool=True, small_input=False,
                 depthwise="auto", dropout=0.2, setting=None, pointwise="auto",
                 batchnorm="auto", layout="auto"):
        super().__init__(scale, num_classes, with_pool, depthwise, pointwise, batchnorm, layout)
        setting = INVERTED_RESIDUAL_SETTING if setting is None else setting
        check_table(setting, "t, c, n, s", type(self).__name__)

        stem_stride = 1 if small_input else 2  # NOTE: CIFAR
        in_c = make_divisible(STEM_CHANNELS * self.scale)
        last_c = make_divisible(LAST_CHANNELS * max(1.0, self.scale))
        layers = [ConvBNAct(3, in_c, 3, stem_stride, act=nn.ReLU6, batchnorm_impl=self.batchnorm_impl)]
        self.min_input_size = stem_stride
        first_downsampling_row = next((i for i, row in enumerate(setting) if row[3] == 2), None)
        for row_index, (t, c, n, s) in enumerate(setting):
            if small_input and row_index == first_downsampling_row:
                s = 1  # NOTE: CIFAR: 32x32 inputs end at 4x4 instead of 1x1
            out_c = make_divisible(c * self.scale)
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(InvertedResidual(in_c, out_c, stride, t, self.conv_impls))
                in_c = out_c
                self.min_input_size *= stride
        layers.append(ConvBNAct(in_c, last_c, 1, act=nn.ReLU6, **self.conv_impls))
        self.features = nn.Sequential(*layers)
        if not small_input:
            self._size_hint = ", or build the model with small_input=True"
        self._make_head(last_c, dropout)
        self._check_layout()
