"""The comparison's outputs: results.md / .csv / .json and the plots."""
from __future__ import annotations

import csv
import json
import os

import numpy as np

# Fields of a record that are context, not table columns: input sizes, the run's epochs and throughput, where
# the run lives, how many test images its accuracy rests on and the accuracy's standard error.
CONTEXT_KEYS = ("input_size", "train_input_size", "epochs", "run_ips", "run_dir", "test_images", "test_acc_se",
                "near_chance", "engine")
# Markdown column titles and formats; accuracies are fractions in JSON/CSV and percent in Markdown.
COLUMNS = {
    "model": ("model", "{}"), "params_m": ("params (M)", "{:.2f}"), "macs_m": ("mult-adds (M)", "{:.1f}"),
    "latency_ms_p50": ("eager bs1 p50 (ms)", "{:.2f}"), "latency_ms_p90": ("eager bs1 p90 (ms)", "{:.2f}"),
    "throughput_ips": ("eager img/s", "{:.1f}"), "engine_latency_ms_p50": ("inference bs1 p50 (ms)", "{:.2f}"),
    "engine_latency_ms_p90": ("inference bs1 p90 (ms)", "{:.2f}"),
    "engine_throughput_ips": ("inference img/s", "{:.1f}"), "train_ips": ("train img/s", "{:.1f}"),
    "train_time_s": ("training time (s)", "{:.0f}"), "train_images": ("images seen", "{:.0f}"),
    "epochs_trained": ("epochs", "{:.2f}"), "epoch_time_s": ("epoch (s)", "{:.1f}"),
    "train_acc": ("train acc (%)", "{:.2f}"), "val_acc": ("best val acc (%)", "{:.2f}"),
    "test_acc": ("test acc (%)", "{:.2f}"),
}
RECORD_KEYS = tuple(COLUMNS)  # the columns of results.md/.csv/.json, in order
PERCENT_KEYS = ("train_acc", "val_acc", "test_acc")
CHANCE_MARGIN = 0.05  # an accuracy within 5 points of chance (1 / classes) is reported as noise


def record_with_all_keys(partial: dict) -> dict:
    return {k: partial.get(k) for k in (*RECORD_KEYS, *CONTEXT_KEYS)}


def add_accuracy_context(record: dict, num_classes: int = 10) -> dict:
    """Standard error of the test accuracy (binomial, over the test images) and whether it is near chance."""
    acc, n = record.get("test_acc"), record.get("test_images")
    record["test_acc_se"] = float(np.sqrt(acc * (1 - acc) / n)) if acc is not None and n else None
    record["near_chance"] = acc is not None and acc < 1 / num_classes + CHANCE_MARGIN
    return record


def format_cell(record, key) -> str:
    """One table cell of a comparison record, as results.md prints it (test accuracy with its error and chance mark)."""
    value = record.get(key)
    if value is None:
        return "–"
    text = COLUMNS[key][1].format(100 * value if key in PERCENT_KEYS else value)
    if key == "test_acc":
        if record.get("test_acc_se"):
            text += f" ± {100 * record['test_acc_se']:.2f}"
        if record.get("near_chance"):
            text += " (≈ chance)"
    return text


def markdown_table(records) -> str:
    keys = [k for k in RECORD_KEYS if any(r.get(k) is not None for r in records) or k in ("model",)]
    lines = ["| " + " | ".join(COLUMNS[k][0] for k in keys) + " |",
             "|" + "|".join("---" if k == "model" else "---:" for k in keys) + "|"]
    lines += ["| " + " | ".join(format_cell(r, k) for k in keys) + " |" for r in records]
    return "\n".join(lines)


def paper_tables(input_size: int = 224) -> str:
    """V1 Table 2, Tables 6-7 and (for reference) Table 4, ours beside the paper's figures."""
    from ..models import MobileNetV1
    from ..models.registry import build_model
    from .complexity import LAYER_TYPE_NAMES, LAYER_TYPES, complexity
    from .paper import V1_TABLE2, V1_TABLE4, V1_TABLE6, V1_TABLE7

    out = ["### MobileNetV1 Table 2: resources per layer type (ours at 224 px / paper)", "",
           "| Type | Mult-Adds ours | paper | Parameters ours | paper |", "|---|---:|---:|---:|---:|"]
    by_type = complexity(MobileNetV1()).by_type
    for t in LAYER_TYPES:
        ours, (paper_macs, paper_params) = by_type[t], V1_TABLE2[t]
        out.append(f"| {LAYER_TYPE_NAMES[t]} | {100 * ours['macs_share']:.2f}% | {paper_macs:.2f}% | "
                   f"{100 * ours['params_share']:.2f}% | {paper_params:.2f}% |")
    out += ["", "The paper's 1.19% for the full conv is a digit swap: its column then sums to 99.29%.", "",
            "### MobileNetV1 Tables 6 and 7: width multiplier and resolution (ours / paper)", "",
            "| model | Mult-Adds (M) ours | paper | Parameters (M) ours | paper |", "|---|---:|---:|---:|---:|"]
    for label, counted, (paper_macs, paper_params) in (
            *[(f"{alpha} MobileNet-224", complexity(MobileNetV1(scale=alpha)), v) for alpha, v in V1_TABLE6.items()],
            *[(f"1.0 MobileNet-{res}", complexity(MobileNetV1(), (3, res, res)), v) for res, v in V1_TABLE7.items()]):
        out.append(f"| {label} | {counted.macs / 1e6:.1f} | {paper_macs} | {counted.params_conv_fc / 1e6:.2f} | "
                   f"{paper_params} |")
    out += ["", "### MobileNetV1 Table 4: depthwise-separable vs full convolutions (ours / paper)", "",
            "| model | Mult-Adds (M) ours | paper | Parameters (M) ours | paper | ImageNet top-1 (paper) |",
            "|---|---:|---:|---:|---:|---:|"]
    for label, name in (("Conv MobileNet", "mobilenet_v1_conv"), ("MobileNet", "mobilenet_v1")):
        counted = complexity(build_model(name), (3, input_size, input_size))
        acc, paper_macs, paper_params = V1_TABLE4[label]
        out.append(f"| {label} ({name}) | {counted.macs / 1e6:.1f} | {paper_macs} | "
                   f"{counted.params_conv_fc / 1e6:.2f} | {paper_params} | {acc}% |")
    return "\n".join(out)


def write_outputs(records, out_dir: str, header: list[str], notes: list[str], paper: str | None,
                  log=print, title_note: str = "") -> str:
    """results.md / .csv / .json and the plots; returns the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    records = [record_with_all_keys(r) for r in records]
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(records, f, indent=1)
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*RECORD_KEYS, *CONTEXT_KEYS])
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
    md = ["# Speed and accuracy comparison", "", *[f"- {h}" for h in header], "", markdown_table(records), "",
          *notes]
    if any(r["near_chance"] for r in records):
        md += ["", "Accuracies marked (≈ chance) are within 5 points of guessing: they say the run learned "
                   "nothing measurable in its budget, and the plots leave them out."]
    if paper:
        md += ["", paper]
    md = "\n".join(md) + "\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    for name in write_plots(records, out_dir, title_note):
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


def _log_axis(ax, axis="x"):
    """Log scale with plain-number ticks (1, 2, 5, 10, 20, ...) instead of powers of ten only."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _scatter(records, out_dir, name, series, xlabel, ylabel, title, pareto_front=True):
    """series: (x key, y key, series label, marker). Each model gets one colour, named in the legend, so no
    label sits on a point; accuracies near chance are left out."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    colours = {r["model"]: f"C{i % 10}" for i, r in enumerate(records)}
    drawn = False
    for xkey, ykey, label, marker in series:
        usable = [r for r in records if r.get(xkey) is not None and r.get(ykey) is not None
                  and not (ykey == "test_acc" and r.get("near_chance"))]
        scale = 100 if ykey in PERCENT_KEYS else 1
        for r in usable:
            ax.scatter(r[xkey], scale * r[ykey], marker=marker, color=colours[r["model"]], s=50, zorder=3)
        if pareto_front and len(usable) > 1:
            front = pareto([(r[xkey], scale * r[ykey]) for r in usable])
            ax.plot([p[0] for p in front], [p[1] for p in front], linestyle="--", color="0.4", linewidth=1.2,
                    zorder=2)
        drawn = drawn or bool(usable)
    if not drawn:
        return None
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=m) for m, c in colours.items()
               if any(r["model"] == m and r.get(series[0][1]) is not None for r in records)]
    handles += [Line2D([], [], marker=mk, linestyle="", color="0.3", label=lb) for _, _, lb, mk in series
                if len(series) > 1]
    if pareto_front:
        handles.append(Line2D([], [], linestyle="--", color="0.4", label="Pareto front"))
    _log_axis(ax, "x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    return name


def write_plots(records, out_dir: str, title_note: str = "") -> list[str]:
    from ..deploy import ENGINES

    note = f"\n{title_note}" if title_note else ""
    engine = ENGINES[next((r["engine"] for r in records if r.get("engine")), "paddle")]
    written = [
        _scatter(records, out_dir, "acc_vs_latency.png",
                 [("latency_ms_p50", "test_acc", "dynamic graph", "o"),
                  ("engine_latency_ms_p50", "test_acc", engine, "s")],
                 "latency at batch 1, median (ms, log scale)", "test accuracy (%)", "Accuracy vs latency" + note),
        _scatter(records, out_dir, "acc_vs_macs.png", [("macs_m", "test_acc", "test accuracy", "o")],
                 "mult-adds (M, log scale)", "test accuracy (%)", "Accuracy vs multiply-adds" + note),
        _scatter(records, out_dir, "latency_vs_macs.png",
                 [("macs_m", "latency_ms_p50", "dynamic graph", "o"),
                  ("macs_m", "engine_latency_ms_p50", engine, "s")],
                 "mult-adds (M, log scale)", "latency at batch 1, median (ms)", "Latency vs multiply-adds" + note,
                 pareto_front=False),
        _curves(records, out_dir, note),
    ]
    return [name for name in written if name]


def _curves(records, out_dir, note):
    from matplotlib.figure import Figure

    histories = {}
    for r in records:
        path = os.path.join(r["run_dir"], "metrics.json") if r.get("run_dir") else ""
        if path and os.path.isfile(path):
            with open(path) as f:
                histories[r["model"]] = json.load(f)
    if not histories:
        return None
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for name, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        line, = axes[0].plot(epochs, [h["train_loss"] for h in hist], marker="o", label=name)
        if any(h["val_acc"] is not None for h in hist):
            axes[1].plot(epochs, [100 * h["val_acc"] for h in hist], marker="o", color=line.get_color(), label=name)
    for ax, title in zip(axes, ("train loss", "validation accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_title(title + note, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "curves.png"), dpi=110)
    return "curves.png"
