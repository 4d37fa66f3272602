"""Every config key, set to a value other than its default, in a real (tiny) training run; and the shipped
configs' 1-epoch run. A documented key that crashes at the first step is a defect these catch."""
import json
import os

import numpy as np
import paddle
import pytest

import paddle_mbnet as pm
from paddle_mbnet.training import trainer
from paddle_mbnet.training.config import SCHEMA, load_config
from paddle_mbnet.training.data import write_tiny_cifar10
from helpers import ROOT, run_tool

# Each group is one run; together they set every key. {tmp} and {archive} are filled in per test.
COMMON = ["Global.output_dir={tmp}/{group}", "Global.epochs=1", "Global.device=cpu",
          "DataLoader.data_file={archive}", "DataLoader.batch_size=8"]
GROUPS = {
    "recipe": ["Global.seed=3", "Global.num_threads=1", "Global.log_interval=1", "Global.eval_test=false",
               "Global.ema_decay=0.9", "Global.eval_tta=true", "Optimizer.name=AdamW", "Optimizer.schedule=linear",
               "Optimizer.label_smoothing=0.1", "Optimizer.no_decay_bn_bias=true", "Optimizer.warmup_epochs=0.5",
               "Optimizer.no_decay_depthwise=true",
               "DataLoader.val_size=16", "Arch.scale=0.25", "DataLoader.num_workers=0", "Arch.batchnorm=custom",
               "Arch.layout=NCHW", "DataLoader.cutout=8", "DataLoader.crop_padding=2", "DataLoader.flip=alternate"],
    "baseline": ["Arch.name=resnet18", "Arch.small_input=false", "Arch.num_classes=12", "Optimizer.name=Momentum",
                 "Optimizer.momentum=0.8", "Optimizer.schedule=step", "Optimizer.step_size=1", "Optimizer.gamma=0.5",
                 "Optimizer.weight_decay=0.0", "Optimizer.no_decay_depthwise=true", "DataLoader.image_size=40",
                 "DataLoader.normalize=imagenet",
                 "DataLoader.augment=false", "DataLoader.val_size=0", "DataLoader.train_size=32",
                 "DataLoader.test_size=8", "DataLoader.num_workers=1", "Global.max_steps=3"],
    "kernels": ["Global.amp=true", "Global.to_static=true", "Global.overwrite=true", "Arch.depthwise=paddle",
                "Arch.pointwise=matmul",
                "Arch.scale=0.5", "Arch.pretrained={tmp}/v1_half.pdparams", "Optimizer.name=Adam",
                "Optimizer.schedule=constant", "Optimizer.lr=0.01", "Optimizer.beta1=0.85", "Optimizer.beta2=0.99",
                "Optimizer.epsilon=1e-6", "DataLoader.val_size=16",
                "DataLoader.num_workers=0", "Global.epochs=2", "DataLoader.progressive_min_size=24",
                "DataLoader.progressive_start=0.5", "DataLoader.progressive_end=0.9"],
    "resume": ["Global.resume={tmp}/recipe", "Global.epochs=2", "Global.ema_decay=0.9", "Optimizer.name=AdamW",
               "Optimizer.schedule=linear", "Optimizer.warmup_epochs=0.5", "DataLoader.val_size=16",
               "Arch.scale=0.25", "Global.seed=3", "Optimizer.label_smoothing=0.1", "Optimizer.no_decay_bn_bias=true",
               "Optimizer.no_decay_depthwise=true",
               "DataLoader.num_workers=0", "DataLoader.cutout=8", "DataLoader.crop_padding=2",
               "DataLoader.flip=alternate", "Global.output_dir={tmp}/recipe", "Global.log_interval=2"],
}


def _keys(overrides):
    return {text.split("=", 1)[0] for text in overrides}


def test_the_groups_set_every_key():
    every = {f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys}
    assert set().union(*(_keys(g) for g in GROUPS.values()), _keys(COMMON)) == every


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keys")
    archive = write_tiny_cifar10(str(tmp / "cifar-10-python.tar.gz"), 80, 24)
    paddle.save(pm.build_model("mobilenet_v1", num_classes=10, scale=0.5).state_dict(), str(tmp / "v1_half.pdparams"))
    return str(tmp), archive


def _overrides(group, workdir):
    tmp, archive = workdir
    texts = [t for t in COMMON if _keys([t]) - _keys(GROUPS[group])] + GROUPS[group]
    return [t.format(tmp=tmp, archive=archive, group=group) for t in texts]


def _check_run(out, epochs=1):
    summary = json.load(open(os.path.join(out, "run_summary.json")))
    assert summary["finished"] and summary["epochs_done"] == epochs
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert all(np.isfinite(m["train_loss"]) for m in metrics)
    return summary


def test_recipe_keys_through_the_cli_then_resume(workdir):
    """Through tools/train.py (num_threads must reach paddle before it starts), then resumed for a second epoch."""
    proc = run_tool("train.py", *sum((["-o", t] for t in _overrides("recipe", workdir)), []))
    assert "threads=1" in proc.stdout
    summary = _check_run(os.path.join(workdir[0], "recipe"))
    assert summary["eval_weights"] == "ema" and 0 <= summary["test_acc_tta_at_best"] <= 1
    proc = run_tool("train.py", *sum((["-o", t] for t in _overrides("resume", workdir)), []))
    assert "resumed from" in proc.stdout
    # a setting the resume takes over from the command line, not from the saved run, is named with both values
    assert "settings changed from the run's saved config: Global.log_interval 1 -> 2\n" in proc.stderr, proc.stderr
    _check_run(os.path.join(workdir[0], "recipe"), epochs=2)


@pytest.mark.parametrize("group", ["baseline", "kernels"])
def test_key_group_runs(group, workdir):
    trainer.main(load_config(None, _overrides(group, workdir)), progress=False)
    _check_run(os.path.join(workdir[0], group), epochs=2 if group == "kernels" else 1)
    if group == "kernels":  # progressive resizing: the first of 2 epochs ends at half the steps, at 24 px
        metrics = json.load(open(os.path.join(workdir[0], group, "metrics.json")))
        assert [m["train_image_size"] for m in metrics] == [24, 32]
        summary = json.load(open(os.path.join(workdir[0], group, "run_summary.json")))
        assert summary["train_ips_median"] == metrics[1]["train_ips"]  # the full-size epoch's speed alone


@pytest.mark.parametrize("config", ["mbv1_cifar", "mbv2_cifar"])
def test_shipped_config_one_epoch(config, workdir):
    """What a new user types first: the shipped config with -o Global.epochs=1 (on tiny data here)."""
    tmp, archive = workdir
    out = os.path.join(tmp, config)
    cfg = load_config(f"{ROOT}/configs/{config}.yaml", ["Global.epochs=1", f"DataLoader.data_file={archive}",
                                                 f"Global.output_dir={out}", "DataLoader.val_size=16",
                                                 "DataLoader.batch_size=16", "DataLoader.num_workers=0"])
    summary = trainer.main(cfg, progress=False)
    assert summary["finished"] and summary["test_acc_at_best"] is not None
