"""train -> checkpoint -> resume -> eval -> predict -> export on a tiny generated CIFAR-10 archive."""
import glob
import itertools
import json
import os
import re

import numpy as np
import paddle
import pytest

from paddle_mbnet.cpu.ops import custom_ops_available
from paddle_mbnet.training import trainer
from paddle_mbnet.training.config import load_config
from paddle_mbnet.training.data import DataError, build_datasets, write_tiny_cifar10
from helpers import run_tool


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_tiny_cifar10(str(tmp_path_factory.mktemp("data") / "cifar-10-python.tar.gz"), 80, 24)


def _cfg(archive, out, epochs=2, **extra):
    overrides = [f"DataLoader.data_file={archive}", f"Global.output_dir={out}", f"Global.epochs={epochs}",
                 "DataLoader.batch_size=16", "DataLoader.val_size=16", "DataLoader.num_workers=0",
                 "Arch.scale=0.25", "Global.device=cpu", "Optimizer.warmup_epochs=1",
                 "Global.eval_test=true"]
    overrides += [f"{k.replace('__', '.')}={v}" for k, v in extra.items()]
    return load_config("configs/mbv2_cifar.yaml", overrides)


def _weights(path):
    return {k: v.numpy() for k, v in paddle.load(path)["model"].items()}


@pytest.fixture(scope="module")
def full_run(archive, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full"))
    summary = trainer.main(_cfg(archive, out), progress=False)
    return out, summary


def test_run_directory_contents(full_run):
    out, summary = full_run
    for name in ("config.yaml", "last.pdckpt", "best.pdckpt", "metrics.json", "curves.png", "run_summary.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(0 <= m["val_acc"] <= 1 and m["train_ips"] > 0 for m in metrics)
    assert summary["finished"] and summary["epochs_done"] == 2
    assert summary["best_val_acc"] == max(m["val_acc"] for m in metrics)
    ckpt = paddle.load(os.path.join(out, "last.pdckpt"))
    assert {"model", "optimizer", "scheduler", "epoch", "step", "config", "seed"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 8  # 64 training images / 16


@pytest.mark.skipif(not custom_ops_available(), reason="the project's CPU operators did not build")
def test_a_run_flushes_denormals_while_training_and_restores_the_mode_after(archive, tmp_path, monkeypatch):
    from paddle_mbnet.cpu import ops

    monkeypatch.delenv("PADDLE_MBNET_DENORMALS", raising=False)
    flushing_per_epoch, real = [], trainer.train_one_epoch

    def recording(*args, **kwargs):
        flushing_per_epoch.append(ops.float_mode("read")[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", recording)
    assert not ops.float_mode("read")[1]
    trainer.main(_cfg(archive, str(tmp_path), epochs=1, Arch__scale=0.125), progress=False)
    assert flushing_per_epoch == [True]
    assert not ops.float_mode("read")[1]


def _interrupt_on_call(monkeypatch, call, batches=0):
    """Make train_one_epoch raise KeyboardInterrupt (as Ctrl-C would) on its ``call``-th call,
    after training ``batches`` batches of that epoch."""
    real = trainer.train_one_epoch
    calls = {"n": 0}

    def patched(model, loader, optimizer, scheduler, state, cfg, *a, **k):
        calls["n"] += 1
        if calls["n"] != call:
            return real(model, loader, optimizer, scheduler, state, cfg, *a, **k)
        # An abandoned loader iterator keeps a prefetch thread drawing random numbers, so
        # only touch the loader when batches are wanted (the weight comparison uses none).
        for images, labels in (itertools.islice(loader, batches) if batches else ()):
            loss = paddle.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            scheduler.step()
            state["step"] += 1
            state["batches_done"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_one_epoch", patched)
    return real


def test_resume_matches_uninterrupted_run(archive, full_run, tmp_path, monkeypatch):
    out_full, _ = full_run
    out = str(tmp_path / "resumed")
    real = _interrupt_on_call(monkeypatch, 2)  # stopped right after epoch 1
    with pytest.raises(KeyboardInterrupt):
        trainer.main(_cfg(archive, out), progress=False)
    assert paddle.load(os.path.join(out, "last.pdckpt"))["epoch"] == 1
    monkeypatch.setattr(trainer, "train_one_epoch", real)
    trainer.main(_cfg(archive, out, Global__resume=out), progress=False)
    a, b = _weights(os.path.join(out_full, "last.pdckpt")), _weights(os.path.join(out, "last.pdckpt"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert [m["epoch"] for m in metrics] == [1, 2]


def test_a_different_seed_gives_different_weights(archive, full_run, tmp_path):
    out_full, _ = full_run
    trainer.main(_cfg(archive, str(tmp_path), epochs=2, Global__seed=7), progress=False)
    a, b = _weights(os.path.join(out_full, "last.pdckpt")), _weights(os.path.join(str(tmp_path), "last.pdckpt"))
    assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes(archive, tmp_path, monkeypatch):
    out = str(tmp_path)
    real = _interrupt_on_call(monkeypatch, 2, batches=1)  # Ctrl-C one batch into epoch 2
    with pytest.raises(KeyboardInterrupt):
        trainer.main(_cfg(archive, out), progress=False)
    ckpt = paddle.load(os.path.join(out, "last.pdckpt"))
    assert ckpt["epoch"] == 1 and ckpt["batches_done"] == 1
    monkeypatch.setattr(trainer, "train_one_epoch", real)
    summary = trainer.main(_cfg(archive, out, Global__resume=out), progress=False)
    assert summary["finished"]
    assert paddle.load(os.path.join(out, "last.pdckpt"))["step"] == 8  # 1 + the 3 batches left of epoch 2


def test_vdl_logs_hold_the_curves(full_run):
    from visualdl import LogReader

    out, _ = full_run
    files = glob.glob(os.path.join(out, "vdl", "vdlrecords*"))
    assert files
    reader = LogReader(file_path=files[0])
    tags = set(reader.get_tags()["scalar"])
    assert {"train/loss", "train/acc", "val/acc", "val/loss", "test/acc", "test/loss", "lr", "train/ips"} <= tags
    assert [s.id for s in reader.get_data("scalar", "val/acc")] == [1, 2]


def test_eval_predict_export_tools(full_run, tmp_path):
    out, summary = full_run
    proc = run_tool("eval.py", out)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test_acc=") and re.search(r"test images, on cpu, threads=\d+", proc.stdout)
    result = json.load(open(os.path.join(out, "eval.json")))
    assert abs(float(last.split("=")[1]) - result["test_acc"]) < 1e-6
    assert np.array(result["confusion"]).sum() == 24
    assert result["test_acc"] == pytest.approx(summary["test_acc_at_best"], abs=1e-6)  # eval.py reads best.pdckpt

    last = os.path.join(out, "last.pdckpt")
    proc = run_tool("eval.py", last, "--weights", "trained", "--tta")
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("test_acc_tta=") and "trained weights" in proc.stdout
    trained = json.load(open(os.path.join(out, "eval_trained.json")))
    assert trained["weights"] == "trained" and trained["epoch"] == 2 and 0 <= trained["test_acc_tta"] <= 1
    assert trained["test_acc"] == pytest.approx(float(lines[-1].split("=")[1]), abs=1e-6)
    run_tool("eval.py", last)  # the moving average of the same checkpoint
    averaged = json.load(open(os.path.join(out, "eval.json")))
    assert averaged["weights"] == "ema" and "test_acc_tta" not in averaged
    assert averaged["test_loss"] != pytest.approx(trained["test_loss"], rel=1e-6)  # really other weights

    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 50, 3), dtype=np.uint8)).save(img)
    fig = tmp_path / "fig.png"
    proc = run_tool("predict.py", out, img, "--cifar-test", 3, "--topk", 2, "--figure", fig)
    lines = [line for line in proc.stdout.splitlines() if ":" in line and "figure" not in line]
    assert len(lines) == 4 and "(true: " in lines[-1]
    assert fig.stat().st_size > 1000

    proc = run_tool("export.py", out, "--out", tmp_path / "inf")
    diff = float(proc.stdout.strip().split("max abs diff")[-1])
    assert diff < 1e-4 and (tmp_path / "inf" / "inference.json").is_file()


@pytest.mark.parametrize("engine, modules, written, report", [
    ("openvino", ("openvino",), "inference.pdmodel", "OpenVINO (1 thread)"),
    ("onnxruntime", ("onnxruntime", "paddle2onnx"), "inference.onnx", "ONNX Runtime (2 threads)")])
def test_export_for_an_optional_engine_writes_its_format_and_checks_it(full_run, tmp_path, engine, modules, written,
                                                                       report):
    import importlib.util

    out, _ = full_run
    threads = ["--threads", "2"] if engine == "onnxruntime" else []
    proc = run_tool("export.py", out, "--out", tmp_path / engine, "--engine", engine, *threads, check=False)
    if any(importlib.util.find_spec(module) is None for module in modules):  # one line naming the install, no files
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "pip install" in proc.stderr.strip().splitlines()[-1]
        assert not (tmp_path / engine).exists()
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{report} vs dynamic max abs diff" in proc.stdout
    assert float(proc.stdout.strip().split("max abs diff")[-1]) < 1e-4
    assert (tmp_path / engine / written).is_file()


def test_quantize_writes_a_loadable_int8_model_and_its_report(full_run, tmp_path):
    from paddle_mbnet import deploy, quantize

    out, _ = full_run
    proc = run_tool("quantize.py", out, "--calib", 16, "--repeats", 2, "--threads", 1, "--out", tmp_path / "q")
    with open(tmp_path / "q" / "quantize.json") as handle:
        report = json.load(handle)
    assert report["test_images"] == 24 and report["calib_images"] == 16 and "same top-1" in proc.stdout
    for key in ("fp32_acc", "int8_acc", "top1_agreement"):
        assert 0 <= report[key] <= 1, key
    assert report["fp32_latency_ms"] > 0 and report["int8_latency_ms"] > 0
    # int8 weights on disk: the int8 parameter file is much smaller than the float32 one
    int8_bytes, fp32_bytes = (os.path.getsize(report[k] + ".pdiparams") for k in ("int8_model", "fp32_model"))
    assert int8_bytes < 0.6 * fp32_bytes
    images = np.random.RandomState(1).randn(4, 3, 32, 32).astype("float32")
    want = deploy.run_predictor(deploy.create_predictor(report["fp32_model"]), images)
    got = deploy.run_predictor(deploy.create_predictor(report["int8_model"], int8_ops=quantize.INT8_OPS), images)
    assert got.shape == want.shape and np.abs(got - want).max() < 0.25 * np.abs(want).max()

    proc = run_tool("quantize.py", out, "--weight-observer", "bogus", check=False)
    assert proc.returncode != 0 and "--weight-observer" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_and_corrupt_archives(tmp_path):
    cfg = load_config(None, [f"DataLoader.data_file={tmp_path}/nope.tar.gz"])
    with pytest.raises(DataError, match="does not exist.*-o DataLoader.data_file="):
        build_datasets(cfg["DataLoader"], 0)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not a tar archive" * 100)
    cfg = load_config(None, [f"DataLoader.data_file={bad}"])
    with pytest.raises(DataError, match="not a readable CIFAR-10 archive"):
        build_datasets(cfg["DataLoader"], 0)


def test_cli_data_and_checkpoint_errors(tmp_path):
    proc = run_tool("train.py", "-c", "configs/mbv1_cifar.yaml", "-o", f"DataLoader.data_file={tmp_path}/x.tar.gz",
                    "-o", f"Global.output_dir={tmp_path}/o", check=False)
    assert proc.returncode != 0 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "last.pdckpt"
    bad.write_bytes(b"garbage")
    proc = run_tool("eval.py", tmp_path, check=False)
    assert proc.returncode != 0 and "cannot read checkpoint" in proc.stderr and "Traceback" not in proc.stderr


def test_train_and_test_subsets(archive):
    """DataLoader.train_size / test_size budget a run; the subsets are fixed by the seed and disjoint from val."""
    cfg = load_config(None, [f"DataLoader.data_file={archive}", "DataLoader.val_size=16",
                             "DataLoader.train_size=20", "DataLoader.test_size=10"])
    train, val, test = build_datasets(cfg["DataLoader"], 3)
    assert (len(train), len(val), len(test)) == (20, 16, 10)
    assert not set(train.indices) & set(val.indices)
    again, _, test_again = build_datasets(cfg["DataLoader"], 3)
    assert (again.indices == train.indices).all() and (test_again.indices == test.indices).all()
    full_train, full_val, _ = build_datasets(load_config(None, [f"DataLoader.data_file={archive}",
                                                                "DataLoader.val_size=16"])["DataLoader"], 3)
    assert (full_val.indices == val.indices).all() and set(train.indices) < set(full_train.indices)
    for key, value, match in (("train_size", 65, r"train_size=65 must be in \[0, 64\]"),
                              ("test_size", 25, r"test_size=25 must be in \[0, 24\]")):
        bad = load_config(None, [f"DataLoader.data_file={archive}", "DataLoader.val_size=16",
                                 f"DataLoader.{key}={value}"])
        with pytest.raises(DataError, match=match):
            build_datasets(bad["DataLoader"], 3)


def test_two_cpu_processes_with_paddle_distributed_launch(archive, tmp_path):
    """The multi-GPU command on two CPU processes (gloo): each rank trains half the batches,
    only rank 0 evaluates, logs and saves."""
    import subprocess
    import sys

    out, logs = tmp_path / "run", tmp_path / "log"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs),
           "tools/train.py", "-c", "configs/mbv2_cifar.yaml"]
    for o in (f"DataLoader.data_file={archive}", f"Global.output_dir={out}", "Global.epochs=2",
              "DataLoader.batch_size=16", "DataLoader.val_size=16", "DataLoader.num_workers=0", "Arch.scale=0.25",
              "Global.device=cpu"):
        cmd += ["-o", o]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, cwd=root, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rank0, rank1 = ((logs / f"workerlog.{i}").read_text() for i in (0, 1))
    assert "epoch 2/2  train_loss" in rank0 and "epoch 1/2  train_loss" not in rank1
    ckpt = paddle.load(str(out / "last.pdckpt"))
    assert ckpt["epoch"] == 2 and ckpt["step"] == 2 * 2  # 64 images / (16 per rank * 2 ranks) = 2 steps per epoch
    assert len(json.load(open(out / "metrics.json"))) == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_saves_a_checkpoint(tmp_path, workers):
    """kill / a scheduler / a nohup'd run (whose SIGINT the shell ignores) stop training like Ctrl-C does. With
    loader workers the signal goes to the whole process group, as a scheduler sends it."""
    import signal
    import subprocess
    import sys
    import time

    archive = write_tiny_cifar10(str(tmp_path / "c.tar.gz"), 4000, 20)
    out = tmp_path / "run"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [sys.executable, "tools/train.py", "-c", "configs/mbv1_cifar.yaml"]
    for o in (f"DataLoader.data_file={archive}", f"Global.output_dir={out}", "Global.epochs=2",
              "DataLoader.batch_size=8", "DataLoader.val_size=16", f"DataLoader.num_workers={workers}",
              "Arch.scale=0.25"):
        argv += ["-o", o]
    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    deadline = time.time() + 240
    while not (out / "vdl").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    if workers:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted: saved" in err, err[-2000:]
    ckpt = paddle.load(str(out / "last.pdckpt"))
    assert ckpt["epoch"] == 0 and ckpt["batches_done"] > 0


def test_a_short_run_prints_no_warnings(archive, tmp_path):
    """The first lines a user sees: no ccache, OMP_NUM_THREADS or BatchNorm warnings, from any process."""
    proc = run_tool("train.py", "-c", "configs/mbv2_cifar.yaml", "-o", f"DataLoader.data_file={archive}",
                    "-o", f"Global.output_dir={tmp_path}", "-o", "Global.epochs=2", "-o", "DataLoader.batch_size=16",
                    "-o", "DataLoader.val_size=16", "-o", "Arch.scale=0.25", "-o", "Optimizer.warmup_epochs=0")
    output = proc.stdout + proc.stderr
    assert "done: best epoch" in output
    # the header says the CPU flushes denormals; numpy's limits, met after that, would warn if not computed before
    flushing = custom_ops_available() and os.environ.get("PADDLE_MBNET_DENORMALS") != "keep"
    assert ("denormal floats flushed to zero" in proc.stdout) == flushing
    for noise in ("Warning", "WARNING", "warnings.warn", "ccache", "OMP_NUM_THREADS"):
        assert noise not in output, noise


@pytest.mark.parametrize("weights, key", [("evaluated", "ema"), ("trained", "model")])
def test_load_run_picks_the_weights_asked_for(full_run, weights, key):
    out, _ = full_run
    ckpt = paddle.load(os.path.join(out, "last.pdckpt"))
    want = ckpt["ema"]["shadow"] if key == "ema" else ckpt["model"]
    _, model, _ = trainer.load_run(os.path.join(out, "last.pdckpt"), weights=weights)
    got = model.state_dict()
    name = next(k for k in want if k.endswith("weight") and np.asarray(want[k]).ndim == 4)
    assert np.array_equal(got[name].numpy(), np.asarray(want[name]))
    other = ckpt["model"] if key == "ema" else ckpt["ema"]["shadow"]
    assert not np.array_equal(np.asarray(other[name]), np.asarray(want[name]))  # the two sets really differ


def test_unknown_weights_name_the_choices(full_run):
    from paddle_mbnet.errors import ArgumentError

    with pytest.raises(ArgumentError, match="evaluated, trained"):
        trainer.load_run(full_run[0], weights="raw")
