"""Train a model on CIFAR-10.

    python tools/train.py -c configs/mbv1_cifar.yaml [-o Section.key=value ...]

See README "Config reference" for every key. Ctrl-C saves a checkpoint; continue
with -o Global.resume=<output_dir>.
"""
import argparse
import sys

import _bootstrap  # noqa: F401  (puts the repo root on sys.path)

from paddle_mbnet.config import ConfigError, load_config


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="YAML config (see configs/)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                   help="override a config value; repeatable")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.override)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    _bootstrap.set_threads(cfg["Global"]["num_threads"])
    from paddle_mbnet import trainer

    try:
        trainer.main(cfg)
    except KeyboardInterrupt:
        sys.exit(130)
    except (trainer.CheckpointError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
