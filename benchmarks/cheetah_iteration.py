"""Seconds for one MAML-TRPO iteration on half-cheetah direction at the paper's size (40 tasks x
20 episodes x 200 steps, before and after adaptation, then the TRPO step), with the batched
MuJoCo stepping and with Gymnasium's vector API, side by side in one process.
Writes benchmarks/results/cheetah-iteration-cpu.json.

    python benchmarks/cheetah_iteration.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import torch

from metakit.experiment.config import load_config
from metakit.experiment.runner import build
from metakit.rl import envs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "cheetah-iteration-cpu.json")
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    algo = build(load_config("maml-trpo-cheetah-dir"))
    seconds = {}
    for stepping in ("batched", "gymnasium"):
        algo.env = envs.HalfCheetahDir(stepping=stepping)
        start = time.perf_counter()
        algo.step(torch.Generator().manual_seed(0))
        seconds[stepping] = time.perf_counter() - start
        print(f"{stepping}: {seconds[stepping]:.1f} s an iteration")
    out = {
        "benchmark": "one MAML-TRPO iteration, maml-trpo-cheetah-dir config (40 x 20 x 200)",
        "hardware": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} threads, "
        f"torch {torch.__version__}",
        "seconds": seconds,
        "speedup": seconds["gymnasium"] / seconds["batched"],
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
