"""The speed + accuracy comparison behind ``tools/compare.py``.

Per model: params and multiply-adds (``complexity``), inference latency at batch 1
and throughput at a larger batch for the dynamic graph and for the exported model
(``paddle.jit.save`` + ``paddle.inference``: oneDNN on CPU, TensorRT on GPU when
paddle was built with it; or OpenVINO on CPU), training throughput at the training input size, and
the accuracies and epoch time of ``tools/train.py`` runs. Timing follows timm's
benchmark.py: warm-up, synchronize before every clock read, medians over repeats;
models are interleaved within each repeat so that drift (thermal, other load) hits
all of them alike.

Model specs are registry names, optionally with a width multiplier:
``mobilenet_v1@0.5`` is MobileNetV1 with alpha = 0.5 (V1 Table 6).
"""
# The comparison in four parts; this module gathers their public names for tools/compare.py and the notebook.
from .report import (  # noqa: F401
                     COLUMNS,
                     PERCENT_KEYS,
                     RECORD_KEYS,
                     add_accuracy_context,
                     markdown_table,
                     paper_tables,
                     pareto,
                     record_with_all_keys,
                     write_outputs,
                     write_plots,
)
from .runs import ensure_run, plan_run, read_run, started_budget, train_config  # noqa: F401
from .specs import (  # noqa: F401
                     ALPHA_SWEEP,
                     DEFAULT_MODELS,
                     build,
                     check_buildable,
                     min_input_size,
                     parse_spec,
                     parse_specs,
                     small_input_for,
)
from .speed import measure_speed, steps_for_minutes  # noqa: F401
