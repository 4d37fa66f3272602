"""Model specs of the comparison: registry names, optionally with a width multiplier (``mobilenet_v1@0.5``)."""
from __future__ import annotations

import math

from ..errors import ArgumentError
from ..models.registry import get_entry

DEFAULT_MODELS = ("vgg16", "vgg19", "resnet50", "resnet152", "mobilenet_v1", "mobilenet_v2")
ALPHA_SWEEP = ("mobilenet_v1@0.75", "mobilenet_v1@0.5", "mobilenet_v1@0.25")


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"mobilenet_v1@0.5"`` -> ``("mobilenet_v1", {"scale": 0.5})``; names are checked against the registry."""
    name, _, scale = spec.partition("@")
    entry = get_entry(name)  # raises with the valid names
    if not scale:
        return name, {}
    if not entry.mobilenet_options:
        raise ArgumentError(f"{spec!r}: a width multiplier (@alpha) applies to our MobileNets only, not to {name}")
    try:
        alpha = float(scale)
    except ValueError:
        raise ArgumentError(f"{spec!r}: the width multiplier after '@' must be a number like 0.5") from None
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ArgumentError(f"{spec!r}: the width multiplier must be a finite number > 0")
    return name, {"scale": alpha}


def parse_specs(text: str) -> list[str]:
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ArgumentError("--models is empty; pass registry names separated by commas, e.g. mobilenet_v1,vgg16")
    if len(set(specs)) != len(specs):
        raise ArgumentError(f"--models names a model twice: {text}")
    for s in specs:
        parse_spec(s)
    return specs


def small_input_for(name: str, image_size: int) -> bool:
    """Our MobileNets use their CIFAR variant (small_input) below 64 px, the papers' network above."""
    return get_entry(name).mobilenet_options and image_size < 64


def build(spec: str, image_size: int, num_classes: int = 10):
    from ..models.registry import build_model

    name, kwargs = parse_spec(spec)
    return build_model(name, num_classes=num_classes, small_input=small_input_for(name, image_size), **kwargs)


def min_input_size(spec: str, input_size: int) -> int:
    """The smallest image ``spec`` takes at the variant ``input_size`` selects (its total stride)."""
    from ..models.registry import BASELINE_MIN_INPUT

    name, kwargs = parse_spec(spec)
    if not get_entry(name).mobilenet_options:  # the value build_model sets, without building a VGG or ResNet-152
        return BASELINE_MIN_INPUT
    return build(spec, input_size).min_input_size


def check_buildable(spec: str) -> None:
    """Build our MobileNets once (cheap) so a width multiplier that leaves no channels fails before any timing."""
    name, kwargs = parse_spec(spec)
    if get_entry(name).mobilenet_options and kwargs:
        build(spec, 224)
