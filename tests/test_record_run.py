"""docs/tools/record_run.py turns a finished run and its log into the committed record."""
import json
import os
import subprocess
import sys

from helpers import ROOT

WARNING = "/x/extension_utils.py:712: UserWarning: No ccache found."


def _fake_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("Global:\n  epochs: 2\n")
    (run / "metrics.json").write_text("[]")
    (run / "curves.png").write_bytes(b"png")
    (run / "run_summary.json").write_text(json.dumps(
        {"best_epoch": 2, "best_val_acc": 0.5, "test_acc_at_best": 0.48, "test_acc_tta_at_best": 0.49}))
    log = tmp_path / "train.log"
    log.write_text(
        "model mobilenet_v1 on cpu, threads=2\n"
        "epoch 1/2:  50%|#####     | 1/2 [00:01<00:01, acc=0.1]\r"
        "epoch 1/2  train_loss=2.0 train_acc=0.2  val_acc=0.3 test_acc=n/a  lr=1e-02  10.0s  100.0 img/s" + WARNING
        + "\n  warnings.warn(warning_message)\n"
        "epoch 2/2  train_loss=1.5 train_acc=0.4  val_acc=0.5 test_acc=n/a  lr=0.0e+00  11.0s  90.0 img/s\n"
        "done: best epoch 2, val_acc=0.5000, test_acc=0.4800, test_acc_tta=0.4900, 0.4 min" + WARNING + "\n"
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 0:25.10\n"
        "\tMaximum resident set size (kbytes): 2097152\n")
    return run, log


def test_record_keeps_epoch_lines_whole_and_nothing_printed_onto_them(tmp_path):
    run, log = _fake_run(tmp_path)
    out = tmp_path / "record"
    subprocess.run([sys.executable, os.path.join(ROOT, "docs", "tools", "record_run.py"), str(run), str(log),
                    str(out), "--command", "python tools/train.py -c x.yaml", "--commit", "abc1234",
                    "--note", "idle"], check=True, capture_output=True, text=True, timeout=120)
    epochs = (out / "epochs.txt").read_text().splitlines()
    assert epochs == [
        "epoch 1/2  train_loss=2.0 train_acc=0.2  val_acc=0.3 test_acc=n/a  lr=1e-02  10.0s  100.0 img/s",
        "epoch 2/2  train_loss=1.5 train_acc=0.4  val_acc=0.5 test_acc=n/a  lr=0.0e+00  11.0s  90.0 img/s",
        "done: best epoch 2, val_acc=0.5000, test_acc=0.4800, test_acc_tta=0.4900, 0.4 min"]
    record = (out / "RECORD.md").read_text()
    assert "- command: `python tools/train.py -c x.yaml`" in record and "- commit: abc1234" in record
    assert "/usr/bin/time): 0:25.10" in record and "- peak memory: 2.00 GiB" in record
    assert "- selected epoch (best validation accuracy): 2, val 0.5, test 0.48, test with flip TTA 0.49" in record
    assert "- note: idle" in record and "UserWarning" not in record
    assert sorted(os.listdir(out)) == ["RECORD.md", "config.yaml", "curves.png", "epochs.txt", "metrics.json",
                                       "run_summary.json"]
