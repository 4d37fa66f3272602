"""Evaluate a trained run on the CIFAR-10 test set.

    python tools/eval.py <run dir or checkpoint> [--weights evaluated|trained] [--tta]
                         [-o DataLoader.data_file=...]

Prints overall and per-class accuracy and the confusion matrix, writes them to
eval.json (eval_trained.json with --weights trained) beside the checkpoint; the last
line printed is ``test_acc=<float>``.
--weights trained evaluates the optimizer's own weights instead of the moving average a
run with Global.ema_decay evaluated (what the average adds); --tta also prints
test_acc_tta, the accuracy of each image's logits averaged with its mirror image's.
"""
import argparse
import json
import os
import sys

import _bootstrap


def _per_class(result, num_classes, class_names):
    """(class names, per-class accuracy, confusion matrix) of an evaluation, printed as a table."""
    import numpy as np

    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (result["true"], result["pred"]), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    names = list(class_names) if num_classes == len(class_names) else [str(i) for i in range(num_classes)]
    for name, acc in zip(names, per_class):
        print(f"  {name:>10s}  {acc:.4f}")
    print("confusion matrix (rows: true, columns: predicted):")
    print("\n".join(" ".join(f"{v:5d}" for v in row) for row in confusion))
    return names, per_class, confusion


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory (best.pdckpt, else last.pdckpt) or checkpoint file")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = every available core)")
    p.add_argument("--weights", default="evaluated", choices=("evaluated", "trained"),
                   help="evaluated: the weights the run evaluated (its moving average, if it kept one); "
                        "trained: the optimizer's own weights")
    p.add_argument("--tta", action="store_true", help="also report flip test-time augmentation (test_acc_tta)")
    args = p.parse_args(argv)
    args.threads = _bootstrap.set_threads(args.threads)
    import numpy as np
    import paddle

    from paddle_mbnet.errors import MbnetError
    from paddle_mbnet.training import trainer
    from paddle_mbnet.training.data import CLASSES, CifarSplit, eval_loader, load_cifar10

    try:
        cfg, model, ckpt = trainer.load_run(args.run, args.override, weights=args.weights)
        dl = cfg["DataLoader"]
        base = load_cifar10(dl["data_file"], "test")
    except MbnetError as e:
        sys.exit(f"error: {e}")
    test = CifarSplit(base, np.arange(len(base)), dl["image_size"], dl["normalize"])
    loader = eval_loader(test, dl["batch_size"], dl["num_workers"])
    evaluation = trainer.evaluate(model, loader, return_predictions=True, tta=args.tta)
    loaded = "ema" if ckpt.get("ema") and args.weights == "evaluated" else "trained"
    if args.weights == "trained" and not ckpt.get("ema"):
        print("note: this run kept no weight average (Global.ema_decay 0): it evaluated its trained weights too")
    print(f"checkpoint {ckpt['path']} (epoch {ckpt['epoch']}, {loaded} weights), {len(test)} test images, "
          f"on {paddle.get_device()}, threads={args.threads}")
    names, per_class, confusion = _per_class(evaluation, cfg["Arch"]["num_classes"], CLASSES)
    result = {"checkpoint": ckpt["path"], "epoch": ckpt["epoch"], "weights": loaded,
              "test_acc": evaluation["acc"], "test_loss": evaluation["loss"],
              "per_class_acc": dict(zip(names, per_class.tolist())), "confusion": confusion.tolist()}
    if args.tta:
        result["test_acc_tta"] = evaluation["acc_tta"]
    json_name = "eval.json" if args.weights == "evaluated" else f"eval_{args.weights}.json"
    with open(os.path.join(os.path.dirname(ckpt["path"]), json_name), "w") as f:
        json.dump(result, f, indent=1)
    if args.tta:
        print(f"test_acc_tta={evaluation['acc_tta']:.6f}")
    print(f"test_acc={evaluation['acc']:.6f}")


if __name__ == "__main__":
    main()
