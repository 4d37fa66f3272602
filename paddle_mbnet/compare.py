"""The speed + accuracy comparison behind ``tools/compare.py``.

Per model: params and multiply-adds (``complexity``), inference latency at batch 1
and throughput at a larger batch for the dynamic graph and for Paddle Inference
(``paddle.jit.save`` + ``paddle.inference``: oneDNN on CPU, TensorRT on GPU when
paddle was built with it), training throughput at the training input size, and
the accuracies and epoch time of ``tools/train.py`` runs. Timing follows timm's
benchmark.py: warm-up, synchronize before every clock read, medians over repeats;
models are interleaved within each repeat so that drift (thermal, other load) hits
all of them alike.

Model specs are registry names, optionally with a width multiplier:
``mobilenet_v1@0.5`` is MobileNetV1 with alpha = 0.5 (V1 Table 6).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .config import load_config, save_config
from .registry import get_entry

EXTRA_KEYS = ("input_size", "train_input_size", "epochs", "run_ips", "run_dir")
# Markdown column titles and formats; accuracies are fractions in JSON/CSV and percent in Markdown.
COLUMNS = {
    "model": ("model", "{}"), "params_m": ("params (M)", "{:.2f}"), "macs_m": ("mult-adds (M)", "{:.1f}"),
    "latency_ms_p50": ("eager bs1 p50 (ms)", "{:.2f}"), "latency_ms_p90": ("eager bs1 p90 (ms)", "{:.2f}"),
    "throughput_ips": ("eager img/s", "{:.1f}"), "engine_latency_ms_p50": ("inference bs1 p50 (ms)", "{:.2f}"),
    "engine_latency_ms_p90": ("inference bs1 p90 (ms)", "{:.2f}"),
    "engine_throughput_ips": ("inference img/s", "{:.1f}"), "train_ips": ("train img/s", "{:.1f}"),
    "epoch_time_s": ("epoch (s)", "{:.1f}"), "train_acc": ("train acc (%)", "{:.2f}"),
    "val_acc": ("best val acc (%)", "{:.2f}"), "test_acc": ("test acc (%)", "{:.2f}"),
}
RECORD_KEYS = tuple(COLUMNS)  # the columns of results.md/.csv/.json, in order
PERCENT_KEYS = ("train_acc", "val_acc", "test_acc")
DEFAULT_MODELS = ("vgg16", "vgg19", "resnet50", "resnet152", "mobilenet_v1", "mobilenet_v2")
ALPHA_SWEEP = ("mobilenet_v1@0.75", "mobilenet_v1@0.5", "mobilenet_v1@0.25")


# ----------------------------------------------------------------------------- model specs

def parse_spec(spec: str) -> tuple[str, dict]:
    """``"mobilenet_v1@0.5"`` -> ``("mobilenet_v1", {"scale": 0.5})``; names are checked against the registry."""
    name, _, scale = spec.partition("@")
    entry = get_entry(name)  # raises with the valid names
    if not scale:
        return name, {}
    if not entry.ours:
        raise ValueError(f"{spec!r}: a width multiplier (@alpha) applies to our MobileNets only, not to {name}")
    try:
        alpha = float(scale)
    except ValueError:
        raise ValueError(f"{spec!r}: the width multiplier after '@' must be a number like 0.5") from None
    if not alpha > 0:
        raise ValueError(f"{spec!r}: the width multiplier must be > 0")
    return name, {"scale": alpha}


def parse_specs(text: str) -> list[str]:
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ValueError("--models is empty; pass registry names separated by commas, e.g. mobilenet_v1,vgg16")
    if len(set(specs)) != len(specs):
        raise ValueError(f"--models names a model twice: {text}")
    for s in specs:
        parse_spec(s)
    return specs


def small_input_for(name: str, image_size: int) -> bool:
    """Our MobileNets use their CIFAR variant (small_input) below 64 px, the papers' network above."""
    return get_entry(name).ours and image_size < 64


def build(spec: str, image_size: int, num_classes: int = 10):
    from .registry import build_model

    name, kwargs = parse_spec(spec)
    return build_model(name, num_classes=num_classes, small_input=small_input_for(name, image_size), **kwargs)


# ----------------------------------------------------------------------------- training runs

def train_config(spec: str, run_dir: str, preset: str = "cifar", epochs: int = 3, threads: int = 0,
                 device: str = "auto", overrides=(), warmup_epochs: int = 0) -> dict:
    """The tools/train.py config of ``spec``'s run: ``preset`` "cifar" (32 px, this project's defaults)
    or "ref224" (``configs/ref224_<model>.yaml``, the AI Studio reference setup), then ``overrides``.
    Comparison runs are short, so they warm up for ``warmup_epochs`` (0) instead of the trainer's 1."""
    name, kwargs = parse_spec(spec)
    if preset == "cifar":
        base, first = None, [f"Arch.name={name}", f"Arch.small_input={get_entry(name).ours}"]
    elif preset == "ref224":
        base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", f"ref224_{name}.yaml")
        if not os.path.isfile(base):
            raise ValueError(f"no reference config for {name} ({base}); use --train-preset cifar")
        first = []
    else:
        raise ValueError(f"unknown training preset {preset!r}; valid: cifar, ref224")
    first += [f"Arch.scale={kwargs['scale']}"] if "scale" in kwargs else []
    first += [f"Global.output_dir={run_dir}", f"Global.epochs={epochs}", f"Global.num_threads={threads}",
              f"Global.device={device}", f"Optimizer.warmup_epochs={warmup_epochs}"]
    return load_config(base, [*first, *overrides])


def _comparable(cfg: dict) -> dict:
    cfg = json.loads(json.dumps(cfg))
    cfg["Global"]["resume"] = ""
    cfg["Global"]["output_dir"] = ""  # where the run lives, not what it is: a moved --out still matches
    return cfg


def plan_run(cfg: dict) -> tuple[str, str]:
    """What to do for the run ``cfg`` describes: ("skip" | "resume" | "start", reason).

    A finished run with the same config is skipped, an unfinished one (Ctrl-C, a crash, a
    stopped comparison) resumes from its last checkpoint; a run directory holding a different
    config is an error, so no finished work is overwritten.
    """
    run_dir = cfg["Global"]["output_dir"]
    saved = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(saved):
        return "start", "no run yet"
    old = load_config(saved)
    old_c, new_c = _comparable(old), _comparable(cfg)
    if old_c != new_c:
        diff = [f"{s}.{k}: {old_c[s][k]!r} -> {new_c[s][k]!r}" for s in new_c for k in new_c[s]
                if old_c[s][k] != new_c[s][k]]
        raise ValueError(f"{run_dir} holds a run with another config ({'; '.join(diff)}); "
                         f"pass another --out or delete that directory")
    summary = _read_json(os.path.join(run_dir, "run_summary.json"))
    if summary and summary.get("finished"):
        return "skip", f"finished ({summary['epochs_done']} epochs)"
    if os.path.isfile(os.path.join(run_dir, "last.pdckpt")):
        done = summary["epochs_done"] if summary else "?"
        return "resume", f"unfinished ({done}/{cfg['Global']['epochs']} epochs)"
    return "start", "no checkpoint yet"


def ensure_run(cfg: dict, log=print, stream: bool = True) -> dict | None:
    """Run tools/train.py for ``cfg`` unless finished; returns the run's summary."""
    run_dir = cfg["Global"]["output_dir"]
    action, why = plan_run(cfg)
    log(f"[train] {cfg['Arch']['name']} -> {run_dir}: {why}: {action}")
    if action != "skip":
        os.makedirs(run_dir, exist_ok=True)
        request = os.path.join(run_dir, "compare_request.yaml")
        save_config(cfg, request)
        tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "train.py")
        argv = [sys.executable, tool, "-c", request] + (["-o", f"Global.resume={run_dir}"] if action == "resume" else [])
        env = dict(os.environ)
        if cfg["Global"]["num_threads"] > 0:
            env["OMP_NUM_THREADS"] = str(cfg["Global"]["num_threads"])
        proc = subprocess.Popen(argv, env=env, stdout=None if stream else subprocess.PIPE,
                                stderr=None if stream else subprocess.STDOUT, text=True)
        try:
            output, _ = proc.communicate()
        except KeyboardInterrupt:
            # Ctrl-C reached the trainer too, which is writing its checkpoint: let it finish
            # (subprocess.run would kill it after 0.25 s)
            proc.wait()
            raise
        if proc.returncode != 0:
            tail = "" if stream else "\n" + output[-3000:]
            raise RuntimeError(f"training {run_dir} failed (exit {proc.returncode}); rerun to resume it{tail}")
    return _read_json(os.path.join(run_dir, "run_summary.json"))


def read_run(run_dir: str) -> dict:
    """Accuracy and time figures of a finished tools/train.py run (all None when there is none)."""
    summary = _read_json(os.path.join(run_dir, "run_summary.json"))
    if not summary or not summary.get("finished"):
        return {"epoch_time_s": None, "train_acc": None, "val_acc": None, "test_acc": None, "epochs": None,
                "run_ips": None, "run_dir": None}
    return {"epoch_time_s": summary["epoch_time_s_median"], "train_acc": summary["final_train_acc"],
            "val_acc": summary["best_val_acc"],
            # the test accuracy of the epoch that validation picked, never the best test accuracy
            "test_acc": summary["test_acc_at_best"] if summary["best_val_acc"] is not None
            else summary["final_test_acc"],
            "epochs": summary["epochs_done"], "run_ips": summary["train_ips_median"], "run_dir": run_dir}


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- speed

def measure_speed(specs, input_size=224, batch_size=16, train_input_size=32, train_batch=32, repeats=10,
                  warmup=2, engine=True, threads=1, tensorrt=None, timing=True, log=print) -> dict:
    """Complexity and timings for every spec, interleaved; returns {spec: partial record}.
    ``timing=False`` gives the complexity only (timing columns None)."""
    import paddle

    from .benchmark import train_step_fn
    from .complexity import complexity
    from .deploy import create_predictor, export, run_predictor
    from .trainer import synchronize

    gpu = paddle.get_device().startswith("gpu")
    if tensorrt is None:
        tensorrt = gpu and _trt_compiled()
    records, tasks = {}, {}
    tmp = tempfile.TemporaryDirectory(prefix="mbnet_engine_")
    try:
        for spec in specs:
            model = build(spec, input_size)
            model.eval()
            c = complexity(model, (3, input_size, input_size))
            records[spec] = {"model": spec, "params_m": c.params / 1e6, "macs_m": c.macs / 1e6,
                             "input_size": input_size, "train_input_size": train_input_size}
            log(f"[speed] {spec}: {c.params / 1e6:.2f} M params, {c.macs / 1e6:.1f} M mult-adds at {input_size} px")
            tasks[spec] = {}
            if not timing:
                continue
            x1 = paddle.randn([1, 3, input_size, input_size])
            xb = paddle.randn([batch_size, 3, input_size, input_size])

            def eager(x, model=model):
                with paddle.no_grad():
                    model(x)

            tasks[spec].update(latency=lambda f=eager, x=x1: f(x), throughput=lambda f=eager, x=xb: f(x))
            if engine:
                prefix = export(model, os.path.join(tmp.name, spec.replace("@", "_"), "model"), input_size)
                pred = create_predictor(prefix, threads=threads, onednn=not gpu, gpu=gpu, tensorrt=tensorrt)
                n1, nb = x1.numpy(), xb.numpy()
                # copy_to_cpu inside run_predictor waits for the device, so no extra synchronize is needed
                tasks[spec]["engine_latency"] = lambda p=pred, x=n1: run_predictor(p, x)
                tasks[spec]["engine_throughput"] = lambda p=pred, x=nb: run_predictor(p, x)
            if train_batch > 0:
                tasks[spec]["train"] = train_step_fn(build(spec, train_input_size), train_batch, train_input_size)
        if not timing:
            repeats = 0
        for spec in specs:
            for fn in tasks[spec].values():
                for _ in range(warmup):
                    fn()
        times = {spec: {k: [] for k in tasks[spec]} for spec in specs}
        for r in range(repeats):
            for spec in specs:  # interleaved: every model once per round
                for kind, fn in tasks[spec].items():
                    synchronize()
                    t = time.perf_counter()
                    fn()
                    synchronize()
                    times[spec][kind].append(time.perf_counter() - t)
            log(f"[speed] round {r + 1}/{repeats} done")
    finally:
        tmp.cleanup()
    batches = {"latency": 1, "throughput": batch_size, "engine_latency": 1, "engine_throughput": batch_size,
               "train": train_batch}
    for spec in specs:
        t, rec = times[spec], records[spec]
        for prefix, lat, thr in (("", "latency", "throughput"), ("engine_", "engine_latency", "engine_throughput")):
            ms = np.array(t.get(lat, [])) * 1000
            rec[f"{prefix}latency_ms_p50"] = float(np.median(ms)) if ms.size else None
            rec[f"{prefix}latency_ms_p90"] = float(np.percentile(ms, 90)) if ms.size else None
            rec[f"{prefix}throughput_ips"] = batches[thr] / float(np.median(t[thr])) if t.get(thr) else None
        rec["train_ips"] = train_batch / float(np.median(t["train"])) if t.get("train") else None
    return records


def _trt_compiled() -> bool:
    try:
        from paddle.inference import get_trt_compile_version

        return tuple(get_trt_compile_version()) != (0, 0, 0)
    except Exception:  # noqa: BLE001 - no TensorRT support in this build
        return False


# ----------------------------------------------------------------------------- outputs

def full_record(partial: dict) -> dict:
    return {k: partial.get(k) for k in (*RECORD_KEYS, *EXTRA_KEYS)}


def markdown_table(records) -> str:
    keys = [k for k in RECORD_KEYS if any(r.get(k) is not None for r in records) or k in ("model",)]
    lines = ["| " + " | ".join(COLUMNS[k][0] for k in keys) + " |",
             "|" + "|".join("---" if k == "model" else "---:" for k in keys) + "|"]
    for r in records:
        cells = []
        for k in keys:
            v = r.get(k)
            if v is None:
                cells.append("–")
            else:
                cells.append(COLUMNS[k][1].format(100 * v if k in PERCENT_KEYS else v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_tables(input_size: int = 224) -> str:
    """V1 Table 2, Tables 6-7 and (for reference) Table 4, ours beside the paper's figures."""
    from .complexity import LAYER_TYPE_NAMES, LAYER_TYPES, complexity
    from .models import MobileNetV1
    from .paper import V1_TABLE2, V1_TABLE4, V1_TABLE6, V1_TABLE7
    from .registry import build_model

    out = ["### MobileNetV1 Table 2: resources per layer type (ours at 224 px / paper)", "",
           "| Type | Mult-Adds ours | paper | Parameters ours | paper |", "|---|---:|---:|---:|---:|"]
    by_type = complexity(MobileNetV1()).by_type
    for t in LAYER_TYPES:
        d, (pm_, pp) = by_type[t], V1_TABLE2[t]
        out.append(f"| {LAYER_TYPE_NAMES[t]} | {100 * d['macs_share']:.2f}% | {pm_:.2f}% | "
                   f"{100 * d['params_share']:.2f}% | {pp:.2f}% |")
    out += ["", "The paper's 1.19% for the full conv is a digit swap: its column then sums to 99.29%.", "",
            "### MobileNetV1 Tables 6 and 7: width multiplier and resolution (ours / paper)", "",
            "| model | Mult-Adds (M) ours | paper | Parameters (M) ours | paper |", "|---|---:|---:|---:|---:|"]
    for alpha, (pm_, pp) in V1_TABLE6.items():
        c = complexity(MobileNetV1(scale=alpha))
        out.append(f"| {alpha} MobileNet-224 | {c.macs / 1e6:.1f} | {pm_} | {c.params_conv_fc / 1e6:.2f} | {pp} |")
    for res, (pm_, pp) in V1_TABLE7.items():
        c = complexity(MobileNetV1(), (3, res, res))
        out.append(f"| 1.0 MobileNet-{res} | {c.macs / 1e6:.1f} | {pm_} | {c.params_conv_fc / 1e6:.2f} | {pp} |")
    out += ["", "### MobileNetV1 Table 4: depthwise-separable vs full convolutions (ours / paper)", "",
            "| model | Mult-Adds (M) ours | paper | Parameters (M) ours | paper | ImageNet top-1 (paper) |",
            "|---|---:|---:|---:|---:|---:|"]
    for label, name in (("Conv MobileNet", "mobilenet_v1_conv"), ("MobileNet", "mobilenet_v1")):
        c = complexity(build_model(name), (3, input_size, input_size))
        acc, pm_, pp = V1_TABLE4[label]
        out.append(f"| {label} ({name}) | {c.macs / 1e6:.1f} | {pm_} | {c.params_conv_fc / 1e6:.2f} | {pp} | {acc}% |")
    return "\n".join(out)


def write_outputs(records, out_dir: str, header: list[str], notes: list[str], paper: str | None,
                  log=print) -> str:
    """results.md / .csv / .json and the plots; returns the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    records = [full_record(r) for r in records]
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*RECORD_KEYS, *EXTRA_KEYS])
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
    md = ["# Speed and accuracy comparison", "", *[f"- {h}" for h in header], "", markdown_table(records), "",
          *notes]
    if paper:
        md += ["", paper]
    md = "\n".join(md) + "\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    for name in write_plots(records, out_dir):
        log(f"[plot] {os.path.join(out_dir, name)}")
    return md


def pareto(points):
    """The points (x, y) not beaten by one with smaller-or-equal x and higher y, sorted by x."""
    front, best = [], -np.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def write_plots(records, out_dir: str) -> list[str]:
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    written = []

    def scatter(path, series, xlabel, ylabel, title, pareto_front=True):
        """series: (x key, y key, legend label, marker) drawn on one log-x axis."""
        drawn = False
        fig = Figure(figsize=(7, 5))
        ax = fig.subplots()
        for xkey, ykey, label, marker in series:
            pts = [(r[xkey], r[ykey], r["model"]) for r in records
                   if r.get(xkey) is not None and r.get(ykey) is not None]
            if not pts:
                continue
            drawn = True
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
            for x, y, name in pts:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if pareto_front:
                front = pareto([(p[0], p[1]) for p in pts])
                ax.plot([p[0] for p in front], [p[1] for p in front], "--", alpha=0.5)
        if drawn:
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(os.path.join(out_dir, path), dpi=110)
            written.append(path)

    scatter("acc_vs_latency.png", [("latency_ms_p50", "test_acc", "dynamic graph", "o"),
                                   ("engine_latency_ms_p50", "test_acc", "Paddle Inference", "s")],
            "latency at batch 1, median (ms)", "test accuracy", "Accuracy vs latency (dashed: Pareto front)")
    scatter("acc_vs_macs.png", [("macs_m", "test_acc", "test accuracy", "o")],
            "mult-adds (M)", "test accuracy", "Accuracy vs multiply-adds (dashed: Pareto front)")
    scatter("latency_vs_macs.png", [("macs_m", "latency_ms_p50", "dynamic graph", "o"),
                                    ("macs_m", "engine_latency_ms_p50", "Paddle Inference", "s")],
            "mult-adds (M)", "latency at batch 1, median (ms)", "Latency vs multiply-adds", pareto_front=False)
    histories = {r["model"]: _read_json(os.path.join(r["run_dir"], "metrics.json"))
                 for r in records if r.get("run_dir")}
    histories = {k: v for k, v in histories.items() if v}
    if histories:
        fig = Figure(figsize=(11, 4))
        axes = fig.subplots(1, 2)
        for name, hist in histories.items():
            ep = [h["epoch"] for h in hist]
            line, = axes[0].plot(ep, [h["train_loss"] for h in hist], marker="o", label=name)
            if any(h["val_acc"] is not None for h in hist):
                axes[1].plot(ep, [h["val_acc"] for h in hist], marker="o", color=line.get_color(), label=name)
        for ax, title in zip(axes, ("train loss", "validation accuracy")):
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "curves.png"), dpi=110)
        written.append("curves.png")
    return written
