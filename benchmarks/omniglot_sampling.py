"""Episode sampling against a meta-iteration on Omniglot (issue 3: sampling must be negligible).

Times, interleaved in one process, (a) sampling a meta-batch of episodes from the training
split of the bundled MAML configs and (b) one second-order MAML meta-iteration (meta-gradient
and Adam step) on such a batch. Writes benchmarks/results/omniglot-sampling-<device>.json.

    python benchmarks/omniglot_sampling.py [--device cpu|cuda] [--rounds 20]
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


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rows = []
    for name in ("omniglot-maml-5way", "omniglot-maml-20way"):
        config = load_config(name)
        algo = build(config, args.device)
        task, learner, optimizer = algo.task, algo.learner, algo.optimizer
        generator = torch.Generator().manual_seed(0)
        size = config.train.meta_batch_size
        batch = task.sample(size, generator).to(args.device)

        def iteration():
            optimizer.zero_grad(set_to_none=True)
            learner.meta_backward(batch)
            optimizer.step()

        sample_ms, iteration_ms = [], []
        for _ in range(3):  # warm-up
            task.sample(size, generator).to(args.device)
            iteration()
        for _ in range(args.rounds):  # interleaved: both see the same machine state
            sample_ms.append(timed(lambda: task.sample(size, generator).to(args.device), args.device))
            iteration_ms.append(timed(iteration, args.device))
        row = {"config": name, "episodes": size, "ways": config.task.ways,
               "sample_ms": statistics.median(sample_ms), "iteration_ms": statistics.median(iteration_ms)}
        row["sample_share"] = row["sample_ms"] / (row["sample_ms"] + row["iteration_ms"])
        rows.append(row)
        print(f"{name}: sampling {size} episodes {row['sample_ms']:.2f} ms, meta-iteration "
              f"{row['iteration_ms']:.1f} ms ({100 * row['sample_share']:.1f}% of the total)")
    hardware = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
                else f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    out = Path(__file__).parent / "results" / f"omniglot-sampling-{args.device.split(':')[0]}.json"
    out.write_text(
        json.dumps({"hardware": f"{hardware}, torch {torch.__version__}", "rows": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
