"""The benchmark scripts run and print their figures (tiny sizes; no timing assertions)."""
import re

import numpy as np
import pytest

from paddle_mbnet.cpu.ops import custom_ops_available
from paddle_mbnet.training.data import write_tiny_cifar10
from helpers import run_tool


def test_bench_depthwise_prints_layer_and_step_ratios():
    out = run_tool("bench_depthwise.py", "--threads", "1", "--batch", "2", "--steps", "1", "--blocks", "2",
                   "--models", "mobilenet_v1", "--profile").stdout
    assert "OMP_NUM_THREADS=1" in out
    assert len(re.findall(r"C=\s+\d+ .* custom .* ms +nhwc .* ms +paddle .* ms .*x", out)) == 13  # V1's 13 layers
    assert re.search(r"all depthwise layers: custom [\d.]+ ms, nhwc [\d.]+ ms, paddle [\d.]+ ms per step -> [\d.]+x",
                     out)
    assert re.search(r"all fused BatchNorms: NCHW [\d.]+ ms, NHWC [\d.]+ ms per step -> NHWC/NCHW [\d.]+x", out)
    # V1's 27 fused BatchNorms (stem, 13 depthwise, 13 pointwise) as distinct shapes, each with its count
    rows = re.findall(r"C=\s+\d+ +\d+x\d+ +\w+ +x(\d+) +NCHW +([\d.]+) ms +NHWC +([\d.]+) ms", out)
    assert sum(int(count) for count, _, _ in rows) == 27
    # the totals weigh each distinct shape by its count
    totals = re.search(r"all fused BatchNorms: NCHW ([\d.]+) ms, NHWC ([\d.]+) ms", out).groups()
    rounding = 0.05 + sum(int(count) for count, _, _ in rows) * 0.005  # totals to 0.1 ms, rows to 0.01 ms
    for column, total in enumerate(totals, start=1):
        assert float(total) == pytest.approx(sum(int(row[0]) * float(row[column]) for row in rows), abs=rounding)
    # V1's 13 pointwise convs as [N*H*W, C_in] x [C_in, C_out] products, the first on the 32x32 map (batch 2)
    gemms = re.findall(r"\[ *(\d+) x +(\d+)\] x \[ *\d+ x +(\d+)\] x(\d+) +([\d.]+) ms +[\d.]+ GFLOP/s", out)
    assert sum(int(g[3]) for g in gemms) == 13 and gemms[0][:3] == ("2048", "32", "64")
    total_ms, gflops, at_sgemm_ms = map(float, re.search(
        r"all 1x1 convolutions: ([\d.]+) ms per step, ([\d.]+) GFLOP/s \([\d.]+ of the sgemm figure; at it they would "
        r"take ([\d.]+) ms\)", out).groups())
    assert total_ms == pytest.approx(sum(int(g[3]) * float(g[4]) for g in gemms), abs=0.05 + 13 * 0.005)
    # forward, input gradient and weight gradient: three GEMMs of 2 FLOPs per mult-add
    flop = sum(6 * int(count) * int(pixels) * int(c_in) * int(c_out) for pixels, c_in, c_out, count, _ in gemms)
    assert gflops == pytest.approx(flop / total_ms / 1e6, rel=0.05)
    sgemm = float(re.search(r"sgemm: paddle.matmul 2048x2048 float32 at ([\d.]+) GFLOP/s", out)[1])
    assert at_sgemm_ms == pytest.approx(flop / sgemm / 1e6, rel=0.01, abs=0.05)
    assert re.search(r"mobilenet_v1 +custom [\d.]+x and custom\+auto [\d.]+x and custom\+auto\+bn [\d.]+x and "
                     r"nhwc, paddle stem [\d.]+x and custom\+bn\+nhwc [\d.]+x paddle", out)
    # --steps 1 in 2 blocks: one round per block, each block PyTorch's child then paddle
    assert "median of 2 rounds in 2 blocks, each PyTorch's child process then paddle's variants" in out
    assert re.search(r"sgemm: paddle.matmul 2048x2048 float32 at [\d.]+ GFLOP/s", out)
    assert re.search(r"mobilenet_v1 +custom\+auto\+bn +[\d.]+ img/s +[\d.]+ GFLOP/s", out)
    assert re.search(r"mobilenet_v1 +custom\+bn\+nhwc +[\d.]+ img/s +[\d.]+ GFLOP/s", out)
    assert "BatchNorm + activation forward (mbnet op)" in out  # the profile shows the fused op
    # PyTorch is timed in a child process when it is installed, and said so when it is not
    assert (re.search(r"mobilenet_v1 +torch NCHW +[\d.]+ img/s", out) and re.search(
        r"mobilenet_v1 +torch channels_last +[\d.]+ img/s", out)) or "PyTorch not timed: torch is not installed" in out
    # --profile: paddle's operator table, and our op's forward (not an operator event) as a user event
    assert "Operator Summary" in out and re.search(r"matmul dygraph +\d+ ", out)
    # the stem runs as our operator on the default step, not as paddle's conv2d
    assert re.search(r"mbnet_stem_conv2d_nhwc_grad +3 ", out) and not re.search(r"conv2d dygraph +\d+ ", out)
    assert re.search(r"depthwise forward \(mbnet op\) +39 ", out)  # 13 layers x 3 profiled steps


def test_bench_engine_aftereffect_prints_every_state():
    out = run_tool("bench_engine_aftereffect.py", "--model", "mobilenet_v1@0.25", "--threads", "1",
                   "--repeats", "1", "--blocks", "1").stdout
    assert "OMP_NUM_THREADS=1" in out and "threads 1;" in out
    for state in ("fresh", "deploy path ran", "bare predictor ran"):
        assert re.search(rf"{state} +step p50 +[\d.]+ ms +p90 +[\d.]+ ms +[\d.]+x fresh", out)
    assert re.search(r"fresh +step .* 1\.00x fresh", out)


def test_bench_data_prints_the_pipeline_to_training_ratio(tmp_path):
    archive = write_tiny_cifar10(str(tmp_path / "c.tar.gz"), 300, 10)
    out = run_tool("bench_data.py", "-c", "configs/mbv1_cifar.yaml", "-o", f"DataLoader.data_file={archive}",
                   "-o", "DataLoader.batch_size=16", "-o", "DataLoader.val_size=50", "-o", "Arch.scale=0.25",
                   "--batches", "4", "--steps", "1", "--threads", "1", "--ema-rounds", "2", "--ema-block", "4").stdout
    assert re.search(r"data pipeline +[\d.]+ img/s  \(64 images\)", out)
    assert re.search(r"pipeline / training = [\d.]+x", out)
    for variant in ("no average", "average every step", "average every 4 steps"):
        assert re.search(rf"  {variant} +[\d.]+ ms/step  \(min [\d.]+, max [\d.]+\)  per round [\d.]+x no "
                         rf"average \(IQR [\d.]+-[\d.]+\)", out)
    assert re.search(r"ema_decay 0.998, \d+ averaged tensors\), 2 interleaved rounds of 4 steps", out)


@pytest.mark.skipif(not custom_ops_available(), reason="flushing needs the project's CPU operators")
def test_bench_denormals_times_every_copy_and_says_when_the_state_has_none(tmp_path):
    archive = write_tiny_cifar10(str(tmp_path / "c.tar.gz"), 64, 10)
    run = tmp_path / "run"
    run_tool("train.py", "-c", "configs/mbv1_cifar.yaml", "-o", f"DataLoader.data_file={archive}",
             "-o", f"Global.output_dir={run}", "-o", "Global.epochs=1", "-o", "DataLoader.batch_size=16",
             "-o", "DataLoader.val_size=16", "-o", "Arch.scale=0.25", "-o", "Optimizer.warmup_epochs=0")
    out = run_tool("bench_denormals.py", run, "--threads", "1", "--rounds", "2", "--steps", "1").stdout
    assert re.search(r"\(epoch 1, step \d+\): mobilenet_v1, AdamW, batch 16 at 32 px; denormal entries in the "
                     r"optimizer state: 0 of \d+ \(0.0 %\)", out)
    assert "note: no denormals in this state" in out  # a flushed run's state: nothing to compare
    for copy in ("trained, flushed", "trained, IEEE denormals", "fresh, flushed"):
        assert re.search(rf"{copy} +[\d.]+ +[\d.]+ +[\d.]+ +\d+ +[\d.]+$", out, re.M), copy


def test_bench_data_refuses_an_empty_ema_block():
    proc = run_tool("bench_data.py", "-c", "configs/mbv1_cifar.yaml", "--ema-block", "0", check=False)
    assert proc.returncode != 0 and "--ema-block >= 1" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_data_bad_archive_is_one_line(tmp_path):
    proc = run_tool("bench_data.py", "-c", "configs/mbv1_cifar.yaml", "-o",
                    f"DataLoader.data_file={tmp_path}/no.tar.gz", check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_deploy_checks_every_variant_and_times_onnxruntime_where_installed():
    import importlib.util

    proc = run_tool("bench_deploy.py", "--models", "mobilenet_v1", "--input-size", "32", "--threads", "1",
                    "--repeats", "2", "--warmup", "1", "--blocks", "1", "--profile", check=False)
    diffs = re.findall(r"mobilenet_v1 +(deploy path|legacy format|no IR passes|legacy \+ memory optim|oneDNN cache 1|"
                       r"no oneDNN|openvino f32|paddle2onnx \+ ORT) +max abs diff vs the dynamic model, relative to "
                       r"its largest output (\S+)", proc.stdout)
    paddle_variants = ["deploy path", "legacy format", "no IR passes", "legacy + memory optim", "oneDNN cache 1",
                       "no oneDNN"]
    openvino = importlib.util.find_spec("openvino") is not None
    onnx_engine = all(importlib.util.find_spec(name) for name in ("onnxruntime", "paddle2onnx"))
    optional = ["openvino f32"] * openvino + ["paddle2onnx + ORT"] * onnx_engine
    assert [variant for variant, _ in diffs] == paddle_variants + optional, proc.stdout
    assert all(float(diff) < 1e-4 for _, diff in diffs)
    if not openvino:
        assert "openvino side skipped: the openvino engine needs OpenVINO: pip install openvino" in proc.stdout
    if not onnx_engine:
        assert re.search("paddle2onnx side skipped: the onnxruntime engine('s export)? needs", proc.stdout)
    if all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnx", "torch")):
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert re.search(r"mobilenet_v1 / onnxruntime +[\d.]+ +[\d.]+ +1\.00x", proc.stdout)
        for variant in paddle_variants + optional:
            assert re.search(rf"mobilenet_v1 / {re.escape(variant)} +[\d.]+ +[\d.]+ +[\d.]+x", proc.stdout), variant
        # --profile: paddle.profiler's table of the deploy path, after the timings; every conv runs fused
        profile = proc.stdout.split("mobilenet_v1: paddle.profiler, 2 calls of the deploy path's predictor")[1]
        assert re.search(r"onednn_op.fused_conv2d +54 ", profile)  # 27 convs x 2 calls
        if onnx_engine:  # then ONNX Runtime's profile of both ONNX graphs, the same operators in each
            tables = [profile.split(f"ONNX Runtime's profiler, 2 calls of {variant} after 1 warm-up calls")[1]
                      for variant in ("paddle2onnx + ORT", "the PyTorch-exported peer")]
            ours, peers = (sorted(re.findall(r"^  (\w+) +[\d.]+$", table.split("all kernels")[0], re.M))
                           for table in tables)
            assert ours == peers, tables
            assert ours in (["Conv", "Flatten", "Gemm", "GlobalAveragePool", "ReorderOutput"],
                            ["Flatten", "FusedConv", "Gemm", "GlobalAveragePool"]), tables  # NCHWc or not
    else:  # benchmark-only peers absent: one line saying how to install them
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "pip install -r requirements-bench.txt" in proc.stderr.strip().splitlines()[-1]


def test_bench_deploy_skips_an_optional_side_whose_engine_is_missing(tmp_path):
    shadow = tmp_path / "openvino"  # an openvino that fails to import, installed or not
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    proc = run_tool("bench_deploy.py", "--models", "mobilenet_v1", "--input-size", "32", "--threads", "1",
                    "--repeats", "2", "--warmup", "1", "--blocks", "1", "--sides", "openvino,onnxruntime",
                    check=False, env={"PYTHONPATH": str(tmp_path)})
    assert "openvino side skipped: the openvino engine needs OpenVINO: pip install openvino" in proc.stdout
    assert "mobilenet_v1 / openvino" not in proc.stdout
    if proc.returncode == 0:  # the benchmark-only peer is installed
        assert re.search(r"mobilenet_v1 / onnxruntime +[\d.]+ +[\d.]+ +1\.00x +1\.00x +1\.00-1\.00x", proc.stdout)
    else:
        assert "pip install -r requirements-bench.txt" in proc.stderr.strip().splitlines()[-1]


def test_bench_deploy_sides_must_name_the_reference_and_each_side_once():
    for sides in ("paddle,openvino", "onnxruntime,paddle,onnxruntime"):
        proc = run_tool("bench_deploy.py", "--sides", sides, check=False)
        assert proc.returncode == 2 and "each once, onnxruntime among them" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("small_input", [True, False])
def test_the_pytorch_peer_has_our_parameters_and_output_size(name, small_input):
    torch = pytest.importorskip("torch", reason="PyTorch is a benchmark-only peer (requirements-bench.txt)")
    import paddle

    import paddle_mbnet as pm
    from paddle_mbnet.analysis import torch_peer

    ours = pm.build_model(name, num_classes=10, small_input=small_input)
    peer = torch_peer.build(name, small_input=small_input, num_classes=10).eval()
    ours_trainable = sum(int(np.prod(p.shape)) for p in ours.parameters() if not p.stop_gradient)
    assert sum(p.numel() for p in peer.parameters()) == ours_trainable
    # the same convolutions in the same order, with the same strides (where the CIFAR changes apply)
    peer_convs = [(m.in_channels, m.out_channels, m.groups, m.stride[0]) for m in peer.modules()
                  if isinstance(m, torch.nn.Conv2d)]
    our_convs = [(layer._in_channels, layer._out_channels, layer._groups, layer._stride[0])
                 for layer in ours.sublayers() if isinstance(layer, paddle.nn.Conv2D)]
    assert peer_convs == our_convs
