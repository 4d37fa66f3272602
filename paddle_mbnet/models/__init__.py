from .mobilenet_v1 import MobileNetV1
from .mobilenet_v2 import MobileNetV2

__all__ = ["MobileNetV1", "MobileNetV2"]
