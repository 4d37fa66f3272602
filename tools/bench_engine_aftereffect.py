"""How running a Paddle Inference predictor changes the speed of eager training steps in the same process.

    python tools/bench_engine_aftereffect.py [--model mobilenet_v1] [--threads 2] [--repeats 10] [--blocks 3]

Paddle Inference sets the process's MKL and OpenMP thread count to 1 after every predictor run; the project's
deploy path (``deploy.run_predictor``) puts the process's count back. One process times a training step (Adam, a
random batch of 64 at 32 px, the training configs' size) in three states: fresh, after the deploy path ran a
predictor (batch 1 at 224 px), and after a bare ``predictor.run()``. The last state does not undo itself, so the
states run in this order and each block starts a fresh process; medians are over the steps of all blocks.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import _bootstrap

STATES = ("fresh", "deploy path ran", "bare predictor ran")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenet_v1")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="timed steps per state and block")
    p.add_argument("--blocks", type=int, default=3, help="fresh process pairs")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(args):
    """Print {state: [seconds per step]} for one fresh process."""
    import numpy as np

    from paddle_mbnet import deploy
    from paddle_mbnet.analysis.benchmark import time_fn, train_step_fn
    from paddle_mbnet.analysis.specs import build
    from paddle_mbnet.cpu.memory import keep_freed_memory

    keep_freed_memory()  # as tools/train.py and tools/compare.py run
    step = train_step_fn(build(args.model, 32), 64, 32)
    times = {STATES[0]: time_fn(step, warmup=2, repeats=args.repeats).tolist()}
    with tempfile.TemporaryDirectory() as folder:
        model = build(args.model, 224)
        model.eval()
        predictor = deploy.create_predictor(deploy.export(model, os.path.join(folder, "m"), 224), args.threads)
        image = np.random.rand(1, 3, 224, 224).astype("float32")
        for _ in range(3):
            deploy.run_predictor(predictor, image)
        times[STATES[1]] = time_fn(step, warmup=1, repeats=args.repeats).tolist()
        predictor.run()  # the same input again, without the deploy path's restore
        times[STATES[2]] = time_fn(step, warmup=1, repeats=args.repeats).tolist()
    print("RESULT " + json.dumps(times))


def main(argv=None):
    args = parse_args(argv)
    args.threads = _bootstrap.set_threads(args.threads)
    if args.child:
        import paddle

        paddle.base.core.set_num_threads(args.threads)
        return child(args)
    import numpy as np

    from paddle_mbnet.analysis.benchmark import env_header

    print(env_header())
    print(f"threads {args.threads}; model {args.model}; training step: Adam, batch 64 at 32 px; predictor: "
          f"Paddle Inference + oneDNN, batch 1 at 224 px; {args.blocks} fresh processes x "
          f"{args.repeats} steps per state")
    command = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--child"]
    collected = {state: [] for state in STATES}
    for _ in range(args.blocks):
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        for state, values in result.items():
            collected[state] += values
    fresh = float(np.median(collected[STATES[0]]))
    for state, values in collected.items():
        median = float(np.median(values))
        print(f"{state:20s} step p50 {median * 1000:7.1f} ms  p90 {np.percentile(values, 90) * 1000:7.1f} ms"
              f"  {median / fresh:5.2f}x fresh")


if __name__ == "__main__":
    main()
