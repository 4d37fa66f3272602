"""Lets ``python tools/x.py`` import paddle_mbnet from the repo root without installing it."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def set_threads(n: int) -> None:
    """Fix the CPU thread count before paddle starts its pools (0 = leave as is)."""
    if n > 0:
        os.environ["OMP_NUM_THREADS"] = str(n)
        os.environ["MKL_NUM_THREADS"] = str(n)


def load_run(path: str, overrides=(), prefer=("best.pdckpt", "last.pdckpt")):
    """(config, model in eval mode, checkpoint) from a run directory or checkpoint file."""
    from paddle_mbnet import trainer
    from paddle_mbnet.config import apply_overrides

    ckpt = trainer.load_checkpoint(path, prefer)
    cfg = apply_overrides(ckpt["config"], overrides)
    model = trainer.model_from_config(cfg, pretrained=False)
    model.set_state_dict(ckpt["model"])
    model.eval()
    return cfg, model, ckpt
