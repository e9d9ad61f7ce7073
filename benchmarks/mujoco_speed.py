"""HalfCheetah (or Ant) steps per second: Gymnasium's vector API against metakit's batched stepping
(`MuJoCoCopies`), through the same TaskEnv interface the samplers use, with the same number of
parallel episodes (the paper's 40 tasks x 20 episodes) and the same random actions. Both give
Gymnasium's v5 physics bit for bit (tests/test_rl.py). Rounds alternate; medians.
Writes benchmarks/results/mujoco-speed-cpu.json (Ant: mujoco-speed-ant-cpu.json).

    python benchmarks/mujoco_speed.py [--robot Ant] [--rounds 5] [--steps 50] [--threads 2]

--threads: the worker processes of the batched stepping.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from metakit.rl.envs import Locomotion


def steps_per_second(env, steps: int, generator: torch.Generator) -> float:
    env.reset(20, generator)
    actions = torch.rand(steps, *env.tasks.shape[:1], 20, env.action_size, generator=generator) * 2 - 1
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    return actions[0, ..., 0].numel() * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--robot", choices=["HalfCheetah", "Ant"], default="HalfCheetah")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    name = (
        "mujoco-speed-cpu.json"
        if args.robot == "HalfCheetah"
        else f"mujoco-speed-{args.robot.lower()}-cpu.json"
    )
    args.out = args.out or str(Path(__file__).parent / "results" / name)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)  # the batched stepping uses as many worker processes
    generator = torch.Generator().manual_seed(0)
    envs = {
        name: Locomotion(args.robot, "velocity", horizon=10**6, stepping=name)
        for name in ("gymnasium", "batched")
    }
    for env in envs.values():
        env.set_tasks(env.sample_tasks(40, generator))
        steps_per_second(env, 2, generator)  # build the models outside the clock
    rates = {name: [] for name in envs}
    for _ in range(args.rounds):
        for name, env in envs.items():
            rates[name].append(steps_per_second(env, args.steps, generator))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    speedup = medians["batched"] / medians["gymnasium"]
    print(", ".join(f"{name} {rate:,.0f} steps/s" for name, rate in medians.items()) + f" ({speedup:.2f}x)")
    out = {
        "benchmark": f"{args.robot}-v5 steps per second, 40 tasks x 20 episodes stepped together",
        "hardware": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} threads, "
        f"torch {torch.__version__}",
        "steps_per_second": medians,
        "rounds": rates,
        "speedup": speedup,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
