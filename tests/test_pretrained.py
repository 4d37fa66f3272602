"""pretrained=<file> loads paddle.vision state_dicts whatever our layer names are."""
import socket

import numpy as np
import paddle
import paddle.vision.models as pvm
import pytest

import paddle_mbnet as pm
from paddle_mbnet.errors import CheckpointError


def _randomize_bn(model):
    for name, v in model.state_dict().items():
        if name.endswith(("_mean", "_variance")):
            v.set_value(paddle.rand(v.shape) + (0.5 if name.endswith("_variance") else -0.5))


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("name,ref_cls", [("mobilenet_v1", pvm.MobileNetV1), ("mobilenet_v2", pvm.MobileNetV2)])
def test_paddle_vision_weights_give_the_same_outputs(tmp_path, name, ref_cls, scale):
    ref = ref_cls(scale=scale, num_classes=10)
    _randomize_bn(ref)  # so a swapped mean/variance would show
    path = str(tmp_path / "ref.pdparams")
    paddle.save(ref.state_dict(), path)
    ours = pm.build_model(name, pretrained=path, scale=scale, num_classes=10, depthwise="paddle")
    assert list(ours.state_dict()) != list(ref.state_dict())  # the names really differ
    ref.eval()
    ours.eval()
    x = paddle.randn([2, 3, 96, 96])
    diff = np.abs(ours(x).numpy() - ref(x).numpy()).max()
    assert diff <= 1e-5


def test_our_own_state_dict_round_trips(tmp_path):
    model = pm.MobileNetV2(num_classes=5)
    _randomize_bn(model)
    path = str(tmp_path / "ours.pdparams")
    paddle.save(model.state_dict(), path)
    again = pm.build_model("mobilenet_v2", pretrained=path, num_classes=5)
    model.eval()
    again.eval()
    x = paddle.randn([1, 3, 64, 64])
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-6)


def test_baseline_loads_its_paddle_vision_file(tmp_path):
    ref = pvm.resnet18(num_classes=10)
    path = str(tmp_path / "r18.pdparams")
    paddle.save(ref.state_dict(), path)
    ours = pm.build_model("resnet18", pretrained=path, num_classes=10)
    np.testing.assert_array_equal(ours.fc.weight.numpy(), ref.fc.weight.numpy())


def test_wrong_model_file_is_refused(tmp_path):
    path = str(tmp_path / "r18.pdparams")
    paddle.save(pvm.resnet18(num_classes=10).state_dict(), path)
    with pytest.raises(ValueError, match="is not a mobilenet_v1 state_dict"):
        pm.build_model("mobilenet_v1", pretrained=path, num_classes=10)


def test_wrong_scale_names_the_tensor_and_the_fix(tmp_path):
    path = str(tmp_path / "v2_05.pdparams")
    paddle.save(pvm.MobileNetV2(scale=0.5).state_dict(), path)
    with pytest.raises(ValueError, match="has shape .* in the file .*with the scale the file was saved with"):
        pm.build_model("mobilenet_v2", pretrained=path, scale=1.0)


@pytest.mark.parametrize("name,ref_fn", [("mobilenet_v2", pvm.MobileNetV2), ("mobilenet_v1", pvm.MobileNetV1),
                                         ("resnet18", pvm.resnet18)])
def test_imagenet_weights_fine_tune_with_a_fresh_classifier(tmp_path, capsys, name, ref_fn):
    """A 1000-class paddle.vision file into a 10-class model: every backbone tensor loads, the classifier is new."""
    ref = ref_fn(num_classes=1000)
    _randomize_bn(ref)
    path = str(tmp_path / "imagenet.pdparams")
    paddle.save(ref.state_dict(), path)
    model = pm.build_model(name, pretrained=path, num_classes=10)
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "the classifier starts fresh" in notice[0] and ", 1000]" in notice[0]
    ref_tensors, own = list(ref.state_dict().values()), model.state_dict()
    classifier = [k for k, v in own.items() if 10 in v.shape and len(v.shape) <= 2 and v.shape[-1] == 10]
    assert len(classifier) == 2  # weight [C, 10] and bias [10]
    for (key, tensor), reference in zip(own.items(), ref_tensors):
        if key not in classifier:
            np.testing.assert_array_equal(tensor.numpy(), reference.numpy(), err_msg=key)


def test_fine_tuning_from_the_config(tmp_path):
    from paddle_mbnet.training import trainer
    from paddle_mbnet.training.config import load_config
    from paddle_mbnet.training.data import write_tiny_cifar10

    path = str(tmp_path / "imagenet.pdparams")
    paddle.save(pvm.MobileNetV2(num_classes=1000, scale=0.5).state_dict(), path)
    archive = write_tiny_cifar10(str(tmp_path / "c.tar.gz"), 40, 16)
    from helpers import ROOT

    cfg = load_config(f"{ROOT}/configs/finetune224_mobilenet_v2.yaml", [
        f"Arch.pretrained={path}", "Arch.scale=0.5", f"DataLoader.data_file={archive}", "DataLoader.image_size=32",
        "DataLoader.val_size=8", "DataLoader.batch_size=8", "DataLoader.num_workers=0", "Global.epochs=1",
        f"Global.output_dir={tmp_path / 'run'}", "Global.device=cpu"])
    assert trainer.main(cfg, progress=False)["finished"]


def test_shallow_cannot_take_full_weights(tmp_path):
    path = str(tmp_path / "v1.pdparams")
    paddle.save(pvm.MobileNetV1().state_dict(), path)
    with pytest.raises(ValueError, match="shallow=False"):
        pm.build_model("mobilenet_v1", pretrained=path, shallow=True)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        pm.build_model("mobilenet_v2", pretrained=str(tmp_path / "nope.pdparams"))
    bad = tmp_path / "bad.pdparams"
    bad.write_bytes(b"\x00not a pickle at all" * 10)
    with pytest.raises(ValueError, match="cannot read"):
        pm.build_model("mobilenet_v2", pretrained=str(bad))


def test_pretrained_true_offline_fails_at_once(monkeypatch, tmp_path):
    import paddle.utils.download as dl

    monkeypatch.setattr(dl, "WEIGHTS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(RuntimeError, match=r"pretrained='/path/to/mobilenet_v2_x1.0.pdparams'"):
        pm.build_model("mobilenet_v2", pretrained=True)


def test_pretrained_true_without_official_weights():
    with pytest.raises(ValueError, match="no ImageNet weights for mobilenet_v1"):
        pm.build_model("mobilenet_v1", pretrained=True, scale=0.5)
    with pytest.raises(ValueError, match="no ImageNet weights for vgg16_bn"):
        pm.build_model("vgg16_bn", pretrained=True)
