"""Process-wide runtime choices shared by training and the benchmarks: seeds, device, clock synchronization."""
from __future__ import annotations

import random

import numpy as np
import paddle

from ..errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def select_device(name: str) -> str:
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise ConfigError("Global.device=gpu but paddle sees no GPU (CPU build or no CUDA device); "
                           "install paddlepaddle-gpu or use -o Global.device=cpu")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    if device == "gpu":
        device = f"gpu:{paddle.distributed.ParallelEnv().dev_id}"
    paddle.set_device(device)
    return device


def synchronize() -> None:
    """Wait for queued GPU work before reading a clock (a no-op on CPU)."""
    if paddle.get_device().startswith("gpu"):
        paddle.device.synchronize()
