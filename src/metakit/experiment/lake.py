"""Lake et al.'s one-shot runs scored by a trained run directory (`omniglot-runs --checkpoint`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..batch import TaskBatch
from ..data.lake_runs import Run, load_ink, read_runs, score_runs
from ..data.omniglot import resize_ink
from ..errors import MetakitError
from .builders import is_classification
from .evaluate import class_scores
from .runner import load


def learner_classifier(config, learner, device: str = "cpu", fixed_head: bool = True):
    """classify(run) for score_runs: each test item goes to the training image of the class the
    learner scores highest, with the run's own normalisation policy and test-time inner steps."""
    steps, inductive = max(getattr(config.eval, "steps", [0])), config.eval.normalisation == "inductive"

    def images(paths: list[Path]) -> torch.Tensor:  # [1, N, 1, H, W] floats in [0, 1], like episodes
        ink = torch.stack([load_ink(p) for p in paths])
        return resize_ink(ink, config.task.image_size).float().div(255)[None, :, None].to(device)

    def classify(run: Run) -> list[int]:
        ways = len(run.training)
        if fixed_head and ways != config.task.ways:
            raise MetakitError(f"{run.name} is {ways}-way but this run's model has a {config.task.ways}-way "
                               f"head; use a run trained with task.ways: {ways}")
        support_y = torch.arange(ways, device=device)[None]
        query_x = images(run.test)
        batch = TaskBatch(images(run.training), support_y, query_x,
                          torch.zeros(query_x.shape[:2], dtype=torch.long, device=device))
        was_training = learner.training
        learner.eval()
        try:
            return class_scores(learner, batch, steps, inductive)[0].argmax(-1).tolist()
        finally:
            learner.train(was_training)

    return classify


def score_checkpoint(runs_dir: str | Path, run_dir: str | Path, device: str = "cpu") -> dict:
    algo = load(Path(run_dir), device)
    config = algo.config
    if not hasattr(config, "task") or not is_classification(config):
        raise MetakitError(f"{run_dir} is not an Omniglot run; Lake's runs need an Omniglot classifier")
    results = score_runs(
        read_runs(runs_dir), learner_classifier(config, algo.learner, device, algo.fixed_head)
    )
    results["checkpoint"] = str(run_dir)
    return results
