"""One registry for our MobileNets and the paddle.vision baselines.

``build_model(name, pretrained=False, **kwargs)`` builds any registered model;
``pretrained`` is ``True`` (Paddle's official ImageNet weights, downloaded) or
the path of a ``.pdparams`` file saved from the paddle.vision model of the same
name and configuration (or from our own model, or a tools/train.py checkpoint).
"""
from __future__ import annotations

import functools
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

import paddle
import paddle.vision.models as pvm
from paddle.vision.models import mobilenetv1 as _pv_mbv1
from paddle.vision.models import mobilenetv2 as _pv_mbv2
from paddle.vision.models import resnet as _pv_resnet
from paddle.vision.models import vgg as _pv_vgg

from ..errors import ArgumentError, CheckpointError
from .layers import check_batchnorm, check_depthwise, check_input, check_layout, check_pointwise
from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2


@dataclass
class ModelEntry:
    name: str
    fn: Callable
    reference: Callable  # the paddle.vision constructor whose state_dict layout pretrained files have
    urls: dict = field(default_factory=dict)
    url_key: str = "{name}"  # formatted with name and the model's kwargs
    # the project's MobileNets: they take scale (width multiplier), small_input and the CPU kernel choices
    mobilenet_options: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name, fn, reference=None, urls=None, url_key="{name}", mobilenet_options=False):
    if name in _REGISTRY:
        raise ArgumentError(f"model {name!r} is already registered; pick another name")
    _REGISTRY[name] = ModelEntry(name, fn, reference or fn, urls or {}, url_key, mobilenet_options)
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ArgumentError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _REGISTRY[name]


register_model("mobilenet_v1", MobileNetV1, pvm.MobileNetV1, _pv_mbv1.model_urls, "mobilenetv1_{scale}",
               mobilenet_options=True)
register_model("mobilenet_v2", MobileNetV2, pvm.MobileNetV2, _pv_mbv2.model_urls, "mobilenetv2_{scale}",
               mobilenet_options=True)
register_model("mobilenet_v1_conv", functools.partial(MobileNetV1, full_conv=True),  # V1 Table 4
               mobilenet_options=True)
register_model("vgg16", pvm.vgg16, urls=_pv_vgg.model_urls)
register_model("vgg19", pvm.vgg19, urls=_pv_vgg.model_urls)
# VGG with BatchNorm after every conv, as CIFAR comparisons train it: without it VGG cannot take the shared
# recipe's learning rate. Paddle publishes no ImageNet weights for these.
register_model("vgg16_bn", functools.partial(pvm.vgg16, batch_norm=True))
register_model("vgg19_bn", functools.partial(pvm.vgg19, batch_norm=True))
register_model("resnet18", pvm.resnet18, urls=_pv_resnet.model_urls)
register_model("resnet50", pvm.resnet50, urls=_pv_resnet.model_urls)
register_model("resnet152", pvm.resnet152, urls=_pv_resnet.model_urls)

BASELINE_MIN_INPUT = 32  # VGG and ResNet downsample 32x


def build_model(name: str, pretrained=False, **kwargs):
    """Build a registered model; see ``list_models()`` for the names."""
    entry = get_entry(name)
    if entry.mobilenet_options:
        model = entry.fn(**kwargs)
    else:
        if kwargs.pop("small_input", False):
            raise ArgumentError(f"small_input applies to our MobileNets only, not to {name}; set it to False")
        check_depthwise(kwargs.pop("depthwise", "auto"))  # baselines: paddle.vision's own convs
        check_pointwise(kwargs.pop("pointwise", "auto"))
        check_batchnorm(kwargs.pop("batchnorm", "auto"))
        check_layout(kwargs.pop("layout", "auto"))
        model = entry.fn(**kwargs)
        model.min_input_size = BASELINE_MIN_INPUT  # as our MobileNets: every built model states its smallest input
        model.register_forward_pre_hook(
            lambda layer, inputs: check_input(inputs[0], layer.min_input_size, name))
    if pretrained is True:
        load_pretrained(model, download_pretrained(entry, kwargs), entry, kwargs)
    elif pretrained:
        load_pretrained(model, pretrained, entry, kwargs)
    return model


def download_pretrained(entry: ModelEntry, kwargs) -> str:
    key = entry.url_key.format(name=entry.name, scale=float(kwargs.get("scale", 1.0)))
    if key not in entry.urls:
        raise ArgumentError(f"Paddle publishes no ImageNet weights for {entry.name} with {kwargs or 'defaults'}; "
                         f"official ones exist for: {', '.join(sorted(entry.urls)) or 'none'}")
    url, md5 = entry.urls[key]
    from paddle.utils.download import WEIGHTS_HOME, get_weights_path_from_url

    cached = os.path.join(WEIGHTS_HOME, os.path.basename(urlparse(url).path))
    fix = (f"download {url} on a machine with internet and pass pretrained='/path/to/"
           f"{os.path.basename(cached)}' (or copy it to {cached})")
    if os.path.exists(cached):
        return get_weights_path_from_url(url, md5)
    host = urlparse(url).hostname
    try:  # fail at once when offline instead of paddle's download retry loop
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as e:
        raise CheckpointError(f"cannot reach {host} to download the {entry.name} weights ({e}); {fix}") from None
    try:
        return get_weights_path_from_url(url, md5)
    except Exception as e:  # noqa: BLE001 - any download failure gets the same advice
        raise CheckpointError(f"downloading {url} failed ({e}); {fix}") from None


def _read_state(path) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained weights file {path!r} does not exist; pass the path of a .pdparams file")
    try:
        state = paddle.load(path)
    except Exception as e:  # noqa: BLE001
        raise ArgumentError(f"cannot read {path!r} as Paddle weights ({type(e).__name__}: {e}); "
                         f"pass a .pdparams file written by paddle.save(model.state_dict(), ...)") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a tools/train.py checkpoint
    if not isinstance(state, dict) or not state:
        raise ArgumentError(f"{path!r} does not hold a state_dict (got {type(state).__name__})")
    return state


def load_pretrained(model, path, entry: ModelEntry, kwargs) -> None:
    """Load a state_dict of our model or of the paddle.vision model of the same name and configuration.

    paddle.vision's layer names differ from ours but the order and shapes of
    the tensors are the same, so a file in paddle.vision's layout is mapped
    position by position onto our names (shapes checked one by one). A classifier
    of another width (ImageNet's 1000 classes into a 10-class model) is left
    freshly initialised, as timm and PaddleClas do for fine-tuning, with a notice.
    """
    state = _read_state(path)
    own = model.state_dict()
    if set(state) != set(own):
        if not entry.mobilenet_options:
            _raise_mismatch(path, entry.name, state, own)
        ref_kwargs = {k: kwargs[k] for k in ("scale", "with_pool") if k in kwargs}
        ref_keys = list(entry.reference(num_classes=kwargs.get("num_classes", 1000), **ref_kwargs).state_dict())
        if set(state) != set(ref_keys):
            _raise_mismatch(path, entry.name, state, dict.fromkeys(ref_keys))
        if len(ref_keys) != len(own):
            raise ArgumentError(f"{path!r} holds the full paddle.vision {entry.name}, which has {len(ref_keys)} "
                                f"tensors, but this configuration ({kwargs}) has {len(own)}; "
                                f"load it into the paper's network (shallow=False)")
        state = {ours: state[ref] for ours, ref in zip(own, ref_keys)}
    classifier = _classifier_keys(model)
    fresh = []
    for key, value in list(state.items()):
        want, got = list(own[key].shape), list(value.shape)
        if want == got:
            continue
        if key not in classifier:
            raise ArgumentError(f"{path!r} does not fit {entry.name} {kwargs}: {key} has shape {got} in the file "
                                f"but {want} in the model; build the model with the scale the file was saved with")
        fresh.append(f"{key} {got}")
        state[key] = own[key]  # keeps its fresh initialisation (and paddle quiet about a missing key)
    model.set_state_dict(state)
    if fresh:
        print(f"paddle_mbnet: loaded {len(state) - len(fresh)} of {len(own)} tensors from "
              f"{os.path.basename(os.fspath(path))}; "
              f"the classifier starts fresh (the file's {', '.join(fresh)} is for another number of classes)",
              file=sys.stderr)


def _classifier_keys(model) -> set:
    """state_dict names of the model's last Linear layer: the one fine-tuning replaces."""
    linear = [name for name, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)]
    return {f"{linear[-1]}.{p}" for p in ("weight", "bias")} if linear else set()


def _raise_mismatch(path, name, state, expected):
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    raise ArgumentError(f"{path!r} is not a {name} state_dict: {len(missing)} missing keys (e.g. {missing[:3]}), "
                     f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); pass weights saved from {name}")
