"""One process with 2 threads against torchrun with 2 processes of 1 thread: seconds per
meta-iteration of `metakit train CONFIG`, the same config and seed (so the same weights at the
end). The time per iteration is read from the run's own metrics (the clock between the first
and the last logged iteration), so start-up and evaluation are left out. Rounds alternate.
Writes benchmarks/results/distributed-cpu.json.

    python benchmarks/distributed_speed.py [--rounds 3] [--iterations 40]
    python benchmarks/distributed_speed.py --cases maml-trpo-cheetah-dir --rounds 1 --iterations 3 \
        --out benchmarks/results/distributed-cheetah-cpu.json     # MAML-TRPO at the paper's size
    python benchmarks/distributed_speed.py --cases mbmpo-halfcheetah --rounds 1 --iterations 3 \
        --out benchmarks/results/distributed-mbmpo-cpu.json       # the 3rd MB-MPO iteration
    python benchmarks/distributed_speed.py --cases omniglot-mann --rounds 3 --iterations 200 \
        --out benchmarks/results/distributed-mann-cpu.json        # MANN's updates
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

CASES = {  # config -> overrides that keep a round short
    "sinusoid": ["train.meta_batch_size=24", "train.log_every=1", "eval.num_tasks=10", "eval.steps=[0]"],
    "omniglot-maml-5way": [
        "train.log_every=1",
        "train.validate_every=0",
        "eval.num_tasks=5",
        "eval.steps=[0]",
    ],
    # 40 tasks x 20 episodes x 200 steps, the paper's iteration; a small evaluation at the end
    "maml-trpo-cheetah-dir": [
        "train.log_every=1",
        "eval.num_tasks=2",
        "eval.episodes=2",
        "eval.step_sizes=[0.1]",
    ],
    # MB-MPO as measured in the README: 20 tasks x 20 imagined episodes, 10 meta-steps an
    # iteration, the exact Fisher, float32 models (the config now takes 50 episodes, 30
    # meta-steps and the adapted Fisher)
    "mbmpo-halfcheetah": ["train.log_every=1", "algorithm.meta_steps=10", "train.episodes=20",
                          "algorithm.fisher=exact", "algorithm.model_precision=float32"],
    # MANN: 16 augmented episodes of 50 steps an update, the bundled model
    "omniglot-mann": ["task.shift=2", "task.rotate=10", "train.log_every=10", "train.validate_every=0",
                      "eval.num_episodes=10"],
}
DEFAULT_CASES = ["sinusoid", "omniglot-maml-5way"]


def seconds_per_iteration(config: str, overrides: list[str], iterations: int, ranks: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        sets = [x for value in [*overrides, f"train.iterations={iterations}"] for x in ("--set", value)]
        train = ["-m", "metakit", "train", config, "--out", out, "--quiet", *sets]
        if ranks == 1:
            command, threads = [sys.executable, *train], "2"
        else:
            command, threads = (
                [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), *train],
                "1",
            )
        subprocess.run(
            command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": threads}
        )
        rows = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    first, last = rows[min(4, len(rows) - 2)], rows[-1]  # skip the first iterations (warm-up)
    return (last["seconds"] - first["seconds"]) / (last["iteration"] - first["iteration"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"of {sorted(CASES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "distributed-cpu.json"))
    args = parser.parse_args()
    results = {}
    for config in args.cases.split(","):
        overrides = CASES[config]
        times = {"1 process x 2 threads": [], "2 processes x 1 thread": []}
        for _ in range(args.rounds):
            times["1 process x 2 threads"].append(
                seconds_per_iteration(config, overrides, args.iterations, 1)
            )
            times["2 processes x 1 thread"].append(
                seconds_per_iteration(config, overrides, args.iterations, 2)
            )
        medians = {k: statistics.median(v) for k, v in times.items()}
        results[config] = {
            "seconds_per_iteration": medians,
            "rounds": times,
            "speedup": medians["1 process x 2 threads"] / medians["2 processes x 1 thread"],
        }
        print(
            f"{config}: "
            + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in medians.items())
            + f" (2 ranks {results[config]['speedup']:.2f}x)"
        )
    out = {
        "benchmark": "seconds per meta-iteration, 1 process x 2 threads vs torchrun 2 processes x 1 thread",
        "hardware": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
        "iterations": args.iterations,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
