"""MobileNetV1's Tables 4, 6 and 7 on CIFAR-10 beside the paper's ImageNet figures, from tools/compare.py outputs.

    python docs/tools/v1_tables.py MAIN_OUT RES_OUT... --out docs/results/v1_tables_cifar --note "machine, data"

MAIN_OUT is a ``compare.py --models mobilenet_v1 --full-conv --alpha-sweep --input-size 32`` output; each RES_OUT a
``compare.py --models mobilenet_v1 --input-size N -o DataLoader.image_size=N`` output (N = 27, 23, 18). Writes
``tables.md`` (test accuracy, mult-adds and parameters of ours, the paper's ImageNet top-1, and what each variant
loses against the full model in both) and ``tradeoff.png`` (that loss against the mult-adds kept, ours and the
paper's). Why a script: compare.py reports one output folder; these tables join several and the paper's top-1.
"""
import argparse
import json
import os
import sys

from paddle_mbnet.analysis.paper import V1_TABLE4, V1_TABLE6, V1_TABLE6_TOP1, V1_TABLE7, V1_TABLE7_TOP1
from paddle_mbnet.analysis.report import format_cell

PAPER_SIZE = {32: 224, 27: 192, 23: 160, 18: 128}  # CIFAR size for each ImageNet one: 27/32 ~ 192/224, ...
WIDTHS = {1.0: "mobilenet_v1", 0.75: "mobilenet_v1@0.75", 0.5: "mobilenet_v1@0.5", 0.25: "mobilenet_v1@0.25"}


def _rows(folder):
    """{(model, training size): record} of one compare.py output; a record timed at one size and trained at
    another would put one size's accuracy under the other's name, so it is refused."""
    with open(os.path.join(folder, "results.json")) as f:
        records = json.load(f)
    for record in records:
        if record["train_input_size"] != record["input_size"]:
            sys.exit(f"error: {folder}: {record['model']} was trained at {record['train_input_size']} px and "
                     f"counted at {record['input_size']} px; rerun compare.py with --input-size equal to "
                     "DataLoader.image_size")
    return {(record["model"], record["train_input_size"]): record for record in records}


def _find(rows, model, size):
    if (model, size) not in rows:
        sys.exit(f"error: no {model} run at {size} px in the given folders; give its compare.py output folder")
    return rows[(model, size)]


def _series(rows):
    """{"width"|"resolution": [(our label, our record, paper label, paper top-1, paper mult-adds)]}, full first."""
    width = [(f"{alpha} MobileNet-32", _find(rows, name, 32), f"{alpha} MobileNet-224", V1_TABLE6_TOP1[alpha],
              V1_TABLE6[alpha][0]) for alpha, name in WIDTHS.items()]
    resolution = [(f"1.0 MobileNet-{px}", _find(rows, "mobilenet_v1", px), f"1.0 MobileNet-{size}",
                   V1_TABLE7_TOP1[size], V1_TABLE7[size][0]) for px, size in PAPER_SIZE.items()]
    return {"width": width, "resolution": resolution}


def _lost(base, record):
    """Points of test accuracy ``record`` loses against ``base``; None while either has no result."""
    if base["test_acc"] is None or record["test_acc"] is None:
        return None
    return 100 * (base["test_acc"] - record["test_acc"])


def _table(title, series):
    lines = [f"### {title}", "",
             "| model (CIFAR-10) | test acc (%) | lost vs 1.0-32 | mult-adds (M) | params (M) | paper (ImageNet) "
             "| top-1 (%) | lost vs 1.0-224 | mult-adds (M) |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    base, paper_base = series[0][1], series[0][3]
    for label, record, paper_label, top1, paper_macs in series:
        lost = _lost(base, record)
        lines.append(f"| {label} | {format_cell(record, 'test_acc')} | {'–' if lost is None else f'{lost:.2f}'} | "
                     f"{record['macs_m']:.1f} | {record['params_m']:.2f} | {paper_label} | {top1} | "
                     f"{paper_base - top1:.1f} | {paper_macs} |")
    return lines


def _table4(rows):
    lines = ["### Table 4: full convolutions against depthwise-separable ones", "",
             "| model | test acc (%) | mult-adds at 32 px (M) | params (M) | ImageNet top-1 (paper, %) | "
             "mult-adds at 224 px (paper, M) | params (paper, M) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, name in (("Conv MobileNet", "mobilenet_v1_conv"), ("MobileNet", "mobilenet_v1")):
        record, (top1, macs, params) = _find(rows, name, 32), V1_TABLE4[label]
        lines.append(f"| {label} (`{name}`) | {format_cell(record, 'test_acc')} | {record['macs_m']:.1f} | "
                     f"{record['params_m']:.2f} | {top1} | {macs} | {params} |")
    return lines


def _points(series):
    """(ours, paper): [(label, mult-adds kept as a fraction, points lost)] for the variants with a result."""
    base, paper_base, paper_macs = series[0][1], series[0][3], series[0][4]
    ours = [(label, record["macs_m"] / base["macs_m"], _lost(base, record)) for label, record, *_ in series]
    paper = [(label, macs / paper_macs, paper_base - top1) for _, _, label, top1, macs in series]
    return [point for point in ours if point[2] is not None], paper


def _plot(series, path, title):
    """What each variant loses against the mult-adds it keeps, ours and the paper's, one panel per table."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, (kind, variants) in zip(axes, series.items()):
        ours, paper = _points(variants)
        for points, style, name in ((ours, "o-", "ours: CIFAR-10"), (paper, "s--", "paper: ImageNet")):
            if points:
                axis.plot([x for _, x, _ in points], [y for _, _, y in points], style, label=name)
        for label, x, y in ours:
            short = label.split(" MobileNet")[0] if kind == "width" else label.split("-")[-1] + " px"
            axis.annotate(short, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        axis.set_xscale("log")
        axis.set_xticks([0.1, 0.25, 0.5, 1.0], labels=["0.1", "0.25", "0.5", "1"])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # log minor labels overlap the major
        axis.set_xlabel("mult-adds kept (fraction of the 1.0 model at full resolution)")
        axis.set_title("width multiplier (Table 6)" if kind == "width" else "input resolution (Table 7)")
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_ylabel("top-1 lost against the full model (points)")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("main_out")
    p.add_argument("res_outs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--note", default="", help="the machine and data, for the plot's title")
    args = p.parse_args(argv)
    rows = {}
    for folder in (args.main_out, *args.res_outs):
        rows.update(_rows(folder))
    series = _series(rows)
    os.makedirs(args.out, exist_ok=True)
    lines = [*_table4(rows), "", *_table("Table 6: width multiplier", series["width"]), "",
             *_table("Table 7: resolution", series["resolution"])]
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    epochs = sorted({record["epochs"] for record in rows.values() if record.get("epochs")})
    title = (f"MobileNetV1 Tables 6 and 7: ours ({'/'.join(map(str, epochs)) or '?'} epochs"
             f"{', ' + args.note if args.note else ''}) and the paper's")
    _plot(series, os.path.join(args.out, "tradeoff.png"), title)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
