"""Training configuration: schema defaults <- YAML file <- ``-o Section.key=value`` overrides.

Sections follow PaddleClas (Global, Arch, Optimizer, DataLoader). Every key has
a default and a type here; a YAML file holds only what differs. Unknown keys
and values of the wrong type are errors naming the key and the valid choices.
Override values are parsed as YAML scalars (``yaml.safe_load``), never eval'ed.
This module imports no paddle itself.
"""
from __future__ import annotations

import copy
import os

import yaml

from ..errors import ConfigError

SCHEMA: dict[str, dict] = {
    "Global": {
        "output_dir": "output/mbv1_cifar",
        "epochs": 60,
        "max_steps": 0,  # stop after this many optimizer steps (a budget); 0 = all epochs
        "seed": 42,
        "device": "auto",  # cpu | gpu | auto (gpu when paddle sees one)
        "resume": "",  # run dir or checkpoint file to continue from
        "overwrite": False,  # replace a finished or stopped run in output_dir instead of refusing
        "num_threads": 0,  # CPU threads for paddle and OpenMP; 0 = every core this process may use
        "amp": False,  # mixed precision (GPU only)
        "to_static": False,  # paddle.jit.to_static for the training step
        "log_interval": 20,  # steps between progress-bar and VisualDL updates
        "eval_test": True,  # evaluate the test set after every epoch (reported, never used for selection)
        "ema_decay": 0.0,  # evaluate an exponential moving average of the weights; 0 = off
        "eval_tta": False,  # also report test accuracy with horizontal-flip test-time augmentation
    },
    "Arch": {
        "name": "mobilenet_v1",
        "num_classes": 10,
        "scale": 1.0,
        "small_input": True,
        "depthwise": "auto",  # auto | custom | paddle
        "pointwise": "auto",  # auto | matmul | paddle
        "batchnorm": "auto",  # auto | custom | paddle
        "layout": "auto",  # auto | NCHW | NHWC
        "pretrained": "",  # path to a .pdparams file ("" = random init)
    },
    "Optimizer": {
        "name": "Adam",  # Adam | AdamW | Momentum
        "lr": 0.001,
        "weight_decay": 0.0001,
        "momentum": 0.9,  # Momentum only
        "beta1": 0.9,  # Adam and AdamW: decay of the gradient average
        "beta2": 0.999,  # Adam and AdamW: decay of the squared-gradient average
        "epsilon": 1e-8,  # Adam and AdamW: added to the root of the squared-gradient average
        "schedule": "cosine",  # constant | cosine | linear | step
        "warmup_epochs": 1.0,
        "step_size": 30,  # epochs between decays, schedule=step
        "gamma": 0.1,  # decay factor, schedule=step
        "label_smoothing": 0.0,
        "no_decay_bn_bias": False,  # no weight decay on BatchNorm parameters and biases
        "no_decay_depthwise": False,  # no weight decay on depthwise filters (MobileNetV1 paper, Sec. 3.2)
    },
    "DataLoader": {
        "data_file": "",  # cifar-10-python.tar.gz; "" = download with paddle.vision
        "batch_size": 128,
        "num_workers": 2,
        "image_size": 32,
        "val_size": 5000,  # training images held out for validation (model selection); 0 = none
        "train_size": 0,  # train on this many of the remaining images (a budget for quick runs); 0 = all
        "test_size": 0,  # evaluate this many test images (fixed by the seed); 0 = all 10000
        "normalize": "cifar",  # cifar | imagenet
        "augment": True,  # random crop of the padded image + horizontal flip
        "crop_padding": 4,  # with augment: pixels of zero padding around the image before the crop (at 32 px)
        "flip": "random",  # with augment: random | alternate (each image mirrored in every other epoch)
        "cutout": 0,  # side of a square blanked at a random place in each training image (at 32 px); 0 = off
        "progressive_min_size": 0,  # train the first epochs at this image side, growing to image_size; 0 = off
        "progressive_start": 0.5,  # share of the run's steps trained at the smallest size
        "progressive_end": 0.85,  # share of the run's steps after which training runs at image_size
    },
}

CHOICES = {
    ("Global", "device"): ("cpu", "gpu", "auto"),
    ("Arch", "depthwise"): ("auto", "custom", "paddle"),
    ("Arch", "pointwise"): ("auto", "matmul", "paddle"),
    ("Arch", "batchnorm"): ("auto", "custom", "paddle"),
    ("Arch", "layout"): ("auto", "NCHW", "NHWC"),
    ("Optimizer", "name"): ("Adam", "AdamW", "Momentum"),
    ("Optimizer", "schedule"): ("constant", "cosine", "linear", "step"),
    ("DataLoader", "normalize"): ("cifar", "imagenet"),
    ("DataLoader", "flip"): ("random", "alternate"),
}


# Bounds of numeric keys: (lowest, highest, whether the lowest itself is allowed[, whether the highest is; no if
# left out]); None = unbounded.
RANGES = {
    ("Global", "epochs"): (1, None, True), ("Global", "max_steps"): (0, None, True),
    ("Global", "num_threads"): (0, None, True), ("Global", "seed"): (0, 2 ** 32 - 1, True, True),
    ("Global", "log_interval"): (1, None, True), ("Global", "ema_decay"): (0.0, 1.0, True),
    ("Arch", "num_classes"): (1, None, True), ("Arch", "scale"): (0.0, None, False),
    ("Optimizer", "lr"): (0.0, None, False), ("Optimizer", "weight_decay"): (0.0, None, True),
    ("Optimizer", "momentum"): (0.0, 1.0, True),
    ("Optimizer", "beta1"): (0.0, 1.0, True), ("Optimizer", "beta2"): (0.0, 1.0, True),
    ("Optimizer", "epsilon"): (0.0, None, False), ("Optimizer", "warmup_epochs"): (0.0, None, True),
    ("Optimizer", "step_size"): (1, None, True), ("Optimizer", "gamma"): (0.0, None, False),
    ("Optimizer", "label_smoothing"): (0.0, 1.0, True), ("DataLoader", "batch_size"): (1, None, True),
    ("DataLoader", "num_workers"): (0, None, True), ("DataLoader", "image_size"): (1, None, True),
    ("DataLoader", "val_size"): (0, None, True), ("DataLoader", "train_size"): (0, None, True),
    ("DataLoader", "test_size"): (0, None, True), ("DataLoader", "cutout"): (0, 32, True),
    ("DataLoader", "crop_padding"): (0, 16, True), ("DataLoader", "progressive_min_size"): (0, None, True),
    ("DataLoader", "progressive_start"): (0.0, 1.0, True), ("DataLoader", "progressive_end"): (0.0, 1.0, True, True),
}


# What each key means, for the README's config reference (reference_table() below; a test keeps them in sync).
HELP = {
    "Global.output_dir": "run directory: config.yaml, checkpoints, metrics.json, curves.png, vdl/",
    "Global.epochs": "epochs to train",
    "Global.max_steps": "end the run after this many optimizer steps, the last epoch partly trained, with the "
                        "schedule reaching 0 there (a compute budget; `tools/compare.py --train-minutes`); 0 = off",
    "Global.seed": "seeds init, shuffling, augmentation and the validation split",
    "Global.device": "`cpu`, `gpu` or `auto` (the GPU when paddle sees one)",
    "Global.resume": "run directory or checkpoint to continue, with the config saved in it; only overrides that "
                     "keep the run what it was apply (e.g. more `Global.epochs`), others are refused",
    "Global.overwrite": "replace the run already in `output_dir` (otherwise a new run there is refused)",
    "Global.num_threads": "CPU threads for paddle and OpenMP; 0 = every core the process may use",
    "Global.amp": "mixed precision with `paddle.amp` (GPU only; a notice and float32 on CPU)",
    "Global.to_static": "run the model through `paddle.jit.to_static`",
    "Global.log_interval": "steps between progress-bar and VisualDL updates",
    "Global.eval_test": "evaluate the test set after every epoch (reported, never used to pick `best`); "
                        "either way the end of a run evaluates it on the `best` weights",
    "Global.ema_decay": "evaluate, select and save an exponential moving average of the weights (decay per "
                        "step, e.g. 0.999; folded in every few steps at the same time constant); 0 = off",
    "Global.eval_tta": "also report test accuracy with horizontal-flip test-time augmentation (`test_acc_tta`; "
                       "selection and `test_acc` stay plain)",
    "Arch.name": "a registry name: `mobilenet_v1`, `mobilenet_v2`, `mobilenet_v1_conv`, `vgg16`, `vgg16_bn`, "
                 "`vgg19`, `vgg19_bn`, `resnet18`, `resnet50`, `resnet152`",
    "Arch.num_classes": "classifier outputs",
    "Arch.scale": "width multiplier alpha (our MobileNets)",
    "Arch.small_input": "CIFAR variant of our MobileNets (stride-1 stem); must be false for VGG/ResNet",
    "Arch.depthwise": "`auto`, `custom` (our CPU operator) or `paddle` (`nn.Conv2D(groups=C)`)",
    "Arch.pointwise": "1x1 convs: `auto` (on CPU `matmul` for maps of <= 16 pixels, else `paddle`; `paddle` on "
                      "GPU), `matmul` (one GEMM over all pixels) or `paddle` (`nn.Conv2D`)",
    "Arch.batchnorm": "`auto`, `custom` (BatchNorm + activation as one CPU operator) or `paddle` (its layers)",
    "Arch.layout": "activations inside our MobileNets: `auto` (`NHWC` when the custom depthwise and BatchNorm "
                   "operators run and `pointwise` is not `paddle`, else `NCHW`), `NHWC` (channels-last: 1x1 convs "
                   "as single GEMMs, no transposes; eager CPU training and evaluation) or `NCHW`; inputs, outputs "
                   "and parameters keep paddle's layouts",
    "Arch.pretrained": "a .pdparams file (ours, paddle.vision's or a checkpoint) or `imagenet` (Paddle's official "
                       "weights); a classifier of another width starts fresh (fine-tuning); empty = random init",
    "Optimizer.name": "`Adam`, `AdamW` or `Momentum`",
    "Optimizer.lr": "peak learning rate",
    "Optimizer.weight_decay": "L2 decay (Adam, Momentum) or decoupled decay (AdamW)",
    "Optimizer.momentum": "momentum (Momentum only)",
    "Optimizer.beta1": "Adam's decay of its gradient average (Adam, AdamW)",
    "Optimizer.beta2": "Adam's decay of its squared-gradient average (Adam, AdamW)",
    "Optimizer.epsilon": "Adam's term added to the root of the squared-gradient average (Adam, AdamW)",
    "Optimizer.schedule": "`constant`, `cosine` or `linear` (both fall over the run to 0, the rate after its last "
                          "step) or `step`, after the warm-up",
    "Optimizer.warmup_epochs": "epochs (fractions allowed) of linear warm-up from `lr`/100 to `lr`; capped at a "
                               "quarter of the run, with a notice",
    "Optimizer.step_size": "epochs between decays (`step`)",
    "Optimizer.gamma": "decay factor (`step`)",
    "Optimizer.label_smoothing": "label smoothing of the cross-entropy (0.1 = 10 % of the target spread over "
                                 "all classes)",
    "Optimizer.no_decay_bn_bias": "exempt BatchNorm parameters and biases (every 1-D parameter) from weight decay",
    "Optimizer.no_decay_depthwise": "exempt the depthwise convolutions' filters (`groups` = input channels) from "
                                    "weight decay, as the MobileNetV1 paper advises (Sec. 3.2: they hold few "
                                    "parameters)",
    "DataLoader.data_file": "cifar-10-python.tar.gz; empty = download with paddle.vision",
    "DataLoader.batch_size": "images per step (per GPU when distributed)",
    "DataLoader.num_workers": "data-loading worker processes",
    "DataLoader.image_size": "training and evaluation image size (32 = CIFAR's own)",
    "DataLoader.val_size": "training images held out for validation (picks `best`); 0 = none",
    "DataLoader.train_size": "train on this many of the remaining images; 0 = all",
    "DataLoader.test_size": "test images evaluated (a seeded subset); 0 = all 10000",
    "DataLoader.normalize": "`cifar` or `imagenet` mean/std",
    "DataLoader.augment": "random crop of the zero-padded image + horizontal flip (the training augmentation)",
    "DataLoader.crop_padding": "with `augment`: zero padding around each training image before the random crop, "
                               "in pixels at 32 px (scaled with `image_size`, at least 1); 0 = no shift "
                               "(flips and cutout only)",
    "DataLoader.flip": "with `augment`: `random` mirrors each image with probability 1/2 in every epoch; "
                       "`alternate` mirrors a random half in the first epoch, then flips each image's side every "
                       "epoch, so every two epochs show each image both ways (airbench)",
    "DataLoader.cutout": "with `augment`: blank a square of this side (in pixels at 32 px, scaled with "
                         "`image_size`) centred anywhere in each training image, filled with the mean colour "
                         "(DeVries & Taylor's Cutout); 0 = off",
    "DataLoader.progressive_min_size": "progressive resizing (as in FFCV and fast.ai): train on batches "
                                       "area-downscaled to this side (px) at first, growing in 4-px steps to "
                                       "`image_size`; evaluation stays at `image_size`; at least the network's "
                                       "smallest input; 0 = off",
    "DataLoader.progressive_start": "with `progressive_min_size`: epochs that end at or before this fraction of "
                                    "the run's steps train at the smallest size",
    "DataLoader.progressive_end": "with `progressive_min_size`: epochs that end at or after this fraction of "
                                  "the run's steps train at `image_size` (at least `progressive_start`)",
}


def resolve_threads(requested: int) -> int:
    """``Global.num_threads`` as a count: 0 means every core this process may run on."""
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))  # honours taskset and container CPU sets, unlike os.cpu_count()
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def reference_table() -> str:
    """The config reference of docs/config.md: every key, its default and meaning."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for section, values in SCHEMA.items():
        for key, default in values.items():
            rows.append(f"| `{section}.{key}` | `{default!r}` | {HELP[f'{section}.{key}']} |")
    return "\n".join(rows)


def _as_float(text: str):
    """``1e-8`` as a float: YAML 1.1 (PyYAML) reads an exponent without a dot as a string, in files and overrides
    alike. Other text stays text, for the type error that follows."""
    try:
        return float(text)
    except ValueError:
        return text


def _check_value(section: str, key: str, value):
    if section not in SCHEMA:
        raise ConfigError(f"unknown config section {section!r}; valid sections: {', '.join(SCHEMA)}")
    if key not in SCHEMA[section]:
        raise ConfigError(f"unknown config key {section}.{key}; valid keys in {section}: "
                          f"{', '.join(SCHEMA[section])}")
    default = SCHEMA[section][key]
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, str):
        value = _as_float(value)
    if kind is str and value is None:
        value = ""
    if type(value) is not kind:
        raise ConfigError(f"{section}.{key} must be a {kind.__name__} (like {default!r}), "
                          f"got {value!r} ({type(value).__name__})")
    choices = CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{section}.{key}={value!r} is not one of {', '.join(map(repr, choices))}")
    _check_range(section, key, value)
    return value


def _check_range(section: str, key: str, value) -> None:
    if (section, key) not in RANGES:
        return
    low, high, low_allowed, *high_allowed = RANGES[(section, key)]
    high_allowed = bool(high_allowed and high_allowed[0])
    too_low = value < low or (value == low and not low_allowed)
    too_high = high is not None and (value > high or (value == high and not high_allowed))
    if too_low or too_high or value != value:  # value != value: NaN
        bounds = f"{'>=' if low_allowed else '>'} {low}" + \
            (f" and {'<=' if high_allowed else '<'} {high}" if high is not None else "")
        raise ConfigError(f"{section}.{key}={value!r} is out of range: it must be {bounds}")


def _merge(cfg: dict, updates: dict, origin: str) -> None:
    if not isinstance(updates, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(updates).__name__}")
    for section, values in updates.items():
        if section not in SCHEMA:
            _check_value(section, "", None)
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section {section} must be a mapping of keys, got {values!r}")
        for key, value in values.items():
            cfg[section][key] = _check_value(section, key, value)


def parse_override(text: str) -> tuple[str, str, object]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like Section.key=value, e.g. Global.epochs=10")
    path, raw = text.split("=", 1)
    section, key = path.split(".", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    default = SCHEMA.get(section, {}).get(key)
    if isinstance(default, str) and not isinstance(value, str) and value is not None:
        value = raw  # a path or name that YAML would read as a number stays a string
    return section, key, value


def load_config(path: str | None = None, overrides=()) -> dict:
    """Defaults, then the YAML file at ``path``, then ``Section.key=value`` overrides."""
    cfg = copy.deepcopy(SCHEMA)
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist; see configs/ for examples")
        with open(path) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path} is not valid YAML: {e}") from None
        _merge(cfg, data, path)
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: dict, overrides=()) -> dict:
    """Apply ``Section.key=value`` strings to ``cfg`` in place (keys missing from ``cfg`` get their defaults)."""
    for section, values in SCHEMA.items():
        for key, default in values.items():
            cfg.setdefault(section, {}).setdefault(key, copy.deepcopy(default))
    for text in overrides:
        section, key, value = parse_override(text)
        cfg[section][key] = _check_value(section, key, value)
    return cfg


# Keys a resumed run may change: they do not change what is trained (only how long, where the archive now lies,
# how it is computed or reported). Everything else must equal the run's saved config.
SAFE_ON_RESUME = ("Global.epochs", "Global.resume", "Global.overwrite", "Global.output_dir", "Global.device",
                  "Global.num_threads", "Global.log_interval", "Global.eval_test", "Global.eval_tta",
                  "Global.to_static", "Arch.depthwise", "Arch.pointwise", "Arch.batchnorm",
                  "Arch.layout",
                  "DataLoader.data_file",
                  "DataLoader.num_workers")


def changed_keys(before: dict, after: dict) -> list[str]:
    """``Section.key`` names whose values differ between two resolved configs."""
    return [f"{section}.{key}" for section, values in SCHEMA.items() for key in values
            if before.get(section, {}).get(key, values[key]) != after.get(section, {}).get(key, values[key])]


def check_resumable(saved: dict, requested: dict) -> list[str]:
    """The safe keys ``requested`` changes; refuses (naming them) keys that would change what the run trains."""
    changed = changed_keys(apply_overrides(copy.deepcopy(saved)), requested)
    unsafe = [key for key in changed if key not in SAFE_ON_RESUME]
    if unsafe:
        raise ConfigError(f"resuming with {', '.join(unsafe)} changed from the run's saved config would train "
                          f"another run; resume with the saved values (leave out -c and those -o), or start a new "
                          f"run in another Global.output_dir")
    return changed


def run_dir_of(resume: str) -> str:
    """The run directory of ``Global.resume`` (a run directory, or a checkpoint file inside one)."""
    resume = os.path.expanduser(resume)
    return resume if os.path.isdir(resume) else os.path.dirname(os.path.abspath(resume))


def check_own_directory(resume: str, output_dir: str) -> None:
    """One line, unless ``output_dir`` is the directory of the run ``resume`` continues."""
    if os.path.realpath(run_dir_of(resume)) != os.path.realpath(output_dir):
        raise ConfigError(f"Global.resume={resume!r} continues the run in {run_dir_of(resume)!r}, but "
                          f"Global.output_dir is {output_dir!r}; a run continues in its own directory (leave out "
                          f"Global.output_dir, or use Arch.pretrained to start from its weights)")


def load_resume_config(resume: str, overrides=()) -> dict:
    """The config to continue run ``resume`` with: the one saved in it, then ``overrides``."""
    path = os.path.join(run_dir_of(resume), "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"{resume!r} holds no config.yaml; pass the directory of a run written by tools/train.py "
                          f"(or give its config with -c)")
    cfg = load_config(path, overrides)
    if any(parse_override(text)[:2] == ("Global", "output_dir") for text in overrides):
        check_own_directory(resume, cfg["Global"]["output_dir"])
    cfg["Global"]["output_dir"] = run_dir_of(resume)
    cfg["Global"]["resume"] = resume
    return cfg


def save_config(cfg: dict, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def reference_doc() -> str:
    """docs/config.md, generated: ``python -m paddle_mbnet.training.config > docs/config.md``."""
    return f"""# Config reference

Generated by `python -m paddle_mbnet.training.config > docs/config.md` from the schema in
`paddle_mbnet/training/config.py`; a test keeps the two equal.

Values come from the schema defaults below, then the YAML file given with `-c`, then each
`-o Section.key=value` (parsed as a YAML scalar, never `eval`ed). A config file holds only what differs
from these defaults. Unknown keys, wrong types and values outside a key's choices are refused with one
line naming the key. A run saves the resolved config as `config.yaml` in its output directory.

{reference_table()}
"""


if __name__ == "__main__":
    print(reference_doc(), end="")
