"""Parameters and multiply-adds counted as the MobileNet papers count them.

The papers count the multiply-adds of convolutions and fully connected layers
only (V1 Tables 2, 6, 7; V2 Table 4). ``paddle.flops`` also counts BatchNorm,
activations, pooling and additions and gives no per-type breakdown, so we count
with forward hooks on ``nn.Conv2D`` / ``nn.Linear`` instead; ``paddle_flops``
wraps ``paddle.flops`` for comparison (tests/test_complexity.py shows the gap).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np
import paddle
from paddle import nn

LAYER_TYPES = ("conv1x1", "conv_dw", "conv_full", "fc")
LAYER_TYPE_NAMES = {"conv1x1": "Conv 1x1", "conv_dw": "Conv DW", "conv_full": "Conv (full, kxk)",
                    "fc": "Fully connected"}


def _layer_type(layer) -> str:
    if isinstance(layer, nn.Linear):
        return "fc"
    groups = layer._groups
    if groups > 1 and groups == layer._in_channels:
        return "conv_dw"
    if list(layer.weight.shape[2:]) == [1, 1] and groups == 1:
        return "conv1x1"
    return "conv_full"


@dataclass
class Complexity:
    """``params``: every trainable parameter (as paddle.vision/paddle.summary count them, BN included).
    ``params_conv_fc``: conv and FC weights and biases only, as the papers count them.
    ``macs``: multiply-adds of conv and FC layers for one image.
    ``by_type``: per layer type ("conv1x1", "conv_dw", "conv_full", "fc"): macs, params and their shares."""
    params: int
    params_conv_fc: int
    macs: int
    input_shape: tuple
    by_type: dict = field(default_factory=dict)

    def table(self) -> str:
        """V1 Table 2 layout: share of mult-adds and parameters per layer type."""
        rows = ["| Type | Mult-Adds | Parameters |", "|---|---:|---:|"]
        for t in LAYER_TYPES:
            d = self.by_type[t]
            rows.append(f"| {LAYER_TYPE_NAMES[t]} | {100 * d['macs_share']:.2f}% | {100 * d['params_share']:.2f}% |")
        return "\n".join(rows)


def complexity(model: nn.Layer, input_shape=(3, 224, 224)) -> Complexity:
    """Count params and multiply-adds of ``model`` for one image of ``input_shape`` (C, H, W)."""
    counts = {t: {"macs": 0, "params": 0} for t in LAYER_TYPES}

    def hook(layer, inputs, output):
        kind, weight = _layer_type(layer), layer.weight
        counts[kind]["macs"] += _macs(layer, output)
        counts[kind]["params"] += int(np.prod(weight.shape)) + (
            int(np.prod(layer.bias.shape)) if layer.bias is not None else 0)

    _forward_with_hooks(model, [m for m in model.sublayers() if isinstance(m, (nn.Conv2D, nn.Linear))], hook,
                        input_shape)
    macs = sum(d["macs"] for d in counts.values())
    params_conv_fc = sum(d["params"] for d in counts.values())
    for d in counts.values():
        d["macs_share"] = d["macs"] / macs if macs else 0.0
        d["params_share"] = d["params"] / params_conv_fc if params_conv_fc else 0.0
    params = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    return Complexity(params, params_conv_fc, macs, tuple(input_shape), counts)


def paddle_flops(model: nn.Layer, input_shape=(3, 224, 224)) -> int:
    """``paddle.flops`` for one image: conv/FC multiply-adds plus BN, activations and pooling."""
    from paddle.hapi.dynamic_flops import count_bn, count_convNd

    from ..models.layers import BatchNormAct2D, DepthwiseConv2D, PointwiseConv2D

    was_training = model.training
    model.eval()
    try:
        # paddle.flops looks layers up by exact type, so our nn.Conv2D / nn.BatchNorm2D subclasses need naming;
        # it also prints a line per layer type, which we silence.
        with contextlib.redirect_stdout(io.StringIO()):
            ours = {DepthwiseConv2D: count_convNd, PointwiseConv2D: count_convNd, BatchNormAct2D: count_bn}
            return int(paddle.flops(model, [1, *input_shape], custom_ops=ours, print_detail=False))
    finally:
        model.train(was_training)


@dataclass
class LayerRow:
    name: str
    kind: str  # the layer's class name
    output_shape: list
    params: int
    macs: int | None  # conv and FC layers only, as the papers count


def layer_rows(model: nn.Layer, input_shape=(3, 224, 224)) -> list[LayerRow]:
    """One row per leaf layer, in execution order: output shape, own parameters, multiply-adds."""
    rows = []

    def hook(layer, inputs, output):
        params = sum(int(np.prod(p.shape)) for p in layer.parameters(include_sublayers=False) if not p.stop_gradient)
        macs = _macs(layer, output) if isinstance(layer, (nn.Conv2D, nn.Linear)) else None
        rows.append(LayerRow(names[id(layer)], type(layer).__name__, list(output.shape[1:]), params, macs))

    names = {id(layer): name for name, layer in model.named_sublayers()}
    _forward_with_hooks(model, [layer for layer in model.sublayers() if not layer.sublayers()], hook, input_shape)
    return rows


def _macs(layer, output) -> int:
    """Multiply-adds of a conv or FC layer for one image: each output element costs (C_in / groups) * k_h * k_w
    (conv) or in_features (FC)."""
    per_output = layer.weight.shape[0] if isinstance(layer, nn.Linear) else int(np.prod(layer.weight.shape[1:]))
    return int(np.prod(output.shape[1:])) * per_output


def _forward_with_hooks(model, layers, hook, input_shape) -> None:
    """One eval-mode forward of a zero image with ``hook`` on ``layers``; the model's mode is restored."""
    handles = [layer.register_forward_post_hook(hook) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, *input_shape], dtype="float32"))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
