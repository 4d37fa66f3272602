"""The comparison's training runs: one tools/train.py run per model, skipped when finished, resumed when not."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from ..errors import ArgumentError, MbnetError
from ..models.registry import get_entry
from ..training.config import load_config, save_config
from .specs import parse_spec

# configs/ and tools/ sit beside the package in the repository (an editable install keeps them there).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE_CONFIG = os.path.join(REPO_ROOT, "configs", "mbv1_cifar.yaml")  # the shipped recipe, for every model


def train_config(spec: str, run_dir: str, preset: str = "cifar", epochs: int = 3, threads: int = 0,
                 device: str = "auto", overrides=(), warmup_epochs: float | None = None,
                 max_steps: int = 0) -> dict:
    """The tools/train.py config of ``spec``'s run: ``preset`` "cifar" (32 px, the shipped recipe of
    ``configs/mbv1_cifar.yaml`` for every model) or "ref224" (``configs/ref224_<model>.yaml``, the AI Studio
    reference setup), then ``overrides``. ``max_steps`` > 0 ends the run at that step (a time budget);
    ``warmup_epochs`` None keeps the recipe's warm-up (capped at a quarter of a short run by the trainer)."""
    name, kwargs = parse_spec(spec)
    if preset == "cifar":
        base, first = RECIPE_CONFIG, [f"Arch.name={name}", f"Arch.small_input={get_entry(name).mobilenet_options}"]
    elif preset == "ref224":
        base = os.path.join(REPO_ROOT, "configs", f"ref224_{name}.yaml")
        if not os.path.isfile(base):
            raise ArgumentError(f"no reference config for {name} ({base}); use --train-preset cifar")
        first = []
    else:
        raise ArgumentError(f"unknown training preset {preset!r}; valid: cifar, ref224")
    first += [f"Arch.scale={kwargs['scale']}"] if "scale" in kwargs else []
    first += [f"Global.output_dir={run_dir}", f"Global.epochs={epochs}", f"Global.num_threads={threads}",
              f"Global.device={device}", f"Global.max_steps={max_steps}"]
    first += [] if warmup_epochs is None else [f"Optimizer.warmup_epochs={warmup_epochs}"]
    return load_config(base, [*first, *overrides])


def _run_identity(cfg: dict, budgeted: bool = False) -> dict:
    """The config without where the run lives: two runs with the same identity train the same thing.
    ``budgeted``: the steps and epochs of a time budget are not known yet, so they are left out."""
    cfg = json.loads(json.dumps(cfg))
    cfg["Global"]["resume"] = ""
    cfg["Global"]["overwrite"] = False
    cfg["Global"]["output_dir"] = ""  # where the run lives, not what it is: a moved --out still matches
    if budgeted:
        cfg["Global"]["max_steps"] = cfg["Global"]["epochs"] = 0
    return cfg


def plan_run(cfg: dict, budgeted: bool = False) -> tuple[str, str]:
    """What to do for the run ``cfg`` describes: ("skip" | "resume" | "start", reason).

    A finished run with the same config is skipped, an unfinished one (Ctrl-C, a crash, a
    stopped comparison) resumes from its last checkpoint; a run directory holding a different
    config is an error, so no finished work is overwritten. ``budgeted``: a time-budgeted run whose steps are
    not measured yet (its started run's budget is reused later), compared without its steps and epochs.
    """
    run_dir = cfg["Global"]["output_dir"]
    saved = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(saved):
        return "start", "no run yet"
    old = load_config(saved)
    old_c, new_c = _run_identity(old, budgeted), _run_identity(cfg, budgeted)
    if old_c != new_c:
        diff = [f"{s}.{k}: {old_c[s][k]!r} -> {new_c[s][k]!r}" for s in new_c for k in new_c[s]
                if old_c[s][k] != new_c[s][k]]
        raise ArgumentError(f"{run_dir} holds a run with another config ({'; '.join(diff)}); "
                         f"pass another --out or delete that directory")
    summary = _read_json(os.path.join(run_dir, "run_summary.json"))
    if summary and summary.get("finished"):
        return "skip", f"finished ({summary['epochs_done']} epochs)"
    if os.path.isfile(os.path.join(run_dir, "last.pdckpt")):
        done = summary["epochs_done"] if summary else "?"
        return "resume", f"unfinished ({done}/{cfg['Global']['epochs']} epochs)"
    return "start", "no checkpoint yet"


def started_budget(cfg: dict) -> int:
    """The step budget of a time-budgeted run already started in ``cfg``'s directory (0 = none): a rerun of the
    comparison continues it with the budget it was given instead of measuring a new one."""
    saved = os.path.join(cfg["Global"]["output_dir"], "config.yaml")
    return load_config(saved)["Global"]["max_steps"] if os.path.isfile(saved) else 0


def ensure_run(cfg: dict, log=print, stream: bool = True, continue_hint: str = "") -> dict | None:
    """Run tools/train.py for ``cfg`` unless finished; returns the run's summary. ``continue_hint`` replaces
    the trainer's advice after an interrupt (the command that continues the whole comparison)."""
    run_dir = cfg["Global"]["output_dir"]
    action, why = plan_run(cfg)
    log(f"[train] {cfg['Arch']['name']} -> {run_dir}: {why}: {action}")
    if action != "skip":
        os.makedirs(run_dir, exist_ok=True)
        request = os.path.join(run_dir, "compare_request.yaml")
        save_config(cfg, request)
        tool = os.path.join(REPO_ROOT, "tools", "train.py")
        argv = [sys.executable, tool, "-c", request]
        # resume an unfinished run; replace a started one that saved nothing yet (same config, checked above)
        argv += ["-o", f"Global.resume={run_dir}"] if action == "resume" else ["-o", "Global.overwrite=true"]
        env = dict(os.environ, PADDLE_MBNET_CONTINUE_HINT=continue_hint) if continue_hint else dict(os.environ)
        # the trainer sets its threads from Global.num_threads after importing paddle, which warns about
        # an OMP_NUM_THREADS above 1 in its environment
        env.pop("OMP_NUM_THREADS", None)
        proc = subprocess.Popen(argv, env=env, stdout=None if stream else subprocess.PIPE,
                                stderr=None if stream else subprocess.STDOUT, text=True)
        try:
            output, _ = proc.communicate()
        except KeyboardInterrupt:
            # Ctrl-C reached the trainer too, which is writing its checkpoint: let it finish
            # (subprocess.run would kill it after 0.25 s)
            proc.wait()
            raise
        if proc.returncode != 0:
            tail = "" if stream else "\n" + output[-3000:]
            raise MbnetError(f"training {run_dir} failed (exit {proc.returncode}); rerun to resume it{tail}")
    return _read_json(os.path.join(run_dir, "run_summary.json"))


def read_run(run_dir: str) -> dict:
    """Accuracy and time figures of a finished tools/train.py run (all None when there is none)."""
    summary = _read_json(os.path.join(run_dir, "run_summary.json"))
    if not summary or not summary.get("finished"):
        return {"epoch_time_s": None, "train_acc": None, "val_acc": None, "test_acc": None, "epochs": None,
                "run_ips": None, "run_dir": None, "train_time_s": None, "train_images": None,
                "epochs_trained": None, "test_images": None}
    metrics = _read_json(os.path.join(run_dir, "metrics.json")) or []
    return {"epoch_time_s": summary["epoch_time_s_median"], "train_acc": summary["final_train_acc"],
            "train_time_s": sum(h["epoch_time_s"] for h in metrics), "train_images": summary.get("train_images"),
            "epochs_trained": summary.get("epochs_trained"), "test_images": summary.get("test_images"),
            "val_acc": summary["best_val_acc"],
            # the test accuracy of the epoch that validation picked, never the best test accuracy
            "test_acc": summary["test_acc_at_best"] if summary["test_acc_at_best"] is not None
            else summary["final_test_acc"],
            "epochs": summary["epochs_done"], "run_ips": summary["train_ips_median"], "run_dir": run_dir}


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
