"""Our CPU operators, Paddle custom C++ operators built into one library: a depthwise convolution for NCHW
(depthwise_conv2d.cc) and channels-last NHWC (depthwise_conv2d_nhwc.cc) tensors, the stem's full convolution
from an NCHW image batch to NHWC (stem_conv2d_nhwc.cc), BatchNorm fused with its activation in either layout
(batchnorm_act.cc), and the switch for flushing denormal floats (float_mode.cc).

They are compiled with ``paddle.utils.cpp_extension.load`` on first use and cached
under ``$PADDLE_MBNET_CACHE`` (default ``~/.cache/paddle_mbnet/ops``), keyed by
the sources, the paddle version and the CPU, so later runs only load the .so.
It links the OpenMP runtime paddle itself uses (see ``_openmp_ldflags``).
Forward and backward match ``F.conv2d(groups=C)`` and ``F.batch_norm`` + activation; use them
through the models' ``depthwise`` and ``batchnorm`` keywords ("custom", or "auto" = the op on CPU
when it builds).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import warnings

import paddle

from ...errors import ArgumentError

_SOURCES = [os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
            for name in ("depthwise_conv2d.cc", "depthwise_conv2d_nhwc.cc", "stem_conv2d_nhwc.cc", "batchnorm_act.cc",
                         "float_mode.cc")]
_lock = threading.Lock()
_state: dict = {}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("model name", "flags"))), "")
    except OSError:
        return platform.processor()


def _build_dir() -> str:
    digest = hashlib.sha1(paddle.__version__.encode() + _cpu_model().encode() + sys.version.encode())
    for source in _SOURCES:
        with open(source, "rb") as f:
            digest.update(f.read())
    key = digest.hexdigest()[:12]
    root = os.environ.get("PADDLE_MBNET_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "paddle_mbnet"))
    return os.path.join(root, "ops", f"mbnet_ops_{key}")


@contextlib.contextmanager
def _quiet_build():
    """paddle's ``load`` logs at INFO, warns, and runs a Python child that imports paddle, which warns about
    ccache and about an OMP_NUM_THREADS above 1, and whose setuptools logs "running build" to the inherited
    stderr even when nothing is compiled: silence all of it for the load only. The child's stderr goes to a
    file instead, and on failure its error lines (the compiler's) join the exception."""
    saved = {key: os.environ.get(key) for key in ("PYTHONWARNINGS", "OMP_NUM_THREADS")}
    os.environ["PYTHONWARNINGS"] = "ignore"
    os.environ.pop("OMP_NUM_THREADS", None)
    logging.disable(logging.INFO)
    sys.stderr.flush()
    child_log, saved_stderr = tempfile.TemporaryFile(), os.dup(2)
    os.dup2(child_log.fileno(), 2)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    except Exception as e:
        child_log.seek(0)
        lines = child_log.read().decode(errors="replace").strip().splitlines()
        shown = [line for line in lines if "error" in line.lower()][:3] or lines[-5:]
        raise RuntimeError(f"{e}" + (f"; build log: {' | '.join(shown)}" if shown else "")) from e
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        child_log.close()
        logging.disable(logging.NOTSET)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _openmp_ldflags() -> list:
    """Link the OpenMP runtime paddle already runs (Intel's libiomp5 in its MKL wheels), else GCC's.

    Why: with GCC's libgomp the process has two OpenMP thread pools on the same cores, and each
    pool's threads spin-wait after their parallel regions while the other pool works, which slows
    a training step down markedly (docs/performance.md). libiomp5 provides the GOMP_* entry points
    that GCC's -fopenmp code calls, so the op then shares paddle's pool.
    """
    libs = os.path.join(os.path.dirname(paddle.__file__), "libs")
    if os.path.isfile(os.path.join(libs, "libiomp5.so")):
        return [f"-L{libs}", "-liomp5", f"-Wl,-rpath,{libs}"]
    return ["-fopenmp"]


def _load():
    with _lock:
        if "module" in _state or "error" in _state:
            return _state.get("module")
        try:
            if sys.platform == "win32":
                raise RuntimeError("the project's CPU operators are built with gcc/OpenMP on Linux and macOS only")
            import fcntl  # POSIX only, like the build itself

            from paddle.utils.cpp_extension import load

            build_dir = _build_dir()
            os.makedirs(build_dir, exist_ok=True)
            # Compile a copy inside the cache: paddle's rebuild check hashes the source *path*, so
            # two checkouts sharing the cache would otherwise rebuild the op each time they alternate.
            sources = [os.path.join(build_dir, os.path.basename(source)) for source in _SOURCES]
            for source, copy in zip(_SOURCES, sources):
                if not os.path.isfile(copy):
                    shutil.copyfile(source, copy + ".tmp")
                    os.replace(copy + ".tmp", copy)
            # -march=native is safe because the cache key includes the CPU model.
            # paddle prints "Compiling user custom op" (even when it only loads the cached .so),
            # logs "using custom operator only" and warns about ccache on every load.
            # Two processes using the ops first at once (pytest-xdist workers, DataParallel ranks) would build
            # into the same directory together and one of them fail: the second waits for the first.
            with open(os.path.join(build_dir, ".build.lock"), "w") as lock, _quiet_build():
                fcntl.flock(lock, fcntl.LOCK_EX)
                _state["module"] = load(
                    name="mbnet_ops", sources=sources, build_directory=build_dir,
                    extra_cxx_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=_openmp_ldflags(),
                    verbose=False)
        except Exception as e:  # noqa: BLE001 - any build failure means "fall back"
            _state["error"] = e
        return _state.get("module")


def custom_ops_available(required: bool = False, keyword: str = "depthwise") -> bool:
    """Build (once) and report whether our ops can run; ``required`` raises instead of returning False.

    ``keyword`` names the model keyword that asked, for the messages."""
    if _load() is not None:
        return True
    err = _state["error"]
    if required:
        raise ArgumentError(f"{keyword}='custom' needs the project's C++ operators, which failed to build: {err}. "
                           f"Install a C++ compiler with OpenMP (apt-get install g++) or use {keyword}='paddle'")
    if not _state.get("warned"):
        _state["warned"] = True
        print(f"paddle_mbnet: custom CPU operators unavailable ({type(err).__name__}: {err}); "
              f"depthwise='auto' and batchnorm='auto' use paddle's kernels instead", file=sys.stderr)
    return False


def depthwise_conv2d(x, weight, stride: int = 1, padding: int = 1):
    """Depthwise conv of NCHW float32 ``x`` with ``weight`` [C, 1, k, k] on CPU, with gradients."""
    module = _load()
    if module is None:
        custom_ops_available(required=True)
    return module.mbnet_depthwise_conv2d(x, weight, int(stride), int(padding))


def depthwise_conv2d_nhwc(x, weight, stride: int = 1, padding: int = 1):
    """Depthwise conv of channels-last (NHWC) float32 ``x`` with ``weight`` [C, 1, k, k] on CPU, with gradients."""
    module = _load()
    if module is None:
        custom_ops_available(required=True)
    return module.mbnet_depthwise_conv2d_nhwc(x, weight, int(stride), int(padding))


def stem_conv2d_nhwc(x, weight, stride: int = 1, padding: int = 1):
    """Full conv of an NCHW float32 image batch ``x`` with ``weight`` [Co, Ci, k, k] on CPU, returned NHWC.

    Only the weight gets a gradient, so an ``x`` that needs one (not ``x.stop_gradient``) is refused."""
    module = _load()
    if module is None:
        custom_ops_available(required=True)
    if not x.stop_gradient and paddle.is_grad_enabled():
        raise ArgumentError("stem_conv2d_nhwc gives its input no gradient, and this input needs one: use "
                            "F.conv2d for it (the models do so by themselves)")
    return module.mbnet_stem_conv2d_nhwc(x, weight, int(stride), int(padding))


ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2}  # the op's ``act`` codes


def batchnorm_act(x, weight, bias, mean, variance, epsilon: float, training: bool, act=None,
                  channels_last: bool = False):
    """BatchNorm of NCHW (or, with ``channels_last``, NHWC) float32 ``x`` then ``act`` (None, "relu", "relu6") on
    CPU, with gradients.

    Returns ``(y, mean, variance)``: the statistics it normalised with (the batch's in training, biased
    variance), for the caller to fold into the running ones.
    """
    module = _load()
    if module is None:
        custom_ops_available(required=True, keyword="batchnorm")
    return module.mbnet_batchnorm_act(x, weight, bias, mean, variance, float(epsilon), bool(training),
                                      ACTIVATIONS[act], bool(channels_last))


FLOAT_MODES = {"ieee": 0, "flush": 1, "read": 2}  # the operator's ``mode`` codes
_FLUSH_BITS = 0x8000 | 0x0040  # MXCSR's flush-to-zero and denormals-are-zero bits, both set when flushing


def built() -> bool:
    """Whether the operator library is loaded in this process (without building it)."""
    return _state.get("module") is not None


def buildable() -> bool:
    """Build (once) and report whether the library loads, without the notice of ``custom_ops_available``."""
    return _load() is not None


def float_mode(mode: str) -> tuple[bool, bool, int]:
    """Set ("ieee", "flush") or only read ("read") how this thread and paddle's OpenMP pool treat denormal floats.

    Returns (flushing before, flushing after, pool threads whose bits differ from this thread's afterwards)."""
    module = _load()
    if module is None:
        raise RuntimeError(f"the project's CPU operators did not build: {_state['error']}")
    # the operator needs an input tensor; it reads none
    before, after, differing = module.mbnet_float_mode(paddle.zeros([1]), FLOAT_MODES[mode]).numpy().tolist()
    return before == _FLUSH_BITS, after == _FLUSH_BITS, int(differing)
