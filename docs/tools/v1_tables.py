"""MobileNetV1's Tables 4, 6 and 7 on CIFAR-10 beside the paper's ImageNet figures, from tools/compare.py outputs.

    python docs/tools/v1_tables.py MAIN_OUT RES_OUT... --out docs/results/v1_tables_cifar

MAIN_OUT is a ``compare.py --models mobilenet_v1 --full-conv --alpha-sweep`` output at 32 px; each RES_OUT a
``compare.py --models mobilenet_v1 --input-size N -o DataLoader.image_size=N`` output. Writes ``tables.md``
(accuracy, mult-adds and parameters of ours, the paper's ImageNet top-1, and each variant's loss against the
full model in both) and ``tradeoff.png`` (that loss against the mult-adds kept, ours and the paper's).
Why a script: compare.py reports one output folder; these tables join several and the paper's accuracies.
"""
import argparse
import json
import os

from paddle_mbnet.analysis.paper import V1_TABLE4, V1_TABLE6, V1_TABLE6_TOP1, V1_TABLE7, V1_TABLE7_TOP1

PAPER_SIZE = {32: 224, 27: 192, 23: 160, 18: 128}  # CIFAR input for each ImageNet one: the same share of 224 px


def _rows(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return {(row["model"], row["input_size"]): row for row in json.load(f)}


def _acc(row):
    if row["test_acc"] is None:
        return "–"
    return f"{100 * row['test_acc']:.2f} ± {100 * row['test_acc_se']:.2f}"


def _series(rows):
    """{"width"|"resolution": [(label, our row, paper top-1, paper mult-adds)]}, the full model first."""
    width = [(f"{alpha} MobileNet-32", rows[(name, 32)], V1_TABLE6_TOP1[alpha], V1_TABLE6[alpha][0])
             for alpha, name in ((1.0, "mobilenet_v1"), (0.75, "mobilenet_v1@0.75"), (0.5, "mobilenet_v1@0.5"),
                                 (0.25, "mobilenet_v1@0.25"))]
    resolution = [(f"1.0 MobileNet-{px}", rows[("mobilenet_v1", px)], V1_TABLE7_TOP1[PAPER_SIZE[px]],
                   V1_TABLE7[PAPER_SIZE[px]][0]) for px in sorted(PAPER_SIZE, reverse=True)]
    return {"width": width, "resolution": resolution}


def _table(title, series, paper_name):
    base, paper_base = series[0][1]["test_acc"], series[0][2]
    lines = [f"### {title}", "",
             f"| model (CIFAR-10) | test acc (%) | loss vs 1.0-32 | mult-adds (M) | params (M) | {paper_name} "
             "(ImageNet) | top-1 (%) | loss vs 1.0-224 | mult-adds (M) |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for label, row, top1, paper_macs in series:
        loss = "–" if row["test_acc"] is None else f"{100 * (base - row['test_acc']):.2f}"
        paper_label = label.replace("MobileNet-32", "MobileNet-224")
        for px, size in PAPER_SIZE.items():
            paper_label = paper_label.replace(f"MobileNet-{px}", f"MobileNet-{size}")
        lines.append(f"| {label} | {_acc(row)} | {loss} | {row['macs_m']:.1f} | {row['params_m']:.2f} | "
                     f"{paper_label} | {top1} | {paper_base - top1:.1f} | {paper_macs} |")
    return lines


def _table4(rows):
    lines = ["### Table 4: full convolutions against depthwise-separable ones", "",
             "| model | test acc (%) | mult-adds at 32 px (M) | params (M) | ImageNet top-1 (paper, %) | "
             "mult-adds at 224 px (paper, M) | params (paper, M) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, name in (("Conv MobileNet", "mobilenet_v1_conv"), ("MobileNet", "mobilenet_v1")):
        row, (top1, macs, params) = rows[(name, 32)], V1_TABLE4[label]
        lines.append(f"| {label} (`{name}`) | {_acc(row)} | {row['macs_m']:.1f} | {row['params_m']:.2f} | "
                     f"{top1} | {macs} | {params} |")
    return lines


def _plot(series, path):
    """The accuracy each variant loses against the mult-adds it keeps, ours and the paper's, one panel each."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, (kind, points) in zip(axes, series.items()):
        ours = [(row["macs_m"] / points[0][1]["macs_m"], 100 * (points[0][1]["test_acc"] - row["test_acc"]))
                for _, row, _, _ in points if row["test_acc"] is not None]
        paper = [(macs / points[0][3], points[0][2] - top1) for _, _, top1, macs in points]
        for (xs, ys), style, name in ((zip(*ours), "o-", "ours: CIFAR-10, 3 epochs"),
                                      (zip(*paper), "s--", "paper: ImageNet")):
            axis.plot(list(xs), list(ys), style, label=name)
        for (label, _, _, _), (x, y) in zip(points, ours):
            axis.annotate(label.split(" MobileNet")[0] if kind == "width" else label.split("-")[-1] + " px",
                          (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        axis.set_xscale("log")
        axis.set_xticks([0.1, 0.25, 0.5, 1.0], labels=["0.1", "0.25", "0.5", "1"])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # log minor labels overlap the major
        axis.set_xlabel("mult-adds kept (fraction of the 1.0 model at full resolution)")
        axis.set_title(f"{kind} multiplier" if kind == "width" else "input resolution")
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_ylabel("top-1 lost against the full model (points)")
    figure.suptitle("MobileNetV1 Tables 6 and 7: ours (2-core Intel Xeon, JPEG copy of CIFAR-10) and the paper's")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("main_out")
    p.add_argument("res_outs", nargs="+")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    rows = {}
    for folder in (args.main_out, *args.res_outs):
        rows.update(_rows(folder))
    series = _series(rows)
    os.makedirs(args.out, exist_ok=True)
    lines = [*_table4(rows), "", *_table("Table 6: width multiplier", series["width"], "paper"), "",
             *_table("Table 7: resolution", series["resolution"], "paper")]
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot(series, os.path.join(args.out, "tradeoff.png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
