"""MANN speed: training episodes per second of MANN and its LSTM baseline at the paper's size
(16 episodes of 5 classes x 10 drawings of 20 x 20 images an update, forward, backward and
Adam), each batch one batched recurrence; each model reading the pixels (the paper), through
the pixels + conv encoder of the bundled configs, and through a frozen conv-4 embedding
(`algorithm.encoder: conv4` after its pretraining; MANN as omniglot-mann-conv4 runs it:
`input_keys`, `bind_writes`, 256 slots). Rounds are
interleaved; medians are reported. Writes benchmarks/results/mann-speed-cpu.json.

    python benchmarks/mann_speed.py [--rounds 10] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from metakit.memory import MANN, LSTMBaseline
from metakit.tasks import SequenceEpisodes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mann-speed-cpu.json"))
    args = parser.parse_args()
    ink = torch.rand(100, 20, 20, 20, generator=torch.Generator().manual_seed(0)) > 0.8  # 100 random classes
    images = ink.to(torch.uint8) * 255
    episodes = SequenceEpisodes(images)
    generator = torch.Generator().manual_seed(0)
    conv = {"encoder": "pixels+conv"}
    conv4 = {"encoder": "conv4", "encoder_channels": 64}
    models = {"mann": MANN(), "lstm": LSTMBaseline(),
              "mann-pixels+conv": MANN(key_strength=True, write_vector=True, **conv),
              "lstm-pixels+conv": LSTMBaseline(**conv),
              "mann-conv4-frozen": MANN(key_strength=True, write_vector=True, input_keys=True,
                                        bind_writes=True, slots=256, **conv4),
              "lstm-conv4-frozen": LSTMBaseline(**conv4)}
    for name in ("mann-conv4-frozen", "lstm-conv4-frozen"):
        models[name].encoder.freeze()
    models = {name: model.to(args.device) for name, model in models.items()}
    optimizers = {name: torch.optim.Adam(model.parameters(), 1e-3) for name, model in models.items()}

    def update(name: str) -> float:
        x, y = (t.to(args.device) for t in episodes.sample(args.batch, generator))
        start = time.perf_counter()
        loss = F.cross_entropy(models[name](x, y).flatten(0, 1), y.flatten())
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in models:  # warm-up
        update(name)
    seconds = {name: [] for name in models}
    for _ in range(args.rounds):  # interleaved: both see the same machine state
        for name in models:
            seconds[name].append(update(name))
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    rows = {name: {"seconds_per_update": m, "episodes_per_second": args.batch / m}
            for name, m in medians.items()}
    threads = torch.get_num_threads()
    hardware = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
                else f"{platform.machine()} CPU, {threads} thread{'s' * (threads > 1)}")
    for name, row in rows.items():
        print(f"{name}: {row['seconds_per_update'] * 1000:.0f} ms an update of {args.batch} episodes, "
              f"{row['episodes_per_second']:.0f} episodes/s")
    result = {"hardware": f"{hardware}, torch {torch.__version__}", "batch": args.batch,
              "rounds": args.rounds, "models": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
