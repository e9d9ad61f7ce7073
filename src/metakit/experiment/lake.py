"""Lake et al.'s one-shot runs scored by a trained run directory (`omniglot-runs --checkpoint`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..batch import TaskBatch
from ..data.lake_runs import Run, load_ink, read_runs, score_runs
from ..data.omniglot import resize_ink
from ..errors import MetakitError
from .build import is_classification
from .config import GRADIENT_ALGORITHMS
from .evaluate import class_scores
from .trainer import load_run


def learner_classifier(config, learner, device: str = "cpu"):
    """classify(run) for score_runs: each test item goes to the training image of the class the
    learner scores highest, with the run's own normalisation policy and test-time inner steps."""
    steps, inductive = max(config.eval.steps), config.eval.normalisation == "inductive"

    def images(paths: list[Path]) -> torch.Tensor:  # [1, N, 1, H, W] floats in [0, 1], like episodes
        ink = torch.stack([load_ink(p) for p in paths])
        return resize_ink(ink, config.task.image_size).float().div(255)[None, :, None].to(device)

    def classify(run: Run) -> list[int]:
        ways = len(run.training)
        if config.algorithm.name in GRADIENT_ALGORITHMS and ways != config.task.ways:
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
    config, learner = load_run(Path(run_dir), device)
    if not is_classification(config):
        raise MetakitError(f"{run_dir} is a {config.task.name} run; Lake's runs need an Omniglot classifier")
    results = score_runs(read_runs(runs_dir), learner_classifier(config, learner, device))
    results["checkpoint"] = str(run_dir)
    return results
