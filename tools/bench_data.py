"""Is data loading ever the bottleneck? Data-pipeline images/s vs model training images/s.

    python tools/bench_data.py -c configs/mbv1_cifar.yaml -o DataLoader.data_file=... [--batches 20]

Times the training DataLoader alone (decode, augment, normalize, batch, with the
config's num_workers) and one training step of the config's model at the same
batch size, and prints the ratio; it should be well above 1 (>= 5x).
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
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    main()
