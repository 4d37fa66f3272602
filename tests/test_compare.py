"""tools/compare.py on tiny models and a tiny generated archive: columns, agreement of the
three result files, plots, skip/resume of training runs, bad input. No timing assertions."""
import csv
import json
import os
import shutil

import pytest
from helpers import run_tool

from paddle_mbnet.analysis import compare
from paddle_mbnet.analysis.runs import RECIPE_CONFIG
from paddle_mbnet.training.config import load_config, save_config
from paddle_mbnet.training.data import write_tiny_cifar10

MODELS = "mobilenet_v1@0.25,resnet18"


def _args(archive, out, *extra):
    return ["compare.py", "--models", MODELS, "--input-size", "32", "--quick", "--threads", "1",
            "--data-file", archive, "--train-size", "32", "--val-size", "16", "--test-size", "20",
            "-o", "DataLoader.batch_size=16", "-o", "DataLoader.num_workers=0", "--out", out, *extra]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_tiny_cifar10(str(tmp_path_factory.mktemp("data") / "cifar-10-python.tar.gz"), 80, 40)


@pytest.fixture(scope="module")
def result(archive, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("compare"))
    proc = run_tool(*_args(archive, out), timeout=600)
    with open(os.path.join(out, "results.json")) as f:
        return out, json.load(f), proc.stdout


def test_every_record_has_every_column_and_positive_numbers(result):
    out, records, _ = result
    assert [r["model"] for r in records] == MODELS.split(",")
    for r in records:
        assert set(compare.RECORD_KEYS) <= set(r)
        for key in ("params_m", "macs_m", "latency_ms_p50", "latency_ms_p90", "throughput_ips",
                    "engine_latency_ms_p50", "engine_latency_ms_p90", "engine_throughput_ips", "train_ips",
                    "epoch_time_s"):
            assert r[key] is not None and r[key] > 0, (r["model"], key, r[key])
        assert r["latency_ms_p90"] >= r["latency_ms_p50"]
        for key in ("train_acc", "val_acc", "test_acc"):
            assert 0 <= r[key] <= 1
        assert r["epochs"] == 1 and os.path.isdir(r["run_dir"])
    v1, r18 = records
    assert v1["params_m"] < r18["params_m"] and v1["macs_m"] < r18["macs_m"]


def _markdown_rows(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) != len(header) or cells[0] not in MODELS.split(","):
            break
        rows.append(dict(zip(header, cells)))
    return rows


def test_markdown_csv_and_json_agree(result):
    out, records, stdout = result
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "| model | params (M) |" in md and md.strip() in stdout  # also printed
    rows = _markdown_rows(md)
    assert len(rows) == len(records)
    for row, rec in zip(rows, records):
        for key in compare.RECORD_KEYS[1:]:
            title, fmt = compare.COLUMNS[key]
            value = 100 * rec[key] if key in compare.PERCENT_KEYS else rec[key]
            # test accuracy carries its standard error (and a chance mark) after the number
            assert row[title] == fmt.format(value) or (key == "test_acc" and row[title].startswith(
                fmt.format(value) + " ± ")), (rec["model"], key, row[title])
    with open(os.path.join(out, "results.csv")) as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == [r["model"] for r in records]
    for row, rec in zip(table, records):
        for key in compare.RECORD_KEYS[1:]:
            assert float(row[key]) == pytest.approx(rec[key], rel=1e-9), key


def test_paper_tables_and_plots(result):
    out, _, _ = result
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "| Conv 1x1 | 94.86% | 94.86% |" in md  # V1 Table 2
    assert "| 0.5 MobileNet-224 | 149.5 | 149 |" in md and "| 1.0 MobileNet-128 | 186.4 | 186 |" in md
    assert "| Conv MobileNet (mobilenet_v1_conv) | 4867.3 | 4866 |" in md
    with open(os.path.join(out, "results.json")) as f:
        learned = not all(r["near_chance"] for r in json.load(f))
    for name in ("latency_vs_macs.png", "curves.png") + (("acc_vs_latency.png", "acc_vs_macs.png") if learned else ()):
        with open(os.path.join(out, name), "rb") as f:
            head = f.read()
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) > 5000, name
    if not learned:  # runs at chance level are noise, not points to plot
        assert not os.path.exists(os.path.join(out, "acc_vs_macs.png"))


def test_rerun_skips_finished_runs(archive, result):
    out, records, _ = result
    metrics = os.path.join(records[0]["run_dir"], "metrics.json")
    before = os.path.getmtime(metrics)
    proc = run_tool(*_args(archive, out, "--no-engine", "--repeats", "1"), timeout=600)
    assert proc.stdout.count("finished (1 epochs): skip") == 2
    assert os.path.getmtime(metrics) == before
    with open(os.path.join(out, "results.json")) as f:
        again = json.load(f)
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in records]
    assert again[0]["engine_latency_ms_p50"] is None  # --no-engine


def test_another_budget_in_the_same_dir_is_refused_before_any_timing(archive, result):
    out, _, _ = result
    proc = run_tool(*_args(archive, out)[:-2], "--epochs", "2", "--out", out, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "Global.epochs: 1 -> 2" in proc.stderr and "[speed]" not in proc.stdout


def test_plan_run_start_resume_skip(tmp_path):
    cfg = compare.train_config("mobilenet_v1@0.5", str(tmp_path / "run"), epochs=2)
    assert cfg["Arch"]["scale"] == 0.5 and cfg["Arch"]["small_input"] is True
    assert compare.plan_run(cfg)[0] == "start"
    os.makedirs(tmp_path / "run")
    save_config(cfg, str(tmp_path / "run" / "config.yaml"))
    assert compare.plan_run(cfg)[0] == "start"  # crashed before the first checkpoint
    (tmp_path / "run" / "last.pdckpt").write_bytes(b"x")
    summary = {"finished": False, "epochs_done": 1}
    (tmp_path / "run" / "run_summary.json").write_text(json.dumps(summary))
    assert compare.plan_run(cfg) == ("resume", "unfinished (1/2 epochs)")
    (tmp_path / "run" / "run_summary.json").write_text(json.dumps({"finished": True, "epochs_done": 2}))
    assert compare.plan_run(cfg)[0] == "skip"
    resumed = json.loads(json.dumps(cfg))
    resumed["Global"]["resume"] = str(tmp_path / "run")  # the resume pointer is not a config change
    assert compare.plan_run(resumed)[0] == "skip"
    baseline = compare.train_config("vgg16", str(tmp_path / "v"))
    assert baseline["Arch"]["small_input"] is False


def test_runs_keep_the_recipe_warmup_unless_told(tmp_path):
    recipe = compare.train_config("resnet50", str(tmp_path / "r"))["Optimizer"]["warmup_epochs"]
    assert recipe == load_config(RECIPE_CONFIG)["Optimizer"]["warmup_epochs"] > 0
    assert compare.train_config("resnet50", str(tmp_path / "r"), warmup_epochs=0)["Optimizer"]["warmup_epochs"] == 0


def test_an_unfinished_run_resumes_to_completion(result, tmp_path):
    """A copy of a finished run marked unfinished (as after Ctrl-C) is resumed by tools/train.py."""
    out, records, _ = result
    run = str(tmp_path / "run")
    shutil.copytree(records[0]["run_dir"], run)
    from paddle_mbnet.training.config import load_config

    cfg = load_config(os.path.join(run, "config.yaml"), [f"Global.output_dir={run}"])
    save_config(cfg, os.path.join(run, "config.yaml"))
    with open(os.path.join(run, "run_summary.json")) as f:
        summary = json.load(f)
    summary["finished"] = False
    with open(os.path.join(run, "run_summary.json"), "w") as f:
        json.dump(summary, f)
    logs = []
    done = compare.ensure_run(cfg, log=logs.append, stream=False)
    assert logs[0].endswith("unfinished (1/1 epochs): resume")
    assert done["finished"] and compare.plan_run(cfg)[0] == "skip"


def test_no_train_without_runs_reports_speed_only(archive, tmp_path):
    out = str(tmp_path / "o")
    run_tool("compare.py", "--models", "mobilenet_v1@0.25", "--input-size", "32", "--quick", "--no-train",
             "--no-engine", "--threads", "1", "--data-file", archive, "--out", out, timeout=300)
    with open(os.path.join(out, "results.json")) as f:
        (rec,) = json.load(f)
    assert rec["test_acc"] is None and rec["latency_ms_p50"] > 0 and not os.path.isdir(os.path.join(out, "runs"))
    assert os.path.isfile(os.path.join(out, "latency_vs_macs.png"))
    assert not os.path.exists(os.path.join(out, "acc_vs_macs.png"))


def test_no_speed_reports_runs_without_timing(archive, result, tmp_path):
    """--no-speed (train on a busy machine, time later): the finished runs are read, nothing is timed."""
    out = str(tmp_path / "o")
    shutil.copytree(result[0], out)
    proc = run_tool(*_args(archive, out, "--no-speed"), timeout=300)
    assert "no timing (--no-speed)" in proc.stdout and proc.stdout.count(": finished (1 epochs): skip") == 2
    with open(os.path.join(out, "results.json")) as f:
        records = json.load(f)
    for r in records:
        assert r["macs_m"] > 0 and 0 <= r["test_acc"] <= 1
        assert all(r[k] is None for k in ("latency_ms_p50", "engine_latency_ms_p50", "throughput_ips", "train_ips"))
    assert run_tool(*_args(archive, out, "--no-speed", "--no-train"), check=False).returncode != 0


@pytest.mark.parametrize("models, match", [
    ("foo", "unknown model 'foo'; valid names: .*mobilenet_v1"),
    ("vgg16@0.5", "width multiplier .* our MobileNets only"),
    ("mobilenet_v1@wide", "must be a number"),
    ("mobilenet_v1@inf", "must be a finite number > 0"),
    ("mobilenet_v1,mobilenet_v1", "names a model twice"),
])
def test_bad_model_names(models, match):
    with pytest.raises(ValueError, match=match):
        compare.parse_specs(models)


def test_bad_model_name_on_the_command_line(tmp_path):
    proc = run_tool("compare.py", "--models", "mobilenet_v3", "--out", tmp_path, check=False)
    assert proc.returncode != 0 and "unknown model 'mobilenet_v3'" in proc.stderr
    assert "Traceback" not in proc.stderr and not os.listdir(tmp_path)


def test_pareto_front():
    assert compare.pareto([(3, 0.9), (1, 0.5), (2, 0.4), (4, 0.85), (1, 0.6)]) == [(1, 0.6), (3, 0.9)]


def test_ctrl_c_during_a_run_keeps_its_checkpoint_and_the_rerun_resumes(tmp_path):
    """SIGINT to the terminal's process group mid-training: the trainer writes last.pdckpt (compare waits
    for it instead of killing it), compare exits; the same command then resumes that run and finishes it."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import ROOT

    archive = write_tiny_cifar10(str(tmp_path / "c.tar.gz"), 1600, 20)
    out = str(tmp_path / "o")
    argv = [sys.executable, os.path.join(ROOT, "tools", "compare.py"), "--models", "mobilenet_v1@0.25",
            "--input-size", "32", "--quick", "--no-speed", "--threads", "1", "--data-file",
            archive, "--train-size", "0", "--val-size", "16", "--test-size", "20", "-o", "DataLoader.batch_size=8",
            "-o", "DataLoader.num_workers=0", "-o", "Global.log_interval=1", "--out", out]
    run = os.path.join(out, "runs", "mobilenet_v1_a0.25")
    # A terminal's Ctrl-C reaches a process whose SIGINT has the default action; a pytest-xdist worker ignores
    # SIGINT, and children inherit that, so the default is restored for this one.
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not os.path.isdir(os.path.join(run, "vdl")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # into the epoch
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "interrupted: continue with the same command" in output, output[-2000:]
    assert "continue with: python tools/compare.py --models mobilenet_v1@0.25" in output  # the trainer's line too
    assert "tools/train.py -o Global.resume" not in output
    with open(os.path.join(run, "run_summary.json")) as f:
        assert json.load(f)["finished"] is False
    assert os.path.isfile(os.path.join(run, "last.pdckpt"))
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "unfinished (0/1 epochs): resume" in again.stdout and "resumed from" in again.stdout
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)[0]["test_acc"] is not None


@pytest.mark.parametrize("extra, message", [
    (["--input-size", "1"], "--input-size 1 is below mobilenet_v1's total stride (16)"),
    (["--models", "mobilenet_v1@1e-9"], "leaves a 32-channel layer with 0 channels"),
    (["--train-minutes", "-1"], "--train-minutes must be a number of minutes >= 0"),
    (["--out", "FILE"], "is a file; pass a directory"),
    (["--engine", "openvino", "--device", "gpu"], "--engine openvino runs on the CPU"),
    (["--engine", "onnxruntime", "--device", "gpu"], "--engine onnxruntime runs on the CPU"),
])
def test_bad_arguments_are_refused_before_any_timing(extra, message, tmp_path):
    a_file = tmp_path / "results"
    a_file.write_text("not a directory")
    extra = [str(a_file) if e == "FILE" else e for e in extra]
    args = ["compare.py", "--models", "mobilenet_v1", "--no-train", "--out", str(tmp_path / "o"), *extra]
    proc = run_tool(*args, check=False, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1] and "[speed]" not in proc.stdout


def test_equal_time_budget_stops_each_run_at_its_steps(archive, tmp_path):
    out = str(tmp_path / "o")
    argv = ["compare.py", "--models", "mobilenet_v1@0.25", "--input-size", "32", "--quick", "--no-engine",
            "--threads", "1", "--data-file", archive, "--train-size", "32", "--val-size", "16",
            "--test-size", "20", "-o", "DataLoader.batch_size=8", "-o", "DataLoader.num_workers=0",
            "--train-minutes", "0.02", "--no-speed", "--out", out]
    proc = run_tool(*argv, timeout=300)
    steps = int(proc.stdout.split("-> ")[1].split(" steps")[0])
    assert proc.stdout.index("[budget]") < proc.stdout.index("[speed]")  # measured before any engine could run
    again = run_tool(*argv, timeout=300)  # a rerun keeps the started run's budget and skips the finished run
    assert "finished (" in again.stdout and ": skip" in again.stdout and "[budget]" not in again.stdout
    with open(os.path.join(out, "results.json")) as f:
        (rec,) = json.load(f)
    assert rec["train_images"] == steps * 8 and rec["epochs_trained"] == pytest.approx(steps * 8 / 32)
    assert rec["train_time_s"] > 0 and rec["test_acc"] is not None
    with open(os.path.join(out, "results.md")) as f:
        assert "equal time: 0.02 min of training per model" in f.read()


def test_accuracies_near_chance_are_marked_and_left_out_of_the_plots(tmp_path):
    records = [compare.add_accuracy_context({"model": m, "macs_m": macs, "test_acc": acc, "test_images": 2000})
               for m, macs, acc in (("a", 10.0, 0.12), ("b", 20.0, 0.61), ("c", 40.0, 0.80))]
    assert [r["near_chance"] for r in records] == [True, False, False]
    assert records[1]["test_acc_se"] == pytest.approx((0.61 * 0.39 / 2000) ** 0.5)
    table = compare.markdown_table(records)
    assert "12.00 ± 0.73 (≈ chance)" in table and "61.00 ± 1.09 |" in table
    assert compare.write_plots(records, str(tmp_path), "test") == ["acc_vs_macs.png"]
    assert compare.write_plots(records[:1], str(tmp_path / "none"), "test") == []


def test_quick_mode_holds_one_model_at_a_time(tmp_path):
    """Peak memory of timing two models one after the other stays well under that of holding both."""
    import subprocess
    import sys

    from helpers import ROOT

    def peak_kb(*extra):
        code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        argv = [sys.executable, os.path.join(ROOT, "tools", "compare.py"), "--models", "vgg16,vgg19",
                "--input-size", "32", "--no-train", "--no-engine", "--repeats", "1", "--warmup", "0",
                "--batch-size", "2", "--train-batch", "0", "--threads", "1", "--out", str(tmp_path / extra[0]),
                *extra[1:]]
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return int(proc.stdout.split()[-1])

    one_at_a_time, both = peak_kb("quick", "--quick"), peak_kb("all")
    assert one_at_a_time < 0.85 * both, (one_at_a_time, both)


def test_quick_runs_keep_no_weight_average_and_no_tta(archive, tmp_path):
    """--quick's 1-epoch runs are smoke tests: no second copy of the weights, no flip pass over the test set."""
    import importlib.util
    import sys

    from helpers import ROOT

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        spec = importlib.util.spec_from_file_location("compare_tool", os.path.join(ROOT, "tools", "compare.py"))
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    for extra, ema, tta in (([], 0.998, True), (["--quick"], 0.0, False)):
        args = tool.parse_args(["--data-file", archive, "--out", str(tmp_path), *extra])
        cfg = tool.train_config_for(compare, "mobilenet_v1", args)
        assert (cfg["Global"]["ema_decay"], cfg["Global"]["eval_tta"]) == (ema, tta)

