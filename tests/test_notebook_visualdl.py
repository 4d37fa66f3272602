"""The AI Studio notebook runs top to bottom (smoke mode), and the real VisualDL server serves a run's curves."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from paddle_mbnet.training import trainer
from paddle_mbnet.training.config import load_config
from paddle_mbnet.training.data import write_tiny_cifar10

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "mbnet_walkthrough.ipynb")


def test_notebook_is_committed_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "strip the notebook's outputs"
    assert not any("def " in c.source for c in code), "the notebook imports the package instead of defining code"
    with open(NOTEBOOK) as f:  # the raw file: nbformat.read fills missing ids in, with a warning only
        cells = json.load(f)["cells"]
    assert all(cell.get("id") for cell in cells), "every cell needs an id (nbformat 4.5): nbformat.validator.normalize"


def test_notebook_runs_top_to_bottom_in_smoke_mode(monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("PADDLE_MBNET_SMOKE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    markdown = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    assert "smoke run: True" in text and "epoch 2/2" in text
    assert "| Conv 1x1 | 94.86% | 74.57% |" in markdown and "mobilenet_v1@0.25" in markdown
    assert "'val/acc'" in text and "(true: " in text
    assert len(pngs) >= 2  # the curves and the prediction figure


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One epoch, then resumed for a second: the server must show both as one curve."""
    tmp = tmp_path_factory.mktemp("vdl")
    archive = write_tiny_cifar10(str(tmp / "cifar-10-python.tar.gz"), 80, 24)
    overrides = [f"DataLoader.data_file={archive}", f"Global.output_dir={tmp / 'run'}", "Global.epochs=1",
                 "DataLoader.batch_size=16", "DataLoader.val_size=16", "DataLoader.num_workers=0", "Arch.scale=0.25",
                 "Global.eval_test=true"]
    trainer.main(load_config(f"{ROOT}/configs/mbv2_cifar.yaml", overrides), progress=False)
    resumed = overrides + ["Global.epochs=2", f"Global.resume={tmp / 'run'}"]
    trainer.main(load_config(f"{ROOT}/configs/mbv2_cifar.yaml", resumed), progress=False)
    return str(tmp / "run")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == 0, body
    return body["data"]


def test_visualdl_server_serves_the_run(finished_run):
    exe = shutil.which("visualdl") or os.path.join(os.path.dirname(sys.executable), "visualdl")
    port = _free_port()
    server = subprocess.Popen([exe, "--logdir", finished_run, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/app/api"
    try:
        deadline = time.time() + 60
        while True:
            try:
                tags = _get(f"{base}/scalar/tags")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-2000:]
                assert time.time() < deadline, "visualdl did not answer within 60 s"
                time.sleep(0.5)
        (run,) = tags["runs"]
        assert run == os.path.join(finished_run, "vdl")
        assert {"train/loss", "train/acc", "lr", "train/ips", "val/acc", "val/loss", "test/acc",
                "test/loss"} <= set(tags["tags"][0])
        with open(os.path.join(finished_run, "metrics.json")) as f:
            history = json.load(f)
        query = urllib.parse.urlencode({"run": run, "tag": "val/acc"})
        points = _get(f"{base}/scalar/list?{query}")  # [wall time, step, value] per point
        assert [p[1] for p in points] == [h["epoch"] for h in history] == [1, 2]
        assert [p[2] for p in points] == pytest.approx([h["val_acc"] for h in history], abs=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode is not None
