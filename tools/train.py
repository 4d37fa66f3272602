"""Train a model on CIFAR-10.

    python tools/train.py -c configs/mbv1_cifar.yaml [-o Section.key=value ...]
    python tools/train.py -o Global.resume=output/mbv1_cifar [-o Global.epochs=12]   # continue a run

Every key: docs/config.md. A run never overwrites another: a new run into a directory that holds
one is refused (resume it, choose another Global.output_dir, or -o Global.overwrite=true).
Ctrl-C or SIGTERM saves a checkpoint after the current step and prints the command that continues.
"""
import argparse
import sys

import _bootstrap

from paddle_mbnet.errors import MbnetError
from paddle_mbnet.training.config import ConfigError, load_config, load_resume_config, parse_override


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="YAML config (see configs/); not needed with Global.resume")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                   help="override a config value; repeatable")
    return p.parse_args(argv)


def resolve_config(args) -> dict:
    """The config file and overrides; when resuming without -c, the run's own saved config and the overrides."""
    resume = ""
    for text in args.override:
        section, key, value = parse_override(text)
        if (section, key) == ("Global", "resume"):
            resume = value
    if resume and not args.config:
        return load_resume_config(resume, args.override)
    return load_config(args.config, args.override)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    _bootstrap.set_threads(cfg["Global"]["num_threads"])
    from paddle_mbnet.training import trainer

    try:
        trainer.main(cfg)
    except KeyboardInterrupt:
        sys.exit(130)
    except MbnetError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
