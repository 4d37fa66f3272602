"""Export to a Paddle inference model (``paddle.jit.save``) and run it with ``paddle.inference``.

Exported graphs always use paddle's own depthwise kernel (our custom operator
runs in dynamic mode only), so the inference model needs nothing from this
project to load.
"""
from __future__ import annotations

import os

import numpy as np
import paddle

from .errors import CheckpointError


def prepare_folder(prefix: str) -> None:
    """Create the folder of an export prefix, or fail in one line when it cannot be."""
    folder = os.path.dirname(os.path.abspath(prefix))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CheckpointError(f"cannot export into {folder!r}: it is a file; pass a directory with --out")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create {folder!r} ({e.strerror or e}); pass another directory with --out") \
            from None


def export(model, prefix: str, image_size: int) -> str:
    """Save ``model`` for inference with input [N, 3, image_size, image_size]; returns the prefix."""
    model.eval()
    prepare_folder(prefix)
    spec = [paddle.static.InputSpec([None, 3, image_size, image_size], "float32", name="x")]
    paddle.jit.save(model, prefix, input_spec=spec)
    return prefix


def _model_file(prefix: str) -> str:
    for ext in (".json", ".pdmodel"):  # PIR programs (paddle >= 3) or the legacy format
        if os.path.isfile(prefix + ext):
            return prefix + ext
    raise CheckpointError(f"no inference model at {prefix}.json or {prefix}.pdmodel; run tools/export.py first")


def create_predictor(prefix: str, threads: int = 1, onednn: bool = True, gpu: bool = False, tensorrt: bool = False,
                     int8_ops=None):
    """A ``paddle.inference`` predictor: oneDNN on CPU, optionally TensorRT on GPU. ``int8_ops`` (operator types)
    runs a quantized model's convolutions with oneDNN's int8 kernels (see ``paddle_mbnet.quantize``)."""
    from paddle import inference

    config = inference.Config(_model_file(prefix), prefix + ".pdiparams")
    if gpu:
        config.enable_use_gpu(256, 0)
        if tensorrt:
            config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=64, min_subgraph_size=3,
                                          precision_mode=inference.PrecisionType.Float32)
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads)
        if onednn or int8_ops:
            config.enable_mkldnn()
        if int8_ops:
            config.enable_mkldnn_int8(set(int8_ops))
    config.disable_glog_info()
    config.switch_ir_optim(True)
    return inference.create_predictor(config)


def run_predictor(predictor, x: np.ndarray) -> np.ndarray:
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(np.ascontiguousarray(x, dtype="float32"))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
