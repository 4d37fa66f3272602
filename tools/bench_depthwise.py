"""Speed of our CPU kernels (depthwise op, matmul 1x1 convs, fused BatchNorm + activation) vs paddle's kernels
and PyTorch on MobileNetV1/V2.

    python tools/bench_depthwise.py [--threads 2] [--batch 128] [--steps 6] [--blocks 3] [--profile]

Two levels, both at batch 128 and 32x32 with small_input=True:
- the operators alone: forward + backward (input and weight grads) of every depthwise
  layer of the network, our NCHW and NHWC ops vs F.conv2d(groups=C), summed over the layers, of
  every fused BatchNorm + activation on NCHW and on NHWC input, and of every 1x1 convolution as the
  channels-last path runs it (one paddle.matmul over all pixels), in GFLOP/s beside the sgemm figure;
- a whole training step (Adam) of the network: "paddle" (paddle's kernels throughout), "custom"
  (our depthwise op, paddle's 1x1 conv2d), "custom+auto" (our op, and 1x1 convs on maps of <= 16
  pixels as one matmul), "custom+auto+bn" (also BatchNorm + activation as our fused op),
  "nhwc, paddle stem" (the same operators on channels-last activations, 1x1 convs as single GEMMs, the stem
  paddle's conv2d then a transpose), "custom+bn+nhwc" (the same with the stem as our operator, straight to
  channels-last: the CPU default) and the same architecture in PyTorch, if it imports, in both memory formats
  (NCHW and channels_last), with the ratios.
The header gives paddle's sgemm speed on this machine; each step also in GFLOP/s (6 x forward mult-adds).
Each round times every paddle variant in turn (interleaved, so drift hits all alike) after warm-up. PyTorch is
timed the same way in a child process, so that no paddle thread pool shares its process (two OpenMP runtimes in
one process spin on the same cores and slow each other down; see paddle_mbnet/ops). The training steps run in
--blocks blocks, each PyTorch's child process for its share of the rounds and then paddle's variants for
theirs, so that a drift of the machine's speed hits both sides alike; figures are medians over all rounds,
with the spread. --profile then runs paddle.profiler over a few steps with our ops and prints where the step's
time goes, per operator type.
"""
import argparse
import json
import os
import subprocess
import sys

import _bootstrap

# label: (depthwise, pointwise, batchnorm, layout) keywords of the model, and whether the channels-last path runs
# its stem as our operator (else paddle's conv2d then a transpose, as for an input that needs a gradient)
STEP_VARIANTS = {"paddle": ("paddle", "paddle", "paddle", "NCHW", False),
                 "custom": ("custom", "paddle", "paddle", "NCHW", False),
                 "custom+auto": ("custom", "auto", "paddle", "NCHW", False),
                 "custom+auto+bn": ("custom", "auto", "custom", "NCHW", False),
                 "nhwc, paddle stem": ("custom", "auto", "custom", "NHWC", False),
                 "custom+bn+nhwc": ("custom", "auto", "custom", "NHWC", True)}
DEFAULT_VARIANT = "custom+bn+nhwc"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=6,
                   help="timed rounds (of the training step: rounded up to a multiple of --blocks)")
    p.add_argument("--blocks", type=int, default=3, help="alternations of PyTorch's process and paddle's rounds")
    p.add_argument("--models", default="mobilenet_v1,mobilenet_v2")
    p.add_argument("--profile", action="store_true", help="also profile the step with our op, per operator type")
    p.add_argument("--skip-layers", action="store_true", help="time the whole training steps only")
    p.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.blocks < 1 or args.steps < 1:
        p.error("--steps and --blocks must be at least 1")
    args.threads = _bootstrap.set_threads(args.threads)
    if args.torch_only:
        from paddle_mbnet.cpu.memory import keep_freed_memory

        keep_freed_memory()  # the same malloc setting as the paddle side
        steps = _torch_steps(args)
        print(json.dumps({name: {label: list(times) for label, times in _interleaved(steps[name], args.steps).items()}
                          for name in args.models.split(",")}))
        return
    import numpy as np
    import paddle

    from paddle_mbnet.analysis.benchmark import env_header
    from paddle_mbnet.cpu.memory import keep_freed_memory

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(args.threads)
    keep_freed_memory()  # as tools/train.py does on CPU; PADDLE_MBNET_MALLOC=default to compare without
    print(env_header())
    sgemm = _sgemm_gflops(args.threads)
    print(f"sgemm: paddle.matmul 2048x2048 float32 at {sgemm:.1f} GFLOP/s "
          f"({args.threads} threads); training GFLOP/s below = img/s x 6 x forward mult-adds")
    for name in [] if args.skip_layers else args.models.split(","):
        _bench_layers(name, args, sgemm)
    names = args.models.split(",")
    per_block = -(-args.steps // args.blocks)
    print(f"training step, batch {args.batch}, 32x32, small_input=True, Adam; median of {per_block * args.blocks} "
          f"rounds in {args.blocks} blocks, each PyTorch's child process then paddle's variants")
    variants = {name: _paddle_steps(name, args.batch) for name in names}
    times = {name: {} for name in names}
    torch_runs = True
    for block in range(args.blocks):
        # Blocks alternate the two processes, so that a drift of the machine's speed hits both sides alike.
        torch_times = _torch_in_own_process(argv, per_block) if torch_runs else {}
        torch_runs = bool(torch_times)  # a failed child (no torch) is not started again
        for name in names:
            for label, seconds in [*torch_times.get(name, {}).items(),
                                   *_interleaved(variants[name], per_block, warmup=2 if block == 0 else 1).items()]:
                times[name].setdefault(label, []).extend(seconds)
    for name in names:
        _report_step(name, {label: np.array(v) for label, v in times[name].items()}, args,
                     _train_gflop_per_image(name))
    if args.profile:
        for name in args.models.split(","):
            _profile_step(name, args)


def _paddle_steps(name, batch):
    """{variant label: one training step of that variant's model}."""
    from paddle_mbnet import build_model
    from paddle_mbnet.analysis.benchmark import train_step_fn

    steps = {}
    for label, (dw, pw, bn, layout, stem_op) in STEP_VARIANTS.items():
        model = build_model(name, num_classes=10, small_input=True, depthwise=dw, pointwise=pw, batchnorm=bn,
                            layout=layout)
        if not stem_op:
            model.features[0].runs_stem_channels_last = lambda x: False  # an instance attribute: no hook needed
        steps[label] = train_step_fn(model, batch, 32)
    return steps


def _train_gflop_per_image(name):
    """Training FLOPs of one 32x32 image: forward mult-adds x 2 FLOPs x 3 (forward, input and weight gradients)."""
    from paddle_mbnet import build_model, complexity

    return complexity(build_model(name, num_classes=10, small_input=True), (3, 32, 32)).macs * 6 / 1e9


def _report_step(name, times, args, gflop_per_image):
    import numpy as np

    ips = {k: args.batch / np.median(v) for k, v in times.items()}
    for k, v in times.items():
        ms = np.array(v) * 1000
        print(f"{name:13s} {k:22s} {ips[k]:7.1f} img/s  {ips[k] * gflop_per_image:6.1f} GFLOP/s  "
              f"{np.median(ms):8.1f} ms/step  (min {ms.min():.1f}, max {ms.max():.1f})")
    best = DEFAULT_VARIANT
    ratios = [" and ".join(f"{k} {ips[k] / ips['paddle']:.2f}x" for k in STEP_VARIANTS if k != "paddle") + " paddle"]
    ratios += [f"{best} / {k} {ips[best] / ips[k]:.2f}x" for k in ips if k.startswith("torch")]
    print(f"{name:13s} {'; '.join(ratios)}" + ("" if "torch NCHW" in ips else "; no PyTorch figure"))


def _sgemm_gflops(threads, size=2048, repeats=5):
    """paddle.matmul of two size x size float32 matrices: the GEMM speed this machine gives paddle."""
    import numpy as np
    import paddle

    from paddle_mbnet.analysis.benchmark import time_fn

    a, b = paddle.randn([size, size]), paddle.randn([size, size])
    seconds = float(np.median(time_fn(lambda: paddle.matmul(a, b), warmup=1, repeats=repeats)))
    return 2 * size ** 3 / seconds / 1e9


def _interleaved(variants, steps, warmup=2):
    """{variant: np.array of seconds}: warm-up each, then ``steps`` rounds timing every variant once."""
    import numpy as np

    from paddle_mbnet.analysis.benchmark import time_fn

    for fn in variants.values():
        time_fn(fn, warmup=warmup, repeats=0)
    times = {k: [] for k in variants}
    for _ in range(steps):
        for k, fn in variants.items():
            times[k].append(time_fn(fn, warmup=0, repeats=1)[0])
    return {k: np.array(v) for k, v in times.items()}


def _layer_shapes(name, batch):
    """The inputs of the network's depthwise convs [(NCHW shape, stride)], of its fused BatchNorms
    {(NCHW shape, activation): count} and its 1x1 convs' matrix products {(rows, C_in, C_out): count},
    from one forward at 32x32. A BatchNorm's input has the shape of its
    ConvBNAct's output; the model is built with batchnorm="custom" so that each block knows its fused activation."""
    import paddle

    from paddle_mbnet import build_model
    from paddle_mbnet.models.layers import ConvBNAct, PointwiseConv2D

    depthwise, batchnorms, pointwise = [], {}, {}

    def seen_batchnorm(layer, inputs, output):
        key = (tuple(output.shape), layer._fused_act)
        batchnorms[key] = batchnorms.get(key, 0) + 1

    def seen_pointwise(layer, inputs, output):
        n, c_in, h, w = inputs[0].shape
        key = (n * h * w, c_in, output.shape[1])
        pointwise[key] = pointwise.get(key, 0) + 1

    model = build_model(name, num_classes=10, small_input=True, depthwise="paddle", batchnorm="custom",
                        layout="NCHW")
    hooks = [m.register_forward_post_hook(lambda layer, inp, out: depthwise.append((inp[0].shape, layer._stride[0])))
             for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D) and m._groups > 1]
    hooks += [m.register_forward_post_hook(seen_batchnorm) for m in model.sublayers() if isinstance(m, ConvBNAct)]
    hooks += [m.register_forward_post_hook(seen_pointwise) for m in model.sublayers()
              if isinstance(m, PointwiseConv2D)]
    with paddle.no_grad():
        model.eval()
        model(paddle.zeros([batch, 3, 32, 32]))
    for h in hooks:
        h.remove()
    return depthwise, batchnorms, pointwise


def _fwd_bwd(fn, *inputs):
    """One forward + backward of ``fn(*inputs)``: the output gradient (ones) is made once, outside the timed call,
    and the inputs' gradients come back as fresh tensors (``paddle.grad``), as inside a training step, instead of
    being added into ``.grad`` buffers that would need zeroing: both would be memory passes the step does not make."""
    import paddle

    wanted = [t for t in inputs if not t.stop_gradient]
    seed = paddle.ones_like(fn(*inputs))

    def run():
        paddle.grad([fn(*inputs)], wanted, grad_outputs=[seed])
    return run


def _nhwc(x):
    """A channels-last copy of ``x`` as a leaf of its own (gradients stop there, as at ``x``)."""
    leaf = x.transpose([0, 2, 3, 1]).contiguous().detach()
    leaf.stop_gradient = x.stop_gradient
    return leaf


def _bench_layers(name, args, sgemm):
    """Forward + backward of every depthwise layer of ``name`` (our NCHW and NHWC operators vs paddle's grouped
    conv; the ratio printed is paddle's time over our NCHW op's, a speed-up) and of every fused BatchNorm +
    activation (our operator on NCHW vs NHWC input; the ratio is NHWC's time over NCHW's, above 1 a slow-down), then
    of every 1x1 convolution as the channels-last path runs it (one matmul), beside the sgemm figure."""
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from paddle_mbnet.cpu.ops import depthwise_conv2d, depthwise_conv2d_nhwc

    depthwise, batchnorms, pointwise = _layer_shapes(name, args.batch)
    total = {"custom": 0.0, "nhwc": 0.0, "paddle": 0.0}
    print(f"{name}: depthwise layers alone, forward + backward, batch {args.batch}")
    for shape, stride in depthwise:
        x = paddle.randn(shape)
        w = paddle.randn([shape[1], 1, 3, 3])
        x.stop_gradient = w.stop_gradient = False
        t = _interleaved({"custom": _fwd_bwd(lambda a, b: depthwise_conv2d(a, b, stride, 1), x, w),
                          "nhwc": _fwd_bwd(lambda a, b: depthwise_conv2d_nhwc(a, b, stride, 1), _nhwc(x), w),
                          "paddle": _fwd_bwd(lambda a, b: F.conv2d(a, b, stride=stride, padding=1, groups=shape[1]),
                                             x, w)}, args.steps)
        med = {k: float(np.median(v)) for k, v in t.items()}
        for k in total:
            total[k] += med[k]
        print(f"  C={shape[1]:5d} {shape[2]:3d}x{shape[3]:<3d} s{stride}  custom {1000 * med['custom']:8.2f} ms  "
              f"nhwc {1000 * med['nhwc']:8.2f} ms  paddle {1000 * med['paddle']:8.2f} ms  "
              f"{med['paddle'] / med['custom']:5.1f}x")
    print(f"{name:13s} all depthwise layers: custom {1000 * total['custom']:.1f} ms, nhwc {1000 * total['nhwc']:.1f} "
          f"ms, paddle {1000 * total['paddle']:.1f} ms per step -> {total['paddle'] / total['custom']:.1f}x")
    _bench_batchnorm_layers(name, batchnorms, args)
    _bench_pointwise_layers(name, pointwise, args, sgemm)


def _bench_batchnorm_layers(name, batchnorms, args):
    """Our fused BatchNorm + activation in training, forward + backward, on NCHW and on NHWC input, once per
    distinct (shape, activation); the totals weigh each by how often the network has it."""
    import numpy as np
    import paddle

    from paddle_mbnet.cpu.ops import batchnorm_act

    total = {"NCHW": 0.0, "NHWC": 0.0}
    print(f"{name}: fused BatchNorm + activation alone, training, forward + backward, batch {args.batch}")
    for (shape, act), count in batchnorms.items():
        x = paddle.randn(list(shape))
        x.stop_gradient = False
        gamma, beta = paddle.ones([shape[1]]), paddle.zeros([shape[1]])
        gamma.stop_gradient = beta.stop_gradient = False
        mean, var = paddle.zeros([shape[1]]), paddle.ones([shape[1]])

        def layer(channels_last):
            return lambda a, g, b: batchnorm_act(a, g, b, mean, var, 1e-5, True, act, channels_last)[0]

        t = _interleaved({"NCHW": _fwd_bwd(layer(False), x, gamma, beta),
                          "NHWC": _fwd_bwd(layer(True), _nhwc(x), gamma, beta)}, args.steps)
        med = {k: float(np.median(v)) for k, v in t.items()}
        for k in total:
            total[k] += count * med[k]
        print(f"  C={shape[1]:5d} {shape[2]:3d}x{shape[3]:<3d} {str(act):5s} x{count:<2d}  NCHW "
              f"{1000 * med['NCHW']:7.2f} ms  NHWC {1000 * med['NHWC']:7.2f} ms  {med['NHWC'] / med['NCHW']:5.2f}x")
    print(f"{name:13s} all fused BatchNorms: NCHW {1000 * total['NCHW']:.1f} ms, NHWC {1000 * total['NHWC']:.1f} ms "
          f"per step -> NHWC/NCHW {total['NHWC'] / total['NCHW']:.2f}x")


def _bench_pointwise_layers(name, pointwise, args, sgemm):
    """Every 1x1 convolution as the channels-last path runs it, forward + both gradients: one paddle.matmul of
    [N*H*W, C_in] by the [C_out, C_in] weight (transposed), once per distinct shape; the totals weigh each by how
    often the network has it. GFLOP/s count 6 FLOPs per mult-add (forward, input and weight gradients)."""
    import numpy as np
    import paddle

    total_seconds = total_flop = 0.0
    print(f"{name}: 1x1 convolutions alone as one matmul (channels-last), forward + backward, batch {args.batch}")
    for (rows, c_in, c_out), count in pointwise.items():
        x, weight = paddle.randn([rows, c_in]), paddle.randn([c_out, c_in])
        x.stop_gradient = weight.stop_gradient = False
        seconds = float(np.median(_interleaved(
            {"matmul": _fwd_bwd(lambda a, b: paddle.matmul(a, b, transpose_y=True), x, weight)},
            args.steps)["matmul"]))
        flop = 6.0 * rows * c_in * c_out
        total_seconds += count * seconds
        total_flop += count * flop
        print(f"  [{rows:6d} x {c_in:4d}] x [{c_in:4d} x {c_out:4d}] x{count:<2d} {1000 * seconds:7.2f} ms  "
              f"{flop / seconds / 1e9:6.1f} GFLOP/s")
    achieved = total_flop / total_seconds / 1e9
    print(f"{name:13s} all 1x1 convolutions: {1000 * total_seconds:.1f} ms per step, {achieved:.1f} GFLOP/s "
          f"({achieved / sgemm:.2f} of the sgemm figure; at it they would take {total_flop / sgemm / 1e6:.1f} ms)")


def _profile_step(name, args, steps=3):
    """paddle.profiler over ``steps`` training steps with our kernels (after one untimed step): operator types
    by CPU time. Custom operators' forward calls are not operator events there, so each depthwise layer's
    and each fused BatchNorm's and the stem operator's forward is wrapped in a user-defined event (the
    "UserDefined" view)."""
    import paddle.profiler as profiler

    from paddle_mbnet import build_model
    from paddle_mbnet.analysis.benchmark import train_step_fn
    from paddle_mbnet.cpu import ops
    from paddle_mbnet.models.layers import BatchNormAct2D, DepthwiseConv2D

    dw, pw, bn, layout, _ = STEP_VARIANTS[DEFAULT_VARIANT]
    model = build_model(name, num_classes=10, small_input=True, depthwise=dw, pointwise=pw, batchnorm=bn,
                        layout=layout)

    def recorded(label, method):
        # the bound method as an instance attribute, not a hook: hooks switch the channels-last path off
        def run(*args, **kwargs):
            with profiler.RecordEvent(label):
                return method(*args, **kwargs)
        return run

    for m in model.sublayers():
        if isinstance(m, DepthwiseConv2D):
            m.forward = recorded("depthwise forward (mbnet op)", m.forward)
            m.forward_nhwc = recorded("depthwise forward (mbnet op)", m.forward_nhwc)
        elif isinstance(m, BatchNormAct2D):
            m.fused_forward = recorded("BatchNorm + activation forward (mbnet op)", m.fused_forward)
    step = train_step_fn(model, args.batch, 32)
    step()
    stem_op = ops.stem_conv2d_nhwc  # the layer looks the function up at each call: wrapped for these steps only
    ops.stem_conv2d_nhwc = recorded("stem conv forward (mbnet op)", stem_op)
    try:
        with profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda prof: None) as prof:
            for _ in range(steps):
                step()
                prof.step()
    finally:
        ops.stem_conv2d_nhwc = stem_op
    print(f"{name}: paddle.profiler, {steps} training steps with depthwise={dw!r}, pointwise={pw!r}, "
          f"batchnorm={bn!r}, layout={layout!r}, batch {args.batch}")
    prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit="ms",
                 views=[profiler.SummaryView.OverView, profiler.SummaryView.OperatorView,
                        profiler.SummaryView.UDFView])


def _torch_in_own_process(argv, steps):
    """{model: {"torch NCHW" | "torch channels_last": seconds per round}}, ``steps`` rounds timed by a child process
    in both memory formats ({} without torch)."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--profile", "--skip-layers")]
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--steps", str(steps), "--torch-only"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"PyTorch not timed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _torch_steps(args):
    """The same architectures in PyTorch (torchvision-free, built from our tables), when torch imports."""
    try:
        import torch
        from torch import nn
    except ImportError:
        sys.exit("torch is not installed (optional: pip install torch==2.13.0 for the comparison)")
    torch.set_num_threads(args.threads)
    from paddle_mbnet.analysis import torch_peer

    def step_fn(model, memory_format=torch.contiguous_format):
        model = model.to(memory_format=memory_format)
        opt = torch.optim.Adam(model.parameters())
        x = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=memory_format)
        y = torch.randint(0, 10, (args.batch,))

        def step():
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()

        return step

    return {name: {"torch NCHW": step_fn(torch_peer.build(name)),
                   "torch channels_last": step_fn(torch_peer.build(name), torch.channels_last)}
            for name in ("mobilenet_v1", "mobilenet_v2")}


if __name__ == "__main__":
    main()
