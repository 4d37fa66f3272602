"""INT8 post-training quantization of a trained run, checked against its float32 inference model.

    python tools/quantize.py <run dir or checkpoint> [--calib 512] [--out DIR] [-o DataLoader.data_file=...]

Calibrates with paddle.quantization (PTQ) on --calib training images (never validation or test ones),
exports DIR/int8/inference.{pdmodel,pdiparams} and the float32 model DIR/fp32/inference (default DIR:
<run dir>/quantized), runs both with Paddle Inference on CPU (oneDNN; int8 kernels for the int8 one),
evaluates both on the test set, times both at batch 1 (warm-up, then interleaved rounds, medians) and writes
DIR/quantize.json with fp32_acc, int8_acc, top1_agreement, fp32_latency_ms and int8_latency_ms.
INT8 gains most on CPUs with int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX) and may gain less, or
nothing, without them; the table says what this CPU gives.
"""
import argparse
import json
import os
import sys

import _bootstrap


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory (best.pdckpt, else last.pdckpt) or checkpoint file")
    p.add_argument("--calib", type=int, default=512, help="training images to calibrate on")
    p.add_argument("--out", help="output directory (default: <run dir>/quantized)")
    p.add_argument("--weight-observer", default="channel", choices=("channel", "tensor"),
                   help="int8 weight scales per output channel (default) or one per tensor")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = every available core)")
    p.add_argument("--repeats", type=int, default=50, help="timed batch-1 rounds")
    p.add_argument("--test-size", type=int, default=0, help="test images to evaluate (0 = all)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                   help="e.g. DataLoader.data_file=...")
    args = p.parse_args(argv)
    if args.calib < 1 or args.repeats < 1 or args.test_size < 0:
        p.error("--calib and --repeats must be >= 1 and --test-size >= 0")
    return args


def _data(cfg, calib: int, test_size: int):
    """(calibration batches of ``calib`` training images drawn with the run's seed, the test split)."""
    import numpy as np

    from paddle_mbnet.errors import DataError
    from paddle_mbnet.training.config import SCHEMA
    from paddle_mbnet.training.data import AUGMENT_KEYS, build_datasets

    plain = {key: SCHEMA["DataLoader"][key] for key in AUGMENT_KEYS}  # calibration sees unaugmented images
    dl = dict(cfg["DataLoader"], augment=False, train_size=0, test_size=test_size, **plain)
    train, _, test = build_datasets(dl, cfg["Global"]["seed"])
    if calib > len(train):
        raise DataError(f"--calib {calib} is more than the {len(train)} training images; lower it")
    chosen = np.random.RandomState(cfg["Global"]["seed"]).permutation(len(train))[:calib]
    batches = [train.batch(chosen[start:start + 64])[0] for start in range(0, calib, 64)]
    return batches, test


def _evaluate(predictor, test, batch_size=100):
    import numpy as np

    from paddle_mbnet.deploy import run_predictor

    predictions = []
    for start in range(0, len(test), batch_size):
        images, _ = test.batch(range(start, min(start + batch_size, len(test))))
        predictions.append(run_predictor(predictor, images).argmax(axis=1))
    predictions = np.concatenate(predictions)
    return predictions, float((predictions == test.labels()).mean())


def _latency_ms(predictors, image, repeats):
    """{name: median batch-1 milliseconds}, the predictors timed in interleaved rounds."""
    import numpy as np

    from paddle_mbnet.analysis.speed import time_rounds
    from paddle_mbnet.deploy import run_predictor

    tasks = {name: {"latency": (lambda p=p: run_predictor(p, image))} for name, p in predictors.items()}
    times = time_rounds(tasks, repeats, warmup=5, log=lambda message: None)
    return {name: 1000 * float(np.median(times[name]["latency"])) for name in predictors}


def main(argv=None):
    args = parse_args(argv)
    args.threads = _bootstrap.set_threads(args.threads)
    from paddle_mbnet import deploy, quantize
    from paddle_mbnet.analysis.benchmark import env_header
    from paddle_mbnet.errors import MbnetError
    from paddle_mbnet.training import trainer

    try:
        cfg, model, ckpt = trainer.load_run(args.run, args.override)
        size = cfg["DataLoader"]["image_size"]
        out = args.out or os.path.join(os.path.dirname(ckpt["path"]), "quantized")
        calibration, test = _data(cfg, args.calib, args.test_size)
        fp32_prefix = deploy.export(model, os.path.join(out, "fp32", "inference"), size)
        converted = quantize.quantize(model, calibration, args.weight_observer)
        int8_prefix = quantize.export_int8(converted, os.path.join(out, "int8", "inference"), size)
    except MbnetError as e:
        sys.exit(f"error: {e}")
    print(env_header())
    predictors = {"fp32": deploy.create_predictor(fp32_prefix, threads=args.threads),
                  "int8": deploy.create_predictor(int8_prefix, threads=args.threads, int8_ops=quantize.INT8_OPS)}
    predictions, accuracy = {}, {}
    for name, predictor in predictors.items():
        predictions[name], accuracy[name] = _evaluate(predictor, test)
    latency = _latency_ms(predictors, test.batch([0])[0], args.repeats)
    agreement = float((predictions["fp32"] == predictions["int8"]).mean())
    result = {"run": os.path.abspath(ckpt["path"]), "model": cfg["Arch"]["name"], "image_size": size,
              "calib_images": args.calib, "weight_observer": args.weight_observer, "test_images": len(test),
              "threads": args.threads, "fp32_acc": accuracy["fp32"], "int8_acc": accuracy["int8"],
              "top1_agreement": agreement, "fp32_latency_ms": latency["fp32"], "int8_latency_ms": latency["int8"],
              "fp32_model": fp32_prefix, "int8_model": int8_prefix}
    with open(os.path.join(out, "quantize.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"{cfg['Arch']['name']}, {len(test)} test images, batch-1 latency median of {args.repeats} rounds, "
          f"{args.threads} threads, calibrated on {args.calib} training images ({args.weight_observer} weight scales)")
    print(f"{'':6s} {'top-1':>8s} {'latency ms':>11s}")
    for name in predictors:
        print(f"{name:6s} {100 * accuracy[name]:7.2f}% {latency[name]:11.2f}")
    print(f"int8 - fp32: {100 * (accuracy['int8'] - accuracy['fp32']):+.2f} points; same top-1 on "
          f"{100 * agreement:.1f}% of images; int8 latency {latency['fp32'] / latency['int8']:.2f}x faster "
          f"(below 1 = slower)")
    print(f"wrote {os.path.join(out, 'quantize.json')}")


if __name__ == "__main__":
    main()
