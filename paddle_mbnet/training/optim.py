"""Optimizer and learning-rate schedule from the config's Optimizer section."""
from __future__ import annotations

import math
import sys

import paddle


def total_steps(cfg, steps_per_epoch: int) -> int:
    """Optimizer steps of the whole run: every epoch, or ``Global.max_steps`` when that is fewer."""
    total = cfg["Global"]["epochs"] * steps_per_epoch
    return max(1, min(total, cfg["Global"]["max_steps"]) if cfg["Global"]["max_steps"] else total)


def warmup_steps(cfg, steps_per_epoch: int, notify=True) -> int:
    """Warm-up steps for the run: ``Optimizer.warmup_epochs``, capped at a quarter of the run so that a short
    run (``-o Global.epochs=1``) still spends most of its steps at and after the peak learning rate."""
    total = total_steps(cfg, steps_per_epoch)
    wanted = int(round(cfg["Optimizer"]["warmup_epochs"] * steps_per_epoch))
    cap = total // 4
    if wanted > cap and notify:
        print(f"paddle_mbnet: Optimizer.warmup_epochs={cfg['Optimizer']['warmup_epochs']} is more than a quarter "
              f"of this {cfg['Global']['epochs']}-epoch run; warming up for {cap} step{'s' * (cap != 1)} instead",
              file=sys.stderr)
    return min(wanted, cap)


def build_scheduler(cfg, steps_per_epoch: int, notify=True):
    opt_cfg = cfg["Optimizer"]
    total = total_steps(cfg, steps_per_epoch)
    warmup = warmup_steps(cfg, steps_per_epoch, notify)
    decay_steps = max(1, total - warmup)  # cosine and linear reach 0 exactly at the last step
    lr = paddle.optimizer.lr
    if opt_cfg["schedule"] == "cosine":
        # from the step number, not paddle's CosineAnnealingDecay: that one derives each rate from the one before,
        # so a resumed run given more epochs would carry on along the old, shorter curve
        sched = lr.LambdaDecay(opt_cfg["lr"], lambda step: 0.5 * (1 + math.cos(math.pi * min(step, decay_steps)
                                                                               / decay_steps)))
    elif opt_cfg["schedule"] == "linear":
        sched = lr.PolynomialDecay(opt_cfg["lr"], decay_steps=decay_steps, end_lr=0.0, power=1.0)
    elif opt_cfg["schedule"] == "step":
        sched = lr.StepDecay(opt_cfg["lr"], step_size=max(1, opt_cfg["step_size"] * steps_per_epoch),
                             gamma=opt_cfg["gamma"])
    else:
        sched = lr.LambdaDecay(opt_cfg["lr"], lambda step: 1.0)
    if warmup > 0:
        sched = lr.LinearWarmup(sched, warmup_steps=warmup, start_lr=opt_cfg["lr"] / 100, end_lr=opt_cfg["lr"])
    return sched


def continue_on_new_length(scheduler) -> None:
    """After loading the schedule state of a run whose length changed: the state holds the old schedule's next
    rate, which the optimizer's next step would use; take the new schedule's instead."""
    scheduler.last_lr = scheduler.get_lr()


def depthwise_filters(model) -> set:
    """ids of the depthwise convolutions' filters (``groups == in_channels``): found from the layers, since a
    filter's shape alone (``[C, 1, k, k]``) cannot tell one from a full conv that reads a single channel."""
    return {id(layer.weight) for layer in model.sublayers(include_self=True)
            if isinstance(layer, paddle.nn.Conv2D) and layer._groups > 1 and layer._groups == layer._in_channels}


def parameter_groups(model, weight_decay: float, no_decay_bn_bias: bool, no_decay_depthwise: bool):
    """All parameters in one group, or a second group without weight decay holding (as timm's
    ``param_groups_weight_decay``) the 1-D ones, i.e. BatchNorm scales and shifts and biases, and/or (as the
    MobileNetV1 paper advises: they hold few parameters) the depthwise filters."""
    parameters = model.parameters()
    if not (no_decay_bn_bias or no_decay_depthwise):
        return parameters
    depthwise = depthwise_filters(model) if no_decay_depthwise else set()

    def exempt(param):
        return (no_decay_bn_bias and len(param.shape) <= 1) or id(param) in depthwise

    groups = [{"params": [p for p in parameters if not exempt(p)], "weight_decay": weight_decay},
              {"params": [p for p in parameters if exempt(p)], "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]  # a network may have nothing to exempt


def build_optimizer(cfg, model, steps_per_epoch: int, notify=True):
    """The config's optimizer and schedule for ``model``'s parameters (the layers tell which are depthwise)."""
    opt_cfg = cfg["Optimizer"]
    sched = build_scheduler(cfg, steps_per_epoch, notify)
    decay = opt_cfg["weight_decay"]
    groups = parameter_groups(model, decay, opt_cfg["no_decay_bn_bias"], opt_cfg["no_decay_depthwise"])
    betas = {"beta1": opt_cfg["beta1"], "beta2": opt_cfg["beta2"], "epsilon": opt_cfg["epsilon"]}
    if opt_cfg["name"] == "AdamW":  # decoupled: each step shrinks weights by lr * weight_decay
        opt = paddle.optimizer.AdamW(sched, parameters=groups, weight_decay=decay, **betas)
    elif opt_cfg["name"] == "Adam":  # L2: weight_decay * w is added to the gradient
        opt = paddle.optimizer.Adam(sched, parameters=groups, weight_decay=decay or None, **betas)
    else:
        opt = paddle.optimizer.Momentum(sched, momentum=opt_cfg["momentum"], parameters=groups,
                                        weight_decay=decay or None)
    return opt, sched
