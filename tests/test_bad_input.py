import paddle
import pytest

import paddle_mbnet as pm


@pytest.mark.parametrize("kwargs,match", [
    ({"scale": 0}, "scale"),
    ({"scale": -0.5}, "scale"),
    ({"scale": "1.0"}, "scale"),
    ({"num_classes": -1}, "num_classes"),
    ({"depthwise": "cudnn"}, "depthwise='cudnn'.*'auto'"),
])
@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_bad_constructor_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pm.build_model(name, **kwargs)


def test_scale_too_small_names_the_layer():
    with pytest.raises(ValueError, match="scale=0.01 leaves a 32-channel layer with 0 channels"):
        pm.MobileNetV1(scale=0.01)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("shape,match", [
    ([3, 32, 32], "4-D NCHW"),
    ([1, 1, 32, 32], "3 input channels"),
    ([1, 32, 32, 3], "3 input channels"),
    ([1, 3, 16, 16], "smaller than the network's total stride"),
])
def test_bad_input_tensors(name, shape, match):
    model = pm.build_model(name, num_classes=10)
    with pytest.raises(ValueError, match=match):
        model(paddle.randn(shape))


def test_small_input_is_suggested_and_lowers_the_minimum():
    with pytest.raises(ValueError, match="small_input=True"):
        pm.MobileNetV1()(paddle.randn([1, 3, 16, 16]))
    assert pm.MobileNetV1(small_input=True, num_classes=10)(paddle.randn([1, 3, 16, 16])).shape == [1, 10]
    with pytest.raises(ValueError, match="total stride \\(8\\)"):
        pm.MobileNetV2(small_input=True)(paddle.randn([1, 3, 4, 4]))


def test_small_input_refused_for_baselines():
    with pytest.raises(ValueError, match="small_input applies to our MobileNets only"):
        pm.build_model("vgg16", small_input=True)
