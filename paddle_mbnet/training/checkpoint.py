"""Checkpoints of a training run: atomic saves, optimizer state keyed by structured parameter names, and reading
them back with one-line errors."""
from __future__ import annotations

import contextlib
import copyreg
import os
import pickle
import shutil
import warnings

import numpy as np
import paddle

from ..errors import ArgumentError, CheckpointError

CKPT_LAST, CKPT_BEST = "last.pdckpt", "best.pdckpt"
WEIGHT_CHOICES = ("evaluated", "trained")  # which weights of a checkpoint to load: see checkpoint_weights


def _tensor_record(tensor):
    try:  # a view of the tensor's own memory: nothing is copied on the way to the file
        data = np.from_dlpack(tensor.detach())
    except (AttributeError, BufferError, RuntimeError, TypeError, ValueError):  # device memory, bfloat16
        data = np.array(tensor.cpu())
    return tuple, ((tensor.name, data),)


def _dense_record(tensor):
    return eval, ("data", {"data": np.array(tensor)})  # paddle.save's own record of a DenseTensor


def _lean_save(obj, path):
    """The records paddle.save writes (each tensor as a (name, ndarray) tuple, which paddle.load turns back into
    a tensor), written from views of the tensors' memory, with pickle protocol 5 (arrays written straight from
    their buffers) and no memo. Why not paddle.save itself: it copies every tensor to numpy and its pickler
    keeps all copies alive until the file is written, which doubled the memory of saving a large model (VGG19
    with Adam and a weight average: a 2.2 GB checkpoint). A checkpoint holds no shared or recursive objects,
    which is what the memo is for."""
    with open(path, "wb") as f:
        pickler = pickle.Pickler(f, protocol=5)
        pickler.fast = True
        pickler.dispatch_table = copyreg.dispatch_table.copy()
        for tensor_type in (paddle.Tensor, paddle.base.framework.EagerParamBase):
            pickler.dispatch_table[tensor_type] = _tensor_record
        pickler.dispatch_table[paddle.base.core.DenseTensor] = _dense_record
        pickler.dump(obj)


def write_then_rename(path, write) -> None:
    """``write(tmp)`` beside the target, then rename: a crash or full disk mid-write leaves the previous file
    intact."""
    tmp = path + ".tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise CheckpointError(f"cannot write {path!r} ({e.strerror or e}); free disk space or choose another "
                              f"-o Global.output_dir=..., then continue with -o Global.resume=<run dir>") from None


def _atomic_save(obj, path):
    write_then_rename(path, lambda tmp: _lean_save(obj, tmp))


def rename_optimizer_state(opt_state: dict, layer, to_structured: bool) -> dict:
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


def load_optimizer_state(optimizer, scheduler, ckpt: dict, layer) -> None:
    """Put a checkpoint's optimizer and schedule states into ``optimizer`` / ``scheduler`` built for ``layer``."""
    with warnings.catch_warnings():  # paddle's LinearWarmup calls its own nested scheduler's entry "unused"
        warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
        optimizer.set_state_dict(rename_optimizer_state(ckpt["optimizer"], layer, to_structured=False))
        scheduler.set_state_dict(ckpt["scheduler"])


def save_checkpoint(path, model, optimizer, scheduler, scaler, state, cfg, ema=None, extra=None):
    """Everything a run needs to continue exactly: weights, their average, optimizer (keys by structured
    parameter names), schedule, AMP scaler, the run's counters and config, plus ``extra`` entries."""
    layer = getattr(model, "_layers", model)  # unwrap DataParallel
    opt_state = rename_optimizer_state(optimizer.state_dict(), layer, to_structured=True)
    counters = {key: state[key] for key in ("epoch", "step", "batches_done", "best_val_acc", "best_epoch")}
    _atomic_save({"model": layer.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                  "optimizer": opt_state, "scheduler": scheduler.state_dict(),
                  "scaler": scaler.state_dict() if scaler else None, **counters,
                  "seed": cfg["Global"]["seed"], "config": cfg, **(extra or {})}, path)


def copy_checkpoint(source: str, path: str) -> None:
    """``path`` becomes a copy of the checkpoint ``source`` (atomically): a hard link where the file system has
    them, so the best epoch's checkpoint is not written twice; the next save of ``source`` replaces its name
    with a new file and leaves this one as it is."""
    def link_or_copy(tmp):
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    write_then_rename(path, link_or_copy)


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


def load_checkpoint(path: str, prefer=(CKPT_LAST,), return_numpy: bool = False) -> dict:
    """A checkpoint's contents; ``return_numpy`` gives arrays instead of tensors (half the memory when the
    weights only go on into ``set_state_dict``)."""
    path = resolve_checkpoint(path, prefer)
    try:
        ckpt = paddle.load(path, return_numpy=return_numpy)
    except Exception as e:  # noqa: BLE001 - any read failure is a corrupt file to the user
        raise CheckpointError(f"cannot read checkpoint {path!r} ({type(e).__name__}: {e}); it is corrupt or "
                              f"truncated: use another (e.g. best.pdckpt beside it) or start afresh") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path!r} is not a tools/train.py checkpoint (no model/config inside)")
    ckpt["path"] = path
    return ckpt


def checkpoint_weights(ckpt: dict, which: str = "evaluated") -> dict:
    """``evaluated``: the weights a run evaluated and selected, its moving average when it kept one, else the
    trained ones; ``trained``: the optimizer's own weights, e.g. to measure what the average adds."""
    if which not in WEIGHT_CHOICES:
        raise ArgumentError(f"unknown weights {which!r}; choose one of {', '.join(WEIGHT_CHOICES)}")
    ema = ckpt.get("ema")
    return ema["shadow"] if ema and which == "evaluated" else ckpt["model"]
