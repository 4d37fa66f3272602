"""Figures printed in the MobileNet papers, for tests and for tools/compare.py to set ours beside.

MobileNetV1: https://arxiv.org/abs/1704.04861   MobileNetV2: https://arxiv.org/abs/1801.04381
"""

# V1 Table 2: share of mult-adds and parameters per layer type (%). The paper prints 1.19 for
# the full conv's mult-adds, but its column then sums to 99.29; the real share is 1.91.
V1_TABLE2 = {"conv1x1": (94.86, 74.59), "conv_dw": (3.06, 1.06), "conv_full": (1.19, 0.02), "fc": (0.18, 24.33)}

# V1 Table 4: depthwise-separable vs full convolutions (ImageNet top-1 %, M mult-adds, M params).
V1_TABLE4 = {"Conv MobileNet": (71.7, 4866, 29.3), "MobileNet": (70.6, 569, 4.2)}

# V1 Table 6 (width alpha at 224) and Table 7 (resolution at alpha = 1): (M mult-adds, M params).
V1_TABLE6 = {1.0: (569, 4.2), 0.75: (325, 2.6), 0.5: (149, 1.3), 0.25: (41, 0.5)}
V1_TABLE7 = {224: (569, 4.2), 192: (418, 4.2), 160: (290, 4.2), 128: (186, 4.2)}
# Their ImageNet top-1 (%), by alpha (Table 6) and by resolution (Table 7).
V1_TABLE6_TOP1 = {1.0: 70.6, 0.75: 68.4, 0.5: 63.7, 0.25: 50.6}
V1_TABLE7_TOP1 = {224: 70.6, 192: 69.1, 160: 67.2, 128: 64.4}

# V2 Table 4: MobileNetV2 (1.0, 224): M mult-adds, M params.
V2_TABLE4 = (300, 3.4)
