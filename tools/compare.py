"""Speed and accuracy of VGG, ResNet and MobileNet, measured so the table can be trusted.

    python tools/compare.py                       # six models: speed at 224 px + 3-epoch CIFAR-10 runs
    python tools/compare.py --quick --data-file /data/cifar-10-python.tar.gz   # a few minutes on a CPU
    python tools/compare.py --no-train --models mobilenet_v1,mobilenet_v1@0.5,resnet50
    python tools/compare.py --no-speed ...   # train now (machine busy), time later with --no-train
    python tools/compare.py --alpha-sweep --full-conv --models mobilenet_v1   # V1 Tables 4 and 6 on CIFAR-10

Writes results.md (also printed), results.csv, results.json and PNG plots to --out.
Training runs live in <out>/runs/<model>; a finished run is skipped, an unfinished
one resumes, so an interrupted comparison continues where it stopped.
"""
import argparse
import os
import sys

import _bootstrap

QUICK = {"repeats": 3, "warmup": 1, "batch_size": 2, "train_batch": 16, "epochs": 1, "train_size": 512,
         "val_size": 256, "test_size": 1000}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg16,vgg19,resnet50,resnet152,mobilenet_v1,mobilenet_v2",
                   help="registry names, comma-separated; name@alpha sets our MobileNets' width multiplier")
    p.add_argument("--input-size", type=int, default=224, help="image size of the complexity and inference timing")
    p.add_argument("--batch-size", type=int, default=None, help="batch of the throughput timing (default 16)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds; medians and p90 over them (default 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per measurement first (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for paddle, OpenMP, "
                   "Paddle Inference and the training runs (default: all cores)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    p.add_argument("--no-engine", action="store_true", help="skip the Paddle Inference timings")
    p.add_argument("--train-batch", type=int, default=None,
                   help="batch of the training-throughput timing (default: the training config's; 0 = skip)")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, small batches, 1-epoch runs on 512 training images: minutes on a CPU")
    p.add_argument("--no-train", action="store_true",
                   help="launch no training; report accuracies of runs already finished in <out>/runs")
    p.add_argument("--no-speed", action="store_true",
                   help="skip the timing: complexity and the training runs only (for a busy machine, whose "
                        "timings would mislead); time later with the same arguments and --no-train")
    p.add_argument("--train-preset", default="cifar", choices=("cifar", "ref224"),
                   help="cifar: 32 px, this project's defaults; ref224: configs/ref224_<model>.yaml (AI Studio setup)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per training run (default 3, as the reference)")
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="linear warm-up epochs of the training runs (default 0: short runs should not spend "
                        "their budget warming up)")
    p.add_argument("--train-size", type=int, default=None, help="training images per run (0 = all)")
    p.add_argument("--val-size", type=int, default=None, help="validation images carved from train")
    p.add_argument("--test-size", type=int, default=None, help="test images evaluated (0 = all)")
    p.add_argument("--data-file", default="", help="cifar-10-python.tar.gz (default: download with paddle.vision)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                   help="extra config override for every training run; repeatable")
    p.add_argument("--full-conv", action="store_true",
                   help="add mobilenet_v1_conv: V1 with full 3x3 convs instead of depthwise-separable (Table 4)")
    p.add_argument("--alpha-sweep", action="store_true", help="add mobilenet_v1@0.75,@0.5,@0.25 (Table 6 on CIFAR-10)")
    p.add_argument("--out", default="output/compare", help="output directory (default output/compare)")
    args = p.parse_args(argv)
    defaults = {"repeats": 10, "warmup": 2, "batch_size": 16, "train_batch": None, "epochs": 3, "train_size": 0,
                "val_size": None, "test_size": 0}
    for key, default in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK[key] if args.quick else default)
    return args


def main(argv=None):
    args = parse_args(argv)
    _bootstrap.set_threads(args.threads)
    from paddle_mbnet import compare
    from paddle_mbnet.config import ConfigError

    try:
        specs = compare.parse_specs(args.models)
        specs += [s for s in ((["mobilenet_v1_conv"] if args.full_conv else [])
                              + (list(compare.ALPHA_SWEEP) if args.alpha_sweep else [])) if s not in specs]
        if args.no_speed and args.no_train:
            raise ValueError("--no-speed with --no-train leaves nothing to do")
        for name, value in (("--input-size", args.input_size), ("--repeats", args.repeats),
                            ("--batch-size", args.batch_size), ("--threads", args.threads)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        run_cfgs = {s: train_config_for(compare, s, args) for s in specs}
        for cfg in run_cfgs.values():
            compare.plan_run(cfg)  # a run directory holding another config fails now, not after the timing
    except (ValueError, ConfigError) as e:
        sys.exit(f"error: {e}")

    import paddle

    from paddle_mbnet.benchmark import env_header
    from paddle_mbnet.cpu_memory import keep_freed_memory
    from paddle_mbnet.trainer import select_device

    try:
        device = select_device(args.device)
    except RuntimeError as e:
        sys.exit(f"error: {e}")
    paddle.base.core.set_num_threads(args.threads)
    if device == "cpu":
        keep_freed_memory()  # the eager timings run as tools/train.py trains
    first = run_cfgs[specs[0]]
    train_size_px = first["DataLoader"]["image_size"]
    train_batch = first["DataLoader"]["batch_size"] if args.train_batch is None else args.train_batch
    header = [env_header(), f"paddle threads {args.threads} (paddle.base.core.set_num_threads, OMP_NUM_THREADS); "
              f"device {device}",
              f"command: python tools/{os.path.basename(__file__)} {' '.join(sys.argv[1:] if argv is None else argv)}",
              f"inference timing at {args.input_size}x{args.input_size}: batch 1 latency and batch {args.batch_size} "
              f"throughput, {args.warmup} warm-up calls, median and p90 of {args.repeats} rounds, models interleaved "
              f"in every round, synchronize before each clock read",
              f"training throughput: one Adam step on a random batch of {train_batch} at {train_size_px} px "
              f"(the training config's size)"]
    if args.no_speed:
        header[-2:] = [f"complexity at {args.input_size}x{args.input_size}; no timing (--no-speed)"]
    print("\n".join(header), flush=True)
    try:
        records = compare.measure_speed(specs, args.input_size, args.batch_size, train_size_px, train_batch,
                                        args.repeats, args.warmup, engine=not args.no_engine, threads=args.threads,
                                        timing=not args.no_speed)
    except KeyboardInterrupt:
        sys.exit("\ninterrupted during the timing, before any result was written; rerun to measure again")
    paper = compare.paper_tables()
    notes = train_notes(first, args)

    def write():
        rows = [{**records[s], **compare.read_run(run_cfgs[s]["Global"]["output_dir"])} for s in specs]
        return compare.write_outputs(rows, args.out, header, notes, paper)

    write()
    if not args.no_train:
        try:
            for s in specs:
                compare.ensure_run(run_cfgs[s])
                write()
        except KeyboardInterrupt:
            sys.exit(f"\ninterrupted: rerun the same command to resume the unfinished run ({args.out})")
        except (RuntimeError, ValueError, ConfigError) as e:
            sys.exit(f"error: {e}")
    print(write())
    print(f"wrote {args.out}/results.md, results.csv, results.json and plots")


def train_config_for(compare, spec, args):
    overrides = [f"DataLoader.data_file={args.data_file}", f"DataLoader.train_size={args.train_size}",
                 f"DataLoader.test_size={args.test_size}"]
    overrides += [f"DataLoader.val_size={args.val_size}"] if args.val_size is not None else []
    return compare.train_config(spec, os.path.join(args.out, "runs", spec.replace("@", "_a")), args.train_preset,
                                args.epochs, args.threads, args.device, [*overrides, *args.override],
                                args.warmup_epochs)


def train_notes(cfg, args):
    dl = cfg["DataLoader"]
    return ["Accuracies come from `tools/train.py` runs in `runs/`: train acc of the last epoch, the best "
            "validation accuracy (validation images carved from the training set) and the test accuracy of the "
            "epoch validation picked; `–` = no finished run. "
            f"Training budget: preset `{args.train_preset}`, {args.epochs} epochs "
            f"({cfg['Optimizer']['warmup_epochs']} of warm-up), {dl['image_size']} px, "
            f"batch {dl['batch_size']}, train images {dl['train_size'] or 'all'}, val {dl['val_size']}, "
            f"test {dl['test_size'] or 'all'}, data file `{os.path.basename(dl['data_file']) or 'downloaded'}`."]


if __name__ == "__main__":
    main()
