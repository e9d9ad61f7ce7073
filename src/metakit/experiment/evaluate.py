"""Few-shot evaluation of a trained learner on fresh tasks: regression loss or classification
accuracy after k inner steps, with 95% confidence intervals over tasks."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..batch import TaskBatch
from ..metric import PrototypicalNetwork
from .builders import build_task, is_classification


def mean_ci95(values: torch.Tensor) -> tuple[float | None, float | None]:
    """Mean and half-width of the normal-approximation 95% confidence interval; None for both
    when a value is not finite (a diverged task), so results stay valid JSON."""
    values = values.double()
    if not torch.isfinite(values).all():
        return None, None
    half = 1.96 * values.std().item() / math.sqrt(values.numel()) if values.numel() > 1 else None
    return values.mean().item(), half


def progress_bar(total: int, description: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=description, disable=not enabled, dynamic_ncols=True, leave=False)


def evaluate(learner, config, device: str = "cpu", fixed_head: bool = True, progress: bool = False) -> dict:
    """fixed_head: the learner's model has a task.ways-way head (False: metric learners)."""
    if is_classification(config):
        return evaluate_classification(learner, config, device, fixed_head, progress)
    return evaluate_regression(learner, config, device, progress=progress)


def evaluate_regression(learner, config, device: str = "cpu", chunk_tasks: int = 100,
                        progress: bool = False) -> dict:
    """Query loss after each of `config.eval.steps` inner steps, on eval.num_tasks fresh tasks
    with eval.support_shots support points (the same tasks for every step count)."""
    ev = config.eval
    task = build_task(config, ev.support_shots, ev.query_shots)
    batch = task.sample(ev.num_tasks, torch.Generator().manual_seed(ev.seed)).to(device)
    saved_lr, eval_lr = learner.inner_lr, getattr(ev, "inner_lr", None)
    learner.inner_lr = saved_lr if eval_lr is None else eval_lr
    was_training = learner.training
    learner.eval()
    per_step = {}
    try:
        bar = progress_bar(len(ev.steps) * -(-ev.num_tasks // chunk_tasks), "evaluating", progress)
        for steps in ev.steps:
            losses = []
            for start in range(0, ev.num_tasks, chunk_tasks):
                bar.update()
                chunk = batch[start:start + chunk_tasks]
                with torch.no_grad():  # the inner steps still run (torch.func.grad); no outer graph
                    fast = learner.adapt(chunk.support_x, chunk.support_y, steps=steps)
                    losses.append(learner.query_losses(fast, chunk).detach().cpu())
            per_step[str(steps)] = torch.cat(losses)
        bar.close()
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
            "eval_inner_lr": learner.inner_lr if eval_lr is None else eval_lr}


def eval_ways(config, fixed_head: bool = True) -> list[int]:
    """N of the N-way test episodes: eval.ways, else task.ways for a model with a fixed head
    and 5 and 20 for an embedding (metric learners)."""
    if config.eval.ways is not None:
        return config.eval.ways
    return [config.task.ways] if fixed_head else [5, 20]


@torch.no_grad()
def _no_grad_scores(learner, batch, inductive):
    return learner.logits(batch, inductive)


def class_scores(learner, batch: TaskBatch, steps: int, inductive: bool) -> torch.Tensor:
    """[T, Q, ways] class scores of each query. Gradient learners adapt `steps` inner steps on
    the support set first; inductive=True predicts each query in a batch with the support set
    alone (no statistics of other queries), False with all queries together (transductive)."""
    if isinstance(learner, PrototypicalNetwork):
        return _no_grad_scores(learner, batch, inductive)
    with torch.no_grad():  # the inner steps still run (torch.func.grad); no outer graph
        fast = learner.adapt(batch.support_x, batch.support_y, steps=steps)
        return learner.predict(fast, batch.query_x, context=batch.support_x if inductive else None)


def accuracy_after_steps(learner, config, split: str, ways: int, num_tasks: int, device: str = "cpu",
                         steps: list[int] | None = None, progress: bool = False) -> dict[str, torch.Tensor]:
    """Per-task query accuracy [num_tasks] after each number of inner steps (metric learners:
    one entry, "0"), on seeded `ways`-way episodes of `split`."""
    ev = config.eval
    steps = getattr(ev, "steps", [0]) if steps is None else steps
    if isinstance(learner, PrototypicalNetwork):
        steps = [0]
    task = build_task(config, ev.support_shots, ev.query_shots, split=split, ways=ways)
    batch = task.sample(num_tasks, torch.Generator().manual_seed(ev.seed))
    inductive = ev.normalisation == "inductive"
    # bound the images one forward pass holds: the inductive mode embeds the support set once
    # per query (20-way 1-shot with 5 queries a class: 2,100 images a task)
    queries = ways * ev.query_shots
    images = queries * (ways * ev.support_shots + 1) if inductive else queries + ways * ev.support_shots
    chunk = max(1, 4000 // images)
    saved_lr, was_training = getattr(learner, "inner_lr", None), learner.training
    if getattr(ev, "inner_lr", None) is not None and saved_lr is not None:
        learner.inner_lr = ev.inner_lr
    learner.eval()
    try:
        per_step = {}
        bar = progress_bar(len(steps) * -(-num_tasks // chunk), f"evaluating {ways}-way {split}", progress)
        for k in steps:
            hits = []
            for start in range(0, num_tasks, chunk):
                bar.update()
                part = batch[start:start + chunk].to(device)
                scores = class_scores(learner, part, k, inductive)
                hits.append((scores.argmax(-1) == part.query_y).float().mean(1).cpu())
            per_step[str(k)] = torch.cat(hits)
        bar.close()
    finally:
        if saved_lr is not None:
            learner.inner_lr = saved_lr
        learner.train(was_training)
    return per_step


def evaluate_classification(learner, config, device: str = "cpu", fixed_head: bool = True,
                            progress: bool = False) -> dict:
    """Accuracy on held-out (test) alphabets for each N of eval_ways(config): the entry for the
    most inner steps in eval.steps is `accuracy`, every step count is in `accuracy_after_steps`."""
    ev = config.eval
    results = {"accuracy": {}, "ci95": {}, "accuracy_after_steps": {}}
    for ways in eval_ways(config, fixed_head):
        key = f"{ways}way{ev.support_shots}shot"
        per_step = accuracy_after_steps(learner, config, "test", ways, ev.num_tasks, device,
                                        progress=progress)
        stats = {k: mean_ci95(v) for k, v in per_step.items()}
        results["accuracy_after_steps"][key] = {k: m for k, (m, _) in stats.items()}
        last = str(max(int(k) for k in per_step))
        results["accuracy"][key], results["ci95"][key] = stats[last]
    results.update(normalisation=ev.normalisation, eval_tasks=ev.num_tasks,
                   eval_query_shots=ev.query_shots, test_alphabets=config.task.test_alphabets)
    return results
