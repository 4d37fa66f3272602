"""CIFAR-10 training: ``train_one_epoch``, ``evaluate`` and ``main(cfg)``; tools/train.py is the CLI.

Determinism: every epoch reseeds Python, NumPy and Paddle from (seed, epoch) and
shuffles with a sampler seeded the same way, so with ``num_workers=0`` on CPU a
run resumed from an epoch checkpoint ends with the same weights as one that was
never stopped. Checkpoints hold model, optimizer, LR scheduler, AMP scaler,
epoch, step, best validation accuracy and the config.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import sys
import threading
import time

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.io import DataLoader, DistributedBatchSampler

from . import cpu_blas, cpu_memory
from .config import apply_overrides, resolve_threads, save_config
from .data import build_datasets
from .ema import ModelEma
from .registry import build_model

CKPT_LAST, CKPT_BEST = "last.pdckpt", "best.pdckpt"


class CheckpointError(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def select_device(name: str) -> str:
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise RuntimeError("Global.device=gpu but paddle sees no GPU (CPU build or no CUDA device); "
                           "install paddlepaddle-gpu or use -o Global.device=cpu")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    if device == "gpu":
        device = f"gpu:{paddle.distributed.ParallelEnv().dev_id}"
    paddle.set_device(device)
    return device


def synchronize() -> None:
    """Wait for queued GPU work before reading a clock (a no-op on CPU)."""
    if paddle.get_device().startswith("gpu"):
        paddle.device.synchronize()


class EpochBatchSampler(DistributedBatchSampler):
    """DistributedBatchSampler whose shuffle depends on (seed, epoch), and which can skip
    the batches an interrupted epoch already trained on."""

    def __init__(self, dataset, batch_size, seed, shuffle=True, drop_last=False):
        super().__init__(dataset, batch_size, shuffle=shuffle, drop_last=drop_last)
        self.seed, self.skip = seed, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        # DistributedBatchSampler seeds its shuffle with the epoch number alone; mix in our seed.
        super().set_epoch(self.seed * 100003 + epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self):
        return super().__len__() - self.skip


def build_loaders(cfg, train, val, test):
    dl = cfg["DataLoader"]
    sampler = EpochBatchSampler(train, dl["batch_size"], cfg["Global"]["seed"], shuffle=True, drop_last=True)
    if len(train) < dl["batch_size"] * paddle.distributed.get_world_size():
        raise ValueError(f"DataLoader.batch_size={dl['batch_size']} is larger than the {len(train)} training images; "
                         f"lower it with -o DataLoader.batch_size=...")
    train_loader = DataLoader(train, batch_sampler=sampler, num_workers=dl["num_workers"])

    def eval_loader(ds):
        return None if ds is None else DataLoader(ds, batch_size=dl["batch_size"], shuffle=False,
                                                  num_workers=dl["num_workers"])

    return train_loader, eval_loader(val), eval_loader(test)


def warmup_steps(cfg, steps_per_epoch: int, notify=True) -> int:
    """Warm-up steps for the run: ``Optimizer.warmup_epochs``, capped at a quarter of the run so that a short
    run (``-o Global.epochs=1``) still spends most of its steps at and after the peak learning rate."""
    total = max(1, cfg["Global"]["epochs"] * steps_per_epoch)
    wanted = int(round(cfg["Optimizer"]["warmup_epochs"] * steps_per_epoch))
    cap = total // 4
    if wanted > cap and notify:
        print(f"paddle_mbnet: Optimizer.warmup_epochs={cfg['Optimizer']['warmup_epochs']} is more than a quarter "
              f"of this {cfg['Global']['epochs']}-epoch run; warming up for {cap} steps instead", file=sys.stderr)
    return min(wanted, cap)


def build_scheduler(cfg, steps_per_epoch: int, notify=True):
    opt_cfg = cfg["Optimizer"]
    total = max(1, cfg["Global"]["epochs"] * steps_per_epoch)
    warmup = warmup_steps(cfg, steps_per_epoch, notify)
    decay_steps = max(1, total - warmup)  # cosine and linear reach 0 exactly at the last step
    lr = paddle.optimizer.lr
    if opt_cfg["schedule"] == "cosine":
        sched = lr.CosineAnnealingDecay(opt_cfg["lr"], T_max=decay_steps)
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


def parameter_groups(parameters, weight_decay: float, no_decay_bn_bias: bool):
    """All parameters in one group, or (as timm's ``param_groups_weight_decay``) 1-D ones, i.e. BatchNorm
    scales and shifts and biases, in a second group without weight decay."""
    parameters = list(parameters)
    if not no_decay_bn_bias:
        return parameters
    decay = [p for p in parameters if len(p.shape) > 1]
    no_decay = [p for p in parameters if len(p.shape) <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg, parameters, steps_per_epoch: int, notify=True):
    opt_cfg = cfg["Optimizer"]
    sched = build_scheduler(cfg, steps_per_epoch, notify)
    decay = opt_cfg["weight_decay"]
    groups = parameter_groups(parameters, decay, opt_cfg["no_decay_bn_bias"])
    if opt_cfg["name"] == "AdamW":  # decoupled: each step shrinks weights by lr * weight_decay
        opt = paddle.optimizer.AdamW(sched, parameters=groups, weight_decay=decay)
    elif opt_cfg["name"] == "Adam":  # L2: weight_decay * w is added to the gradient
        opt = paddle.optimizer.Adam(sched, parameters=groups, weight_decay=decay or None)
    else:
        opt = paddle.optimizer.Momentum(sched, momentum=opt_cfg["momentum"], parameters=groups,
                                        weight_decay=decay or None)
    return opt, sched


def classification_loss(logits, labels, smoothing: float = 0.0):
    """Cross-entropy, with label smoothing through one-hot targets: paddle 3.3's ``label_smooth`` kernel has no
    int64 path, so ``F.cross_entropy(..., label_smoothing=)`` fails on class-index labels."""
    if not smoothing:
        return F.cross_entropy(logits, labels)
    targets = F.one_hot(labels.flatten(), logits.shape[-1]).astype(logits.dtype)
    return F.cross_entropy(logits, targets, soft_label=True, label_smoothing=smoothing)


def _accuracy(logits, labels) -> int:
    return int((logits.argmax(axis=1) == labels.flatten()).astype("int64").sum())


def train_one_epoch(model, loader, optimizer, scheduler, state, cfg, scaler=None, writer=None, progress=True,
                    ema=None):
    """One pass over ``loader``; ``state`` holds the global ``step`` and ``batches_done`` in this epoch;
    ``ema`` (a ModelEma) is updated after every step."""
    model.train()
    smoothing = cfg["Optimizer"]["label_smoothing"]
    amp = scaler is not None
    log_every = max(1, cfg["Global"]["log_interval"])
    total_loss, correct, seen = 0.0, 0, 0
    bar = _progress(loader, state, cfg) if progress else None
    synchronize()
    t0 = t_log = time.perf_counter()
    seen_log = 0
    for images, labels in loader:
        with paddle.amp.auto_cast(enable=amp):
            logits = model(images)
            loss = classification_loss(logits, labels, smoothing)
        if amp:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        if ema is not None:
            ema.update()
        state["step"] += 1
        state["batches_done"] += 1
        n = images.shape[0]
        seen += n
        seen_log += n
        if state["step"] % log_every == 0 or seen == n:
            # float() waits for the step to finish, so the rate below is real work.
            batch_loss, batch_correct = float(loss), _accuracy(logits, labels)
            synchronize()
            now = time.perf_counter()
            ips = seen_log / max(now - t_log, 1e-9)
            t_log, seen_log = now, 0
            if writer is not None:
                writer.add_scalar("train/loss", batch_loss, state["step"])
                writer.add_scalar("train/acc_batch", batch_correct / n, state["step"])
                writer.add_scalar("lr", optimizer.get_lr(), state["step"])
                writer.add_scalar("train/ips", ips, state["step"])
            if bar is not None:
                bar.set_postfix(loss=f"{batch_loss:.3f}", acc=f"{batch_correct / n:.3f}", ips=f"{ips:.0f}")
        # Running sums stay on the device: a float() here would sync the GPU every step.
        total_loss = total_loss + loss.detach() * n
        correct = correct + (logits.argmax(axis=1) == labels.flatten()).astype("int64").sum()
        if bar is not None:
            bar.update(1)
    synchronize()
    elapsed = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    total_loss, correct = float(total_loss), int(correct)
    return {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1), "time_s": elapsed,
            "ips": seen / max(elapsed, 1e-9), "images": seen}


def _progress(loader, state, cfg):
    from tqdm import tqdm

    return tqdm(total=len(loader), desc=f"epoch {state['epoch'] + 1}/{cfg['Global']['epochs']}",
                leave=False, dynamic_ncols=True, mininterval=1.0, file=sys.stderr)


@paddle.no_grad()
def evaluate(model, loader, return_predictions=False, tta=False):
    """Mean loss and accuracy over ``loader`` (and optionally every prediction and label). With ``tta`` also
    ``acc_tta``: the accuracy of the logits averaged over each image and its mirror image."""
    model.eval()
    total_loss, correct, correct_tta, seen = 0.0, 0, 0, 0
    preds, trues = [], []
    for images, labels in loader:
        logits = model(images)
        total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += _accuracy(logits, labels)
        if tta:
            correct_tta += _accuracy(logits + model(images.flip(axis=[3])), labels)
        seen += images.shape[0]
        if return_predictions:
            preds.append(logits.argmax(axis=1).numpy())
            trues.append(labels.numpy().reshape(-1))
    out = {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1)}
    if tta:
        out["acc_tta"] = correct_tta / max(seen, 1)
    if return_predictions:
        out["pred"], out["true"] = np.concatenate(preds), np.concatenate(trues)
    return out


def _atomic_save(obj, path):
    tmp = path + ".tmp"
    paddle.save(obj, tmp)
    os.replace(tmp, path)


def _rename_optimizer_state(opt_state: dict, layer, to_structured: bool) -> dict:
    """Key optimizer accumulators by structured parameter names ("features.0.0.weight_moment1_0")
    instead of paddle's generated ones ("conv2d_70.w_0_moment1_0"), which depend on how many
    layers the process built before, so a checkpoint loads into any new process or model."""
    pairs = [(p.name, n) for n, p in layer.named_parameters()]
    if not to_structured:
        pairs = [(n, p) for p, n in pairs]
    pairs.sort(key=lambda pair: -len(pair[0]))
    out = {}
    for key, value in opt_state.items():
        new = next((b + key[len(a):] for a, b in pairs if key.startswith(a + "_")), key)
        out[new] = value
    return out


def save_checkpoint(path, model, optimizer, scheduler, scaler, state, cfg, ema=None):
    layer = getattr(model, "_layers", model)  # unwrap DataParallel
    opt_state = _rename_optimizer_state(optimizer.state_dict(), layer, to_structured=True)
    _atomic_save({"model": layer.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                  "optimizer": opt_state,
                  "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                  "epoch": state["epoch"], "step": state["step"], "batches_done": state["batches_done"],
                  "best_val_acc": state["best_val_acc"], "best_epoch": state["best_epoch"],
                  "seed": cfg["Global"]["seed"], "config": cfg}, path)


def resolve_checkpoint(path: str, prefer=(CKPT_LAST,)) -> str:
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        for name in prefer:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise CheckpointError(f"{path!r} holds no checkpoint ({' or '.join(prefer)}); "
                              f"pass a run directory written by tools/train.py or a .pdckpt file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist; pass a run directory or a .pdckpt file")
    return path


def load_checkpoint(path: str, prefer=(CKPT_LAST,)) -> dict:
    path = resolve_checkpoint(path, prefer)
    try:
        ckpt = paddle.load(path)
    except Exception as e:  # noqa: BLE001 - any read failure is a corrupt file to the user
        raise CheckpointError(f"cannot read checkpoint {path!r} ({type(e).__name__}: {e}); it is corrupt or "
                              f"truncated: use another (e.g. best.pdckpt beside it) or start afresh") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path!r} is not a tools/train.py checkpoint (no model/config inside)")
    ckpt["path"] = path
    return ckpt


def model_from_config(cfg, pretrained=None):
    a = cfg["Arch"]
    kwargs = {"num_classes": a["num_classes"], "small_input": a["small_input"], "depthwise": a["depthwise"],
              "pointwise": a["pointwise"]}
    if a["name"].startswith("mobilenet"):
        kwargs["scale"] = a["scale"]
    elif a["scale"] != 1.0:
        raise ValueError(f"Arch.scale applies to MobileNets only; {a['name']} needs Arch.scale=1.0")
    return build_model(a["name"], pretrained=pretrained if pretrained is not None else (a["pretrained"] or False),
                       **kwargs)


def load_run(path: str, overrides=(), prefer=(CKPT_BEST, CKPT_LAST)):
    """(config, model in eval mode, checkpoint) from a run directory (best, else last) or a checkpoint file."""
    ckpt = load_checkpoint(path, prefer)
    cfg = apply_overrides(ckpt["config"], overrides)
    model = model_from_config(cfg, pretrained=False)
    model.set_state_dict(evaluated_weights(ckpt))
    model.eval()
    return cfg, model, ckpt


def evaluated_weights(ckpt: dict) -> dict:
    """The weights a run evaluated and selected: the moving average when it kept one, else the trained ones."""
    ema = ckpt.get("ema")
    return ema["shadow"] if ema else ckpt["model"]


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
    run["ema"] = ModelEma(run["model"], cfg["Global"]["ema_decay"]) if cfg["Global"]["ema_decay"] else None
    state, history = _restore(run, cfg)
    if run["rank0"]:
        save_config(cfg, os.path.join(run["out"], "config.yaml"))
        _print_header(run, cfg)
    interrupted = _train_epochs(run, state, history, cfg, progress)
    summary = _summary(history, state, cfg, interrupted)
    if run["rank0"]:
        if summary["finished"]:
            summary.update(_final_test(run, state, cfg))
        summary["wall_time_s"] = time.perf_counter() - started
        with open(os.path.join(run["out"], "run_summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        if summary["finished"]:
            _print_final(summary)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def _setup(cfg) -> dict:
    """Device, threads, data, model and optimizer of a run, as a dict of what the later steps use."""
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
    os.makedirs(glob_cfg["output_dir"], exist_ok=True)
    seed_everything(glob_cfg["seed"])
    train, val, test = build_datasets(cfg["DataLoader"], glob_cfg["seed"])
    train_loader, val_loader, test_loader = build_loaders(cfg, train, val, test)
    model = model_from_config(cfg)
    if glob_cfg["to_static"]:
        model = paddle.jit.to_static(model)
    if world > 1:
        model = paddle.DataParallel(model)
    optimizer, scheduler = build_optimizer(cfg, model.parameters(), len(train_loader.batch_sampler), notify=rank0)
    use_amp = glob_cfg["amp"] and device.startswith("gpu")
    if glob_cfg["amp"] and not use_amp and rank0:
        print("paddle_mbnet: Global.amp needs a GPU; training in float32", file=sys.stderr)
    return {"rank0": rank0, "device": device, "threads": threads, "out": glob_cfg["output_dir"],
            "sizes": (len(train), len(val) if val else 0, len(test)), "train_loader": train_loader,
            "val_loader": val_loader, "test_loader": test_loader, "model": model, "optimizer": optimizer,
            "scheduler": scheduler, "scaler": paddle.amp.GradScaler() if use_amp else None}


def _restore(run, cfg):
    """(state, history): fresh, or from ``Global.resume``."""
    state = {"epoch": 0, "step": 0, "batches_done": 0, "best_val_acc": -1.0, "best_epoch": 0}
    if not cfg["Global"]["resume"]:
        return state, []
    ckpt = load_checkpoint(cfg["Global"]["resume"])
    try:
        layer = getattr(run["model"], "_layers", run["model"])
        layer.set_state_dict(ckpt["model"])
        run["optimizer"].set_state_dict(_rename_optimizer_state(ckpt["optimizer"], layer, to_structured=False))
        if run["ema"] is not None and ckpt.get("ema"):
            run["ema"].set_state_dict(ckpt["ema"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{ckpt['path']} does not fit this config ({e}); resume with the config "
                              f"the run was started with (saved as config.yaml in its directory)") from None
    run["scheduler"].set_state_dict(ckpt["scheduler"])
    if run["scaler"] is not None and ckpt.get("scaler"):
        run["scaler"].load_state_dict(ckpt["scaler"])
    for key in state:
        state[key] = ckpt[key]
    history = []
    metrics_path = os.path.join(run["out"], "metrics.json")
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            history = [h for h in json.load(f) if h["epoch"] <= state["epoch"]]
    if run["rank0"]:
        print(f"resumed from {ckpt['path']}: epoch {state['epoch']}, step {state['step']}"
              + (f", {state['batches_done']} batches into epoch {state['epoch'] + 1}" if state["batches_done"]
                 else ""))
    return state, history


def _print_header(run, cfg):
    net = getattr(run["model"], "_layers", run["model"])  # under DataParallel too
    impls = f"{getattr(net, 'depthwise_impl', 'n/a')} depthwise, {getattr(net, 'pointwise_impl', 'n/a')} pointwise"
    train_n, val_n, test_n = run["sizes"]
    print(f"model {cfg['Arch']['name']} ({impls}) on {run['device']}, threads={run['threads']}, "
          f"train/val/test = {train_n}/{val_n}/{test_n}, output {run['out']}"
          + (f"; {cpu_memory.describe()}; {cpu_blas.describe()}" if run["device"] == "cpu" else ""), flush=True)


def _train_epochs(run, state, history, cfg, progress) -> bool:
    """The epoch loop; returns whether it was interrupted (Ctrl-C or SIGTERM, after saving ``last``)."""
    glob_cfg, out = cfg["Global"], run["out"]
    writer = None
    if run["rank0"]:
        from visualdl import LogWriter

        writer = LogWriter(logdir=os.path.join(out, "vdl"))
    # SIGTERM (kill, a job scheduler, a backgrounded run whose SIGINT the shell ignores) saves like Ctrl-C
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        while state["epoch"] < glob_cfg["epochs"]:
            epoch = state["epoch"]
            seed_everything(glob_cfg["seed"] * 1000 + epoch)
            run["train_loader"].batch_sampler.set_epoch(epoch, skip=state["batches_done"])
            train_stats = train_one_epoch(run["model"], run["train_loader"], run["optimizer"], run["scheduler"],
                                          state, cfg, run["scaler"], writer, progress=progress and run["rank0"],
                                          ema=run["ema"])
            state["epoch"], state["batches_done"] = epoch + 1, 0
            if run["rank0"]:
                _end_epoch(run, state, history, cfg, train_stats, writer)
    except KeyboardInterrupt:
        if run["rank0"]:
            _save(run, state, cfg, CKPT_LAST)
            print(f"\ninterrupted: saved {os.path.join(out, CKPT_LAST)} (epoch {state['epoch']}, "
                  f"{state['batches_done']} batches into the next); continue with -o Global.resume={out}",
                  file=sys.stderr)
        return True
    finally:
        if in_main and previous is not None:  # None: the old handler was not set from Python
            signal.signal(signal.SIGTERM, previous)
        if writer is not None:
            writer.close()
    return False


def _save(run, state, cfg, name):
    save_checkpoint(os.path.join(run["out"], name), run["model"], run["optimizer"], run["scheduler"],
                    run["scaler"], state, cfg, run["ema"])


def _evaluated(run):
    """A context in which run["model"] holds the weights that are evaluated (the average, if kept)."""
    return run["ema"].applied(run["model"]) if run["ema"] is not None else contextlib.nullcontext()


def _end_epoch(run, state, history, cfg, train_stats, writer):
    """Evaluate, record, checkpoint and report one finished epoch (rank 0)."""
    epoch, glob_cfg = state["epoch"], cfg["Global"]
    record = {"epoch": epoch, "train_loss": train_stats["loss"], "train_acc": train_stats["acc"],
              "lr": run["optimizer"].get_lr(), "epoch_time_s": train_stats["time_s"],
              "train_ips": train_stats["ips"], "val_loss": None, "val_acc": None, "test_loss": None,
              "test_acc": None}
    eval_started = time.perf_counter()
    with _evaluated(run):
        for split in ("val", "test"):
            loader = run[f"{split}_loader"] if split == "val" or glob_cfg["eval_test"] else None
            if loader is not None:
                result = evaluate(run["model"], loader)
                record[f"{split}_loss"], record[f"{split}_acc"] = result["loss"], result["acc"]
                writer.add_scalar(f"{split}/loss", result["loss"], epoch)
                writer.add_scalar(f"{split}/acc", result["acc"], epoch)
    record["eval_time_s"] = time.perf_counter() - eval_started
    writer.add_scalar("train/acc", train_stats["acc"], epoch)
    writer.add_scalar("train/epoch_loss", train_stats["loss"], epoch)
    history.append(record)
    improved = record["val_acc"] is not None and record["val_acc"] > state["best_val_acc"]
    if improved:
        state["best_val_acc"], state["best_epoch"] = record["val_acc"], epoch
    _save(run, state, cfg, CKPT_LAST)
    if improved:
        _save(run, state, cfg, CKPT_BEST)
    with open(os.path.join(run["out"], "metrics.json"), "w") as f:
        json.dump(history, f, indent=1)
    _plot_curves(history, os.path.join(run["out"], "curves.png"))
    print(f"epoch {epoch}/{glob_cfg['epochs']}  train_loss={train_stats['loss']:.4f} "
          f"train_acc={train_stats['acc']:.4f}  val_acc={_fmt(record['val_acc'])} "
          f"test_acc={_fmt(record['test_acc'])}  lr={record['lr']:.2e}  {train_stats['time_s']:.1f}s  "
          f"{train_stats['ips']:.1f} img/s", flush=True)


def _final_test(run, state, cfg) -> dict:
    """Test accuracy of the selected weights (``best``, else the last) once the run is done, with flip TTA
    when ``Global.eval_tta``; skipped when every epoch's test figure already gives it and no TTA is asked."""
    glob_cfg = cfg["Global"]
    if glob_cfg["eval_test"] and not glob_cfg["eval_tta"]:
        return {}
    best_path = os.path.join(run["out"], CKPT_BEST)
    model = run["model"]
    layer = getattr(model, "_layers", model)
    backup = {name: tensor.detach().clone() for name, tensor in layer.state_dict().items()}
    if os.path.isfile(best_path):
        layer.set_state_dict(evaluated_weights(load_checkpoint(best_path)))
        weights = f"best (epoch {state['best_epoch']})"
    else:
        if run["ema"] is not None:
            layer.set_state_dict(run["ema"].shadow)
        weights = f"last (epoch {state['epoch']})"
    result = evaluate(model, run["test_loader"], tta=glob_cfg["eval_tta"])
    layer.set_state_dict(backup)
    out = {"test_acc_at_best": result["acc"], "final_test_weights": weights}
    if glob_cfg["eval_tta"]:
        out["test_acc_tta_at_best"] = result["acc_tta"]
    return out


def _print_final(summary):
    tta = summary.get("test_acc_tta_at_best")
    print(f"done: best epoch {summary['best_epoch']}, val_acc={_fmt(summary['best_val_acc'])}, "
          f"test_acc={_fmt(summary['test_acc_at_best'])}" + (f", test_acc_tta={tta:.4f}" if tta is not None else "")
          + f", {summary['wall_time_s'] / 60:.1f} min", flush=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _fmt(v):
    return "n/a" if v is None else f"{v:.4f}"


def _summary(history, state, cfg, interrupted):
    best = next((h for h in history if h["epoch"] == state["best_epoch"]), None)
    last = history[-1] if history else {}
    times = [h["epoch_time_s"] for h in history]
    return {"model": cfg["Arch"]["name"], "epochs_done": state["epoch"], "epochs": cfg["Global"]["epochs"],
            "finished": state["epoch"] >= cfg["Global"]["epochs"] and not interrupted,
            "best_epoch": state["best_epoch"] or None, "best_val_acc": best["val_acc"] if best else None,
            "test_acc_at_best": best["test_acc"] if best else None, "final_train_acc": last.get("train_acc"),
            "final_test_acc": last.get("test_acc"), "epoch_time_s_median": float(np.median(times)) if times else None,
            "train_ips_median": float(np.median([h["train_ips"] for h in history])) if history else None,
            "eval_weights": "ema" if cfg["Global"]["ema_decay"] else "trained",
            "output_dir": cfg["Global"]["output_dir"]}

