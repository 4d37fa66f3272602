"""The deploy path's engines: Paddle Inference, and OpenVINO and ONNX Runtime where installed, each checked against
the dynamic model."""
import os

import numpy as np
import paddle
import pytest

from paddle_mbnet import build_model, deploy
from paddle_mbnet.errors import ArgumentError, CheckpointError


def _exported(tmp_path, name, legacy):
    paddle.seed(0)
    model = build_model(name, num_classes=10, small_input=True).eval()
    images = np.random.RandomState(1).randn(2, 3, 32, 32).astype("float32")
    want = model(paddle.to_tensor(images)).numpy()
    return deploy.export(model, str(tmp_path / name / "inference"), 32, legacy=legacy), images, want


def _skip_unless_installed(engine):
    if engine == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is an optional engine (pip install openvino)")
    if engine == "onnxruntime":
        for module in ("onnxruntime", "paddle2onnx"):
            pytest.importorskip(module, reason="ONNX Runtime is an optional engine "
                                               "(pip install onnxruntime paddle2onnx)")


def _relative_diff(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("engine, legacy", [("paddle", False), ("paddle", True), ("openvino", True),
                                           ("onnxruntime", False), ("onnxruntime", True)])
def test_every_engine_matches_the_dynamic_model_at_batch_1_and_2(tmp_path, name, engine, legacy):
    _skip_unless_installed(engine)
    prefix, images, want = _exported(tmp_path, name, legacy)
    if engine == "onnxruntime":
        deploy.to_onnx(prefix)  # paddle2onnx reads either program format
    run = deploy.create_engine(prefix, engine, threads=1)
    assert _relative_diff(run(images), want) < 1e-4
    assert _relative_diff(run(images[:1]), want[:1]) < 1e-4  # another batch size: OpenVINO compiles it anew
    assert _relative_diff(run(images), want) < 1e-4  # and the first shape still answers


def test_paddle_inference_without_ir_passes_matches_too(tmp_path):
    prefix, images, want = _exported(tmp_path, "mobilenet_v1", legacy=False)
    assert _relative_diff(deploy.create_engine(prefix, "paddle", ir_optim=False)(images), want) < 1e-4


@pytest.mark.parametrize("legacy, options, call", [(True, {"memory_optim": True}, ("enable_memory_optim",)),
                                                   (False, {"onednn_cache": 1}, ("set_mkldnn_cache_capacity", 1))])
def test_paddle_inference_levers_reach_the_config_and_match_too(tmp_path, monkeypatch, legacy, options, call):
    from paddle import inference

    calls = []

    class RecordingConfig(inference.Config):  # the predictor's config, with the lever's call recorded
        def enable_memory_optim(self, *args):
            calls.append(("enable_memory_optim", *args))
            return super().enable_memory_optim(*args)

        def set_mkldnn_cache_capacity(self, capacity):
            calls.append(("set_mkldnn_cache_capacity", capacity))
            return super().set_mkldnn_cache_capacity(capacity)

    monkeypatch.setattr(inference, "Config", RecordingConfig)
    prefix, images, want = _exported(tmp_path, "mobilenet_v2", legacy=legacy)
    run = deploy.create_engine(prefix, "paddle", **options)
    assert calls == [call]
    assert _relative_diff(run(images), want) < 1e-4
    assert _relative_diff(run(images[:1]), want[:1]) < 1e-4  # a second shape, past a one-shape kernel cache
    assert _relative_diff(run(images), want) < 1e-4


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_every_conv_runs_fused_with_its_batchnorm_and_activation_in_paddle_inference(tmp_path, name, legacy):
    """The IR passes fold each BatchNorm into its conv and fuse the activation: no batch_norm, relu or relu6 op
    remains, and one fused_conv2d per conv of the network (27 in V1, 52 in V2)."""
    prefix, _, _ = _exported(tmp_path, name, legacy)
    ops = deploy.optimized_op_types(prefix)
    convs = sum(isinstance(layer, paddle.nn.Conv2D) for layer in build_model(name, num_classes=10).sublayers())
    assert ops["fused_conv2d"] == convs, ops
    assert not {"batch_norm", "batch_norm_", "relu", "relu6", "conv2d", "depthwise_conv2d"} & set(ops), ops
    if legacy and name == "mobilenet_v1":  # no residual adds: the convs, the pool and the classifier, nothing else
        assert set(ops) == {"fused_conv2d", "pool2d", "flatten_contiguous_range", "fc"}, ops


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_every_conv_runs_fused_with_its_batchnorm_and_activation_in_onnx_runtime(tmp_path, name):
    """ONNX Runtime's graph passes fold each BatchNorm into its conv and fuse the activation (and V2's residual
    add): one convolution per conv of the network, and no BatchNormalization, Relu, Clip or Add left."""
    _skip_unless_installed("onnxruntime")
    prefix, _, _ = _exported(tmp_path, name, legacy=False)
    ops = deploy.ort_optimized_op_types(deploy.to_onnx(prefix))
    convs = sum(isinstance(layer, paddle.nn.Conv2D) for layer in build_model(name, num_classes=10).sublayers())
    # Conv: NCHWc-blocked (CPUs with AVX2 or AVX-512); FusedConv: the plain layout elsewhere
    assert sum(count for op, count in ops.items() if op.split("(")[0] in ("Conv", "FusedConv")) == convs, ops
    assert not {"BatchNormalization", "Relu", "Clip", "Add"} & set(ops), ops
    if name == "mobilenet_v1":
        assert sum(count for op, count in ops.items() if op.endswith("(Relu)")) == convs, ops
    # the classifier head as torch.onnx.export writes it (onnx_graph.simplify_head): no shape computation
    assert ops["Flatten"] == 1 and ops["Gemm"] == 1, ops
    assert not {"Shape", "Slice", "Concat", "Reshape", "MatMul"} & set(ops), ops


def test_predictor_settings_that_cannot_apply_are_refused_with_one_line(tmp_path):
    prefix, _, _ = _exported(tmp_path, "mobilenet_v1", legacy=False)
    with pytest.raises(ArgumentError, match="memory_optim runs on the legacy program format only: export with"):
        deploy.create_predictor(prefix, memory_optim=True)
    with pytest.raises(ArgumentError, match="onednn_cache must be >= 0"):
        deploy.create_predictor(prefix, onednn_cache=-1)
    for no_onednn in ({"onednn": False}, {"gpu": True}):  # a cache setting that would be silently ignored
        with pytest.raises(ArgumentError, match="onednn_cache=2 bounds oneDNN's kernel cache, which runs on the CPU"):
            deploy.create_predictor(prefix, onednn_cache=2, **no_onednn)


def test_openvino_needs_the_legacy_format_and_says_so(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is an optional engine (pip install openvino)")
    prefix, _, _ = _exported(tmp_path, "mobilenet_v1", legacy=False)
    with pytest.raises(CheckpointError, match="legacy program format .* export with --engine openvino"):
        deploy.create_engine(prefix, "openvino")


def test_onnxruntime_needs_the_onnx_file_and_says_so(tmp_path):
    _skip_unless_installed("onnxruntime")
    prefix, _, _ = _exported(tmp_path, "mobilenet_v1", legacy=False)
    with pytest.raises(CheckpointError, match="inference.onnx does not exist; export with --engine onnxruntime"):
        deploy.create_engine(prefix, "onnxruntime")


def test_export_for_onnxruntime_writes_a_file_that_holds_the_weights(tmp_path):
    """The ONNX file is self-contained (weights inside), and a later paddle export into the same prefix removes it:
    it would hold the weights of the export before."""
    _skip_unless_installed("onnxruntime")
    paddle.seed(0)
    model = build_model("mobilenet_v2", scale=0.5, num_classes=10, small_input=True).eval()
    images = np.random.RandomState(1).randn(3, 3, 32, 32).astype("float32")
    prefix = deploy.export_for("onnxruntime", model, str(tmp_path / "m" / "inference"), 32)
    os.remove(prefix + ".pdiparams")
    want = model(paddle.to_tensor(images)).numpy()
    assert _relative_diff(deploy.create_engine(prefix, "onnxruntime")(images), want) < 1e-4
    deploy.export_for("paddle", model, prefix, 32)
    assert os.path.isfile(prefix + ".json") and not os.path.exists(prefix + ".onnx")


def test_an_onnx_conversion_prints_nothing_and_leaves_the_environment_as_it_was(tmp_path, monkeypatch, capfd):
    """paddle2onnx's log is held back on success, and its switch for Polygraphy's pip auto-install undone."""
    _skip_unless_installed("onnxruntime")
    prefix, _, _ = _exported(tmp_path, "mobilenet_v1", legacy=False)
    monkeypatch.delenv("POLYGRAPHY_AUTOINSTALL_DEPS", raising=False)
    capfd.readouterr()
    deploy.to_onnx(prefix)
    printed = capfd.readouterr()
    assert (printed.out, printed.err) == ("", "")
    assert "POLYGRAPHY_AUTOINSTALL_DEPS" not in os.environ and os.path.isfile(prefix + ".onnx")


def test_a_failed_onnx_conversion_is_one_line_after_paddle2onnx_log(tmp_path, monkeypatch, capfd):
    _skip_unless_installed("onnxruntime")
    import paddle2onnx

    prefix, _, _ = _exported(tmp_path, "mobilenet_v1", legacy=False)

    def failing(*args, **kwargs):  # what paddle2onnx does on some failures: log, then sys.exit(-1)
        print("converter: unsupported operator")
        os.write(2, b"native: giving up\n")
        raise SystemExit(-1)

    monkeypatch.setattr(paddle2onnx, "export", failing)
    with pytest.raises(CheckpointError, match=r"paddle2onnx could not convert \S+inference.json \(SystemExit: -1; "
                                              r"its log is above\); export for another engine"):
        deploy.to_onnx(prefix)
    shown = capfd.readouterr().err
    assert "converter: unsupported operator" in shown and "native: giving up" in shown
    assert not os.path.exists(prefix + ".onnx")


def test_unknown_engine_is_refused(tmp_path):
    with pytest.raises(ArgumentError, match="unknown inference engine 'onnx'; choose one of paddle, openvino, "
                                            "onnxruntime"):
        deploy.create_engine(str(tmp_path / "x"), "onnx")
    with pytest.raises(ArgumentError, match="unknown inference engine 'tvm'"):
        deploy.export_for("tvm", build_model("mobilenet_v1", scale=0.25), str(tmp_path / "y"), 32)
    assert not os.path.exists(tmp_path / "y.json")  # refused before anything was written


@pytest.mark.parametrize("tool", ["export.py", "compare.py"])
def test_the_tools_offer_exactly_the_engines_deploy_knows(tool):
    """The tools list the choices themselves (their --help then needs no paddle import); this keeps them in step."""
    import re

    from helpers import run_tool

    usage = run_tool(tool, "--help").stdout
    choices = re.search(r"--engine \{([a-z,]+)\}", usage)
    assert choices and tuple(choices.group(1).split(",")) == tuple(deploy.ENGINES), usage


@pytest.mark.parametrize("engine, interleave", [("openvino", True), ("openvino", False), ("onnxruntime", True)])
def test_compare_times_the_chosen_engine(tmp_path, engine, interleave):
    _skip_unless_installed(engine)
    from paddle_mbnet.analysis.speed import measure_speed

    records = measure_speed(["mobilenet_v1@0.25"], input_size=32, batch_size=2, train_batch=0, repeats=1, warmup=1,
                            engine=engine, log=lambda _: None, interleave=interleave)
    record = records["mobilenet_v1@0.25"]
    assert record["engine"] == engine
    assert record["engine_latency_ms_p50"] > 0 and record["engine_throughput_ips"] > 0


def test_a_missing_openvino_is_one_line_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # what an absent package looks like
    with pytest.raises(ArgumentError, match="needs OpenVINO: pip install openvino"):
        deploy.create_engine(str(tmp_path / "x"), "openvino")


@pytest.mark.parametrize("missing, message", [
    ("onnxruntime", "needs ONNX Runtime: pip install onnxruntime paddle2onnx"),
    ("paddle2onnx", "export needs paddle2onnx: pip install paddle2onnx")])
def test_a_missing_onnx_package_is_one_line_naming_the_install(monkeypatch, tmp_path, missing, message):
    """Checked before the export writes anything."""
    if missing == "paddle2onnx":
        _skip_unless_installed("onnxruntime")  # the runtime is checked first
    monkeypatch.setitem(__import__("sys").modules, missing, None)
    with pytest.raises(ArgumentError, match=message):
        deploy.export_for("onnxruntime", build_model("mobilenet_v1", scale=0.25), str(tmp_path / "m"), 32)
    assert not os.path.exists(tmp_path / "m.json")


def test_onednn_off_is_really_off(tmp_path, monkeypatch):
    from paddle import inference

    prefix, images, want = _exported(tmp_path, "mobilenet_v1", legacy=False)
    built, original = [], inference.create_predictor
    monkeypatch.setattr(inference, "create_predictor", lambda config: built.append(config.mkldnn_enabled())
                        or original(config))  # watch the config each predictor is built from
    plain, onednn = deploy.create_engine(prefix, "paddle", onednn=False), deploy.create_engine(prefix, "paddle")
    assert built == [False, True]
    assert _relative_diff(plain(images), want) < 1e-4 and _relative_diff(onednn(images), want) < 1e-4


def test_exporting_one_format_removes_the_other(tmp_path):
    """Both formats share the weights file: a program of the other format left beside it would pair with them."""
    prefix, _, _ = _exported(tmp_path, "mobilenet_v1", legacy=False)
    model = build_model("mobilenet_v1", num_classes=10, small_input=True)
    deploy.export(model, prefix, 32, legacy=True)
    assert os.path.isfile(prefix + ".pdmodel") and not os.path.exists(prefix + ".json")
    deploy.export(model, prefix, 32)
    assert os.path.isfile(prefix + ".json") and not os.path.exists(prefix + ".pdmodel")


def test_the_deploy_path_gives_the_process_its_threads_back(tmp_path, monkeypatch):
    """Paddle Inference leaves MKL and OpenMP at 1 thread after a run; the deploy path restores OMP_NUM_THREADS."""
    model = build_model("mobilenet_v1", scale=0.25, num_classes=10, small_input=True)
    model.eval()
    predictor = deploy.create_predictor(deploy.export(model, str(tmp_path / "m"), 32), threads=1)
    calls = []
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(paddle.base.core, "set_num_threads", calls.append)
    deploy.run_predictor(predictor, np.zeros([1, 3, 32, 32], "float32"))
    assert calls == [3]
    monkeypatch.delenv("OMP_NUM_THREADS")  # unknown: paddle's own setting stays
    deploy.run_predictor(predictor, np.zeros([1, 3, 32, 32], "float32"))
    assert calls == [3]
