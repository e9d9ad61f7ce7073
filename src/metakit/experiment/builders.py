"""Supervised configs -> task distribution, model and loss."""
from __future__ import annotations

import functools

import torch.nn.functional as F

from ..data.omniglot import Omniglot, load_omniglot
from ..errors import MetakitError
from ..nets import MLP, Conv4
from ..tasks import FewShotClassification, Sinusoid

SPLITS = ("train", "validation", "test")


@functools.lru_cache(maxsize=4)
def _omniglot(archives: tuple[str, ...], image_size: int) -> Omniglot:
    return load_omniglot(archives, image_size=image_size)  # decoded once per process


def omniglot_split(config, split: str) -> Omniglot:
    """Classes of one split: held-out test and validation alphabets, the rest for training
    (with rotations and mirror images as new classes when task.rotations and task.reflections;
    never for held-out classes)."""
    task = config.task
    data = _omniglot(tuple(task.archives), task.image_size)
    rest, test = data.split_by_alphabet(task.test_alphabets)
    if split == "test":
        chosen = test
    else:
        train, chosen = rest.split_by_alphabet(task.validation_alphabets)
        if split == "train":  # new classes only where they are used: every validation call lands here
            chosen = train.with_rotations() if task.rotations else train
            chosen = chosen.with_reflections() if task.reflections else chosen
    if len(chosen) == 0:
        raise MetakitError(
            f"the {split} split of Omniglot is empty; name alphabets in task.{split}_alphabets"
        )
    return chosen


def build_task(config, support_shots=None, query_shots=None, split: str = "train", ways: int | None = None):
    task = config.task
    support_shots, query_shots = support_shots or task.support_shots, query_shots or task.query_shots
    if task.name == "sinusoid":
        return Sinusoid(support_shots, query_shots)
    if split not in SPLITS:
        raise MetakitError(f"split must be one of {SPLITS}, got {split!r}")
    classes = omniglot_split(config, split)
    return FewShotClassification(classes.images, ways or task.ways, support_shots, query_shots)


def is_classification(config) -> bool:
    return config.task.name == "omniglot"


def build_model(config, head: bool = True):
    """The config's model; head=False: an embedding network without the task.ways-way head."""
    if config.model.name == "mlp":
        return MLP(1, config.model.hidden_sizes, 1)
    return Conv4(
        1,
        config.task.ways if head else None,
        config.model.channels,
        config.task.image_size,
        config.model.strided,
    )


def loss_function(config):
    return F.cross_entropy if is_classification(config) else F.mse_loss
