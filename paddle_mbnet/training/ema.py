"""An exponential moving average of a model's weights, for evaluation (as timm's ``ModelEmaV2``).

Paddle has ``paddle.static.ExponentialMovingAverage`` for static graphs only, so the
dynamic-graph version is written here. It averages every floating-point tensor of the
state_dict: parameters and BatchNorm's running statistics.
"""
from __future__ import annotations

import contextlib

import paddle

from ..errors import CheckpointError, ConfigError


# Average every 4th step, over the product of the four per-step decays: the same time constant at a quarter of
# the ~140 tensor lerps, which cost a few percent of a CPU training step (docs/performance.md).
EMA_EVERY = 4


class ModelEma:
    def __init__(self, model, decay: float, every: int = EMA_EVERY):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"Global.ema_decay={decay} must be in (0, 1), or 0 to turn the average off")
        if every < 1:
            raise ValueError(f"a weight average every {every} steps: the interval must be at least 1")
        self.decay, self.every = decay, every
        self.steps, self.averaged_at, self.updates = 0, 0, 0  # training steps seen, at the last average; averages
        live = _float_state(model)
        self.shadow = {name: tensor.detach().clone() for name, tensor in live.items()}
        self._pairs = [(self.shadow[name], tensor) for name, tensor in live.items()]

    def step_decay(self, step: int) -> float:
        """The decay of training step ``step`` (from 1). Short runs: the average must not be dominated by the
        random init (TF's num_updates rule: the first step weighs the init by 1/10)."""
        return min(self.decay, step / (9 + step))

    def update(self) -> None:
        """Called after every training step; averages on every ``every``-th."""
        self.steps += 1
        if self.steps - self.averaged_at >= self.every:
            self.flush()

    @paddle.no_grad()
    def flush(self) -> None:
        """Fold the steps since the last average in now (before an evaluation or a run's end)."""
        if self.steps == self.averaged_at:
            return
        kept = 1.0
        for step in range(self.averaged_at + 1, self.steps + 1):
            kept *= self.step_decay(step)
        # One weight tensor for all ~140 lerps: a Python float is turned into a new tensor by every call,
        # which made the update about twice as slow.
        weights = {}
        for shadow, live in self._pairs:
            if shadow.dtype not in weights:
                weights[shadow.dtype] = paddle.to_tensor(1.0 - kept, dtype=shadow.dtype)
            shadow.lerp_(live, weights[shadow.dtype])
        self.averaged_at, self.updates = self.steps, self.updates + 1

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates, "steps": self.steps,
                "averaged_at": self.averaged_at, "every": self.every, "decay": self.decay}

    def set_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise CheckpointError(f"the checkpoint's weight average lacks {sorted(missing)[:3]}")
        for name, tensor in self.shadow.items():
            tensor.set_value(state["shadow"][name])
        self.updates = int(state["updates"])
        # a run goes on as it began: an older checkpoint's run averaged on every step, one update per step
        self.steps = int(state.get("steps", self.updates))
        self.every = int(state.get("every", 1))
        self.averaged_at = int(state.get("averaged_at", self.steps))

    @contextlib.contextmanager
    def applied(self, model):
        """Run the block with the averaged weights in ``model``; the trained ones come back after."""
        live = _float_state(model)
        backup = {name: tensor.detach().clone() for name, tensor in live.items()}
        for name, tensor in live.items():
            tensor.set_value(self.shadow[name])
        try:
            yield model
        finally:
            for name, tensor in live.items():
                tensor.set_value(backup[name])


def _float_state(model) -> dict:
    layer = getattr(model, "_layers", model)  # unwrap DataParallel
    return {name: tensor for name, tensor in layer.state_dict().items() if tensor.dtype in (paddle.float32,
                                                                                            paddle.float16,
                                                                                            paddle.bfloat16,
                                                                                            paddle.float64)}
