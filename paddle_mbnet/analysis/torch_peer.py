"""MobileNetV1/V2 in PyTorch, built from this project's tables: the benchmarks' peer (PyTorch is optional and
benchmark-only, see requirements-bench.txt; nothing else imports this module).

Written here rather than taken from torchvision: torchvision has no MobileNetV1, and both peers must share our
tables and CIFAR changes exactly for a fair timing.
"""
from __future__ import annotations

from ..models.layers import make_divisible
from ..models.mobilenet_v1 import DEPTHWISE_SEPARABLE_SETTING
from ..models.mobilenet_v2 import INVERTED_RESIDUAL_SETTING


def build(name: str, small_input: bool = True, num_classes: int = 10):
    """``mobilenet_v1`` or ``mobilenet_v2`` as a ``torch.nn.Module`` (width 1.0, random weights)."""
    from torch import nn

    def cba(c_in, c_out, kernel=1, stride=1, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(c_out)]
        return layers + ([act()] if act else [])

    stem_stride = 1 if small_input else 2
    if name == "mobilenet_v1":
        layers, c_in = cba(3, 32, 3, stem_stride), 32
        for c, n, s in DEPTHWISE_SEPARABLE_SETTING:
            for i in range(n):
                layers += cba(c_in, c_in, 3, s if i == 0 else 1, c_in) + cba(c_in, c)
                c_in = c
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, num_classes))
    if name != "mobilenet_v2":
        raise ValueError(f"no PyTorch peer for {name!r}; mobilenet_v1 or mobilenet_v2")

    class InvertedResidual(nn.Module):
        def __init__(self, c_in, c_out, stride, expand):
            super().__init__()
            hidden = c_in * expand
            self.residual = stride == 1 and c_in == c_out
            self.conv = nn.Sequential(*(cba(c_in, hidden, act=nn.ReLU6) if expand != 1 else []),
                                      *cba(hidden, hidden, 3, stride, hidden, nn.ReLU6), *cba(hidden, c_out, act=None))

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    layers, c_in = cba(3, 32, 3, stem_stride, act=nn.ReLU6), 32
    first_downsampling_row = next(i for i, row in enumerate(INVERTED_RESIDUAL_SETTING) if row[3] == 2)
    for row, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTING):
        s = 1 if small_input and row == first_downsampling_row else s  # the same CIFAR change as small_input=True
        for i in range(n):
            layers.append(InvertedResidual(c_in, make_divisible(c), s if i == 0 else 1, t))
            c_in = make_divisible(c)
    layers += cba(c_in, 1280, act=nn.ReLU6)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, num_classes))
