"""Meta-RL speed (issue 4): environment steps per second of metakit's batched tensor
environments against the same environment looped through Gymnasium's SyncVectorEnv (and,
for cart-pole, against Gymnasium's own numpy CartPole-v1), plus one MAML-TRPO iteration on
2D navigation at the paper's size. Rounds are interleaved; medians are reported.
Writes benchmarks/results/rl-speed-cpu.json.

    python benchmarks/rl_speed.py [--episodes 400] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import torch

from metakit.rl import envs
from metakit.rl.maml_trpo import MAMLTRPO
from metakit.rl.optim import hessian_vector_product
from metakit.rl.policies import GaussianMLPPolicy

STEPS = 100


def batched(name: str, episodes: int):
    env = envs.make(name)
    env.set_tasks(env.sample_tasks(1))
    shape = (1, episodes) + (() if env.discrete else (env.action_size,))

    def run() -> int:
        env.reset(episodes)
        for _ in range(STEPS):  # finished episodes keep stepping (masked): the batch never shrinks
            action = torch.randint(env.action_size, shape) if env.discrete else torch.rand(shape) * 0.2 - 0.1
            env.step(action)
        return episodes * STEPS

    return run


def vectorised(env_id: str, episodes: int):
    vector = gymnasium.make_vec(env_id, num_envs=episodes, vectorization_mode="sync")
    vector.reset(seed=0)

    def run() -> int:
        for _ in range(STEPS):  # autoreset keeps every sub-environment stepping
            vector.step(vector.action_space.sample())
        return episodes * STEPS

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--episodes", type=int, default=400, help="parallel episodes (the paper's 20 tasks x 20)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    cases = {
        "Navigation2D: metakit batched": batched("Navigation2D", args.episodes),
        "Navigation2D: SyncVectorEnv of metakit/Navigation2D-v0": vectorised(
            "metakit/Navigation2D-v0", args.episodes
        ),
        "CartPole: metakit batched": batched("CartPole", args.episodes),
        "CartPole: SyncVectorEnv of metakit/CartPole-v0": vectorised("metakit/CartPole-v0", args.episodes),
        "CartPole: SyncVectorEnv of Gymnasium's CartPole-v1 (numpy)": vectorised(
            "CartPole-v1", args.episodes
        ),
    }
    seconds = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, run in cases.items():
            start = time.perf_counter()
            steps = run()
            seconds[name].append((time.perf_counter() - start) / steps)
    rows = [{"case": name, "steps_per_second": 1 / statistics.median(s)} for name, s in seconds.items()]
    for row in rows:
        print(f"{row['case']}: {row['steps_per_second']:,.0f} steps/s")
    speedups = {
        "Navigation2D": rows[0]["steps_per_second"] / rows[1]["steps_per_second"],
        "CartPole vs metakit/CartPole-v0": rows[2]["steps_per_second"] / rows[3]["steps_per_second"],
        "CartPole vs Gymnasium CartPole-v1": rows[2]["steps_per_second"] / rows[4]["steps_per_second"],
    }
    for name, value in speedups.items():
        print(f"speed-up {name}: {value:.1f}x")
    torch.manual_seed(0)
    env, generator = envs.Navigation2D(), torch.Generator().manual_seed(0)
    algo = MAMLTRPO(GaussianMLPPolicy(2, 2), fast_lr=0.1)
    algo.step(env, 20, 20, generator)  # warm-up
    iteration = []
    for _ in range(3):
        start = time.perf_counter()
        algo.step(env, 20, 20, generator)
        iteration.append(time.perf_counter() - start)
    print(
        "MAML-TRPO iteration, 2D navigation, 20 tasks x 20 episodes x 100 steps: "
        f"{statistics.median(iteration):.2f} s"
    )
    hvp = kl_hessian_products(algo, env, generator)
    print(
        "one KL Hessian-vector product through the inner step: "
        f"double backward {hvp['double_backward']:.3f} s, "
        f"J^T F J {hvp['fisher']:.3f} s ({hvp['double_backward'] / hvp['fisher']:.2f}x)"
    )
    out = Path(__file__).parent / "results" / "rl-speed-cpu.json"
    out.write_text(
        json.dumps(
            {
                "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, "
                f"torch {torch.__version__}, "
                f"gymnasium {gymnasium.__version__}, numpy {np.__version__}",
                "episodes": args.episodes,
                "rows": rows,
                "speedups": speedups,
                "maml_trpo_iteration_seconds": statistics.median(iteration),
                "kl_hessian_product_seconds": hvp,
            },
            indent=2,
        )
        + "\n"
    )


def kl_hessian_products(algo, env, generator, rounds: int = 5) -> dict:
    """Seconds per product, median of interleaved rounds, on one sampled iteration."""
    data = algo.sample(env, 20, 20, generator)
    params = list(algo.policy.parameters())
    _, kl, out = algo.objectives(data)()
    products = {
        "double_backward": hessian_vector_product(kl, params, algo.cg_damping),
        "fisher": algo.fisher(data)(out),
    }
    vector = torch.randn(sum(p.numel() for p in params), generator=generator)
    times = {name: [] for name in products}
    for _ in range(rounds):
        for name, product in products.items():
            start = time.perf_counter()
            product(vector)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


if __name__ == "__main__":
    main()
