"""CIFAR-10 training: ``main(cfg)`` runs a whole training from a resolved config; tools/train.py is the CLI.

The run is a sequence of named steps: set up (device, threads, data, model, optimizer), restore (from
``Global.resume``), train the epochs (each ending in evaluation, a record and a checkpoint), and finish (the test
set on the selected weights, the summary). ``TrainState`` holds the counters a checkpoint saves.

Exactness: every epoch reseeds from (seed, epoch), the shuffle and the augmentation of every image are functions
of (seed, epoch, image), a stop request ends the loop only between steps, and a checkpoint taken mid-epoch keeps
paddle's random state. So on CPU with ``num_workers=0`` a run stopped anywhere and resumed ends with the weights of
an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import itertools
import json
import os
import signal
import sys
import threading
import time

import numpy as np
import paddle
from paddle.io import DataLoader, DistributedBatchSampler

from ..cpu import blas as cpu_blas
from ..cpu import denormals as cpu_denormals
from ..cpu import memory as cpu_memory
from ..errors import ArgumentError, ConfigError, DataError
from ..models.registry import build_model
from . import rundir
from .checkpoint import (
    CKPT_BEST,
    CKPT_LAST,
    checkpoint_weights,
    copy_checkpoint,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
    write_then_rename,
)
from .config import SCHEMA, apply_overrides, check_own_directory, check_resumable, resolve_threads, save_config
from .data import Batches, build_datasets, eval_loader, stop_like_ctrl_c, train_image_size
from .ema import ModelEma
from .loop import STOP, evaluate, train_one_epoch
from .optim import build_optimizer, continue_on_new_length, total_steps
from .runtime import seed_everything, select_device


@dataclasses.dataclass
class TrainState:
    """What a checkpoint records of the run's progress."""
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    batches_done: int = 0  # batches of the unfinished epoch already trained
    best_val_acc: float = -1.0
    best_epoch: int = 0

    def __getitem__(self, key):  # dict-style access for the loop and for callers of the dict it replaces
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)


class EpochBatchSampler(DistributedBatchSampler):
    """DistributedBatchSampler whose shuffle depends on (seed, epoch), and which can skip
    the batches an interrupted epoch already trained on."""

    def __init__(self, dataset, batch_size, seed, shuffle=True, drop_last=False):
        super().__init__(dataset, batch_size, shuffle=shuffle, drop_last=drop_last)
        self.seed, self.skip = seed, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        # DistributedBatchSampler seeds its shuffle (numpy's RandomState: below 2**32) with the epoch number alone;
        # mix in our seed.
        super().set_epoch((self.seed * 100003 + epoch) % 2 ** 32)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self):
        return super().__len__() - self.skip


def build_loaders(cfg, train, val, test):
    dl = cfg["DataLoader"]
    sampler = EpochBatchSampler(train, dl["batch_size"], cfg["Global"]["seed"], shuffle=True, drop_last=True)
    if len(train) < dl["batch_size"] * paddle.distributed.get_world_size():
        raise DataError(f"DataLoader.batch_size={dl['batch_size']} is larger than the {len(train)} training images; "
                         f"lower it with -o DataLoader.batch_size=...")
    train_loader = DataLoader(Batches(train, sampler), batch_size=None, num_workers=dl["num_workers"],
                              worker_init_fn=stop_like_ctrl_c)

    def loader(split):
        return None if split is None else eval_loader(split, dl["batch_size"], dl["num_workers"])

    return train_loader, loader(val), loader(test)


def model_from_config(cfg, pretrained=None):
    """The model ``cfg["Arch"]`` names; ``pretrained`` overrides ``Arch.pretrained`` (False: random init)."""
    arch = cfg["Arch"]
    kwargs = {"num_classes": arch["num_classes"], "small_input": arch["small_input"], "depthwise": arch["depthwise"],
              "pointwise": arch["pointwise"], "batchnorm": arch["batchnorm"], "layout": arch["layout"]}
    if arch["name"].startswith("mobilenet"):
        kwargs["scale"] = arch["scale"]
    elif arch["scale"] != 1.0:
        raise ArgumentError(f"Arch.scale applies to MobileNets only; {arch['name']} needs Arch.scale=1.0")
    if pretrained is None:
        # "imagenet" (or "true") = Paddle's official ImageNet weights, as build_model(pretrained=True)
        wanted = arch["pretrained"]
        pretrained = True if wanted.lower() in ("imagenet", "true") else (wanted or False)
    return build_model(arch["name"], pretrained=pretrained, **kwargs)


def load_run(path: str, overrides=(), prefer=(CKPT_BEST, CKPT_LAST), weights="evaluated"):
    """(config, model in eval mode, checkpoint) from a run directory (best, else last) or a checkpoint file;
    ``weights`` as ``which`` in ``checkpoint.checkpoint_weights``."""
    ckpt = load_checkpoint(path, prefer)
    cfg = apply_overrides(ckpt["config"], overrides)
    _select_device_for(cfg)  # before the model: its "auto" kernels follow the device
    model = model_from_config(cfg, pretrained=False)
    state = checkpoint_weights(ckpt, weights)
    # set_state_dict only warns about tensors it skips: an -o Arch.* that changes the network would evaluate
    # random weights
    _check_same_network(model, state, ckpt["path"], "leave out the -o Arch.* overrides that change the network")
    model.set_state_dict(state)
    model.eval()
    return cfg, model, ckpt


def _select_device_for(cfg) -> None:
    """The run's device, or the CPU with a notice when this machine has no GPU: a run trained on a GPU is still
    evaluated, predicted with and exported here."""
    try:
        select_device(cfg["Global"]["device"])
    except ConfigError:
        print("paddle_mbnet: the run trained with Global.device=gpu and this machine has no GPU: using the CPU",
              file=sys.stderr)
        cfg["Global"]["device"] = "cpu"
        select_device("cpu")


def _check_same_network(layer, weights: dict, path: str, advice: str) -> None:
    """One line unless ``weights`` has a tensor of the right shape for every one of ``layer``'s."""
    for name, tensor in layer.state_dict().items():
        if name not in weights or list(weights[name].shape) != list(tensor.shape):
            found = f"{name} is {list(weights[name].shape)}, not {list(tensor.shape)}" if name in weights else \
                f"no {name}"
            raise ConfigError(f"{path} holds another network ({found}); {advice}")


def _plot_curves(history, path):
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for key in ("train_loss", "val_loss", "test_loss"):
        if any(h.get(key) is not None for h in history):
            axes[0].plot(epochs, [h.get(key) for h in history], marker="o", label=key)
    for key in ("train_acc", "val_acc", "test_acc"):
        if any(h.get(key) is not None for h in history):
            axes[1].plot(epochs, [h.get(key) for h in history], marker="o", label=key)
    for ax, title in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(cfg, progress=True) -> dict:
    """Train as ``cfg`` says; returns the run summary (also written to run_summary.json)."""
    started = time.perf_counter()
    run = _setup(cfg)
    try:
        with cpu_denormals.flushed(enabled=run["device"] == "cpu"):
            state, history = _restore(run, cfg)
            if run["rank0"]:
                save_config(cfg, os.path.join(run["out"], "config.yaml"))
                _print_header(run, cfg)
            interrupted = _train_epochs(run, state, history, cfg, progress)
            summary = _finish(run, state, history, cfg, interrupted, started)
    finally:
        if run["lock"] is not None:
            run["lock"].release()
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _setup(cfg) -> dict:
    """Device, threads, run directory, data, model and optimizer of a run, as a dict the later steps use."""
    glob_cfg = cfg["Global"]
    world = paddle.distributed.get_world_size()
    if world > 1:
        paddle.distributed.init_parallel_env()
    rank0 = paddle.distributed.get_rank() == 0
    device = select_device(glob_cfg["device"])
    threads = resolve_threads(glob_cfg["num_threads"])
    if device == "cpu":
        paddle.base.core.set_num_threads(threads)
        cpu_memory.keep_freed_memory()
    out, lock = glob_cfg["output_dir"], None
    ckpt = _resume_checkpoint(cfg) if glob_cfg["resume"] else None
    if rank0:
        lock = rundir.claim(out, resuming=ckpt is not None, overwrite=glob_cfg["overwrite"])
    try:
        run = _build(cfg, device, rank0, world)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if rank0 and ckpt is None and glob_cfg["overwrite"]:
        rundir.clear(out)  # only now: a config, data or model error above leaves the old run as it was
    run.update({"threads": threads, "out": out, "lock": lock, "ckpt": ckpt})
    return run


def _build(cfg, device, rank0, world) -> dict:
    glob_cfg = cfg["Global"]
    seed_everything(glob_cfg["seed"])
    train, val, test = build_datasets(cfg["DataLoader"], glob_cfg["seed"])
    _check_labels(cfg, train, test)
    train_loader, val_loader, test_loader = build_loaders(cfg, train, val, test)
    # a resumed run takes its weights from the checkpoint: Arch.pretrained's file need not exist any more
    model = model_from_config(cfg, pretrained=False if glob_cfg["resume"] else None)
    _check_smallest_input(cfg, model)
    if glob_cfg["to_static"]:
        model = paddle.jit.to_static(model)
    if world > 1:
        model = paddle.DataParallel(model)
    optimizer, scheduler = build_optimizer(cfg, model, len(train_loader), notify=rank0)
    use_amp = glob_cfg["amp"] and device.startswith("gpu")
    if glob_cfg["amp"] and not use_amp and rank0:
        print("paddle_mbnet: Global.amp needs a GPU; training in float32", file=sys.stderr)
    return {"rank0": rank0, "device": device, "sizes": (len(train), len(val) if val else 0, len(test)),
            "steps_per_epoch": len(train_loader), "train_loader": train_loader, "val_loader": val_loader,
            "test_loader": test_loader,
            "model": model, "optimizer": optimizer, "scheduler": scheduler,
            "scaler": paddle.amp.GradScaler() if use_amp else None,
            "ema": ModelEma(model, glob_cfg["ema_decay"]) if glob_cfg["ema_decay"] else None,
            "pending": None, "resume_rng": None, "partial": {}}


def _check_smallest_input(cfg, model) -> None:
    """Progressive resizing's smallest size must still pass through the network's total stride."""
    low = cfg["DataLoader"]["progressive_min_size"]
    smallest = model.min_input_size
    if low and low < smallest:
        raise ConfigError(f"DataLoader.progressive_min_size={low} is smaller than the {smallest} px that "
                          f"{cfg['Arch']['name']} takes; set it to at least {smallest} (0 turns it off)")


def _resume_checkpoint(cfg) -> dict:
    """The checkpoint to continue, once the config is known to continue the same run in the same directory."""
    resume = cfg["Global"]["resume"]
    ckpt = load_checkpoint(resume)
    ckpt["changed_keys"] = check_resumable(ckpt["config"], cfg)
    check_own_directory(resume, cfg["Global"]["output_dir"])
    return ckpt


def _check_labels(cfg, train, test) -> None:
    top = max(int(train.labels().max()), int(test.labels().max()))
    classes = cfg["Arch"]["num_classes"]
    if top >= classes:
        raise DataError(f"the archive's labels go up to {top} but Arch.num_classes={classes}; "
                        f"set -o Arch.num_classes={top + 1} or higher")


def _restore(run, cfg):
    """(state, history): fresh, or from ``Global.resume``."""
    state, ckpt = TrainState(), run["ckpt"]
    if ckpt is None:
        return state, []
    run["ckpt"] = None  # its tensors are loaded below: no second copy of the run's states for the whole run
    _load_states(run, ckpt)
    if "Global.epochs" in ckpt["changed_keys"]:
        continue_on_new_length(run["scheduler"])
    for field in dataclasses.fields(TrainState):
        state[field.name] = ckpt[field.name]
    run["pending"] = ckpt.get("pending_record")
    run["resume_rng"] = ckpt.get("rng") if state.batches_done else None
    # .get: an older version's stop checkpoint holds no sums; its resumed epoch counts the later batches only
    run["partial"] = dict(ckpt.get("partial_epoch") or {}) if state.batches_done else {}
    if state.batches_done and "image_size" not in run["partial"]:
        # written before stop checkpoints kept their epoch's size: the size it began with, by the saved schedule
        saved = {**cfg, "Global": {**cfg["Global"], "epochs": ckpt["config"]["Global"]["epochs"]}}
        run["partial"]["image_size"] = _epoch_image_size(run, saved, state.epoch)
    history = []
    metrics_path = os.path.join(run["out"], "metrics.json")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            history = [h for h in json.load(f) if h["epoch"] <= state.epoch]
    if run["rank0"]:
        where = f", {state.batches_done} batches into epoch {state.epoch + 1}" if state.batches_done else ""
        print(f"resumed from {ckpt['path']}: epoch {state.epoch}, step {state.step}{where}")
        if "Global.epochs" in ckpt["changed_keys"]:
            sizes = ("; so are progressive resizing's image sizes, from the next whole epoch on"
                     if cfg["DataLoader"]["progressive_min_size"] else "")
            print(f"paddle_mbnet: Global.epochs {ckpt['config']['Global']['epochs']} -> {cfg['Global']['epochs']}: "
                  f"the learning-rate schedule is rebuilt for the new length and continues from step {state.step}"
                  f"{sizes}",
                  file=sys.stderr)
        _print_changed_settings(ckpt["config"], cfg, ckpt["changed_keys"])
    return state, history


def _print_changed_settings(saved, cfg, changed):
    """One line naming the settings (other than the epochs, noticed above) this resume takes over from the
    command line instead of the run's saved config: with -c, the YAML's values count, so a data file or thread
    count the run was started with can change without the user having asked for it."""
    shown = []
    for name in changed:
        if name in ("Global.resume", "Global.epochs"):
            continue
        section, key = name.split(".")
        before = saved.get(section, {}).get(key, SCHEMA[section][key])  # a key newer than the run: its default
        shown.append(f"{name} {before!r} -> {cfg[section][key]!r}")
    if shown:
        print(f"paddle_mbnet: resuming with settings changed from the run's saved config: {'; '.join(shown)}",
              file=sys.stderr)


def _load_states(run, ckpt) -> None:
    layer = getattr(run["model"], "_layers", run["model"])
    _check_same_network(layer, ckpt["model"], ckpt["path"], "resume with the run's own config")
    layer.set_state_dict(ckpt["model"])
    load_optimizer_state(run["optimizer"], run["scheduler"], ckpt, layer)
    if run["ema"] is not None and ckpt.get("ema"):
        run["ema"].set_state_dict(ckpt["ema"])
    if run["scaler"] is not None and ckpt.get("scaler"):
        run["scaler"].load_state_dict(ckpt["scaler"])


def _print_header(run, cfg):
    net = getattr(run["model"], "_layers", run["model"])  # under DataParallel too
    kinds = ("depthwise", "pointwise", "batchnorm", "layout")
    impls = ", ".join(f"{getattr(net, kind + '_impl', 'n/a')} {kind}" for kind in kinds)
    train_n, val_n, test_n = run["sizes"]
    print(f"model {cfg['Arch']['name']} ({impls}) on {run['device']}, threads={run['threads']}, "
          f"train/val/test = {train_n}/{val_n}/{test_n}, output {run['out']}"
          + (f"; {cpu_memory.describe()}; {cpu_blas.describe()}; {cpu_denormals.describe()}"
             if run["device"] == "cpu" else ""), flush=True)


def _open_writer(run):
    """VisualDL writer; a resumed run appends to its existing record file, so the server shows whole curves."""
    if not run["rank0"]:
        return None
    from visualdl import LogWriter

    logdir = os.path.join(run["out"], "vdl")
    existing = sorted(glob.glob(os.path.join(logdir, "vdlrecords*")))
    with contextlib.redirect_stdout(io.StringIO()):  # VisualDL prints a line when it appends
        return LogWriter(logdir=logdir, file_name=os.path.basename(existing[-1]) if existing else "")


@contextlib.contextmanager
def _stop_on_signals():
    """Ctrl-C and SIGTERM (kill, a job scheduler, a ``nohup``'d run whose SIGINT is ignored) request a stop
    between steps. Signal handlers can only be set from the main thread; elsewhere Ctrl-C acts as usual."""
    STOP.requested = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, STOP.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: the old handler was not set from Python
                signal.signal(sig, handler)


def _train_epochs(run, state, history, cfg, progress) -> bool:
    """The epoch loop; returns whether it was interrupted (after saving ``last``)."""
    writer = _open_writer(run)
    try:
        with _stop_on_signals():
            if run["pending"] is not None and run["rank0"]:  # stopped while evaluating a trained epoch: redo it
                _end_epoch(run, state, history, cfg, run["pending"], writer)
            while not _done(state, cfg):
                _train_epoch(run, state, cfg, writer, progress)
                if run["rank0"]:
                    _end_epoch(run, state, history, cfg, run["pending"], writer)
    except KeyboardInterrupt:
        if run["rank0"]:
            _save(run, state, cfg, CKPT_LAST, interrupted=True)
            # a caller that runs this trainer for a larger job (tools/compare.py) names its own command
            hint = (os.environ.get("PADDLE_MBNET_CONTINUE_HINT")
                    or f"python tools/train.py -o Global.resume={run['out']}")
            print(f"\ninterrupted: saved {os.path.join(run['out'], CKPT_LAST)} (epoch {state.epoch}, "
                  f"{state.batches_done} batches into the next); continue with: {hint}", file=sys.stderr)
        return True
    finally:
        if writer is not None:
            writer.close()
    return False


def _done(state, cfg) -> bool:
    max_steps = cfg["Global"]["max_steps"]
    return state.epoch >= cfg["Global"]["epochs"] or bool(max_steps and state.step >= max_steps)


def _train_epoch(run, state, cfg, writer, progress) -> None:
    epoch = state.epoch
    seed_everything(cfg["Global"]["seed"] * 1000 + epoch)
    if run["resume_rng"] is not None:  # continuing a stopped epoch: dropout draws continue where they stopped
        paddle.set_rng_state(run["resume_rng"])
        run["resume_rng"] = None
    run["train_loader"].dataset.set_epoch(epoch, skip=state.batches_done)
    # a resumed epoch ends at the size it began with, even if a new Global.epochs moves its place in the schedule
    partial = run["partial"]
    size = partial["image_size"] if "image_size" in partial else _epoch_image_size(run, cfg, epoch)
    stats = train_one_epoch(run["model"], run["train_loader"], run["optimizer"], run["scheduler"], state, cfg,
                            run["scaler"], writer, progress=progress and run["rank0"], ema=run["ema"],
                            image_size=size, partial=partial)
    state.epoch, state.batches_done, run["partial"] = epoch + 1, 0, {}
    run["pending"] = stats  # trained, not yet evaluated and recorded


def _epoch_image_size(run, cfg, epoch) -> int:
    """The trained image side of ``epoch`` (progressive resizing), by the share of the run's steps done at its
    end: the same count as the learning-rate schedule's, so a ``Global.max_steps`` budget ends at full size."""
    per_epoch = run["steps_per_epoch"]
    done = min(1.0, (epoch + 1) * per_epoch / total_steps(cfg, per_epoch))
    return train_image_size(cfg["DataLoader"], done)


def _save(run, state, cfg, name, interrupted=False):
    extra = {"pending_record": run["pending"]}
    if interrupted and state.batches_done:
        extra["rng"], extra["partial_epoch"] = paddle.get_rng_state(), dict(run["partial"])
    save_checkpoint(os.path.join(run["out"], name), run["model"], run["optimizer"], run["scheduler"],
                    run["scaler"], state, cfg, run["ema"], extra)


def _evaluated(run):
    """A context in which run["model"] holds the weights that are evaluated (the average, if kept)."""
    return run["ema"].applied(run["model"]) if run["ema"] is not None else contextlib.nullcontext()


def _evaluate_epoch(run, cfg, record, writer) -> None:
    eval_started = time.perf_counter()
    with _evaluated(run):
        for split in ("val", "test"):
            loader = run[f"{split}_loader"] if split == "val" or cfg["Global"]["eval_test"] else None
            if loader is not None:
                result = evaluate(run["model"], loader)
                record[f"{split}_loss"], record[f"{split}_acc"] = result["loss"], result["acc"]
    record["eval_time_s"] = time.perf_counter() - eval_started
    for key in ("val_loss", "val_acc", "test_loss", "test_acc"):
        if record[key] is not None:
            writer.add_scalar(key.replace("_", "/"), record[key], record["epoch"])
    writer.add_scalar("train/acc", record["train_acc"], record["epoch"])
    writer.add_scalar("train/epoch_loss", record["train_loss"], record["epoch"])


def _end_epoch(run, state, history, cfg, train_stats, writer):
    """Evaluate, record, checkpoint and report one trained epoch (rank 0)."""
    epoch = state.epoch
    if run["ema"] is not None:
        run["ema"].flush()  # the epoch's last steps count in the weights evaluated and saved
    record = {"epoch": epoch, "train_loss": train_stats["loss"], "train_acc": train_stats["acc"],
              "lr": run["optimizer"].get_lr(), "epoch_time_s": train_stats["time_s"],
              "train_ips": train_stats["ips"],
              # .get: a pending record in an older version's stop checkpoint holds no image size
              "train_image_size": train_stats.get("image_size") or cfg["DataLoader"]["image_size"],
              "val_loss": None, "val_acc": None, "test_loss": None, "test_acc": None}
    _evaluate_epoch(run, cfg, record, writer)
    history[:] = [h for h in history if h["epoch"] < epoch] + [record]
    run["pending"] = None
    improved = record["val_acc"] is not None and record["val_acc"] > state.best_val_acc
    if improved:
        state.best_val_acc, state.best_epoch = record["val_acc"], epoch
    # before the checkpoint, and whole or not at all: a resume from the checkpoint before re-runs this epoch and
    # replaces its record, while a checkpoint without its record would lose it
    _write_json(os.path.join(run["out"], "metrics.json"), history)
    _save(run, state, cfg, CKPT_LAST)
    if improved:
        copy_checkpoint(os.path.join(run["out"], CKPT_LAST), os.path.join(run["out"], CKPT_BEST))
    _plot_curves(history, os.path.join(run["out"], "curves.png"))
    print(f"epoch {epoch}/{cfg['Global']['epochs']}  train_loss={record['train_loss']:.4f} "
          f"train_acc={record['train_acc']:.4f}  val_acc={_fmt(record['val_acc'])} "
          f"test_acc={_fmt(record['test_acc'])}  lr={record['lr']:.2e}  {record['epoch_time_s']:.1f}s  "
          f"{record['train_ips']:.1f} img/s{_size_note(record, cfg)}", flush=True)


def _write_json(path, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    write_then_rename(path, write)


def _size_note(record, cfg) -> str:
    size = record["train_image_size"]
    return f"  at {size} px" if size != cfg["DataLoader"]["image_size"] else ""


def _finish(run, state, history, cfg, interrupted, started) -> dict:
    summary = _summary(history, state, cfg, interrupted, run["sizes"])
    if not run["rank0"]:
        return summary
    if summary["finished"]:
        summary.update(_final_test(run, state, history, cfg))
    summary["wall_time_s"] = time.perf_counter() - started
    _write_json(os.path.join(run["out"], "run_summary.json"), summary)
    if summary["finished"]:
        _print_final(summary)
    return summary


def _final_test(run, state, history, cfg) -> dict:
    """Test accuracy of the selected weights (``best``, else the last) once the run is done, with flip TTA
    when ``Global.eval_tta``; skipped when the selected epoch's record already holds it and no TTA is asked."""
    glob_cfg = cfg["Global"]
    selected = next((h for h in history if h["epoch"] == state.best_epoch), None)
    if glob_cfg["eval_test"] and not glob_cfg["eval_tta"] and selected and selected["test_acc"] is not None:
        return {}
    weights = _select_weights(run, state)
    result = evaluate(run["model"], run["test_loader"], tta=glob_cfg["eval_tta"])
    out = {"test_acc_at_best": result["acc"], "final_test_weights": weights}
    if glob_cfg["eval_tta"]:
        out["test_acc_tta_at_best"] = result["acc_tta"]
    return out


def _select_weights(run, state) -> str:
    """Put the weights the run selected (those of the best validation epoch, averaged when it keeps an average)
    into its model for the final test; returns which they are."""
    layer = getattr(run["model"], "_layers", run["model"])
    best_path = os.path.join(run["out"], CKPT_BEST)
    if os.path.isfile(best_path) and (state.best_epoch != state.epoch or state.batches_done):
        run["optimizer"] = run["ema"] = None  # freed before the checkpoint, which holds them again, is read
        for param in layer.parameters():
            param.clear_gradient(False)
        layer.set_state_dict(checkpoint_weights(load_checkpoint(best_path, return_numpy=True)))
        return f"best (epoch {state.best_epoch})"
    # the best epoch is the last one trained (or none was selected): memory holds its weights, as saved
    if run["ema"] is not None:
        layer.set_state_dict(run["ema"].shadow)
    return f"best (epoch {state.best_epoch})" if state.best_epoch == state.epoch else f"last (epoch {state.epoch})"


def _print_final(summary):
    tta = summary.get("test_acc_tta_at_best")
    print(f"done: best epoch {summary['best_epoch']}, val_acc={_fmt(summary['best_val_acc'])}, "
          f"test_acc={_fmt(summary['test_acc_at_best'])}" + (f", test_acc_tta={tta:.4f}" if tta is not None else "")
          + f", {summary['wall_time_s'] / 60:.1f} min", flush=True)


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


def _summary(history, state, cfg, interrupted, sizes):
    best = next((h for h in history if h["epoch"] == state.best_epoch), None)
    last = history[-1] if history else {}
    size = cfg["DataLoader"]["image_size"]
    # speed at the full image size: progressive resizing's smaller epochs run faster and would skew the median
    full_size = [h for h in history if h.get("train_image_size", size) == size]
    times = [h["epoch_time_s"] for h in full_size]
    batch = cfg["DataLoader"]["batch_size"] * paddle.distributed.get_world_size()
    return {"model": cfg["Arch"]["name"], "epochs_done": state.epoch, "epochs": cfg["Global"]["epochs"],
            "finished": _done(state, cfg) and not interrupted, "steps": state.step, "train_images": state.step * batch,
            "epochs_trained": state.step * batch / max(1, sizes[0]), "test_images": sizes[2],
            "best_epoch": state.best_epoch or None, "best_val_acc": best["val_acc"] if best else None,
            "test_acc_at_best": best["test_acc"] if best else None, "final_train_acc": last.get("train_acc"),
            "final_test_acc": last.get("test_acc"), "epoch_time_s_median": float(np.median(times)) if times else None,
            "train_ips_median": float(np.median([h["train_ips"] for h in full_size])) if full_size else None,
            "eval_weights": "ema" if cfg["Global"]["ema_decay"] else "trained",
            "output_dir": cfg["Global"]["output_dir"]}
