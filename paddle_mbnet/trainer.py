"""CIFAR-10 training: ``train_one_epoch``, ``evaluate`` and ``main(cfg)``; tools/train.py is the CLI.

Determinism: every epoch reseeds Python, NumPy and Paddle from (seed, epoch) and
shuffles with a sampler seeded the same way, so with ``num_workers=0`` on CPU a
run resumed from an epoch checkpoint ends with the same weights as one that was
never stopped. Checkpoints hold model, optimizer, LR scheduler, AMP scaler,
epoch, step, best validation accuracy and the config.
"""
from __future__ import annotations

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
from .config import apply_overrides, save_config
from .data import build_datasets
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


def build_optimizer(cfg, parameters, steps_per_epoch: int):
    o, epochs = cfg["Optimizer"], cfg["Global"]["epochs"]
    if epochs > 0 and o["warmup_epochs"] >= epochs:
        raise ValueError(f"Optimizer.warmup_epochs={o['warmup_epochs']} covers the whole {epochs}-epoch run, so the "
                         f"learning rate would never reach Optimizer.lr; lower it, e.g. -o Optimizer.warmup_epochs=0")
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, int(o["warmup_epochs"] * steps_per_epoch))
    lr = paddle.optimizer.lr
    if o["schedule"] == "cosine":
        sched = lr.CosineAnnealingDecay(o["lr"], T_max=max(1, total - warmup))
    elif o["schedule"] == "step":
        sched = lr.StepDecay(o["lr"], step_size=max(1, o["step_size"] * steps_per_epoch), gamma=o["gamma"])
    else:
        sched = lr.LambdaDecay(o["lr"], lambda step: 1.0)
    if warmup > 0:
        sched = lr.LinearWarmup(sched, warmup_steps=warmup, start_lr=o["lr"] / 100, end_lr=o["lr"])
    wd = o["weight_decay"]
    if o["name"] == "Adam":
        opt = paddle.optimizer.Adam(sched, parameters=parameters, weight_decay=wd or None)
    elif o["name"] == "AdamW":
        opt = paddle.optimizer.AdamW(sched, parameters=parameters, weight_decay=wd)
    else:
        opt = paddle.optimizer.Momentum(sched, momentum=o["momentum"], parameters=parameters, weight_decay=wd or None)
    return opt, sched


def _accuracy(logits, labels) -> int:
    return int((logits.argmax(axis=1) == labels.flatten()).astype("int64").sum())


def train_one_epoch(model, loader, optimizer, scheduler, state, cfg, scaler=None, writer=None, progress=True):
    """One pass over ``loader``; ``state`` holds the global ``step`` and ``batches_done`` in this epoch."""
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
            loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        if amp:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
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
def evaluate(model, loader, return_predictions=False):
    """Mean loss and accuracy over ``loader`` (and optionally every prediction and label)."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    preds, trues = [], []
    for images, labels in loader:
        logits = model(images)
        total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += _accuracy(logits, labels)
        seen += images.shape[0]
        if return_predictions:
            preds.append(logits.argmax(axis=1).numpy())
            trues.append(labels.numpy().reshape(-1))
    out = {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1)}
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


def save_checkpoint(path, model, optimizer, scheduler, scaler, state, cfg):
    layer = getattr(model, "_layers", model)  # unwrap DataParallel
    opt_state = _rename_optimizer_state(optimizer.state_dict(), layer, to_structured=True)
    _atomic_save({"model": layer.state_dict(), "optimizer": opt_state,
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
    model.set_state_dict(ckpt["model"])
    model.eval()
    return cfg, model, ckpt


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
    g = cfg["Global"]
    world = paddle.distributed.get_world_size()
    if world > 1:
        paddle.distributed.init_parallel_env()
    rank0 = paddle.distributed.get_rank() == 0
    device = select_device(g["device"])
    if g["num_threads"] > 0:
        paddle.base.core.set_num_threads(g["num_threads"])
    if device == "cpu":
        cpu_memory.keep_freed_memory()
    out = g["output_dir"]
    os.makedirs(out, exist_ok=True)

    ckpt = load_checkpoint(g["resume"]) if g["resume"] else None
    seed_everything(g["seed"])
    train, val, test = build_datasets(cfg["DataLoader"], g["seed"])
    train_loader, val_loader, test_loader = build_loaders(cfg, train, val, test)
    model = model_from_config(cfg)
    if g["to_static"]:
        model = paddle.jit.to_static(model)
    if world > 1:
        model = paddle.DataParallel(model)
    optimizer, scheduler = build_optimizer(cfg, model.parameters(), len(train_loader.batch_sampler))
    use_amp = g["amp"] and device.startswith("gpu")
    if g["amp"] and not use_amp and rank0:
        print("paddle_mbnet: Global.amp needs a GPU; training in float32", file=sys.stderr)
    scaler = paddle.amp.GradScaler() if use_amp else None

    state = {"epoch": 0, "step": 0, "batches_done": 0, "best_val_acc": -1.0, "best_epoch": 0}
    history = []
    metrics_path = os.path.join(out, "metrics.json")
    if ckpt is not None:
        try:
            layer = getattr(model, "_layers", model)
            layer.set_state_dict(ckpt["model"])
            optimizer.set_state_dict(_rename_optimizer_state(ckpt["optimizer"], layer, to_structured=False))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{ckpt['path']} does not fit this config ({e}); resume with the config "
                                  f"the run was started with (saved as config.yaml in its directory)") from None
        scheduler.set_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        for k in state:
            state[k] = ckpt[k]
        if os.path.isfile(metrics_path):
            with open(metrics_path) as f:
                history = [h for h in json.load(f) if h["epoch"] <= state["epoch"]]
        if rank0:
            print(f"resumed from {ckpt['path']}: epoch {state['epoch']}, step {state['step']}"
                  + (f", {state['batches_done']} batches into epoch {state['epoch'] + 1}" if state["batches_done"] else ""))
    if rank0:
        save_config(cfg, os.path.join(out, "config.yaml"))
        net = getattr(model, "_layers", model)  # under DataParallel too
        impls = (f"{getattr(net, 'depthwise_impl', 'n/a')} depthwise, "
                 f"{getattr(net, 'pointwise_impl', 'n/a')} pointwise")
        print(f"model {cfg['Arch']['name']} ({impls}) on {device}, "
              f"threads={os.environ.get('OMP_NUM_THREADS', 'default')}, train/val/test = "
              f"{len(train)}/{len(val) if val else 0}/{len(test)}, output {out}"
              + (f"; {cpu_memory.describe()}; {cpu_blas.describe()}" if device == "cpu" else ""))

    writer = None
    if rank0:
        from visualdl import LogWriter

        writer = LogWriter(logdir=os.path.join(out, "vdl"))
    interrupted = False
    # SIGTERM (kill, a job scheduler, a backgrounded run whose SIGINT the shell ignores) saves like Ctrl-C
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        while state["epoch"] < g["epochs"]:
            epoch = state["epoch"]
            seed_everything(g["seed"] * 1000 + epoch)
            train_loader.batch_sampler.set_epoch(epoch, skip=state["batches_done"])
            tr = train_one_epoch(model, train_loader, optimizer, scheduler, state, cfg, scaler, writer,
                                 progress=progress and rank0)
            state["epoch"], state["batches_done"] = epoch + 1, 0
            if not rank0:
                continue
            record = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_acc": tr["acc"], "lr": optimizer.get_lr(),
                      "epoch_time_s": tr["time_s"], "train_ips": tr["ips"], "val_loss": None, "val_acc": None,
                      "test_loss": None, "test_acc": None}
            for split, loader in (("val", val_loader), ("test", test_loader if g["eval_test"] else None)):
                if loader is not None:
                    r = evaluate(model, loader)
                    record[f"{split}_loss"], record[f"{split}_acc"] = r["loss"], r["acc"]
                    writer.add_scalar(f"{split}/loss", r["loss"], epoch + 1)
                    writer.add_scalar(f"{split}/acc", r["acc"], epoch + 1)
            writer.add_scalar("train/acc", tr["acc"], epoch + 1)
            writer.add_scalar("train/epoch_loss", tr["loss"], epoch + 1)
            history.append(record)
            improved = record["val_acc"] is not None and record["val_acc"] > state["best_val_acc"]
            if improved:
                state["best_val_acc"], state["best_epoch"] = record["val_acc"], epoch + 1
            save_checkpoint(os.path.join(out, CKPT_LAST), model, optimizer, scheduler, scaler, state, cfg)
            if improved:
                save_checkpoint(os.path.join(out, CKPT_BEST), model, optimizer, scheduler, scaler, state, cfg)
            with open(metrics_path, "w") as f:
                json.dump(history, f, indent=1)
            _plot_curves(history, os.path.join(out, "curves.png"))
            print(f"epoch {epoch + 1}/{g['epochs']}  train_loss={tr['loss']:.4f} train_acc={tr['acc']:.4f}  "
                  f"val_acc={_fmt(record['val_acc'])} test_acc={_fmt(record['test_acc'])}  "
                  f"lr={record['lr']:.2e}  {tr['time_s']:.1f}s  {tr['ips']:.1f} img/s", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        if rank0:
            save_checkpoint(os.path.join(out, CKPT_LAST), model, optimizer, scheduler, scaler, state, cfg)
            print(f"\ninterrupted: saved {os.path.join(out, CKPT_LAST)} (epoch {state['epoch']}, "
                  f"{state['batches_done']} batches into the next); continue with -o Global.resume={out}",
                  file=sys.stderr)
    finally:
        if in_main and previous is not None:  # None: the old handler was not set from Python
            signal.signal(signal.SIGTERM, previous)
        if writer is not None:
            writer.close()
    summary = _summary(history, state, cfg, interrupted)
    if rank0:
        with open(os.path.join(out, "run_summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    if interrupted:
        raise KeyboardInterrupt
    return summary


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
            "output_dir": cfg["Global"]["output_dir"]}

