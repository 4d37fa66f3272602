"""Classify images with a trained run.

    python tools/predict.py <run dir or checkpoint> img1.png [img2.jpg ...] [--topk 3] [--figure out.png]
    python tools/predict.py <run dir> --cifar-test 8 --figure preds.png   # CIFAR test images, with true labels
"""
import argparse
import sys

import _bootstrap


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--cifar-test", type=int, default=0, metavar="N", help="also predict the first N CIFAR test images")
    p.add_argument("--figure", help="save a figure of the images with predicted (and true) labels")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value")
    args = p.parse_args(argv)
    if not args.images and not args.cifar_test:
        p.error("give image files or --cifar-test N")
    import numpy as np
    import paddle
    import paddle.nn.functional as F
    from PIL import Image

    from paddle_mbnet import trainer
    from paddle_mbnet.data import CLASSES, DataError, build_transform, load_cifar10

    try:
        cfg, model, _ = _bootstrap.load_run(args.run, args.override)
    except trainer.CheckpointError as e:
        sys.exit(f"error: {e}")
    dl = cfg["DataLoader"]
    tf = build_transform(dl["image_size"], dl["normalize"], train=False)
    items = []  # (title, PIL image, true label or None)
    for path in args.images:
        try:
            items.append((path, Image.open(path).convert("RGB"), None))
        except OSError as e:
            sys.exit(f"error: cannot read image {path!r}: {e}")
    if args.cifar_test:
        try:
            test = load_cifar10(dl["data_file"], "test")
        except DataError as e:
            sys.exit(f"error: {e}")
        for i in range(min(args.cifar_test, len(test))):
            image, label = test[i]
            items.append((f"cifar test #{i}", image, int(label)))
    names = list(CLASSES) if cfg["Arch"]["num_classes"] == len(CLASSES) else [str(i) for i in range(cfg["Arch"]["num_classes"])]
    batch = paddle.stack([tf(img.resize((32, 32)) if img.size != (32, 32) and dl["image_size"] == 32 else img)
                          for _, img, _ in items])
    with paddle.no_grad():
        probs = F.softmax(model(batch), axis=1).numpy()
    k = min(args.topk, probs.shape[1])
    for (title, _, true), pr in zip(items, probs):
        top = np.argsort(-pr)[:k]
        guesses = ", ".join(f"{names[j]} {pr[j]:.3f}" for j in top)
        print(f"{title}: {guesses}" + (f"  (true: {names[true]})" if true is not None else ""))
    if args.figure:
        _figure(items, probs, names, args.figure)
        print(f"figure saved to {args.figure}")


def _figure(items, probs, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(items), 8)
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img, true), pr in zip(axes.flat, items, probs):
        pred = int(pr.argmax())
        ax.imshow(img)
        label = f"{names[pred]} {pr[pred]:.2f}" + (f"\ntrue: {names[true]}" if true is not None else "")
        ax.set_title(label, fontsize=8, color="green" if true is None or true == pred else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
