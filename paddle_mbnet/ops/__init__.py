"""Depthwise convolution implementations (the fast CPU kernel comes with issue #4)."""


def custom_depthwise_available(required: bool = False) -> bool:
    if required:
        raise RuntimeError("depthwise='custom' needs the C++ depthwise operator, which is not built yet; "
                           "use depthwise='paddle' or 'auto'")
    return False


def depthwise_conv2d(x, weight, stride=1, padding=1):
    raise RuntimeError("the custom depthwise operator is not available; use depthwise='paddle'")
