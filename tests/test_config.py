import pytest

from paddle_mbnet.training.config import SCHEMA, ConfigError, load_config
from helpers import ROOT, run_tool

REQUIRED = ["Global.output_dir", "Global.epochs", "Global.seed", "Global.device", "Global.resume", "Arch.name",
            "Arch.num_classes", "Arch.scale", "Arch.small_input", "Arch.depthwise", "Optimizer.name", "Optimizer.lr",
            "Optimizer.weight_decay", "DataLoader.data_file", "DataLoader.batch_size", "DataLoader.num_workers",
            "DataLoader.image_size", "DataLoader.val_size"]


def test_required_keys_exist():
    for dotted in REQUIRED:
        section, key = dotted.split(".")
        assert key in SCHEMA[section], dotted


def test_yaml_then_overrides(tmp_path):
    cfg = load_config(f"{ROOT}/configs/mbv2_cifar.yaml", ["Global.epochs=7", "Optimizer.lr=3e-4",
                                                            "Arch.small_input=false", "DataLoader.data_file=123"])
    assert cfg["Arch"]["name"] == "mobilenet_v2"
    assert cfg["Global"]["epochs"] == 7 and cfg["Optimizer"]["lr"] == 3e-4
    assert cfg["Arch"]["small_input"] is False
    assert cfg["DataLoader"]["data_file"] == "123"  # strings stay strings
    assert cfg["DataLoader"]["batch_size"] == 64  # from the file
    assert cfg["DataLoader"]["val_size"] == 5000  # untouched default


@pytest.mark.parametrize("override,match", [
    ("Global.epoch=3", "unknown config key Global.epoch; valid keys in Global: output_dir, epochs"),
    ("Trainer.epochs=3", "unknown config section 'Trainer'; valid sections: Global, Arch"),
    ("Global.epochs=ten", "Global.epochs must be a int"),
    ("Global.epochs=2.5", "Global.epochs must be a int"),
    ("Arch.small_input=maybe", "Arch.small_input must be a bool"),
    ("Optimizer.name=SGD", "Optimizer.name='SGD' is not one of 'Adam', 'AdamW', 'Momentum'"),
    ("Global.epochs", "must look like Section.key=value"),
    ("Global.epochs=__import__('os')", "must be a int"),
    ("Global.ema_decay=1.0", r"Global.ema_decay=1.0 is out of range: it must be >= 0.0 and < 1.0"),
    ("DataLoader.progressive_end=1.5", r"progressive_end=1.5 is out of range: it must be >= 0.0 and <= 1.0"),
    ("Global.seed=-1", r"Global.seed=-1 is out of range: it must be >= 0 and <= 4294967295"),
])
def test_bad_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_an_upper_bound_can_be_inclusive():
    """progressive_end=1.0 is a real choice (only the last epoch at full size); most upper bounds are open."""
    assert load_config(None, ["DataLoader.progressive_end=1.0"])["DataLoader"]["progressive_end"] == 1.0
    with pytest.raises(ConfigError, match="progressive_start=1.0 is out of range"):
        load_config(None, ["DataLoader.progressive_start=1.0"])


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    """PyYAML reads ``1e-8`` as a string; a float key takes it as the number it spells, other text stays an error."""
    path = tmp_path / "exp.yaml"
    path.write_text("Optimizer:\n  epsilon: 1e-8\n  lr: 3E-3\n")
    cfg = load_config(str(path))
    assert cfg["Optimizer"]["epsilon"] == 1e-8 and cfg["Optimizer"]["lr"] == 3e-3
    path.write_text("Optimizer:\n  lr: fast\n")
    with pytest.raises(ConfigError, match="Optimizer.lr must be a float"):
        load_config(str(path))


def test_bad_yaml_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("Global:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key Global.learning_rate"):
        load_config(str(p))


def test_cli_reports_config_errors_without_traceback():
    proc = run_tool("train.py", "-c", "configs/mbv1_cifar.yaml", "-o", "Global.epochz=1", check=False)
    assert proc.returncode != 0
    assert "config error: unknown config key Global.epochz" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["mbv1_cifar", "mbv2_cifar", "finetune224_mobilenet_v2"] + [f"ref224_{m}" for m in
                                  ("mobilenet_v1", "mobilenet_v2", "vgg16", "vgg19", "resnet50", "resnet152")])
def test_shipped_configs_load(name):
    cfg = load_config(f"{ROOT}/configs/{name}.yaml")
    if name.startswith("finetune"):
        assert cfg["Arch"]["pretrained"] == "imagenet" and cfg["DataLoader"]["normalize"] == "imagenet"
    elif name.startswith("ref224"):
        assert cfg["DataLoader"]["image_size"] == 224 and cfg["DataLoader"]["batch_size"] == 100
        assert cfg["Global"]["epochs"] == 3 and cfg["Optimizer"]["lr"] == 0.001
        assert cfg["DataLoader"]["normalize"] == "imagenet"
    else:
        assert cfg["Arch"]["small_input"] and cfg["DataLoader"]["image_size"] == 32


def test_config_reference_lists_every_key_with_its_default():
    from paddle_mbnet.training.config import HELP, reference_doc

    assert set(HELP) == {f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys}
    with open(f"{ROOT}/docs/config.md") as f:
        doc = f.read()
    assert doc == reference_doc(), "docs/config.md is stale: python -m paddle_mbnet.training.config > docs/config.md"


def test_config_reference_names_every_registered_model():
    from paddle_mbnet import list_models
    from paddle_mbnet.training.config import HELP

    assert all(f"`{name}`" in HELP["Arch.name"] for name in list_models())
