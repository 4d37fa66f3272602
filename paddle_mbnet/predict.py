"""Top-k predictions of a trained model on image files or CIFAR-10 test images, and a figure of them.

Used by tools/predict.py and the notebook. The figure is drawn on a ``matplotlib.figure.Figure``
without pyplot, so it never switches a notebook's backend.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from .errors import DataError
from .training.data import CLASSES, build_transform, load_cifar10


def class_names(num_classes: int) -> list[str]:
    return list(CLASSES) if num_classes == len(CLASSES) else [str(i) for i in range(num_classes)]


def load_images(paths) -> list[tuple]:
    """(title, RGB PIL image, None) per file; an unreadable file raises OSError naming it."""
    from PIL import Image

    items = []
    for path in paths:
        try:
            items.append((str(path), Image.open(path).convert("RGB"), None))
        except OSError as e:
            raise DataError(f"cannot read image {str(path)!r}: {e}") from None
    return items


def cifar_test_items(data_file: str, n: int) -> list[tuple]:
    """(title, PIL image, true label) for the first ``n`` CIFAR-10 test images."""
    test = load_cifar10(data_file, "test")
    items = []
    for i in range(min(n, len(test))):
        image, label = test[i]
        items.append((f"cifar test #{i}", image, int(label)))
    return items


def predict(model, items, image_size: int, normalize: str) -> np.ndarray:
    """Class probabilities [len(items), num_classes] with the evaluation transform of the run."""
    tf = build_transform(image_size, normalize)
    # every training image was a 32x32 CIFAR image, resized to the run's size: photos of any size and shape take
    # the same path, so that a batch of them stacks and each is seen as training saw its images
    batch = paddle.stack([tf(img.resize((32, 32)) if img.size != (32, 32) else img) for _, img, _ in items])
    model.eval()
    with paddle.no_grad():
        return F.softmax(model(batch), axis=1).numpy()


def topk_lines(items, probs, names, k: int = 3) -> list[str]:
    k = min(k, probs.shape[1])
    lines = []
    for (title, _, true), pr in zip(items, probs):
        guesses = ", ".join(f"{names[j]} {pr[j]:.3f}" for j in np.argsort(-pr)[:k])
        lines.append(f"{title}: {guesses}" + (f"  (true: {names[true]})" if true is not None else ""))
    return lines


def prediction_figure(items, probs, names, title: str = "", max_cols: int = 6):
    """A grid sized to the images, each titled with its name and predicted class: green when right, red when
    wrong, and neutral grey for an image without a known label."""
    import math
    import os

    from matplotlib.figure import Figure

    cols = max(1, min(len(items), max_cols))
    rows = max(1, math.ceil(len(items) / cols))
    fig = Figure(figsize=(2.2 * cols, 2.5 * rows + (0.4 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img, true), pr in zip(axes.flat, items, probs):
        pred = int(pr.argmax())
        ax.imshow(img)
        label = f"{os.path.basename(name)[:24]}\n{names[pred]} {pr[pred]:.2f}"
        label += f" (true: {names[true]})" if true is not None else ""
        colour = "0.3" if true is None else ("green" if true == pred else "red")
        ax.set_title(label, fontsize=8, color=colour)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
