"""Export a trained run to a Paddle inference model and check it against the dynamic model.

    python tools/export.py <run dir or checkpoint> [--out DIR] [--engine paddle|openvino|onnxruntime]

Writes DIR/inference.{json|pdmodel,pdiparams} (default <run dir>/inference),
loads it with paddle.inference (or OpenVINO, or ONNX Runtime) and prints the largest output difference.
--engine openvino writes the legacy program format (inference.pdmodel), the one
OpenVINO reads, and checks the model through OpenVINO (pip install openvino).
--engine onnxruntime also converts the export to DIR/inference.onnx with paddle2onnx and checks that file
through ONNX Runtime (pip install onnxruntime paddle2onnx); any ONNX runtime can serve it.
"""
import argparse
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--out", help="output directory (default: <run dir>/inference)")
    p.add_argument("--no-onednn", action="store_true", help="check with plain CPU kernels instead of oneDNN")
    # deploy.ENGINES, written out so that --help needs no paddle import (a test keeps the two in step)
    p.add_argument("--engine", default="paddle", choices=("paddle", "openvino", "onnxruntime"),
                   help="the engine that will run the model: paddle (Paddle Inference), openvino or onnxruntime")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the engine in the check (default 1)")
    args = p.parse_args(argv)
    if args.no_onednn and args.engine != "paddle":
        p.error(f"--no-onednn is a Paddle Inference setting; drop it with --engine {args.engine}")
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    import numpy as np
    import paddle

    from paddle_mbnet import deploy
    from paddle_mbnet.errors import MbnetError
    from paddle_mbnet.training import trainer

    try:
        cfg, model, ckpt = trainer.load_run(args.run)
        size = cfg["DataLoader"]["image_size"]
        out = args.out or os.path.join(os.path.dirname(ckpt["path"]), "inference")
        prefix = deploy.export_for(args.engine, model, os.path.join(out, "inference"), size)
        options = {"onednn": not args.no_onednn} if args.engine == "paddle" else {}
        run_engine = deploy.create_engine(prefix, args.engine, threads=args.threads, **options)
    except MbnetError as e:
        sys.exit(f"error: {e}")
    x = np.random.RandomState(0).randn(2, 3, size, size).astype("float32")
    want = model(paddle.to_tensor(x)).numpy()
    diff = float(np.abs(run_engine(x) - want).max())
    suffix = ".onnx" if args.engine == "onnxruntime" else ""
    print(f"exported {prefix}{suffix} (input [N, 3, {size}, {size}]); {deploy.ENGINES[args.engine]} "
          f"({args.threads} thread{'s' * (args.threads != 1)}) vs dynamic max abs diff {diff:.2e}")
    if diff > 1e-3:
        sys.exit(f"error: the inference model disagrees with the dynamic one (max abs diff {diff})")


if __name__ == "__main__":
    main()
