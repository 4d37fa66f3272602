"""Evaluate a trained run on the CIFAR-10 test set.

    python tools/eval.py <run dir or checkpoint> [--weights evaluated|trained] [--tta] [-o DataLoader.data_file=...]

Prints overall and per-class accuracy and the confusion matrix, writes them to
eval.json (eval_trained.json with --weights trained) beside the checkpoint; the last line printed is ``test_acc=<float>``.
--weights trained evaluates the optimizer's own weights instead of the moving average a
run with Global.ema_decay evaluated (what the average adds); --tta also prints
test_acc_tta, the accuracy of each image's logits averaged with its mirror image's.
"""
import argparse
import json
import os
import sys

import _bootstrap


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory (best.pdckpt, else last.pdckpt) or checkpoint file")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = default)")
    p.add_argument("--weights", default="evaluated", choices=("evaluated", "trained"),
                   help="evaluated: the weights the run evaluated (its moving average, if it kept one); "
                        "trained: the optimizer's own weights")
    p.add_argument("--tta", action="store_true", help="also report flip test-time augmentation (test_acc_tta)")
    args = p.parse_args(argv)
    args.threads = _bootstrap.set_threads(args.threads)
    import numpy as np

    from paddle_mbnet.errors import MbnetError
    from paddle_mbnet.training import trainer
    from paddle_mbnet.training.data import CLASSES, CifarSplit, eval_loader, load_cifar10
    from paddle_mbnet.training.runtime import select_device

    try:
        cfg, model, ckpt = trainer.load_run(args.run, args.override, weights=args.weights)
        dl = cfg["DataLoader"]
        base = load_cifar10(dl["data_file"], "test")
        select_device(cfg["Global"]["device"])
    except MbnetError as e:
        sys.exit(f"error: {e}")
    test = CifarSplit(base, np.arange(len(base)), dl["image_size"], dl["normalize"])
    loader = eval_loader(test, dl["batch_size"], dl["num_workers"])
    r = trainer.evaluate(model, loader, return_predictions=True, tta=args.tta)
    k = cfg["Arch"]["num_classes"]
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (r["true"], r["pred"]), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    names = list(CLASSES) if k == len(CLASSES) else [str(i) for i in range(k)]
    print(f"checkpoint {ckpt['path']} (epoch {ckpt['epoch']}, {args.weights} weights), {len(test)} test images")
    for name, acc in zip(names, per_class):
        print(f"  {name:>10s}  {acc:.4f}")
    print("confusion matrix (rows: true, columns: predicted):")
    print("\n".join(" ".join(f"{v:5d}" for v in row) for row in confusion))
    result = {"checkpoint": ckpt["path"], "epoch": ckpt["epoch"], "weights": args.weights,
              "test_acc": r["acc"], "test_acc_tta": r.get("acc_tta"), "test_loss": r["loss"],
              "per_class_acc": dict(zip(names, per_class.tolist())), "confusion": confusion.tolist()}
    name = "eval.json" if args.weights == "evaluated" else f"eval_{args.weights}.json"
    with open(os.path.join(os.path.dirname(ckpt["path"]), name), "w") as f:
        json.dump(result, f, indent=1)
    if args.tta:
        print(f"test_acc_tta={r['acc_tta']:.6f}")
    print(f"test_acc={r['acc']:.6f}")


if __name__ == "__main__":
    main()
