"""Seconds per MB-MPO iteration on HalfCheetah-v5 at the `mbmpo-halfcheetah` config's sizes,
split into its four phases (real sampling, model fitting, imagined sampling, policy
optimisation), for the first iterations of a fresh run; and one imagined step of 20 tasks x
E episodes through the 5-model ensemble, each model's tasks as one batch (what ModelEnv does
for tasks spread evenly) against per-task weights. Writes
benchmarks/results/mbmpo-iteration-cpu.json.

    OMP_NUM_THREADS=1 python benchmarks/mbmpo_iteration.py [--iterations 2] [--meta-steps 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from metakit.experiment import build, load_config

PHASES = ("real_sampling_s", "model_fitting_s", "imagined_sampling_s", "policy_optimisation_s")


def ensemble_query(ensemble, tasks: int, episodes: int, rounds: int = 20) -> dict[str, float]:
    """Median ms of one imagined step: grouped by model against per-task weights."""
    s, a = torch.randn(tasks, episodes, 17), torch.randn(tasks, episodes, 6)
    models = torch.arange(tasks) % ensemble.models
    x = (torch.cat([s, a], -1) - ensemble.input_mean) / ensemble.input_std
    times = {"grouped_ms": [], "per_task_weights_ms": []}
    with torch.no_grad():
        for _ in range(rounds):  # alternate the two
            start = time.perf_counter()
            ensemble.dynamics(models, s, a)
            middle = time.perf_counter()
            ensemble.net(x, models)
            times["grouped_ms"].append(1000 * (middle - start))
            times["per_task_weights_ms"].append(1000 * (time.perf_counter() - middle))
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--meta-steps", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mbmpo-iteration-cpu.json"))
    args = parser.parse_args()
    config = load_config("mbmpo-halfcheetah", [f"algorithm.meta_steps={args.meta_steps}"])
    algo = build(config)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(args.iterations):
        start = time.perf_counter()
        metrics = algo.mbmpo.iteration(generator)
        rows.append(
            {
                "iteration": i + 1,
                "real_steps": algo.mbmpo.real_steps,
                **{p: round(metrics[p], 2) for p in PHASES},
                "total_s": round(time.perf_counter() - start, 2),
            }
        )
        print(rows[-1], flush=True)
    query = ensemble_query(algo.mbmpo.ensemble, config.train.meta_batch_size, config.train.episodes)
    print("one imagined step through the ensemble:", query)
    result = {
        "config": "mbmpo-halfcheetah",
        "meta_steps": args.meta_steps,
        "iterations": rows,
        "imagined_step": query,
        "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
