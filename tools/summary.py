"""Per-layer summary of a registered model: type, output shape, parameters and multiply-adds of every layer,
the totals, and V1 Table 2's shares per layer type.

    python tools/summary.py mobilenet_v1                      # the paper's network at 224 px
    python tools/summary.py mobilenet_v2 --small-input --input-size 32 --num-classes 10 --scale 0.5
"""
import argparse
import contextlib
import io
import sys

import _bootstrap


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="a registry name, e.g. mobilenet_v1, mobilenet_v2, resnet50")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--scale", type=float, default=None, help="width multiplier (our MobileNets)")
    p.add_argument("--small-input", action="store_true", help="the CIFAR variant of our MobileNets")
    p.add_argument("--num-classes", type=int, default=1000)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    _bootstrap.set_threads(1)
    import paddle

    from paddle_mbnet import build_model
    from paddle_mbnet.analysis.complexity import complexity, layer_rows
    from paddle_mbnet.errors import MbnetError

    kwargs = {"num_classes": args.num_classes}
    kwargs.update({"small_input": True} if args.small_input else {})
    kwargs.update({"scale": args.scale} if args.scale is not None else {})
    shape = (3, args.input_size, args.input_size)
    try:
        model = build_model(args.name, **kwargs)
        rows = layer_rows(model, shape)
    except MbnetError as e:
        sys.exit(f"error: {e}")
    with contextlib.redirect_stdout(io.StringIO()):  # paddle.summary prints its own table; we want its totals
        totals = paddle.summary(model, (1, *shape))
    counted = complexity(model, shape)
    print(f"{args.name} {kwargs} at {args.input_size}x{args.input_size}")
    print(f"{'layer':44s} {'type':18s} {'output shape':>18s} {'params':>12s} {'mult-adds':>14s}")
    for row in rows:
        macs = f"{row.macs:,}" if row.macs is not None else ""
        print(f"{row.name[:44]:44s} {row.kind[:18]:18s} {str(row.output_shape):>18s} {row.params:>12,} {macs:>14s}")
    print(f"total parameters: {totals['total_params']:,}   trainable: {totals['trainable_params']:,}   "
          f"conv + FC weights (the papers' count): {counted.params_conv_fc:,}")
    print(f"total mult-adds (conv + FC, the papers' count): {counted.macs:,} ({counted.macs / 1e6:.1f} M)")
    print(counted.table())


if __name__ == "__main__":
    main()
