"""MobileNetV1 (Howard et al., 2017, https://arxiv.org/abs/1704.04861).

The network of the paper's Table 1: a 3x3 stride-2 convolution, 13
depthwise-separable blocks (3x3 depthwise + BN + ReLU, 1x1 pointwise + BN +
ReLU), global average pooling and a fully connected classifier. ``scale`` is
the paper's width multiplier alpha and thins every layer as ``int(c * alpha)``,
as the paper and paddle.vision do.
"""
from __future__ import annotations

from paddle import nn

from ..errors import ArgumentError
from ._base import MobileNetBase, check_table
from .layers import ConvBNAct

STEM_CHANNELS = 32

# Table 1 of the paper, one row per group of depthwise-separable blocks:
# c = output channels of the pointwise conv, n = repeats, s = stride of the first depthwise conv.
DEPTHWISE_SEPARABLE_SETTING = [
    # c, n, s
    [64, 1, 1],
    [128, 1, 2],
    [128, 1, 1],
    [256, 1, 2],
    [256, 1, 1],
    [512, 1, 2],
    [512, 5, 1],  # the five 14x14x512 blocks; Table 5's "shallow" MobileNet removes them
    [1024, 1, 2],
    [1024, 1, 1],  # Table 1 prints "s2" here, but its output stays 7x7: stride 1, as every implementation has it
]
SHALLOW_ROW = 6


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, in_c, out_c, stride, conv_impls):
        super().__init__(
            ConvBNAct(in_c, in_c, 3, stride, groups=in_c, **conv_impls),
            ConvBNAct(in_c, out_c, 1, **conv_impls),
        )


class MobileNetV1(MobileNetBase):
    """MobileNetV1.

    Args:
        scale: width multiplier alpha (> 0).
        num_classes: classifier outputs; 0 returns the pooled features.
        with_pool: global average pool before the classifier.
        small_input: adapt to 32x32 inputs (CIFAR): the stem runs at stride 1.
            Off by default, which is the paper's network.
        shallow: Table 5's shallow MobileNet (the five 14x14x512 blocks removed).
        depthwise: "paddle", "custom" or "auto" (see ``paddle_mbnet.ops``).
        pointwise: 1x1 convs as "paddle" conv2d, "matmul", or "auto" = matmul on small maps on CPU
            (see ``layers.PointwiseConv2D``).
        batchnorm: BatchNorm + ReLU as paddle's layers ("paddle"), as one CPU operator ("custom"), or
            "auto" = the operator on CPU when it builds (see ``layers.BatchNormAct2D``).
        layout: activations between the stem and the pool as "NCHW", channels-last "NHWC" (our CPU operators
            and 1x1 convs as single GEMMs, no transposes), or "auto" = NHWC when those operators run.
            Inputs, outputs and parameters keep paddle's layouts either way.
        full_conv: Table 4's "Conv MobileNet": every depthwise-separable block becomes
            one full 3x3 conv + BN + ReLU with the same output width and stride.
    """

    def __init__(self, scale=1.0, num_classes=1000, with_pool=True, small_input=False,
                 shallow=False, depthwise="auto", setting=None, full_conv=False, pointwise="auto",
                 batchnorm="auto", layout="auto"):
        super().__init__(scale, num_classes, with_pool, depthwise, pointwise, batchnorm, layout)
        setting = DEPTHWISE_SEPARABLE_SETTING if setting is None else setting
        check_table(setting, "c, n, s", type(self).__name__)
        if shallow:
            setting = [row for i, row in enumerate(setting) if i != SHALLOW_ROW]

        def width(c):
            w = int(c * self.scale)
            if w < 1:
                raise ArgumentError(f"scale={scale} leaves a {c}-channel layer with {w} channels; use a larger scale")
            return w

        stem_stride = 1 if small_input else 2  # NOTE: CIFAR: keep 32x32 inputs from shrinking to 1x1
        in_c = width(STEM_CHANNELS)
        layers = [ConvBNAct(3, in_c, 3, stem_stride, batchnorm_impl=self.batchnorm_impl)]
        self.min_input_size = stem_stride
        for c, n, s in setting:
            for i in range(n):
                stride = s if i == 0 else 1
                layers.append(ConvBNAct(in_c, width(c), 3, stride, batchnorm_impl=self.batchnorm_impl) if full_conv
                              else DepthwiseSeparable(in_c, width(c), stride, self.conv_impls))
                in_c = width(c)
                self.min_input_size *= stride
        self.features = nn.Sequential(*layers)
        if not small_input:
            self._size_hint = ", or build the model with small_input=True"
        self._make_head(in_c)
        self._check_layout()
