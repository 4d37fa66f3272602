import os
import subprocess
import sys

import paddle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(*args, check=True, timeout=300, env=None):
    """Run ``python tools/<args>`` from the repo root, ``env`` added to the environment (a PYTHONPATH there goes
    before the inherited one); returns the CompletedProcess."""
    inherited, extra = dict(os.environ), env or {}  # OMP_NUM_THREADS as conftest set it: this test's cores
    if "PYTHONPATH" in extra and inherited.get("PYTHONPATH"):
        extra = {**extra, "PYTHONPATH": extra["PYTHONPATH"] + os.pathsep + inherited["PYTHONPATH"]}
    env = {**inherited, **extra}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", args[0]), *map(str, args[1:])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def shift_batchnorms(model, shift=2.0):
    """Every BatchNorm's bias set to ``shift``, for gradient parity in training mode: a channel nearly constant
    over its few values then normalises to ``shift`` instead of to rounding noise on the ReLU's kink, where float32
    rounding decides its mask and the BatchNorm magnifies the choice into every gradient below it."""
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            layer.bias.set_value(paddle.full(layer.bias.shape, shift, layer.bias.dtype))


def count_stem_operator_calls(monkeypatch) -> list:
    """A list that grows by one each time the models call our stem operator (``ops.stem_conv2d_nhwc``, which the
    stem layer looks up at each call), for the rest of the test."""
    from paddle_mbnet.cpu import ops

    calls, stem_op = [], ops.stem_conv2d_nhwc
    monkeypatch.setattr(ops, "stem_conv2d_nhwc", lambda *args, **kwargs: calls.append(1) or stem_op(*args, **kwargs))
    return calls
