"""How denormal floats in a trained run's optimizer state slow the CPU training step, with and without flushing.

    python tools/bench_denormals.py RUN_DIR_OR_CHECKPOINT [--threads 2] [--rounds 8] [--steps 5]

Adam's moment estimates of weights that get no gradient decay into float32's denormal range late in a run
(paddle_mbnet/cpu/denormals.py). This loads a run's last checkpoint (weights, optimizer state, schedule, weight
average) twice and times the trainer's own step (``loop._train_step``: the run's loss and label smoothing,
optimizer, schedule and weight average) on a fixed random batch of the run's batch size and image size: one copy
with the CPU's flush-to-zero bits set, one with IEEE denormals, in interleaved rounds whose order rotates. Each
copy keeps its mode throughout (a flushed update writes zeros where an IEEE one writes denormals, so the two
states must not mix). A freshly initialised copy shows the step before any state turned denormal.

The checkpoint must come from a run that kept denormals: one trained before the trainer flushed them (commit
7c87d9c), or with ``PADDLE_MBNET_DENORMALS=keep``. A flushed run's state holds zeros instead, and this says so.
"""
import argparse
import time

import _bootstrap

COPIES = ("trained, flushed", "trained, IEEE denormals", "fresh, flushed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory (its last.pdckpt) or a checkpoint file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds; the first is warm-up")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per copy and round")
    return p.parse_args(argv)


def denormal_share(optimizer) -> tuple[int, int]:
    """(denormal entries, all entries) over the optimizer's float32 state tensors."""
    import numpy as np
    import paddle

    tiny = np.finfo(np.float32).tiny
    found = total = 0
    for value in optimizer.state_dict().values():
        if isinstance(value, paddle.Tensor) and value.dtype == paddle.float32:
            array = np.abs(value.numpy())
            found += int(((array > 0) & (array < tiny)).sum())
            total += array.size
    return found, total


def load_copy(ckpt, trained: bool) -> dict:
    """What the trainer's step needs, built as the run built it, with the checkpoint's states if ``trained``."""
    from paddle_mbnet.training.checkpoint import load_optimizer_state
    from paddle_mbnet.training.ema import ModelEma
    from paddle_mbnet.training.optim import build_optimizer
    from paddle_mbnet.training.trainer import model_from_config

    cfg = ckpt["config"]
    model = model_from_config(cfg, pretrained=False)
    # the schedule's length, as the run had it (a stop checkpoint's step also counts its unfinished epoch)
    steps_per_epoch = (ckpt["step"] - ckpt.get("batches_done", 0)) // max(ckpt["epoch"], 1) or 1
    optimizer, scheduler = build_optimizer(cfg, model, steps_per_epoch, notify=False)
    ema = ModelEma(model, cfg["Global"]["ema_decay"]) if cfg["Global"]["ema_decay"] else None
    if trained:
        model.set_state_dict(ckpt["model"])
        load_optimizer_state(optimizer, scheduler, ckpt, model)
        if ema is not None and ckpt.get("ema"):
            ema.set_state_dict(ckpt["ema"])
    model.train()
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "ema": ema}


def time_copies(copies, batch, smoothing, rounds, steps) -> dict:
    """{copy name: [seconds per step]} over interleaved rounds after one warm-up round, each copy in its mode."""
    from paddle_mbnet.cpu import denormals
    from paddle_mbnet.training.loop import _train_step

    images, labels = batch
    times = {name: [] for name in copies}
    for round_index in range(rounds):
        shift = round_index % len(copies)
        for name in COPIES[shift:] + COPIES[:shift]:
            if name.endswith("IEEE denormals"):
                denormals.keep_denormals()
            else:
                denormals.flush_denormals()
            copy = copies[name]
            for _ in range(steps):
                started = time.perf_counter()
                _, loss = _train_step(copy["model"], images, labels, copy["optimizer"], copy["scheduler"],
                                      smoothing, None, copy["ema"])
                float(loss)  # wait for the step, as the trainer's logging does
                if round_index:
                    times[name].append(time.perf_counter() - started)
    denormals.keep_denormals()
    return times


def report(times, batch_size) -> None:
    import numpy as np

    base = float(np.median(times[COPIES[0]]))
    print(f"{'copy':<26}{'ms/step p50':>12}{'p10':>8}{'p90':>8}{'img/s':>8}{'x flushed':>11}")
    for name, values in times.items():
        p10, p50, p90 = np.percentile(values, [10, 50, 90]) * 1e3
        print(f"{name:<26}{p50:>12.1f}{p10:>8.1f}{p90:>8.1f}{batch_size / p50 * 1e3:>8.0f}{p50 / 1e3 / base:>11.2f}")


def main(argv=None):
    args = parse_args(argv)
    args.threads = _bootstrap.set_threads(args.threads)
    import paddle

    from paddle_mbnet.analysis.benchmark import env_header
    from paddle_mbnet.cpu import denormals, memory
    from paddle_mbnet.training.checkpoint import load_checkpoint
    from paddle_mbnet.training.config import apply_overrides

    paddle.base.core.set_num_threads(args.threads)
    memory.keep_freed_memory()  # as tools/train.py runs
    ckpt = load_checkpoint(args.run)
    cfg = apply_overrides(ckpt["config"])  # keys added since the run take their defaults
    copies = {name: load_copy(ckpt, trained=name.startswith("trained")) for name in COPIES}
    found, total = denormal_share(copies[COPIES[0]]["optimizer"])
    if not denormals.flush_denormals():
        raise SystemExit(f"bench_denormals: cannot flush denormals here: {denormals.describe()}")
    print(env_header())
    batch_size, size = cfg["DataLoader"]["batch_size"], cfg["DataLoader"]["image_size"]
    print(f"threads {args.threads}; checkpoint {ckpt['path']} (epoch {ckpt['epoch']}, step {ckpt['step']}): "
          f"{cfg['Arch']['name']}, {cfg['Optimizer']['name']}, batch {batch_size} at {size} px; denormal entries in "
          f"the optimizer state: {found} of {total} ({100 * found / max(total, 1):.1f} %)")
    if not found:
        print("note: no denormals in this state (a run that flushed them?): the trained copies cannot differ")
    paddle.seed(0)
    batch = (paddle.randn([batch_size, 3, size, size]), paddle.randint(0, cfg["Arch"]["num_classes"], [batch_size, 1]))
    times = time_copies(copies, batch, cfg["Optimizer"]["label_smoothing"], args.rounds, args.steps)
    report(times, batch_size)
    print(f"{args.rounds - 1} timed rounds x {args.steps} steps per copy after one warm-up round, interleaved with "
          f"a rotating order; the trained copies' states evolve over the steps")


if __name__ == "__main__":
    main()
