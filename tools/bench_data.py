"""Is data loading ever the bottleneck? Data-pipeline images/s vs model training images/s.

    python tools/bench_data.py -c configs/mbv1_cifar.yaml -o DataLoader.data_file=... [--batches 20]

Times the training DataLoader alone (decode, augment, normalize, batch, with the
config's num_workers) and one training step of the config's model at the same
batch size, and prints the ratio; it should be well above 1 (>= 5x).

With --ema-rounds N it also prices the weight average (Global.ema_decay): the trainer's step
(the config's optimizer, schedule and loss) without it, averaging after every step, and averaging
every EMA_EVERY-th step (what the trainer does), in N interleaved rounds of --ema-block steps
each (the order rotating from round to round), as medians with the spread, and each variant's
time over the no-average time of the same round (median and interquartile range).
"""
import argparse
import itertools
import sys
import time

import _bootstrap

from paddle_mbnet.training.config import ConfigError, load_config


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("-o", "--override", action="append", default=[])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ema-rounds", type=int, default=0, help="interleaved rounds pricing the weight average")
    p.add_argument("--ema-block", type=int, default=16, help="training steps per variant and round")
    args = p.parse_args(argv)
    if args.ema_rounds < 0 or args.ema_block < 1:
        p.error(f"--ema-rounds must be >= 0 and --ema-block >= 1 (got {args.ema_rounds} and {args.ema_block})")
    try:
        cfg = load_config(args.config, args.override)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    args.threads = _bootstrap.set_threads(args.threads)
    import numpy as np
    import paddle

    from paddle_mbnet.analysis.benchmark import env_header, time_fn, train_step_fn
    from paddle_mbnet.errors import MbnetError
    from paddle_mbnet.training import trainer
    from paddle_mbnet.training.data import build_datasets
    from paddle_mbnet.training.runtime import select_device

    select_device(cfg["Global"]["device"])
    paddle.base.core.set_num_threads(args.threads)
    print(env_header())
    dl = cfg["DataLoader"]
    try:
        train, val, test = build_datasets(dl, cfg["Global"]["seed"])
    except MbnetError as e:
        sys.exit(f"error: {e}")
    loader, _, _ = trainer.build_loaders(cfg, train, val, test)
    loader.dataset.set_epoch(0)
    it = iter(loader)
    next(it)  # start-up (workers forking) is not throughput
    t = time.perf_counter()
    n = sum(images.shape[0] for images, _ in itertools.islice(it, args.batches))
    data_ips = n / (time.perf_counter() - t)
    model = trainer.model_from_config(cfg, pretrained=False)
    times = time_fn(train_step_fn(model, dl["batch_size"], dl["image_size"], cfg["Arch"]["num_classes"]),
                    warmup=1, repeats=args.steps)
    model_ips = dl["batch_size"] / np.median(times)
    print(f"{cfg['Arch']['name']} batch {dl['batch_size']} at {dl['image_size']}px, num_workers={dl['num_workers']}")
    print(f"data pipeline  {data_ips:9.1f} img/s  ({n} images)")
    print(f"model training {model_ips:9.1f} img/s  (median of {args.steps} steps)")
    print(f"pipeline / training = {data_ips / model_ips:.1f}x")
    if args.ema_rounds:
        _ema_overhead(cfg, model, next(iter(loader)), args.ema_rounds, args.ema_block)


def _ema_overhead(cfg, model, batch, rounds, block):
    """The trainer's step alone and with the weight average at two intervals, interleaved in a rotating order so
    that the machine's drift hits every variant alike."""
    import numpy as np

    from paddle_mbnet.training.ema import EMA_EVERY, ModelEma
    from paddle_mbnet.training.optim import build_optimizer

    optimizer, scheduler = build_optimizer(cfg, model, steps_per_epoch=1000, notify=False)
    decay = cfg["Global"]["ema_decay"] or 0.998
    variants = {"no average": None, "average every step": ModelEma(model, decay, every=1),
                f"average every {EMA_EVERY} steps": ModelEma(model, decay, every=EMA_EVERY)}
    step = _timed_steps(model, batch, optimizer, scheduler, cfg["Optimizer"]["label_smoothing"])
    for ema in variants.values():
        step(ema, EMA_EVERY)  # warm-up, the first averages included
    names, times = list(variants), {name: [] for name in variants}
    for round_index in range(rounds):
        for name in names[round_index % len(names):] + names[:round_index % len(names)]:
            times[name].append(step(variants[name], block))
    base = np.array(times["no average"])
    tensors = len(variants["average every step"].shadow)
    print(f"trainer step ({cfg['Optimizer']['name']}, ema_decay {decay}, {tensors} averaged tensors), {rounds} "
          f"interleaved rounds of {block} steps")
    for name, values in times.items():
        ratios = np.array(values) / base
        low, high = np.percentile(ratios, [25, 75])
        print(f"  {name:24s} {np.median(values):7.1f} ms/step  (min {min(values):.1f}, max {max(values):.1f})  "
              f"per round {np.median(ratios):.3f}x no average (IQR {low:.3f}-{high:.3f})")


def _timed_steps(model, batch, optimizer, scheduler, smoothing):
    """A function running ``steps`` trainer steps on ``batch`` with a weight average (or None); ms per step."""
    from paddle_mbnet.training.loop import _train_step
    from paddle_mbnet.training.runtime import synchronize

    images, labels = batch
    model.train()

    def run(ema, steps):
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            _train_step(model, images, labels, optimizer, scheduler, smoothing, None, ema)
        synchronize()
        return (time.perf_counter() - start) / steps * 1e3

    return run


if __name__ == "__main__":
    main()
