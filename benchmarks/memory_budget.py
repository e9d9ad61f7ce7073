"""MAML(memory_budget_mb=m): the chunk it chooses for conv-4 and the peak its meta-steps then reach.

    python benchmarks/memory_budget.py [--device cpu] [--budgets 6,12,50,1000]

For each budget: the chunk size chosen (and the seconds the measuring took), then the peak
memory of one meta-step with that chunk, measured the same way (engine.peak_memory_mb).
Writes benchmarks/results/memory-budget-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metakit import MAML
from metakit.engine import peak_memory_mb
from speed import make_case


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", default="conv4-so")
    parser.add_argument("--budgets", default="6,12,50,1000")
    args = parser.parse_args()
    model, batch, loss, steps, first_order, lr = make_case(args.case, args.device)
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        maml = MAML(model, loss, lr, steps, first_order=first_order, memory_budget_mb=budget)
        start = time.perf_counter()
        chunk = maml.choose_chunk_size(batch, budget)
        seconds = time.perf_counter() - start
        maml.chunk_size, maml.memory_budget_mb = chunk, None  # the step itself, measured alone
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        peak = peak_memory_mb(lambda: maml.meta_step(batch, optimizer), args.device)  # noqa: B023
        rows.append(
            {"budget_mb": budget, "chunk_size": chunk, "choose_s": seconds, "meta_step_peak_mb": peak}
        )
        print(f"budget {budget:7.1f} MB: {chunk:3d} tasks a chunk (chosen in {seconds:.1f} s), "
              f"meta-step peak {peak:.1f} MB", flush=True)
    out = Path(__file__).parent / "results" / f"memory-budget-{args.device.split(':')[0]}.json"
    report = {"case": args.case, "tasks": batch.num_tasks, "device": args.device, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "rows": rows}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
