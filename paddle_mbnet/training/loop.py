"""One training epoch and one evaluation pass, and the stop request that ends them between steps."""
from __future__ import annotations

import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F

from .runtime import synchronize


class StopRequest:
    """Ctrl-C and SIGTERM set a flag that the loops read between steps, so a stop never splits a step: the
    weights, optimizer, BatchNorm statistics and step counters a checkpoint saves always agree. A second
    signal stops at once."""

    def __init__(self):
        self.requested = False

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def check_pass(self, batches: int, expected: int) -> None:
        """After a loop over a loader: the signal behind a stop request also ends the loader's workers, which
        can end the iteration early; a pass with batches left unread is then a stop, not a finished pass."""
        if self.requested and batches < expected:
            raise KeyboardInterrupt


STOP = StopRequest()


def classification_loss(logits, labels, smoothing: float = 0.0):
    """Cross-entropy, with label smoothing through one-hot targets: paddle 3.3's ``label_smooth`` kernel has no
    int64 path, so ``F.cross_entropy(..., label_smoothing=)`` fails on class-index labels."""
    if not smoothing:
        return F.cross_entropy(logits, labels)
    targets = F.one_hot(labels.flatten(), logits.shape[-1]).astype(logits.dtype)
    return F.cross_entropy(logits, targets, soft_label=True, label_smoothing=smoothing)


def _accuracy(logits, labels) -> int:
    return int((logits.argmax(axis=1) == labels.flatten()).astype("int64").sum())


def _train_step(model, images, labels, optimizer, scheduler, smoothing, scaler, ema):
    with paddle.amp.auto_cast(enable=scaler is not None):
        logits = model(images)
        loss = classification_loss(logits, labels, smoothing)
    if scaler is not None:
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
    return logits, loss


class _StepLog:
    """Progress bar and VisualDL scalars every few steps; float() waits for the step, so the rate is real work."""

    def __init__(self, loader, state, cfg, writer, progress):
        self.writer, self.state = writer, state
        self.every = max(1, cfg["Global"]["log_interval"])
        # short epochs still show a few updates of loss and accuracy in the bar
        self.bar_every = max(1, min(self.every, len(loader) // 10))
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(loader), desc=f"epoch {state['epoch'] + 1}/{cfg['Global']['epochs']}",
                            leave=False, dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
        self.last_time, self.images_since = time.perf_counter(), 0

    def step(self, logits, labels, loss, optimizer, first: bool):
        step, batch = self.state["step"], labels.shape[0]
        self.images_since += batch
        to_writer = self.writer is not None and (step % self.every == 0 or first)
        to_bar = self.bar is not None and (step % self.bar_every == 0 or first)
        if to_writer or to_bar:
            batch_loss, batch_acc = float(loss), _accuracy(logits, labels) / batch
            synchronize()
            now = time.perf_counter()
            ips = self.images_since / max(now - self.last_time, 1e-9)
            self.last_time, self.images_since = now, 0
            if to_writer:
                for tag, value in (("train/loss", batch_loss), ("train/acc_batch", batch_acc),
                                   ("lr", optimizer.get_lr()), ("train/ips", ips)):
                    self.writer.add_scalar(tag, value, step)
            if to_bar:
                self.bar.set_postfix(loss=f"{batch_loss:.3f}", acc=f"{batch_acc:.3f}", ips=f"{ips:.0f}")
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _resized(images, size):
    """The batch at ``size`` x ``size`` by area interpolation (adaptive average pooling): every input pixel
    contributes, so a smaller image is a downscale rather than a subsample."""
    if size is None or images.shape[-1] == size:
        return images
    return F.interpolate(images, size=[size, size], mode="area")


def train_one_epoch(model, loader, optimizer, scheduler, state, cfg, scaler=None, writer=None, progress=True,
                    ema=None, image_size=None, partial=None):
    """One pass over ``loader``; ``state`` holds the global ``step`` and ``batches_done`` in this epoch;
    ``ema`` (a ModelEma) is updated after every step; ``image_size`` (progressive resizing) scales each batch
    to that side first (and comes back in the stats). A stop request ends it before the next step, and
    ``Global.max_steps`` after the step that reaches it. ``partial`` (a dict) carries the epoch's sums across a
    stop: the sums it holds are the start, and a stop writes the sums so far back into it (with the epoch's
    ``image_size``), so the statistics of a resumed epoch cover all of its batches."""
    max_steps = cfg["Global"]["max_steps"]
    model.train()
    smoothing = cfg["Optimizer"]["label_smoothing"]
    log = _StepLog(loader, state, cfg, writer, progress)
    carried = partial or {}
    total_loss, correct, seen = carried.get("loss_sum", 0.0), carried.get("correct", 0), carried.get("images", 0)
    synchronize()
    started = time.perf_counter() - carried.get("time_s", 0.0)
    expected, batches = len(loader), 0
    try:
        for images, labels in loader:
            STOP.check()
            batches += 1
            images = _resized(images, image_size)
            logits, loss = _train_step(model, images, labels, optimizer, scheduler, smoothing, scaler, ema)
            state["step"] += 1
            state["batches_done"] += 1
            log.step(logits, labels, loss, optimizer, first=batches == 1)
            seen += images.shape[0]
            # Running sums stay on the device: a float() here would sync the GPU every step.
            total_loss = total_loss + loss.detach() * images.shape[0]
            correct = correct + (logits.argmax(axis=1) == labels.flatten()).astype("int64").sum()
            if max_steps and state["step"] >= max_steps:
                break  # the budget's end: a finished epoch, whatever a stop request arriving now says
        else:
            STOP.check_pass(batches, expected)
    except KeyboardInterrupt:
        if partial is not None:
            synchronize()
            partial.update(loss_sum=float(total_loss), correct=int(correct), images=seen,
                           time_s=time.perf_counter() - started, image_size=image_size)
        raise
    finally:
        log.close()
    synchronize()
    elapsed = time.perf_counter() - started
    total_loss, correct = float(total_loss), int(correct)
    return {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1), "time_s": elapsed,
            "ips": seen / max(elapsed, 1e-9), "images": seen, "image_size": image_size}


@paddle.no_grad()
def evaluate(model, loader, return_predictions=False, tta=False):
    """Mean loss and accuracy over ``loader`` (and optionally every prediction and label). With ``tta`` also
    ``acc_tta``: the accuracy of the logits averaged over each image and its mirror image."""
    model.eval()
    total_loss, correct, correct_tta, seen = 0.0, 0, 0, 0
    preds, trues, batches = [], [], 0
    for images, labels in loader:
        STOP.check()
        batches += 1
        logits = model(images)
        total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += _accuracy(logits, labels)
        if tta:
            correct_tta += _accuracy(logits + model(images.flip(axis=[3])), labels)
        seen += images.shape[0]
        if return_predictions:
            preds.append(logits.argmax(axis=1).numpy())
            trues.append(labels.numpy().reshape(-1))
    STOP.check_pass(batches, len(loader))
    out = {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1)}
    if tta:
        out["acc_tta"] = correct_tta / max(seen, 1)
    if return_predictions:
        out["pred"], out["true"] = np.concatenate(preds), np.concatenate(trues)
    return out
