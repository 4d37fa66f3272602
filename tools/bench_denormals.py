"""How denormal floats in a trained run's optimizer state slow the CPU training step, with and without flushing.

    python tools/bench_denormals.py RUN_DIR_OR_CHECKPOINT [--threads 2] [--rounds 6] [--steps 5]

Adam's moment estimates of weights that no longer get gradient decay into float32's denormal range late in a run
(paddle_mbnet/cpu/denormals.py). This loads the run's last checkpoint (model, optimizer state, schedule) twice and
times the training step the run's config describes (its loss, label smoothing and optimizer; a fixed random batch
of the run's batch size and image size) on both copies: one with the CPU's flush-to-zero bits set, one with IEEE
denormals, in interleaved rounds. Each copy keeps its own mode for the whole run (a flushed update writes zeros
where the kept one writes denormals, so the two states must not mix). A freshly initialised copy shows the step
before any state turned denormal. It prints the denormal share of the state and median times per step.
"""
import argparse
import time
import warnings

import _bootstrap


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory (its last.pdckpt) or a checkpoint file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds; the first is warm-up")
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


def load_copy(ckpt, cfg, trained: bool):
    """Model + optimizer as the run built them, with the checkpoint's states unless ``trained`` is False."""
    from paddle_mbnet.training.checkpoint import rename_optimizer_state
    from paddle_mbnet.training.optim import build_optimizer
    from paddle_mbnet.training.trainer import model_from_config

    model = model_from_config(cfg, pretrained=False)
    optimizer, scheduler = build_optimizer(cfg, model.parameters(), steps_per_epoch=100, notify=False)
    if trained:
        model.set_state_dict(ckpt["model"])
        with warnings.catch_warnings():  # paddle's LinearWarmup calls its own nested scheduler's entry "unused"
            warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
            optimizer.set_state_dict(rename_optimizer_state(ckpt["optimizer"], model, to_structured=False))
    model.train()
    return model, optimizer


def step_fn(model, optimizer, images, labels, smoothing):
    from paddle_mbnet.training.loop import classification_loss

    def step():
        loss = classification_loss(model(images), labels, smoothing)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)  # wait for the step, as the trainer's logging does

    return step


def main(argv=None):
    args = parse_args(argv)
    args.threads = _bootstrap.set_threads(args.threads)
    import numpy as np
    import paddle

    from paddle_mbnet.analysis.benchmark import env_header
    from paddle_mbnet.cpu import denormals, memory
    from paddle_mbnet.training.checkpoint import load_checkpoint

    paddle.base.core.set_num_threads(args.threads)
    memory.keep_freed_memory()  # as tools/train.py runs
    ckpt = load_checkpoint(args.run)
    cfg = ckpt["config"]
    batch, size = cfg["DataLoader"]["batch_size"], cfg["DataLoader"]["image_size"]
    smoothing = cfg["Optimizer"]["label_smoothing"]
    copies = {"trained, flushed": load_copy(ckpt, cfg, True), "trained, IEEE denormals": load_copy(ckpt, cfg, True),
              "fresh, flushed": load_copy(ckpt, cfg, False)}
    found, total = denormal_share(copies["trained, flushed"][1])
    denormals.flush_denormals()
    print(env_header())
    print(f"threads {args.threads}; checkpoint {ckpt['path']} (epoch {ckpt['epoch']}, step {ckpt['step']}): "
          f"{cfg['Arch']['name']}, {cfg['Optimizer']['name']}, batch {batch} at {size} px; "
          f"denormal entries in the optimizer state: {found} of {total} ({100 * found / max(total, 1):.1f} %)")
    paddle.seed(0)
    images = paddle.randn([batch, 3, size, size])
    labels = paddle.randint(0, cfg["Arch"]["num_classes"], [batch, 1])
    steps = {name: step_fn(model, opt, images, labels, smoothing) for name, (model, opt) in copies.items()}
    times = {name: [] for name in copies}
    for round_index in range(args.rounds):
        for name, step in steps.items():
            if name.endswith("IEEE denormals"):
                denormals.keep_denormals()
            else:
                denormals.flush_denormals()
            for _ in range(args.steps):
                started = time.perf_counter()
                step()
                if round_index:
                    times[name].append(time.perf_counter() - started)
    denormals.flush_denormals()
    base = float(np.median(times["trained, flushed"]))
    print(f"{'copy':<26}{'ms/step p50':>12}{'p10':>8}{'p90':>8}{'img/s':>8}{'x flushed':>11}")
    for name, values in times.items():
        p10, p50, p90 = np.percentile(values, [10, 50, 90]) * 1e3
        print(f"{name:<26}{p50:>12.1f}{p10:>8.1f}{p90:>8.1f}{batch / p50 * 1e3:>8.0f}{p50 / 1e3 / base:>11.2f}")
    print(f"{args.rounds - 1} timed rounds x {args.steps} steps per copy, interleaved; the optimizer state of the "
          f"trained copies evolves over the steps")


if __name__ == "__main__":
    main()
