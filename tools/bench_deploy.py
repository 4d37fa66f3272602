"""Batch-1 CPU latency of the deploy path against ONNX Runtime, the runtime most CPU deployments pick.

    python tools/bench_deploy.py [--models mobilenet_v1,mobilenet_v2] [--input-size 224] [--threads 2]
                                 [--repeats 50] [--blocks 3] [--sides paddle,openvino,paddle2onnx,onnxruntime]
                                 [--profile]

Paddle side: the project's deploy path (``paddle_mbnet.deploy``: paddle.jit.save + Paddle Inference with oneDNN,
what compare.py reports as engine_latency_ms_p50), the same model saved in the legacy program format, and four of
Paddle Inference's levers: no IR passes (switch_ir_optim(False)), buffer sharing (enable_memory_optim, on the
legacy format: paddle 3.3's pass fails on PIR programs), oneDNN's kernel cache bounded to one input shape
(set_mkldnn_cache_capacity(1); the bench feeds one shape, so this times the bound's overhead only) and paddle's
plain CPU kernels (no oneDNN).
OpenVINO side (where installed): the legacy-format export through ``deploy.OpenVinoModel`` (compare.py
--engine openvino), in float32, and in bfloat16 where the CPU computes it natively (AMX or AVX-512 BF16; a
different precision, so not the like-for-like figure).
paddle2onnx side (where installed): the export converted by paddle2onnx and run by ``deploy.OnnxRuntimeModel``
(compare.py --engine onnxruntime), with the same session options as the ONNX Runtime side: the same runtime,
our graph against PyTorch's; both ONNX sides print the operators ONNX Runtime runs after its graph passes
(``deploy.ort_optimized_op_types``). Each is checked against the dynamic model first (largest output difference,
relative to the largest output, printed).
ONNX Runtime side: the same architecture in PyTorch (built from our tables, random weights), exported with
torch.onnx.export and run by onnxruntime. Each side runs in a child process of its own, one block at a time: a
runtime's idle thread pool in the same process, or in a parent waiting for the child, slows the other down. The
sides (all four, or those --sides names) take turns in --blocks blocks; each block warms up, then times --repeats
calls of every model (one variant or session after another); figures are medians and p90 over all blocks, the ratio
is ours / onnxruntime (below 1 = ours faster), beside the median, lowest and highest of the blocks' own ratios.
--profile then runs paddle.profiler over --repeats calls of each model's deploy-path predictor (after the
warm-up, in a process of its own) and prints where its time goes, per operator type; then ONNX Runtime's profiler
over both ONNX graphs (where installed), microseconds per call by operator type.
PyTorch and onnxruntime are benchmark-only: pip install -r requirements-bench.txt.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import _bootstrap

SIDES = ("paddle", "openvino", "paddle2onnx", "onnxruntime")
OPTIONAL_SIDES = ("openvino", "paddle2onnx")  # skipped, with the child's one line, where their engine is not installed
REFERENCE = "onnxruntime"  # the side every ratio divides by
PROFILE_SIDE = "profile"  # the child process of --profile


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mobilenet_v1,mobilenet_v2")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=50, help="timed calls per model and block")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--blocks", type=int, default=3, help="rounds of the sides")
    p.add_argument("--sides", default=",".join(SIDES),
                   help=f"the sides to time, comma-separated, {REFERENCE} among them (default: all)")
    p.add_argument("--profile", action="store_true", help="also profile the deploy path's predictor, per operator")
    p.add_argument("--side", choices=SIDES + (PROFILE_SIDE,), help=argparse.SUPPRESS)  # a child process
    p.add_argument("--block-index", type=int, default=0, help=argparse.SUPPRESS)  # the child's block
    args = p.parse_args(argv)
    if min(args.repeats, args.blocks, args.input_size) < 1 or args.warmup < 0:
        p.error("--repeats, --blocks and --input-size must be >= 1, --warmup >= 0")
    args.sides = tuple(side.strip() for side in args.sides.split(","))
    unknown = [side for side in args.sides if side not in SIDES]
    if unknown or REFERENCE not in args.sides or len(set(args.sides)) != len(args.sides):
        p.error(f"--sides names some of {', '.join(SIDES)}, each once, {REFERENCE} among them; "
                f"got {','.join(args.sides)}")
    return args


def _rounds(calls, repeats, warmup):
    """{name: [seconds per call]}: warm-up, then every call once per round (the comparison's own timer)."""
    from paddle_mbnet.analysis.speed import time_rounds

    times = time_rounds({name: {"call": call} for name, call in calls.items()}, repeats, warmup, log=lambda _: None)
    return {name: kinds["call"] for name, kinds in times.items()}


def _ort_times(args, folder):
    """({model: [seconds per batch-1 call]}, versions) through onnxruntime, one session alive at a time: each
    session keeps its own spinning thread pool, and two of them interleaved slow each other down."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from paddle_mbnet import deploy

    torch.set_num_threads(args.threads)
    options = deploy.ort_session_options(args.threads)  # the same as our engine's: only the graph differs
    image = np.random.RandomState(0).randn(1, 3, args.input_size, args.input_size).astype("float32")
    times = {}
    for name in args.models.split(","):
        path = _peer_onnx(name, image, folder)
        _print_graph(args, name, "onnxruntime", path)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        times.update(_rounds({name: lambda s=session: s.run(None, {"x": image})}, args.repeats, args.warmup))
        del session
    return times, {"onnxruntime": ort.__version__, "torch": torch.__version__}


def _peer_onnx(name, image, folder):
    """The peer's ONNX file: the same architecture in PyTorch, random weights, exported at the image's shape."""
    import torch

    from paddle_mbnet.analysis import torch_peer

    model = torch_peer.build(name, small_input=False, num_classes=1000).eval()
    path = os.path.join(folder, f"{name}.onnx")
    torch.onnx.export(model, torch.from_numpy(image), path, input_names=["x"], output_names=["y"], dynamo=False)
    return path


def _ort_profile(args, name, variant, path, image):
    """Print ONNX Runtime's own profile of --repeats calls after the warm-up: microseconds per call by operator."""
    import collections

    import onnxruntime as ort

    from paddle_mbnet import deploy

    options = deploy.ort_session_options(args.threads)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(os.path.dirname(path), "ort_profile")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image}
    for _ in range(args.warmup + args.repeats):
        session.run(None, feed)
    with open(session.end_profiling()) as profile_file:
        events = json.load(profile_file)
    runs = sorted(event["ts"] for event in events if event.get("name") == "model_run")
    timed_from = runs[args.warmup]  # the profile starts with the session: skip the warm-up's events
    per_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= timed_from:
            per_op[event["args"]["op_name"]] += event["dur"] / args.repeats
    print(f"{name}: ONNX Runtime's profiler, {args.repeats} calls of {variant} after {args.warmup} warm-up calls, "
          f"microseconds per call (kernels only)")
    for op, micros in per_op.most_common():
        print(f"  {op:24s} {micros:10.1f}")
    print(f"  {'all kernels':24s} {sum(per_op.values()):10.1f}")


def _profile(args):
    """paddle.profiler's operator table for --repeats calls of the deploy-path predictor of the one model in
    --models, after warm-up; then, where the ONNX engine and the peer are installed, ONNX Runtime's profile of
    both ONNX graphs."""
    import importlib.util

    import paddle.profiler as profiler

    from paddle_mbnet import deploy

    (name,) = args.models.split(",")
    with tempfile.TemporaryDirectory() as folder:
        image, _, prefixes = _exported(args, folder, name, legacy_formats=(False,))  # the deploy path's format
        predictor = deploy.create_predictor(prefixes[False], threads=args.threads)
        for _ in range(args.warmup):
            deploy.run_predictor(predictor, image)
        prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda _: None)  # no files
        prof.start()
        for _ in range(args.repeats):
            deploy.run_predictor(predictor, image)
            prof.step()
        prof.stop()
        print(f"{name}: paddle.profiler, {args.repeats} calls of the deploy path's predictor (Paddle Inference, "
              f"oneDNN, {args.threads} threads) after {args.warmup} warm-up calls", flush=True)
        prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit="ms")
        del predictor  # its thread pool
        if all(importlib.util.find_spec(module) for module in ("onnxruntime", "paddle2onnx", "onnx", "torch")):
            _ort_profile(args, name, "paddle2onnx + ORT", deploy.to_onnx(prefixes[False]), image)
            _ort_profile(args, name, "the PyTorch-exported peer", _peer_onnx(name, image, folder), image)


def _child(args):
    """One block of one side: build, check, time; the last line printed is JSON (``skipped`` holds the reason
    when an optional side's engine is not installed)."""
    if args.side == PROFILE_SIDE:
        return _profile(args)
    from paddle_mbnet.errors import NotInstalledError

    try:
        print(json.dumps(_timed_side(args)))
    except NotInstalledError as error:
        if args.side not in OPTIONAL_SIDES:
            raise
        print(json.dumps({"skipped": str(error)}))


def _timed_side(args):
    with tempfile.TemporaryDirectory() as folder:
        if args.side in ("paddle", "openvino"):
            # one variant after another: interleaved with paddle's plain CPU kernels, the oneDNN predictors
            # ran markedly slower than alone (caches and thread pools of the other kernels in between)
            calls, versions = {"paddle": _paddle_calls, "openvino": _openvino_calls}[args.side](args, folder)
            times = {key: values for key, call in calls.items()
                     for key, values in _rounds({key: call}, args.repeats, args.warmup).items()}
        else:
            times, versions = {"paddle2onnx": _paddle2onnx_times, "onnxruntime": _ort_times}[args.side](args, folder)
    return {"times": times, "versions": versions}


def _block(argv, side, index):
    argv = list(sys.argv[1:] if argv is None else argv)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--side", side, "--block-index",
                           str(index)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        fix = "; pip install -r requirements-bench.txt" if side == REFERENCE else ""
        sys.exit(f"error: the {side} side failed ({last}){fix}")
    lines = proc.stdout.strip().splitlines()
    block = json.loads(lines[-1])
    if "skipped" in block:
        return [f"{side} side skipped: {block['skipped']}"], {"times": {}, "versions": {}}
    return lines[:-1], block


def _exported(args, folder, name, legacy_formats=(False, True)):
    """(random input, the dynamic model's output, {legacy: export prefix}) of one network, in each format asked."""
    import numpy as np
    import paddle

    from paddle_mbnet import build_model, deploy

    paddle.seed(0)
    image = np.random.RandomState(0).randn(1, 3, args.input_size, args.input_size).astype("float32")
    model = build_model(name, num_classes=1000).eval()
    want = model(paddle.to_tensor(image)).numpy()
    prefixes = {legacy: deploy.export(model, os.path.join(folder, name, "legacy" if legacy else "pir", "inference"),
                                      args.input_size, legacy=legacy) for legacy in legacy_formats}
    return image, want, prefixes


def _checked(calls, name, variant, run, image, want):
    """Print the variant's largest output difference from the dynamic model and add it to ``calls``."""
    import numpy as np

    diff = float(np.abs(run(image) - want).max() / np.abs(want).max())
    print(f"{name:13s} {variant:22s} max abs diff vs the dynamic model, relative to its largest output {diff:.2e}")
    calls[f"{name} / {variant}"] = lambda: run(image)


def _print_graph(args, name, variant, onnx_path):
    """Print the operators ONNX Runtime runs for the file after its graph passes: the two ONNX sides' graphs. In
    the first block only: it builds a session of its own, and the graphs do not change between blocks."""
    from paddle_mbnet import deploy

    if args.block_index != 0:
        return
    ops = deploy.ort_optimized_op_types(onnx_path)
    print(f"{name:13s} {variant:22s} operators after ONNX Runtime's graph passes: "
          + ", ".join(f"{op} {count}" for op, count in sorted(ops.items())))


def _paddle_calls(args, folder):
    """({"model / variant": callable}, versions), each inference model checked against the dynamic one first."""
    from paddle_mbnet import deploy

    calls = {}
    variants = {"deploy path": (False, {}), "legacy format": (True, {}), "no IR passes": (False, {"ir_optim": False}),
                "legacy + memory optim": (True, {"memory_optim": True}), "oneDNN cache 1": (False, {"onednn_cache": 1}),
                "no oneDNN": (False, {"onednn": False})}
    for name in args.models.split(","):
        image, want, prefixes = _exported(args, folder, name)
        for variant, (legacy, options) in variants.items():
            run = deploy.create_engine(prefixes[legacy], "paddle", threads=args.threads, **options)
            _checked(calls, name, variant, run, image, want)
    return calls, {}


def _openvino_calls(args, folder):
    """As _paddle_calls, through deploy.OpenVinoModel: float32, and bfloat16 where the CPU has it natively."""
    from paddle_mbnet import deploy

    openvino = deploy.OpenVinoModel.check_installed()
    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    precisions = ("f32", "bf16") if "BF16" in capabilities else ("f32",)
    calls = {}
    for name in args.models.split(","):
        image, want, prefixes = _exported(args, folder, name)
        for precision in precisions:
            run = deploy.OpenVinoModel(prefixes[True], threads=args.threads, precision=precision)
            _checked(calls, name, f"openvino {precision}", run, image, want)
    return calls, {"openvino": openvino.__version__}


def _paddle2onnx_times(args, folder):
    """As _ort_times, through deploy.OnnxRuntimeModel on the deploy path's export converted by paddle2onnx, each
    model checked against the dynamic one first; one session alive at a time, as on the ONNX Runtime side."""
    from paddle_mbnet import deploy

    deploy.check_engine("onnxruntime")
    import paddle2onnx

    times = {}
    for name in args.models.split(","):
        image, want, prefixes = _exported(args, folder, name, legacy_formats=(False,))
        _print_graph(args, name, "paddle2onnx + ORT", deploy.to_onnx(prefixes[False]))
        calls = {}
        _checked(calls, name, "paddle2onnx + ORT", deploy.OnnxRuntimeModel(prefixes[False], args.threads), image, want)
        times.update(_rounds(calls, args.repeats, args.warmup))
        del calls  # the session with it
    return times, {"paddle2onnx": paddle2onnx.__version__}


def _collect(args, argv):
    """({"model / runtime": [[seconds per call] of each block]}, versions), the sides taking turns."""
    times, versions = {}, {}
    for index in range(args.blocks):
        for side in args.sides:
            checks, block = _block(argv, side, index)
            for line in checks if index == 0 else ():
                if any(part in line for part in ("max abs diff", "graph passes", "skipped")):
                    print(line)
            versions.update(block["versions"])
            for key, values in block["times"].items():
                key = f"{key} / {REFERENCE}" if side == REFERENCE else key
                times.setdefault(key, []).append(values)
    return times, versions


def _report(args, times):
    """p50 and p90 over all blocks, the ratio of the medians, and the median and range of the blocks' own ratios:
    the VM's speed can change for minutes at a time, and a block's sides run seconds apart, so the blocks' median
    ratio is the steadier figure."""
    import numpy as np

    print(f"{'model / runtime':40s} {'p50 ms':>8s} {'p90 ms':>8s} {'vs ' + REFERENCE:>15s} "
          f"{'blocks: median':>15s} {'range':>11s}")
    for name in args.models.split(","):
        reference_blocks = [float(np.median(block)) for block in times[f"{name} / {REFERENCE}"]]
        reference = float(np.median(np.concatenate(times[f"{name} / {REFERENCE}"])))
        for key in [k for k in times if k.startswith(name + " /")]:
            ms = 1000 * np.concatenate(times[key])
            ratios = [float(np.median(block)) / ref for block, ref in zip(times[key], reference_blocks)]
            print(f"{key:40s} {np.median(ms):8.2f} {np.percentile(ms, 90):8.2f} "
                  f"{np.median(ms) / 1000 / reference:14.2f}x {np.median(ratios):14.2f}x "
                  f"{min(ratios):5.2f}-{max(ratios):.2f}x")


def main(argv=None):
    args = parse_args(argv)
    args.threads = _bootstrap.set_threads(args.threads)
    if args.side:
        return _child(args)
    from paddle_mbnet.analysis.benchmark import env_header

    print(env_header())
    threads = f"{args.threads} thread{'s' * (args.threads != 1)}"
    print(f"batch 1 at {args.input_size}x{args.input_size}, {threads}, {args.blocks} blocks x "
          f"{args.repeats} timed calls per model after {args.warmup} warm-up calls; {', '.join(args.sides)} in "
          f"separate processes, in turn; within a process one variant after another")
    times, versions = _collect(args, argv)
    print(", ".join(f"{k} {v}" for k, v in versions.items()))
    _report(args, times)
    if args.profile:
        sys.stdout.flush()
        argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--profile"]
        # a process each (paddle.profiler starts only once per process); argparse keeps the last --models given
        for name in args.models.split(","):
            subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--models", name, "--side", PROFILE_SIDE],
                           check=True)


if __name__ == "__main__":
    main()
