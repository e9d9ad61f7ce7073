"""Seconds per MB-MPO iteration on HalfCheetah-v5 at the `mbmpo-halfcheetah` config's sizes,
split into its four phases (real sampling, model fitting, imagined sampling, policy
optimisation), for the first iterations of a fresh run; then, from the state they leave, one
model fit in each `model_precision` and one meta-step in each `fisher` x `model_precision`
setting, and with `algorithm.compile` and the PPO-style update, interleaved, each from the same
weights; and one imagined step of 20 tasks x E
episodes through the 5-model ensemble, each model's tasks as one batch (what ModelEnv does for
tasks spread evenly) against per-task weights. Writes benchmarks/results/mbmpo-iteration-cpu.json.

    OMP_NUM_THREADS=1 python benchmarks/mbmpo_iteration.py [--iterations 2] [--meta-steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import itertools
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
            ensemble._net(x, models)  # in the same precision
            times["grouped_ms"].append(1000 * (middle - start))
            times["per_task_weights_ms"].append(1000 * (time.perf_counter() - middle))
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def settings(mbmpo, generator, rounds: int = 3, meta_lr: float = 1e-3) -> dict:
    """Median seconds of a model fit per precision and of a meta-step's imagined sampling and
    policy optimisation per setting (fisher x precision; then the adapted-Fisher TRPO step and
    the PPO-style update, eager and compiled), every measurement from the same state. Each
    compiled setting takes one meta-step first, untimed, to compile."""
    ensemble, meta = mbmpo.ensemble, mbmpo.meta
    start = copy.deepcopy((ensemble.state_dict(), ensemble.optimizer.state_dict(), meta.policy.state_dict()))
    kept = (ensemble.precision, meta.fisher_mode, meta.compile, mbmpo.meta_optimizer)
    steps_grid = {
        f"{fisher}/{precision}": (fisher, precision, False, "trpo")
        for fisher, precision in itertools.product(("exact", "adapted"), ("float32", "bfloat16"))
    }
    steps_grid.update({
        "adapted/float32/compiled": ("adapted", "float32", True, "trpo"),
        "ppo/float32": ("adapted", "float32", False, "ppo"),
        "ppo/float32/compiled": ("adapted", "float32", True, "ppo"),
    })

    def restore(fisher="adapted", precision="float32", compiled=False, update="trpo"):
        ensemble.load_state_dict(start[0])
        ensemble.optimizer.load_state_dict(start[1])
        meta.policy.load_state_dict(start[2])
        ensemble.precision, meta.fisher_mode, meta.compile = precision, fisher, compiled
        ppo = update == "ppo"
        mbmpo.meta_optimizer = torch.optim.Adam(meta.policy.parameters(), lr=meta_lr) if ppo else None

    for setting in steps_grid.values():
        if setting[2]:
            restore(*setting)
            mbmpo.meta_step(generator)
    fits, steps = {}, {}
    for _ in range(rounds):
        for precision in ("float32", "bfloat16"):
            restore(precision=precision)
            clock = time.perf_counter()
            mbmpo.fit_models(generator)
            fits.setdefault(precision, []).append(time.perf_counter() - clock)
        for name, setting in steps_grid.items():
            restore(*setting)
            info = mbmpo.meta_step(generator)
            steps.setdefault(name, []).append((info["imagined_sampling_s"], info["policy_optimisation_s"]))
    restore()
    ensemble.precision, meta.fisher_mode, meta.compile, mbmpo.meta_optimizer = kept
    return {
        "model_fit_s": {k: round(statistics.median(v), 2) for k, v in fits.items()},
        "meta_step_s": {
            k: {
                "imagined_sampling_s": round(statistics.median(t[0] for t in v), 2),
                "policy_optimisation_s": round(statistics.median(t[1] for t in v), 2),
            }
            for k, v in steps.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--meta-steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)  # of the settings comparison
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
    compared = settings(algo.mbmpo, generator, args.rounds, config.algorithm.meta_lr)
    print("from the same state:", compared)
    query = ensemble_query(algo.mbmpo.ensemble, config.train.meta_batch_size, config.train.episodes)
    print("one imagined step through the ensemble:", query)
    result = {
        "config": "mbmpo-halfcheetah",
        "meta_steps": args.meta_steps,
        "fisher": config.algorithm.fisher,
        "model_precision": config.algorithm.model_precision,
        "imagined_episodes": config.train.episodes,
        "iterations": rows,
        "settings_from_the_same_state": compared,
        "imagined_step": query,
        "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
