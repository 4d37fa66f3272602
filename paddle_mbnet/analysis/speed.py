"""The comparison's timings: eager and inference-engine latency and throughput, and the training step."""
from __future__ import annotations

import gc
import math
import os
import tempfile
import time

import numpy as np

from .specs import build

PHASES = ("eager", "engine", "train")  # what is timed: the dynamic model, the exported one, a training step


def measure_speed(specs, input_size=224, batch_size=16, train_input_size=32, train_batch=32, repeats=10,
                  warmup=2, engine="paddle", threads=1, tensorrt=None, timing=True, log=print,
                  interleave=True) -> dict:
    """Complexity and timings for every spec; returns {spec: partial record}. ``timing=False`` gives the
    complexity only (timing columns None). ``interleave`` times every model once per round, so drift hits all
    alike, but keeps all of them (and their predictors) in memory; without it one model at a time is timed,
    and of it one phase at a time (eager, exported, training step), each freed before the next is built, which
    bounds the memory to the largest single phase. ``engine``: a name of deploy.ENGINES, or None to skip the
    exported model's timings."""
    options = dict(input_size=input_size, batch_size=batch_size, train_input_size=train_input_size,
                   train_batch=train_batch, engine=engine, threads=threads, tensorrt=tensorrt, timing=timing)
    batches = {"latency": 1, "throughput": batch_size, "engine_latency": 1, "engine_throughput": batch_size,
               "train": train_batch}
    if not interleave:
        return {spec: _measure_alone(spec, repeats, warmup, log, batches, options) for spec in specs}
    records, tasks = {}, {}
    with tempfile.TemporaryDirectory(prefix="mbnet_engine_") as engine_dir:
        for spec in specs:
            records[spec], tasks[spec] = _prepare(spec, engine_dir, log, **options)
        times = time_rounds(tasks, repeats if timing else 0, warmup, log)
    for spec in specs:
        records[spec].update(_summarize(times[spec], batches))
    return records


def _measure_alone(spec, repeats, warmup, log, batches, options) -> dict:
    """One model's record, its phases built, timed and freed one after another."""
    wanted = {"eager": True, "engine": bool(options["engine"]), "train": options["train_batch"] > 0}
    phases = [phase for phase in PHASES if wanted[phase]] if options["timing"] else []
    record, times = {}, {}
    for index, phase in enumerate(phases or [None]):
        with tempfile.TemporaryDirectory(prefix="mbnet_engine_") as engine_dir:
            counted, tasks = _prepare(spec, engine_dir, log, phases=(phase,), count=index == 0, **options)
            record.update(counted)
            if tasks:
                times.update(time_rounds({spec: tasks}, repeats, warmup, log)[spec])
        del tasks
        gc.collect()  # the phase's model, predictor or optimizer goes before the next one is built
    record.update(_summarize(times, batches))
    return record


def _prepare(spec, engine_dir, log, input_size, batch_size, train_input_size, train_batch, engine, threads,
             tensorrt, timing, phases=PHASES, count=True):
    """(complexity record, {kind: callable}) of one model: the calls of ``phases`` (eager and exported model
    calls, a training step); the complexity only when ``count``."""
    import paddle

    from .benchmark import train_step_fn

    model = build(spec, input_size) if count or {"eager", "engine"} & set(phases) else None
    record = _complexity_record(spec, model, input_size, train_input_size, log) if count else {}
    if not timing:
        return record, {}
    tasks = {}
    if {"eager", "engine"} & set(phases):  # inputs of the inference timings only
        one, batch = paddle.randn([1, 3, input_size, input_size]), paddle.randn([batch_size, 3, input_size, input_size])
    if "eager" in phases:
        def eager(x):
            with paddle.no_grad():
                model(x)

        tasks.update(latency=lambda: eager(one), throughput=lambda: eager(batch))
    if "engine" in phases and engine:
        run_engine = _engine_of(model, spec, engine_dir, input_size, engine, threads, tensorrt)
        record["engine"] = engine
        one_np, batch_np = one.numpy(), batch.numpy()
        # the engines return host arrays (copy_to_cpu waits for the device): no extra synchronize is needed
        tasks.update(engine_latency=lambda: run_engine(one_np), engine_throughput=lambda: run_engine(batch_np))
    if "train" in phases and train_batch > 0:
        tasks["train"] = train_step_fn(build(spec, train_input_size), train_batch, train_input_size)
    return record, tasks


def _complexity_record(spec, model, input_size, train_input_size, log) -> dict:
    from .complexity import complexity

    model.eval()
    counted = complexity(model, (3, input_size, input_size))
    log(f"[speed] {spec}: {counted.params / 1e6:.2f} M params, {counted.macs / 1e6:.1f} M mult-adds at {input_size} px")
    return {"model": spec, "params_m": counted.params / 1e6, "macs_m": counted.macs / 1e6,
            "input_size": input_size, "train_input_size": train_input_size}


def _engine_of(model, spec, engine_dir, input_size, engine, threads, tensorrt):
    """The exported ``model`` as a callable ndarray -> ndarray through ``engine``."""
    import paddle

    from ..deploy import create_engine, export_for

    gpu = paddle.get_device().startswith("gpu")
    use_trt = gpu and _trt_compiled() if tensorrt is None else tensorrt
    prefix = export_for(engine, model, os.path.join(engine_dir, spec.replace("@", "_"), "model"), input_size)
    paddle_options = {"onednn": not gpu, "gpu": gpu, "tensorrt": use_trt} if engine == "paddle" else {}
    return create_engine(prefix, engine, threads=threads, **paddle_options)


def time_rounds(tasks, repeats, warmup, log) -> dict:
    """{spec: {kind: [seconds per round]}}: warm-up calls, then every model's calls once per round."""
    from ..training.runtime import synchronize

    for calls in tasks.values():
        for call in calls.values():
            for _ in range(warmup):
                call()
    times = {spec: {kind: [] for kind in calls} for spec, calls in tasks.items()}
    for round_index in range(repeats):
        for spec, calls in tasks.items():  # interleaved: every model once per round
            for kind, call in calls.items():
                synchronize()
                started = time.perf_counter()
                call()
                synchronize()
                times[spec][kind].append(time.perf_counter() - started)
        log(f"[speed] round {round_index + 1}/{repeats} done")
    return times


def _summarize(times, batches) -> dict:
    out = {}
    for prefix, lat, thr in (("", "latency", "throughput"), ("engine_", "engine_latency", "engine_throughput")):
        ms = np.array(times.get(lat, [])) * 1000
        out[f"{prefix}latency_ms_p50"] = float(np.median(ms)) if ms.size else None
        out[f"{prefix}latency_ms_p90"] = float(np.percentile(ms, 90)) if ms.size else None
        out[f"{prefix}throughput_ips"] = batches[thr] / float(np.median(times[thr])) if times.get(thr) else None
    out["train_ips"] = batches["train"] / float(np.median(times["train"])) if times.get("train") else None
    return out


def _trt_compiled() -> bool:
    try:
        from paddle.inference import get_trt_compile_version

        return tuple(get_trt_compile_version()) != (0, 0, 0)
    except Exception:  # noqa: BLE001 - no TensorRT support in this build
        return False


def steps_for_minutes(spec: str, batch: int, image_size: int, minutes: float, log=print) -> int:
    """Training steps that fill ``minutes`` of training for ``spec``: the median time of a training step at the
    run's batch and image size (after a warm-up step), measured here. The trainer's own data loading and
    weight averaging come on top, so runs record their real training time beside the budget."""
    from .benchmark import time_fn, train_step_fn

    step_s = float(np.median(time_fn(train_step_fn(build(spec, image_size), batch, image_size), warmup=1,
                                     repeats=3)))
    steps = max(1, math.floor(minutes * 60 / step_s))
    log(f"[budget] {spec}: {step_s:.2f} s per step of {batch} -> {steps} steps in {minutes:g} min")
    gc.collect()
    return steps
