"""Few-shot evaluation of a trained learner on fresh tasks: loss after k inner steps, 95% CI."""
from __future__ import annotations

import math

import torch

from .build import build_task
from .config import ExperimentConfig


def mean_ci95(values: torch.Tensor) -> tuple[float | None, float | None]:
    """Mean and half-width of the normal-approximation 95% confidence interval; None for both
    when a value is not finite (a diverged task), so results stay valid JSON."""
    values = values.double()
    if not torch.isfinite(values).all():
        return None, None
    half = 1.96 * values.std().item() / math.sqrt(values.numel()) if values.numel() > 1 else None
    return values.mean().item(), half


def evaluate(learner, config: ExperimentConfig, device: str = "cpu", chunk_tasks: int = 100) -> dict:
    """Query loss after each of `config.eval.steps` inner steps, on eval.num_tasks fresh tasks
    with eval.support_shots support points (the same tasks for every step count)."""
    ev = config.eval
    task = build_task(config, ev.support_shots, ev.query_shots)
    batch = task.sample(ev.num_tasks, torch.Generator().manual_seed(ev.seed)).to(device)
    saved_lr = learner.inner_lr
    learner.inner_lr = saved_lr if ev.inner_lr is None else ev.inner_lr
    was_training = learner.training
    learner.eval()
    per_step = {}
    try:
        for steps in ev.steps:
            losses = []
            for start in range(0, ev.num_tasks, chunk_tasks):
                chunk = batch[start:start + chunk_tasks]
                fast = learner.adapt(chunk.support_x, chunk.support_y, steps=steps)
                with torch.no_grad():
                    losses.append(learner.query_losses(fast, chunk).detach().cpu())
            per_step[str(steps)] = torch.cat(losses)
    finally:
        learner.inner_lr = saved_lr
        learner.train(was_training)
    stats = {k: mean_ci95(v) for k, v in per_step.items()}
    return {"mse_after_steps": {k: m for k, (m, _) in stats.items()},
            "ci95": {k: c for k, (_, c) in stats.items()},
            # the mean hides nothing, but one diverged task makes it useless: show both
            "median_after_steps": {k: v.double().nan_to_num(nan=math.inf).median().item()
                                   for k, v in per_step.items()},  # a NaN task counts as +inf
            "diverged_tasks": {k: int((~torch.isfinite(v)).sum()) for k, v in per_step.items()},
            "eval_tasks": ev.num_tasks, "eval_support_shots": ev.support_shots,
            "eval_inner_lr": learner.inner_lr if ev.inner_lr is None else ev.inner_lr}
