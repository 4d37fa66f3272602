"""Copy a finished training run into docs/results/<name>/ with a RECORD.md naming its command, machine,
versions, date, commit, wall time and peak memory.

    /usr/bin/time -v python tools/train.py -c configs/mbv1_cifar.yaml ... > LOG 2>&1
    python docs/tools/record_run.py RUN_DIR LOG docs/results/NAME --command "..." --note "machine idle"

The log is the combined output of ``/usr/bin/time -v`` and the trainer; the epoch lines, the final line and
time's wall-clock and peak-memory figures are taken from it. Checkpoints are not copied.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess

RUN_FILES = ("config.yaml", "metrics.json", "run_summary.json", "curves.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("log")
    p.add_argument("out")
    p.add_argument("--command", required=True, help="the command that produced the run, as typed")
    p.add_argument("--commit", default=None, help="the commit the run used (default: the log's worktree HEAD)")
    p.add_argument("--note", default="", help="what else the machine did meanwhile, resumes, anything unusual")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for name in RUN_FILES:
        shutil.copy(os.path.join(args.run_dir, name), os.path.join(args.out, name))
    with open(args.log, errors="replace") as f:
        lines = [part for line in f for part in line.split("\r")]
    # an epoch line ends at its img/s figure, the last line at its minutes: a warning printed meanwhile by another
    # thread can follow on the same line
    epochs = [re.sub(r"( img/s| min)\b.*", r"\1", line.rstrip())
              for line in lines if re.match(r"(epoch \d+/\d+  train_loss|done: )", line)]
    with open(os.path.join(args.out, "epochs.txt"), "w") as f:
        f.write("\n".join(epochs) + "\n")
    timing = {key: value.strip() for key, value in (line.strip().split(": ", 1) for line in lines
              if line.strip().startswith(("Elapsed (wall clock) time", "Maximum resident set size")))}
    with open(os.path.join(args.run_dir, "run_summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(args.out, "RECORD.md"), "w") as f:
        f.write(_record(args, summary, timing, epochs))


def _record(args, summary, timing, epochs) -> str:
    import paddle

    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    peak_kb = timing.get("Maximum resident set size (kbytes)")
    rows = [f"- command: `{args.command}`", f"- commit: {commit}",
            f"- machine: {cpu}, {os.cpu_count()} cores, no GPU; Python {platform.python_version()}, "
            f"paddle {paddle.__version__}",
            f"- date: {datetime.date.today().isoformat()}",
            "- wall time (command start to exit, /usr/bin/time): "
            + timing.get("Elapsed (wall clock) time (h:mm:ss or m:ss)", "n/a"),
            f"- peak memory: {int(peak_kb) / 1024 ** 2:.2f} GiB" if peak_kb else "- peak memory: n/a",
            "- data: the JPEG (quality 75) copy of CIFAR-10 (`../shared/datasets/build_cifar10.py`)",
            f"- selected epoch (best validation accuracy): {summary.get('best_epoch')}, "
            f"val {summary.get('best_val_acc')}, test {summary.get('test_acc_at_best')}, "
            f"test with flip TTA {summary.get('test_acc_tta_at_best')}"]
    if args.note:
        rows.append(f"- note: {args.note}")
    return "# Run record\n\n" + "\n".join(rows) + "\n\n```\n" + "\n".join(epochs) + "\n```\n"


if __name__ == "__main__":
    main()
