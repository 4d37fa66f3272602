"""paddle-mbnet: MobileNetV1/V2 in PaddlePaddle, true to the papers, with a fair
comparison against VGG and ResNet on CIFAR-10.

MobileNetV1: https://arxiv.org/abs/1704.04861   MobileNetV2: https://arxiv.org/abs/1801.04381

Layout: ``models/`` (the networks, their layers, the registry), ``training/`` (config, data, the loop,
checkpoints), ``cpu/`` (the depthwise and fused BatchNorm operators, MKL and malloc settings), ``analysis/``
(complexity, the papers' figures, benchmarks, the comparison), and ``deploy`` / ``predict`` for using a
trained run.
"""
import os as _os
import warnings as _warnings

from .cpu import blas as _blas

_blas.use_avx2_mkl_on_amd()  # before paddle runs its first GEMM; see cpu/blas.py
_threads = _os.environ.pop("OMP_NUM_THREADS", None)
with _warnings.catch_warnings():
    # paddle's import warns that ccache is missing (ccache only caches C++ compiles; the one operator here builds
    # once and is cached, see cpu/ops), and prints two lines about any OMP_NUM_THREADS above 1, which is this
    # project's intent on CPU: the count is restored right after, before any thread pool starts.
    _warnings.filterwarnings("ignore", message="No ccache found")
    import paddle  # noqa: E402, F401
if _threads is not None:
    _os.environ["OMP_NUM_THREADS"] = _threads

from .analysis.complexity import Complexity, complexity, paddle_flops  # noqa: E402
from .errors import MbnetError  # noqa: E402
from .models import MobileNetV1, MobileNetV2  # noqa: E402
from .models.layers import make_divisible  # noqa: E402
from .models.registry import build_model, list_models, register_model  # noqa: E402

__version__ = "0.2.0"
__all__ = ["MobileNetV1", "MobileNetV2", "build_model", "list_models", "register_model",
           "complexity", "paddle_flops", "Complexity", "make_divisible", "MbnetError"]
