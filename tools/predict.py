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
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = every available core)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value")
    args = p.parse_args(argv)
    if not args.images and not args.cifar_test:
        p.error("give image files or --cifar-test N")
    if args.cifar_test < 0 or args.topk < 1:
        p.error("--cifar-test N must be 0 or more and --topk at least 1")
    _bootstrap.set_threads(args.threads)
    from paddle_mbnet.errors import MbnetError
    from paddle_mbnet.predict import cifar_test_items, class_names, load_images, predict, prediction_figure, topk_lines
    from paddle_mbnet.training import trainer

    try:
        cfg, model, _ = trainer.load_run(args.run, args.override)
        items = load_images(args.images)
        items += cifar_test_items(cfg["DataLoader"]["data_file"], args.cifar_test) if args.cifar_test else []
    except MbnetError as e:
        sys.exit(f"error: {e}")
    names = class_names(cfg["Arch"]["num_classes"])
    probs = predict(model, items, cfg["DataLoader"]["image_size"], cfg["DataLoader"]["normalize"])
    print("\n".join(topk_lines(items, probs, names, args.topk)))
    if args.figure:
        prediction_figure(items, probs, names, title=f"predictions of {args.run}").savefig(args.figure, dpi=100)
        print(f"figure saved to {args.figure}")


if __name__ == "__main__":
    main()
