"""Choose BEB's bonus scale beta on MDPs that are not the evaluation tasks.

Plays BEB with each beta in the grid on 1000 random tabular MDPs drawn with seed 99 (the
reproduction evaluates on seed 1234), for trials of 10 and 25 episodes, and prints the mean
total reward ± 95% CI. Writes benchmarks/results/beb-beta.json. metakit.rl.classical.mdps.BEB_BETA
is the grid's best.

    python benchmarks/beb_beta.py [--tasks 1000] [--betas 0.1 0.3 1 3 10]
"""
from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch

from metakit.experiment.evaluate import mean_ci95
from metakit.rl.classical.mdps import beb_q, play_mdps
from metakit.rl.envs import TabularMDP


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "beb-beta.json"))
    args = parser.parse_args()
    env = TabularMDP()
    tasks = env.sample_tasks(args.tasks, torch.Generator().manual_seed(99))
    rows = []
    for beta in args.betas:
        for episodes in (10, 25):
            mean, ci = mean_ci95(
                play_mdps(
                    partial(beb_q, beta=beta), tasks, episodes, torch.Generator().manual_seed(0), env=env
                )
            )
            rows.append({"beta": beta, "episodes": episodes, "total_reward": mean, "ci95": ci})
            print(f"beta {beta:5.2f}  n {episodes:3d}  {mean:7.1f} ± {ci:.1f}", flush=True)
    Path(args.out).write_text(json.dumps({"tasks": args.tasks, "task_seed": 99, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
