"""Export to a Paddle inference model (``paddle.jit.save``) and run it with ``paddle.inference`` or, optionally,
OpenVINO or ONNX Runtime.

Exported graphs always use paddle's own depthwise kernel (our custom operator
runs in dynamic mode only), so the inference model needs nothing from this
project to load. OpenVINO reads paddle models in the legacy program format
(``.pdmodel``) only, so ``export(..., legacy=True)`` writes that format; ONNX Runtime reads the ``.onnx`` file
that ``to_onnx`` converts from the paddle export with paddle2onnx. ``export_for(engine, ...)`` writes what an
engine reads.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import tempfile

import numpy as np
import paddle

from .errors import ArgumentError, CheckpointError, NotInstalledError
from .onnx_graph import simplify_head


def prepare_folder(prefix: str) -> None:
    """Create the folder of an export prefix, or fail in one line when it cannot be."""
    folder = os.path.dirname(os.path.abspath(prefix))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CheckpointError(f"cannot export into {folder!r}: it is a file; pass a directory with --out")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create {folder!r} ({e.strerror or e}); pass another directory with --out") \
            from None


ENGINES = {"paddle": "Paddle Inference", "openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}  # name: report name
ONNX_OPSET = 13  # Clip (ReLU6) with min/max as inputs and every other operator the two networks use


def export(model, prefix: str, image_size: int, legacy: bool = False) -> str:
    """Save ``model`` for inference with input [N, 3, image_size, image_size]; returns the prefix. ``legacy``
    writes the pre-PIR program format (.pdmodel), the one OpenVINO reads."""
    model.eval()
    prepare_folder(prefix)
    spec = [paddle.static.InputSpec([None, 3, image_size, image_size], "float32", name="x")]
    if legacy:
        with paddle.pir_utils.OldIrGuard():
            paddle.jit.save(model, prefix, input_spec=spec)
    else:
        paddle.jit.save(model, prefix, input_spec=spec)
    # the other format's program would pair with these weights, and an ONNX file holds the weights before them
    for stale in (prefix + (".json" if legacy else ".pdmodel"), prefix + ".onnx"):
        if os.path.isfile(stale):
            os.remove(stale)
    return prefix


def check_engine_name(engine: str) -> None:
    """Refuse a name that is not one of ENGINES, in one line."""
    if engine not in ENGINES:
        raise ArgumentError(f"unknown inference engine {engine!r}; choose one of {', '.join(ENGINES)}")


def check_engine(engine: str) -> None:
    """Refuse an unknown engine or one whose optional packages (to export and to run) are missing, in one line."""
    check_engine_name(engine)
    if engine == "openvino":
        OpenVinoModel.check_installed()
    if engine == "onnxruntime":
        OnnxRuntimeModel.check_installed()
        _optional_module("paddle2onnx", "the onnxruntime engine's export needs paddle2onnx: pip install paddle2onnx "
                         "(or use the paddle engine)")


def export_for(engine: str, model, prefix: str, image_size: int) -> str:
    """``export`` in the format ``engine`` reads (one of ENGINES), its optional packages checked first; returns
    the prefix ``create_engine(prefix, engine)`` takes."""
    check_engine(engine)
    export(model, prefix, image_size, legacy=engine == "openvino")
    if engine == "onnxruntime":
        to_onnx(prefix)
    return prefix


def to_onnx(prefix: str) -> str:
    """Convert the paddle export at ``prefix`` to ``prefix.onnx`` with paddle2onnx (PaddleClas's ONNX route) and
    rewrite its classifier head into the operators torch.onnx.export writes (``onnx_graph.simplify_head``);
    returns that path.
    paddle2onnx's own log (C++ and Python, several lines per model) is shown only if it fails."""
    import paddle2onnx

    path, model_file = prefix + ".onnx", _model_file(prefix)
    autoinstall = os.environ.get(_POLYGRAPHY_AUTOINSTALL)
    try:
        with _output_shown_on_failure():
            paddle2onnx.export(model_file, prefix + ".pdiparams", path, opset_version=ONNX_OPSET,
                               enable_onnx_checker=True)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # paddle2onnx ends some failures with sys.exit(-1) rather than an exception
        raise CheckpointError(f"paddle2onnx could not convert {model_file} ({type(error).__name__}: {error}; its "
                              "log is above); export for another engine (--engine paddle or openvino)") from error
    finally:
        # paddle2onnx switches on Polygraphy's pip auto-install for the whole process: put the setting back
        if autoinstall is None:
            os.environ.pop(_POLYGRAPHY_AUTOINSTALL, None)
        else:
            os.environ[_POLYGRAPHY_AUTOINSTALL] = autoinstall
    if not os.path.isfile(path):  # some conversion errors are only logged
        raise CheckpointError(f"paddle2onnx wrote no {path}; export for another engine (--engine paddle or openvino)")
    simplify_head(path)
    return path


_POLYGRAPHY_AUTOINSTALL = "POLYGRAPHY_AUTOINSTALL_DEPS"


@contextlib.contextmanager
def _output_shown_on_failure():
    """Hold back what the block prints, through Python's sys.stdout / sys.stderr and through file descriptors 1
    and 2 (compiled code), and write it to stderr only if the block raises. Written here because
    contextlib.redirect_stdout alone does not reach the output of compiled code."""
    import io
    import sys

    python_text, saved = io.StringIO(), {}
    with tempfile.TemporaryFile() as native:
        try:
            for fd in (1, 2):
                _flush_std_streams()
                try:
                    saved[fd] = os.dup(fd)
                except OSError:  # a closed descriptor: nothing to hold back there
                    continue
                os.dup2(native.fileno(), fd)
            with contextlib.redirect_stdout(python_text), contextlib.redirect_stderr(python_text):
                yield
        except BaseException:
            _restore_descriptors(saved)
            native.seek(0)
            if sys.stderr is not None:
                sys.stderr.write(native.read().decode(errors="replace") + python_text.getvalue())
                sys.stderr.flush()
            raise
        finally:
            _restore_descriptors(saved)


def _flush_std_streams():
    import sys

    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


def _restore_descriptors(saved: dict) -> None:
    """Point each descriptor back at its saved copy and close the copy; empties ``saved``."""
    _flush_std_streams()
    while saved:
        fd, copy = saved.popitem()
        os.dup2(copy, fd)
        os.close(copy)


def _optional_module(name: str, missing: str):
    """The module ``name``, or one line (``missing``) saying how to get it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise NotInstalledError(missing) from None


def _model_file(prefix: str) -> str:
    for ext in (".json", ".pdmodel"):  # PIR programs (paddle >= 3) or the legacy format
        if os.path.isfile(prefix + ext):
            return prefix + ext
    raise CheckpointError(f"no inference model at {prefix}.json or {prefix}.pdmodel; run tools/export.py first")


def create_predictor(prefix: str, threads: int = 1, onednn: bool = True, gpu: bool = False, tensorrt: bool = False,
                     int8_ops=None, ir_optim: bool = True, memory_optim: bool = False, onednn_cache: int = 0,
                     optimized_dir: str = ""):
    """A ``paddle.inference`` predictor: oneDNN on CPU, optionally TensorRT on GPU. ``int8_ops`` (operator types)
    runs a quantized model's convolutions with oneDNN's int8 kernels (see ``paddle_mbnet.quantize``).
    ``ir_optim=False`` skips the graph passes (conv + BatchNorm + activation fusion among them).
    ``memory_optim`` lets tensors share buffers (``enable_memory_optim``; legacy format only); ``onednn_cache`` > 0
    bounds oneDNN's cache of compiled kernels to that many input shapes (0: paddle's default). Both are levers
    tools/bench_deploy.py measures; the defaults are paddle's. ``optimized_dir`` saves the program the passes
    produce there (see ``optimized_op_types``)."""
    from paddle import inference

    if onednn_cache < 0:
        raise ArgumentError(f"onednn_cache must be >= 0 (0: paddle's default), got {onednn_cache}")
    if onednn_cache and (gpu or not (onednn or int8_ops)):
        raise ArgumentError(f"onednn_cache={onednn_cache} bounds oneDNN's kernel cache, which runs on the CPU with "
                            "oneDNN only: leave it 0 with gpu=True, or with onednn=False and no int8_ops")
    model_file = _model_file(prefix)
    if memory_optim and model_file.endswith(".json"):  # paddle 3.3's buffer-sharing pass fails on PIR programs
        raise ArgumentError("memory_optim runs on the legacy program format only: export with legacy=True "
                            "(tools/export.py --engine openvino) or leave memory_optim off")
    config = inference.Config(model_file, prefix + ".pdiparams")
    if gpu:
        config.enable_use_gpu(256, 0)
        if tensorrt:
            config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=64, min_subgraph_size=3,
                                          precision_mode=inference.PrecisionType.Float32)
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads)
        if onednn or int8_ops:
            config.enable_mkldnn()
        else:  # paddle 3 turns oneDNN on by default: off has to be said
            config.disable_mkldnn()
        if int8_ops:
            config.enable_mkldnn_int8(set(int8_ops))
        if onednn_cache > 0:
            config.set_mkldnn_cache_capacity(onednn_cache)
    if memory_optim:
        config.enable_memory_optim()
    config.disable_glog_info()
    config.switch_ir_optim(ir_optim)
    if optimized_dir:
        config.set_optim_cache_dir(optimized_dir)
        config.enable_save_optim_model(True)
    predictor = inference.create_predictor(config)
    restore_process_threads()
    return predictor


def optimized_op_types(prefix: str) -> collections.Counter:
    """{operator type: count} of the program the CPU predictor runs after its IR passes, read back from the
    optimized model Paddle Inference saves; feeds, fetches and parameters are not counted. It shows whether
    conv + BatchNorm + activation fusion applied (``fused_conv2d`` and no ``batch_norm`` or ``relu``)."""
    with tempfile.TemporaryDirectory(prefix="mbnet_optimized_") as folder:
        create_predictor(prefix, optimized_dir=folder)
        pir_program = os.path.join(folder, "_optimized.json")
        if os.path.isfile(pir_program):
            # Read as JSON: paddle's own loader (deserialize_pir_program) refuses the onednn_op dialect it holds.
            with open(pir_program) as f:
                ops = json.load(f)["program"]["regions"][0]["blocks"][0]["ops"]
            names = [op["#"].rsplit(".", 1)[-1] for op in ops if op["#"] != "p"]  # "p": a parameter
        else:
            from paddle.base.proto import framework_pb2

            program = framework_pb2.ProgramDesc()
            with open(os.path.join(folder, "_optimized.pdmodel"), "rb") as f:
                program.ParseFromString(f.read())
            names = [op.type for op in program.blocks[0].ops]
    return collections.Counter(name for name in names if name not in ("data", "feed", "fetch"))


def restore_process_threads() -> None:
    """Paddle Inference sets the process's MKL and OpenMP thread count to its own when a predictor is created and
    to 1 after every run (analysis_predictor.cc, SetNumThreads): put back the count the process runs with
    (OMP_NUM_THREADS, which the tools set), so eager code and training after a predictor keep their threads."""
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if wanted.isdigit() and int(wanted) > 0:
        paddle.base.core.set_num_threads(int(wanted))


def run_predictor(predictor, x: np.ndarray) -> np.ndarray:
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(np.ascontiguousarray(x, dtype="float32"))
    predictor.run()
    restore_process_threads()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


class OpenVinoModel:
    """An exported model compiled by OpenVINO for the CPU, called like ``run_predictor``: ndarray in, ndarray out.

    Compiled once per input shape with that shape fixed (static shapes are what OpenVINO's CPU plugin plans
    its kernels for), in float32 unless ``precision`` says otherwise: on CPUs with AMX or AVX-512 BF16 OpenVINO
    would otherwise compute in bfloat16, which no longer matches the trained model to float32 accuracy."""

    def __init__(self, prefix: str, threads: int = 1, precision: str = "f32"):
        openvino = self.check_installed()
        path = prefix + ".pdmodel"
        if not os.path.isfile(path):
            raise CheckpointError(f"OpenVINO reads the legacy program format and {path} does not exist; export with "
                                  "--engine openvino (deploy.export(..., legacy=True))")
        self.core = openvino.Core()
        self.model_path, self.compiled = path, {}
        self.config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_PRECISION_HINT": precision}

    @staticmethod
    def check_installed():
        """The openvino module, or one line saying how to get it."""
        return _optional_module("openvino", "the openvino engine needs OpenVINO: pip install openvino (or use the "
                                "paddle engine)")

    def _request(self, shape):
        if shape not in self.compiled:
            model = self.core.read_model(self.model_path)
            model.reshape(list(shape))
            self.compiled[shape] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self.compiled[shape]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        request = self._request(tuple(x.shape))
        request.infer(np.ascontiguousarray(x, dtype="float32"), share_inputs=True)
        return request.get_output_tensor(0).data.copy()


def ort_session_options(threads: int):
    """ONNX Runtime's session options of the deploy path (and of tools/bench_deploy.py's peer): ``threads``
    intra-op threads, one inter-op thread, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxRuntimeModel:
    """The ``to_onnx`` file of an export run by ONNX Runtime on the CPU, called like ``run_predictor``. One
    session serves every batch size (the export's batch dimension is dynamic); ``threads`` intra-op threads and
    one inter-op thread, all graph optimisations (conv + BatchNorm folding, conv + activation fusion)."""

    def __init__(self, prefix: str, threads: int = 1):
        ort = self.check_installed()
        path = prefix + ".onnx"
        if not os.path.isfile(path):
            raise CheckpointError(f"ONNX Runtime reads an ONNX file and {path} does not exist; export with "
                                  "--engine onnxruntime (deploy.export_for('onnxruntime', ...))")
        self.session = ort.InferenceSession(path, ort_session_options(threads), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @staticmethod
    def check_installed():
        """The onnxruntime module, or one line saying how to get it."""
        return _optional_module("onnxruntime", "the onnxruntime engine needs ONNX Runtime: pip install onnxruntime "
                                "paddle2onnx (or use the paddle engine)")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype="float32")})[0]


def ort_optimized_op_types(onnx_path: str) -> collections.Counter:
    """{operator type: count} of the graph ONNX Runtime runs for ``onnx_path`` after its graph passes (the deploy
    path's session options), read back from the optimized model it saves; a fused convolution counts as
    ``Conv(activation)`` (NCHWc-blocked, on CPUs with AVX2 or AVX-512) or ``FusedConv(activation)``. It shows
    whether conv + BatchNorm + activation fusion applied, as ``optimized_op_types`` does for Paddle Inference."""
    ort = OnnxRuntimeModel.check_installed()
    import onnx  # paddle2onnx's own dependency, so present wherever the onnxruntime engine can export

    with tempfile.TemporaryDirectory(prefix="mbnet_ort_optimized_") as folder:
        options = ort_session_options(1)
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        options.log_severity_level = 3  # not the warning that the saved graph suits this CPU only: it is read here
        ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(options.optimized_model_filepath).graph.node
    counts = collections.Counter()
    for node in nodes:
        activation = [attribute.s.decode() for attribute in node.attribute if attribute.name == "activation"]
        counts[node.op_type + "".join(f"({name})" for name in activation)] += 1
    return counts


def create_engine(prefix: str, engine: str = "paddle", threads: int = 1, **paddle_options):
    """A callable ndarray -> ndarray that runs the exported model at ``prefix`` with ``engine`` (one of ENGINES);
    ``paddle_options`` go to ``create_predictor``."""
    if engine == "openvino":
        return OpenVinoModel(prefix, threads=threads)
    if engine == "onnxruntime":
        return OnnxRuntimeModel(prefix, threads=threads)
    check_engine_name(engine)
    predictor = create_predictor(prefix, threads=threads, **paddle_options)
    return lambda x: run_predictor(predictor, x)
