"""paddle-mbnet: MobileNetV1/V2 in PaddlePaddle, true to the papers, with a fair
comparison against VGG and ResNet on CIFAR-10.

MobileNetV1: https://arxiv.org/abs/1704.04861   MobileNetV2: https://arxiv.org/abs/1801.04381
"""
from . import cpu_blas

cpu_blas.use_avx2_mkl_on_amd()  # before paddle runs its first GEMM; see cpu_blas

from .complexity import Complexity, complexity, paddle_flops  # noqa: E402
from .layers import make_divisible  # noqa: E402
from .models import MobileNetV1, MobileNetV2  # noqa: E402
from .registry import build_model, list_models, register_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MobileNetV1", "MobileNetV2", "build_model", "list_models", "register_model",
           "complexity", "paddle_flops", "Complexity", "make_divisible"]
