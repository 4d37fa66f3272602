import pytest

from paddle_mbnet.config import SCHEMA, ConfigError, load_config
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
    assert cfg["Optimizer"]["name"] == "Adam"  # untouched default


@pytest.mark.parametrize("override,match", [
    ("Global.epoch=3", "unknown config key Global.epoch; valid keys in Global: output_dir, epochs"),
    ("Trainer.epochs=3", "unknown config section 'Trainer'; valid sections: Global, Arch"),
    ("Global.epochs=ten", "Global.epochs must be a int"),
    ("Global.epochs=2.5", "Global.epochs must be a int"),
    ("Arch.small_input=maybe", "Arch.small_input must be a bool"),
    ("Optimizer.name=SGD", "Optimizer.name='SGD' is not one of 'Adam', 'AdamW', 'Momentum'"),
    ("Global.epochs", "must look like Section.key=value"),
    ("Global.epochs=__import__('os')", "must be a int"),
])
def test_bad_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


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


@pytest.mark.parametrize("name", ["mbv1_cifar", "mbv2_cifar"] + [f"ref224_{m}" for m in
                                  ("mobilenet_v1", "mobilenet_v2", "vgg16", "vgg19", "resnet50", "resnet152")])
def test_shipped_configs_load(name):
    cfg = load_config(f"{ROOT}/configs/{name}.yaml")
    if name.startswith("ref224"):
        assert cfg["DataLoader"]["image_size"] == 224 and cfg["DataLoader"]["batch_size"] == 100
        assert cfg["Global"]["epochs"] == 3 and cfg["Optimizer"]["lr"] == 0.001
        assert cfg["DataLoader"]["normalize"] == "imagenet"
    else:
        assert cfg["Arch"]["small_input"] and cfg["DataLoader"]["image_size"] == 32


def test_readme_config_reference_lists_every_key_with_its_default():
    from paddle_mbnet.config import HELP, reference_table

    assert set(HELP) == {f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys}
    with open(f"{ROOT}/README.md") as f:
        readme = f.read()
    assert reference_table() in readme, "README's config reference is stale: paste config.reference_table()"


def test_a_warmup_as_long_as_the_run_is_refused():
    import paddle

    from paddle_mbnet import trainer

    params = paddle.nn.Linear(2, 2).parameters()
    cfg = load_config(None, ["Global.epochs=1"])  # default Optimizer.warmup_epochs: 1
    with pytest.raises(ValueError, match="warmup_epochs=1 covers the whole 1-epoch run.*warmup_epochs=0"):
        trainer.build_optimizer(cfg, params, 10)
    trainer.build_optimizer(load_config(None, ["Global.epochs=1", "Optimizer.warmup_epochs=0"]), params, 10)
