"""INT8 post-training quantization with ``paddle.quantization``, run by Paddle Inference's oneDNN int8 kernels.

Each step below was found by running it on paddle 3.3's CPU build; the obvious alternative fails:
- PTQ matches layers by exact type, so the project's ``nn.Conv2D`` subclasses are mapped to ``QuantedConv2D``
  explicitly; otherwise they stay float32 without a warning.
- paddle ships a per-tensor ``AbsmaxObserver`` only (its group-wise observer is for 2-D weights), so the
  per-output-channel weight observer is written here.
- The int8 model is saved in the legacy program format: Paddle Inference 3.3 cannot run PIR programs that hold
  quantize/dequantize ops (constant folding fails, and the dequantize op is lowered to the wrong kernel), and
  PIR has no oneDNN int8 passes.
- ``convert()`` keeps quantized weights as float32 integers; oneDNN's quant-dequant pass reads them as int8
  tensors, so they are rewritten as int8.
- The classifier stays float32: oneDNN's int8 ``fc`` gives wrong outputs in paddle 3.3.
"""
from __future__ import annotations

import numpy as np
import paddle
from paddle import nn
from paddle.quantization.base_observer import BaseObserver
from paddle.quantization.factory import ObserverFactory

from .deploy import prepare_folder
from .errors import ArgumentError
from .models.layers import DepthwiseConv2D, PointwiseConv2D

WEIGHT_OBSERVERS = ("channel", "tensor")
INT8_OPS = {"conv2d", "depthwise_conv2d", "fused_conv2d", "pool2d"}  # no "fc": see the module docstring


class ChannelAbsmaxObserver(ObserverFactory):
    """Weight scales per output channel: the largest absolute weight of each channel."""

    def __init__(self, quant_bits: int = 8):
        super().__init__(quant_bits=quant_bits)

    def _get_class(self):
        return _ChannelAbsmaxLayer


class _ChannelAbsmaxLayer(BaseObserver):
    def __init__(self, layer, quant_bits: int = 8):
        super().__init__()
        self._quant_bits = quant_bits
        self._axis = 1 if isinstance(layer, nn.Linear) else 0  # Linear weights are [in, out], convs [out, in, k, k]
        self._max = None

    def forward(self, weight):
        dims = [d for d in range(weight.ndim) if d != self._axis]
        largest = paddle.clip(paddle.max(paddle.abs(weight), axis=dims).astype("float32"), min=1e-8)
        self._max = largest if self._max is None else paddle.maximum(self._max, largest)
        return weight

    def cal_thresholds(self):
        pass

    def scales(self):
        return self._max

    def zero_points(self):
        return paddle.zeros_like(self._max)

    def quant_axis(self):
        return self._axis

    def bit_length(self):
        return self._quant_bits


def quant_config(weight_observer: str = "channel"):
    """Every convolution quantized (its input by abs-max over the calibration, its weights per channel or per
    tensor); everything else float32."""
    from paddle.nn.quant.qat import QuantedConv2D
    from paddle.quantization import QuantConfig
    from paddle.quantization.observers import AbsmaxObserver

    if weight_observer not in WEIGHT_OBSERVERS:
        raise ArgumentError(f"--weight-observer must be one of {', '.join(WEIGHT_OBSERVERS)}, got {weight_observer!r}")
    config = QuantConfig(activation=None, weight=None)
    conv_types = [nn.Conv2D, DepthwiseConv2D, PointwiseConv2D]
    for subclass in conv_types[1:]:
        config.add_qat_layer_mapping(subclass, QuantedConv2D)
    weights = ChannelAbsmaxObserver() if weight_observer == "channel" else AbsmaxObserver(quant_bits=8)
    config.add_type_config(conv_types, activation=AbsmaxObserver(quant_bits=8), weight=weights)
    return config


def quantize(model, calibration_batches, weight_observer: str = "channel"):
    """A converted copy of ``model`` (eval mode) with observed int8 scales; ``model`` itself is left as it was."""
    from paddle.quantization import PTQ

    model.eval()
    ptq = PTQ(quant_config(weight_observer))
    observed = ptq.quantize(model, inplace=False)
    quantized_convs = sum(type(layer).__name__ == "QuantedConv2D" for layer in observed.sublayers())
    plain_convs = sum(isinstance(layer, nn.Conv2D) for layer in model.sublayers())
    if quantized_convs != plain_convs:  # a conv type PTQ does not know would stay float32 silently
        raise RuntimeError(f"PTQ quantized {quantized_convs} of the model's {plain_convs} convolutions")
    with paddle.no_grad():
        for images in calibration_batches:
            observed(paddle.to_tensor(images))
    return ptq.convert(observed, inplace=False)


def export_int8(converted, prefix: str, image_size: int) -> str:
    """Save the converted model as a legacy-format inference program with int8 weight tensors; returns prefix."""
    prepare_folder(prefix)
    spec = [paddle.static.InputSpec([None, 3, image_size, image_size], "float32", name="x")]
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(converted, prefix, input_spec=spec)
        paddle.enable_static()
        try:
            _store_weights_as_int8(prefix)
        finally:
            paddle.disable_static()
    return prefix


def _store_weights_as_int8(prefix: str) -> None:
    executor, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        program, feeds, fetches = paddle.static.load_inference_model(prefix, executor)
        block = program.global_block()
        for op in block.ops:
            name = op.input("X")[0] if op.type == "dequantize_linear" else None
            if name is None or not block.var(name).persistable:
                continue
            tensor = scope.find_var(name).get_tensor()
            values = np.array(tensor)
            if not (np.array_equal(values, np.round(values)) and values.min() >= -128 and values.max() <= 127):
                raise RuntimeError(f"quantized weight {name} holds values outside int8")
            tensor.set(values.astype(np.int8), paddle.CPUPlace())
        paddle.static.save_inference_model(prefix, [block.var(f) for f in feeds], fetches, executor, program=program)

