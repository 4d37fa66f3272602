"""Timing helpers shared by the benchmark tools: warm-up, synchronize, medians over repeats,
and a header naming the hardware, versions and thread count (as timm's benchmark.py does)."""
from __future__ import annotations

import os
import platform
import time

import numpy as np
import paddle

from ..cpu import blas as cpu_blas
from ..cpu import denormals as cpu_denormals
from ..cpu import memory as cpu_memory
from ..training.runtime import synchronize


def env_header() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = paddle.get_device()
    gpu = ""
    if device.startswith("gpu"):
        gpu = f", GPU {paddle.device.cuda.get_device_name()}, CUDA {paddle.version.cuda()}"
    return (f"device {device}{gpu}, CPU {cpu} ({os.cpu_count()} logical cores), "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, paddle {paddle.__version__}, "
            f"python {platform.python_version()}; {cpu_memory.describe()}; {cpu_blas.describe()}; "
            f"{cpu_denormals.describe()}")


def time_fn(fn, warmup: int = 2, repeats: int = 5) -> np.ndarray:
    """Seconds per call of ``fn`` for ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - t)
    return np.array(times)


def train_step_fn(model, batch_size: int, image_size: int, num_classes: int = 10):
    """A closure running one Adam training step on a fixed random batch."""
    opt = paddle.optimizer.Adam(parameters=model.parameters())
    x = paddle.randn([batch_size, 3, image_size, image_size])
    y = paddle.randint(0, num_classes, [batch_size, 1])
    model.train()

    def step():
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()

    return step
