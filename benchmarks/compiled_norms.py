"""Compiled meta-gradients through every normalisation layer: MAML (2 inner steps, second
order) on a small net with each norm, float32, eager and compiled, each against a per-task
float64 loop: torch.func's gradient of the whole meta-loss (what `meta_step` compiles) and
the tape (`meta_loss(batch).backward()`). Writes benchmarks/results/compiled-norms-cpu.json.

    python benchmarks/compiled_norms.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from metakit import MAML, TaskBatch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_meta_gradients import NORMS, NormNet, flat, loop_meta_loss, small_batch  # noqa: E402


def relative_error(model, batch, reference, compile: bool, meta_gradient: str) -> float:
    learner = MAML(model, F.mse_loss, 0.1, inner_steps=2, compile=compile, meta_gradient=meta_gradient)
    if meta_gradient == "functional":  # meta_step, as a user calls it (it compiles on first use)
        learner.meta_step(batch, torch.optim.SGD(model.parameters(), lr=0.0))  # lr 0: weights stay
        grads = [p.grad for p in model.parameters()]
    else:
        grads = torch.autograd.grad(learner.meta_loss(batch), list(model.parameters()))
    ours = torch.cat([g.reshape(-1) for g in grads]).double()
    return ((ours - reference).norm() / reference.norm()).item()


def main() -> None:
    rows = {}
    for norm in NORMS:
        torch.manual_seed(0)
        model = NormNet(NORMS[norm]())
        with torch.no_grad():  # affine parameters away from their 1/0 start, so errors would show
            for p in model.norm.parameters():
                p.add_(0.5 * torch.randn_like(p))
        model.eval() if norm == "batchnorm-running-stats" else model.train()  # train: the tape's case
        batch = small_batch(tasks=4, shots=10)
        exact = NormNet(NORMS[norm]())
        exact.load_state_dict(model.state_dict())
        exact.double().train(model.training)
        batch64 = TaskBatch(*(t.double() for t in batch))
        reference = flat(
            torch.autograd.grad(loop_meta_loss(exact, batch64, 0.1, 2), list(exact.parameters()))
        )
        rows[norm] = {
            f"{path} {mode}": relative_error(model, batch, reference, mode == "compiled", path)
            for path in ("functional", "tape")
            for mode in ("eager", "compiled")
        }
        print(f"{norm:24} " + "  ".join(f"{k} {v:.1e}" for k, v in rows[norm].items()), flush=True)
    out = Path(__file__).parent / "results" / "compiled-norms-cpu.json"
    out.write_text(
        json.dumps({"torch": torch.__version__, "relative_error_vs_float64_loop": rows}, indent=2) + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
