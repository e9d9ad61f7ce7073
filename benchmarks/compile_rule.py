"""The measurements behind MAML's compile=None default (meta_step compiled): one meta_step,
eager (the tape) against compiled (torch.func's gradient as one graph), for sinusoid MLPs of
growing width and for conv-4 (second and first order), median ms of interleaved rounds, with the
forward FLOPs of the meta-batch's support sets and the seconds the first compiled call took
(compiling from an empty inductor cache: what a first run pays).

    python benchmarks/compile_rule.py [--widths 40,160,400,1000] [--rounds 5] [--out JSON]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp())  # compile from cold

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import metakit
from metakit import MAML
from speed import make_case


def sinusoid_case(width: int):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    batch = metakit.tasks.Sinusoid(10, 10).sample(25, g)
    return metakit.nets.MLP(1, [width, width], 1), batch, F.mse_loss, 0.01


def conv4_case():
    model, batch, loss, _, _, lr = make_case("conv4-so", "cpu")
    return model, batch, loss, lr


def measure(name, model, batch, loss, lr, rounds, per_round, first_order=False):
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        model(batch.support_x.flatten(0, 1))
    learners, first = {}, {}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # zeroes the gradients; steps nowhere
    for compiled in (False, True):
        learners[compiled] = MAML(model, loss, lr, first_order=first_order, compile=compiled)
        start = time.perf_counter()
        learners[compiled].meta_step(batch, optimizer)  # compiles
        first[compiled] = time.perf_counter() - start
        learners[compiled].meta_step(batch, optimizer)
    seconds = {False: [], True: []}
    for _ in range(rounds):  # interleaved: eager, compiled, eager, ...
        for compiled, learner in learners.items():
            for _ in range(per_round):
                start = time.perf_counter()
                learner.meta_step(batch, optimizer)
                seconds[compiled].append(time.perf_counter() - start)
    eager, compiled = (1e3 * statistics.median(seconds[c]) for c in (False, True))
    row = {"case": name, "support_forward_mflop": flops.get_total_flops() / 1e6, "eager_ms": eager,
           "compiled_ms": compiled, "speedup": eager / compiled, "compile_s": first[True]}
    print(f"{name:24s} {row['support_forward_mflop']:9.2f} MFLOP  eager {eager:8.2f} ms  compiled "
          f"{compiled:8.2f} ms  {row['speedup']:.2f}x  (first compiled call {first[True]:.1f} s)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", default="40,160,400,1000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/compile-rule-cpu.json")
    args = parser.parse_args()
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        model, batch, loss, lr = sinusoid_case(width)
        rows.append(measure(f"sinusoid MLP {width}x{width}", model, batch, loss, lr, args.rounds, 10))
    model, batch, loss, lr = conv4_case()
    rows.append(measure("conv-4, 32 tasks", model, batch, loss, lr, args.rounds, 2))
    rows.append(measure("conv-4, first order", model, batch, loss, lr, args.rounds, 2, first_order=True))
    Path(args.out).write_text(json.dumps({
        "rows": rows, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "note": "one MAML inner step, second order unless the case says first order; meta_step with an SGD "
                "step of size 0",
    }, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
