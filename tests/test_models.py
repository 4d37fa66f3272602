"""Registry-wide checks plus the papers' structural facts about our MobileNets."""
import numpy as np
import paddle
import paddle.vision.models as pvm
import pytest

import paddle_mbnet as pm
from paddle_mbnet.models.layers import make_divisible
from paddle_mbnet.models.mobilenet_v2 import InvertedResidual


@pytest.mark.parametrize("name", pm.list_models())
def test_every_model_forward_backward(name):
    model = pm.build_model(name, num_classes=10)
    model.train()
    x = paddle.randn([2, 3, 32, 32])
    y = model(x)
    assert y.shape == [2, 10]
    assert np.isfinite(y.numpy()).all()
    paddle.nn.functional.cross_entropy(y, paddle.to_tensor([1, 7])).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    missing = [n for n, p in trainable if p.grad is None]
    assert trainable and not missing, f"parameters without gradient: {missing[:5]}"
    assert all(np.isfinite(p.grad.numpy()).all() for _, p in trainable[:20])


def test_registry_lists_required_models():
    assert {"mobilenet_v1", "mobilenet_v2", "vgg16", "vgg19", "resnet18", "resnet50", "resnet152"} <= set(pm.list_models())


@pytest.mark.parametrize("name,with_bn", [("vgg16", False), ("vgg19_bn", True)])
def test_vgg_batchnorm_variants(name, with_bn):
    model = pm.build_model(name, num_classes=10)
    norms = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.BatchNorm2D)]
    convs = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.Conv2D)]
    assert len(norms) == (len(convs) if with_bn else 0)  # one BatchNorm after every conv


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'mobilenet_v3'.*mobilenet_v1.*vgg16"):
        pm.build_model("mobilenet_v3")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        pm.register_model("mobilenet_v1", pm.MobileNetV1)


@pytest.mark.parametrize("cls,small,expected", [
    (pm.MobileNetV1, False, [2, 1024, 1, 1]),
    (pm.MobileNetV1, True, [2, 1024, 2, 2]),
    (pm.MobileNetV2, False, [2, 1280, 1, 1]),
    (pm.MobileNetV2, True, [2, 1280, 4, 4]),
])
def test_small_input_feature_maps_at_32(cls, small, expected):
    model = cls(num_classes=0, with_pool=False, small_input=small, depthwise="paddle")
    model.eval()
    assert model(paddle.randn([2, 3, 32, 32])).shape == expected


@pytest.mark.parametrize("cls", [pm.MobileNetV1, pm.MobileNetV2])
def test_small_input_logits_and_features(cls):
    model = cls(num_classes=10, small_input=True)
    assert model(paddle.randn([3, 3, 32, 32])).shape == [3, 10]
    assert cls(num_classes=0, small_input=True)(paddle.randn([1, 3, 32, 32])).shape == [1, model.out_channels, 1, 1]


def test_v1_structure_follows_table1():
    model = pm.MobileNetV1(depthwise="paddle")
    convs = [m for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D)]
    assert len(convs) == 1 + 2 * 13
    dw = [m for m in convs if m._groups > 1]
    assert len(dw) == 13 and all(m._groups == m._in_channels for m in dw)
    assert [m._stride[0] for m in dw] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert convs[-1]._out_channels == 1024 and model.classifier.weight.shape == [1024, 1000]
    assert sum(isinstance(m, paddle.nn.ReLU) for m in model.sublayers()) == 27


def test_v1_shallow_removes_five_14x14_blocks():
    deep, shallow = pm.MobileNetV1(), pm.MobileNetV1(shallow=True)
    assert len(deep.features) - len(shallow.features) == 5
    # Table 5: shallow MobileNet 307 M mult-adds, 2.9 M parameters.
    c = pm.complexity(shallow)
    assert abs(c.macs / 1e6 - 307) / 307 < 0.01
    assert round(c.params_conv_fc / 1e6, 1) == 2.9


def test_v2_blocks_follow_table2():
    model = pm.MobileNetV2(depthwise="paddle")
    blocks = [m for m in model.sublayers() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    assert sum(b.use_residual for b in blocks) == 10
    # t = 1 (first block): no expansion conv, so depthwise + projection only.
    assert len(blocks[0].conv) == 2 and all(len(b.conv) == 3 for b in blocks[1:])
    for b in blocks:
        # linear bottleneck: the projection ends with BN, no activation
        assert isinstance(b.conv[-1][-1], paddle.nn.BatchNorm2D) and len(b.conv[-1]) == 2
        # no 1x1 projection shortcut: the only sublayers are those of the main branch
        assert [name for name, _ in b.named_children()] == ["conv"]
        assert sum(isinstance(m, paddle.nn.ReLU6) for m in b.sublayers()) == len(b.conv) - 1
    assert model.classifier[1].weight.shape == [1280, 1000]
    assert isinstance(model.classifier[0], paddle.nn.Dropout)


def test_v2_residual_is_identity():
    block = InvertedResidual(16, 16, 1, 6, {})
    block.eval()
    x = paddle.randn([1, 16, 8, 8])
    np.testing.assert_allclose(block(x).numpy(), (x + block.conv(x)).numpy(), rtol=1e-6)


def test_make_divisible_matches_reference_values():
    assert [make_divisible(v) for v in (32 * 0.35, 16 * 0.5, 24 * 0.75, 1280, 96 * 1.4, 3.0)] == [16, 8, 24, 1280, 136, 8]
    assert make_divisible(27) == 32  # 24 would be more than 10 % below 27


@pytest.mark.parametrize("scale", [0.35, 0.5, 0.75, 1.0, 1.4])
def test_v2_widths_match_paddle_vision(scale):
    ours = [list(v.shape) for v in pm.MobileNetV2(scale=scale).state_dict().values()]
    ref = [list(v.shape) for v in pvm.MobileNetV2(scale=scale).state_dict().values()]
    assert ours == ref


@pytest.mark.parametrize("setting,match", [
    ([[6, 24, 2]], "must be 4 positive integers"),
    ([[6, 24, 2, 3]], "stride 3"),
    ([[6, 0, 2, 2]], r"\[6, 0, 2, 2\]"),
    ([], "empty"),
])
def test_bad_architecture_table_fails_loudly(setting, match):
    with pytest.raises(ValueError, match=match):
        pm.MobileNetV2(setting=setting)
