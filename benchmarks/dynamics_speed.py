"""MB-MPO's dynamics ensemble: seconds for one training epoch of 5 models (2 x 512 ReLU,
HalfCheetah's 17 + 6 inputs, batches of 500, Adam) on N transitions, as metakit's
`DynamicsEnsemble` (the 5 models stacked, one computation) against a loop of 5 separate
nn.Sequential models with their own Adam. Rounds alternate; medians.
Writes benchmarks/results/dynamics-speed-cpu.json.

    python benchmarks/dynamics_speed.py [--transitions 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from metakit.rl.dynamics import DynamicsEnsemble


def separate_epoch(models, optimizers, x, y, batch: int, generator) -> float:
    start = time.perf_counter()
    for model, optimizer in zip(models, optimizers):
        order = torch.randperm(x.shape[0], generator=generator)
        for i in range(0, x.shape[0], batch):
            rows = order[i : i + batch]
            loss = (model(x[rows]) - y[rows]).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transitions", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dynamics-speed-cpu.json"))
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    n, obs, act = args.transitions, 17, 6
    s, a, s2 = torch.randn(n, obs), torch.randn(n, act), torch.randn(n, obs)
    ensemble = DynamicsEnsemble(obs, act, models=5, hidden_sizes=(512, 512), generator=generator)
    models = [
        nn.Sequential(
            nn.Linear(obs + act, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, obs)
        )
        for _ in range(5)
    ]
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    x, y = torch.cat([s, a], -1), s2 - s
    times = {"metakit DynamicsEnsemble": [], "5 separate models": []}
    for _ in range(args.rounds):
        start = time.perf_counter()  # valid_fraction 0: a whole epoch of training, like the loop
        ensemble.fit(s, a, s2, epochs=1, batch_size=500, valid_fraction=1 / n, generator=generator)
        times["metakit DynamicsEnsemble"].append(time.perf_counter() - start)
        times["5 separate models"].append(separate_epoch(models, optimizers, x, y, 500, generator))
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))
    out = {
        "benchmark": f"one epoch, 5 models 2 x 512, {n} transitions, batches of 500",
        "hardware": f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "seconds": medians,
        "rounds": times,
        "speedup": medians["5 separate models"] / medians["metakit DynamicsEnsemble"],
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
