"""Speed and accuracy of VGG, ResNet and MobileNet, measured so the table can be trusted.

    python tools/compare.py --data-file $D --train-minutes 15   # six models: speed at 224 px + 15 min of training each
    python tools/compare.py --data-file $D                      # the same with 3-epoch runs (equal epochs)
    python tools/compare.py --quick --data-file $D              # all six in a few minutes on a CPU
    python tools/compare.py --no-train --models mobilenet_v1,mobilenet_v1@0.5,resnet50
    python tools/compare.py --no-speed ...   # train now (machine busy), time later with --no-train
    python tools/compare.py --alpha-sweep --full-conv --models mobilenet_v1   # V1 Tables 4 and 6 on CIFAR-10

Writes results.md (also printed), results.csv, results.json and PNG plots to --out.
Training runs live in <out>/runs/<model>; a finished run is skipped, an unfinished
one resumes, so rerunning the same command continues an interrupted comparison.
"""
import argparse
import gc
import math
import os
import shlex
import sys

import _bootstrap

QUICK = {"repeats": 3, "warmup": 1, "batch_size": 2, "train_batch": 16, "epochs": 1, "train_size": 256,
         "val_size": 256, "test_size": 500}
DEFAULTS = {"repeats": 10, "warmup": 2, "batch_size": 16, "train_batch": None, "epochs": 3, "train_size": 0,
            "val_size": None, "test_size": 0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vgg16,vgg19,resnet50,resnet152,mobilenet_v1,mobilenet_v2",
                   help="registry names, comma-separated; name@alpha sets our MobileNets' width multiplier")
    p.add_argument("--input-size", type=int, default=224, help="image size of the complexity and inference timing")
    p.add_argument("--batch-size", type=int, default=None, help="batch of the throughput timing (default 16)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds; medians and p90 over them (default 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per measurement first (default 2)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for paddle, OpenMP, "
                   "Paddle Inference and the training runs (default: all cores)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    # deploy.ENGINES, written out so that --help needs no paddle import (a test keeps the two in step)
    p.add_argument("--engine", default="paddle", choices=("paddle", "openvino", "onnxruntime"),
                   help="inference engine of the exported models: Paddle Inference (default), OpenVINO "
                        "(optional, CPU only: pip install openvino) or ONNX Runtime through paddle2onnx "
                        "(optional, CPU only: pip install onnxruntime paddle2onnx)")
    p.add_argument("--no-engine", action="store_true", help="skip the inference-engine timings")
    p.add_argument("--train-batch", type=int, default=None,
                   help="batch of the training-throughput timing (default: the training config's; 0 = skip)")
    p.add_argument("--quick", action="store_true",
                   help="few repeats, small batches, one model and phase in memory at a time, the system's malloc, "
                        "1-epoch runs on 256 images")
    p.add_argument("--no-train", action="store_true",
                   help="launch no training; report accuracies of runs already finished in <out>/runs")
    p.add_argument("--no-speed", action="store_true",
                   help="skip the timing: complexity and the training runs only (for a busy machine, whose "
                        "timings would mislead); time later with the same arguments and --no-train")
    p.add_argument("--train-preset", default="cifar", choices=("cifar", "ref224"),
                   help="cifar: 32 px, the recipe of configs/mbv1_cifar.yaml for every model; "
                        "ref224: configs/ref224_<model>.yaml (AI Studio setup)")
    p.add_argument("--train-minutes", type=float, default=0,
                   help="equal time budget: every model trains this many minutes (its steps measured on this "
                        "machine first); default: equal epochs (--epochs)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per training run (default 3, as the reference)")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up epochs of the training runs (default: the recipe's, as the shipped configs "
                        "train; the trainer caps it at a quarter of each run)")
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
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK[key] if args.quick else default)
    return args


def check_args(args, compare, specs):
    """Refuse every bad argument before any timing or training starts."""
    from paddle_mbnet.errors import ArgumentError

    if args.no_speed and args.no_train:
        raise ArgumentError("--no-speed with --no-train leaves nothing to do")
    for name, value in (("--input-size", args.input_size), ("--repeats", args.repeats),
                        ("--batch-size", args.batch_size), ("--threads", args.threads)):
        if value < 1:
            raise ArgumentError(f"{name} must be >= 1, got {value}")
    if not (math.isfinite(args.train_minutes) and args.train_minutes >= 0):
        raise ArgumentError(f"--train-minutes must be a number of minutes >= 0, got {args.train_minutes}")
    if args.engine != "paddle" and not args.no_engine and not args.no_speed:
        if args.device == "gpu":
            raise ArgumentError(f"--engine {args.engine} runs on the CPU; drop --device gpu or use --engine paddle")
        from paddle_mbnet.deploy import check_engine

        check_engine(args.engine)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ArgumentError(f"--out {args.out!r} is a file; pass a directory")
    for spec in specs:
        smallest = compare.min_input_size(spec, args.input_size)
        if args.input_size < smallest:
            raise ArgumentError(f"--input-size {args.input_size} is below {spec}'s total stride ({smallest}); "
                                f"use --input-size {smallest} or more")
        compare.check_buildable(spec)


def main(argv=None):
    args = parse_args(argv)
    args.threads = _bootstrap.set_threads(args.threads)
    from paddle_mbnet.analysis import compare
    from paddle_mbnet.errors import MbnetError

    try:
        specs = compare.parse_specs(args.models)
        specs += [s for s in ((["mobilenet_v1_conv"] if args.full_conv else [])
                              + (list(compare.ALPHA_SWEEP) if args.alpha_sweep else [])) if s not in specs]
        check_args(args, compare, specs)
        run_cfgs = {s: train_config_for(compare, s, args) for s in specs}
        for cfg in run_cfgs.values():
            # a run directory holding another config fails now, not after the timing
            compare.plan_run(cfg, budgeted=bool(args.train_minutes))
    except MbnetError as e:
        sys.exit(f"error: {e}")
    command = "python tools/compare.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        run(args, compare, specs, run_cfgs, command)
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted: continue with the same command (finished runs are kept, an unfinished one "
                 f"resumes): {command}")
    except MbnetError as e:
        sys.exit(f"error: {e}")


def run(args, compare, specs, run_cfgs, command):
    import paddle

    from paddle_mbnet.analysis.benchmark import env_header
    from paddle_mbnet.cpu.memory import keep_freed_memory, release_freed_memory
    from paddle_mbnet.errors import MbnetError
    from paddle_mbnet.training.runtime import select_device

    if args.quick:  # freed blocks go back to the system: a smoke test's memory, not its speed, must fit a laptop
        os.environ["PADDLE_MBNET_MALLOC"] = "default"  # inherited by its training runs
    device = select_device(args.device)
    if device != "cpu" and args.engine != "paddle" and not args.no_engine and not args.no_speed:
        raise MbnetError(f"--engine {args.engine} runs on the CPU but the models run on the {device}; "
                         "add --device cpu")
    paddle.base.core.set_num_threads(args.threads)
    if device == "cpu":
        keep_freed_memory()  # the eager timings run as tools/train.py trains
    first = run_cfgs[specs[0]]
    train_px = first["DataLoader"]["image_size"]
    train_batch = first["DataLoader"]["batch_size"] if args.train_batch is None else args.train_batch
    header = make_header(args, env_header(), device, train_batch, train_px, command)
    print("\n".join(header), flush=True)
    if args.train_minutes and not args.no_train:  # before any inference engine has run in this process
        set_budgets(args, compare, specs, run_cfgs)
    records = compare.measure_speed(specs, args.input_size, args.batch_size, train_px, train_batch, args.repeats,
                                    args.warmup, engine=None if args.no_engine else args.engine, threads=args.threads,
                                    timing=not args.no_speed, interleave=not args.quick)
    if device == "cpu" and not args.no_train:
        gc.collect()
        release_freed_memory()  # the timing's models are gone: their memory must not wait beside the runs
    paper, notes = compare.paper_tables(), train_notes(first, args)
    title = f"{os.cpu_count()}-core {device.upper()}, {budget_words(args)}"

    def write():
        rows = [compare.add_accuracy_context({**records[s], **compare.read_run(run_cfgs[s]["Global"]["output_dir"])})
                for s in specs]
        return compare.write_outputs(rows, args.out, header, notes, paper, title_note=title)

    write()
    if not args.no_train:
        for spec in specs:
            compare.ensure_run(run_cfgs[spec], continue_hint=command)
            write()
    print(write())
    print(f"wrote {args.out}/results.md, results.csv, results.json and plots")


def make_header(args, env, device, train_batch, train_px, command):
    from paddle_mbnet.deploy import ENGINES as ENGINE_NAMES

    order = ("one model and one phase (eager, inference, training step) at a time (--quick)" if args.quick
             else "models interleaved in every round")
    header = [env, f"paddle threads {args.threads} (paddle.base.core.set_num_threads, OMP_NUM_THREADS); "
                   f"device {device}",
              f"command: {command}",
              f"inference timing at {args.input_size}x{args.input_size}: batch 1 latency and batch {args.batch_size} "
              f"throughput, {args.warmup} warm-up calls, median and p90 of {args.repeats} rounds, {order}, "
              f"synchronize before each clock read; inference engine: "
              f"{'none (--no-engine)' if args.no_engine else ENGINE_NAMES[args.engine]}",
              f"training throughput: one Adam step on a random batch of {train_batch} at {train_px} px "
              f"(the training config's size)"]
    if args.no_speed:
        header[-2:] = [f"complexity at {args.input_size}x{args.input_size}; no timing (--no-speed)"]
    return header


def budget_words(args):
    if args.train_minutes:
        return f"equal time: {args.train_minutes:g} min of training per model"
    return f"equal epochs: {args.epochs} per model"


def set_budgets(args, compare, specs, run_cfgs):
    """--train-minutes: each run's step budget, measured on this machine (or taken from its started run, so a
    rerun continues it), and the epochs that hold it."""
    from paddle_mbnet.training.data import load_cifar10

    archive_images = None
    for spec in specs:
        cfg = run_cfgs[spec]
        dl = cfg["DataLoader"]
        steps = compare.started_budget(cfg)
        if not steps:
            steps = compare.steps_for_minutes(spec, dl["batch_size"], dl["image_size"], args.train_minutes)
        if not dl["train_size"] and archive_images is None:
            archive_images = len(load_cifar10(dl["data_file"], "train"))
        images = dl["train_size"] or archive_images - dl["val_size"]
        cfg["Global"]["max_steps"] = steps
        cfg["Global"]["epochs"] = max(1, math.ceil(steps / max(1, images // dl["batch_size"])))
        compare.plan_run(cfg)


# --quick's runs are smoke tests of a few steps: a weight average and flip TTA only add memory and time there
QUICK_OVERRIDES = ["Global.ema_decay=0", "Global.eval_tta=false"]


def train_config_for(compare, spec, args):
    overrides = [f"DataLoader.data_file={args.data_file}", f"DataLoader.train_size={args.train_size}",
                 f"DataLoader.test_size={args.test_size}", *(QUICK_OVERRIDES if args.quick else [])]
    overrides += [f"DataLoader.val_size={args.val_size}"] if args.val_size is not None else []
    return compare.train_config(spec, os.path.join(args.out, "runs", spec.replace("@", "_a")), args.train_preset,
                                args.epochs, args.threads, args.device, [*overrides, *args.override],
                                args.warmup_epochs)


def train_notes(cfg, args):
    dl = cfg["DataLoader"]
    return [f"Budget: **{budget_words(args)}**. "
            "Accuracies come from `tools/train.py` runs in `runs/`: train acc of the last epoch, the best "
            "validation accuracy (validation images carved from the training set) and the test accuracy of the "
            "weights validation picked, ± its standard error; `–` = no finished run. "
            f"Recipe: preset `{args.train_preset}` ({cfg['Optimizer']['name']}, lr {cfg['Optimizer']['lr']:g}, "
            f"{cfg['Optimizer']['schedule']} schedule, {cfg['Optimizer']['warmup_epochs']:g} warm-up epochs, at most a "
            "quarter of each run), "
            f"{dl['image_size']} px, batch {dl['batch_size']}, train images {dl['train_size'] or 'all'}, "
            f"val {dl['val_size']}, test {dl['test_size'] or 'all'}, "
            f"data file `{os.path.basename(dl['data_file']) or 'downloaded'}`."]


if __name__ == "__main__":
    main()
