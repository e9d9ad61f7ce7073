"""Config -> task distribution, model and learner: the only place that maps names to classes."""
from __future__ import annotations

import functools

import torch.nn.functional as F

from ..data.omniglot import Omniglot, load_omniglot
from ..errors import MetakitError
from ..gradient import MAML, Reptile
from ..metric import MatchingNetwork, PrototypicalNetwork
from ..nets import MLP, Conv4
from ..tasks import FewShotClassification, Sinusoid
from .config import METRIC_ALGORITHMS, ExperimentConfig

SPLITS = ("train", "validation", "test")


@functools.lru_cache(maxsize=4)
def _omniglot(archives: tuple[str, ...], image_size: int) -> Omniglot:
    return load_omniglot(archives, image_size=image_size)  # decoded once per process


def omniglot_split(config: ExperimentConfig, split: str) -> Omniglot:
    """Classes of one split: held-out test and validation alphabets, the rest for training
    (with rotations as new classes when task.rotations; never for held-out classes)."""
    task = config.task
    data = _omniglot(tuple(task.archives), task.image_size)
    rest, test = data.split_by_alphabet(task.test_alphabets)
    if split == "test":
        chosen = test
    else:
        train, chosen = rest.split_by_alphabet(task.validation_alphabets)
        if split == "train":  # rotations only where they are used: every validation call lands here
            chosen = train.with_rotations() if task.rotations else train
    if len(chosen) == 0:
        raise MetakitError(f"the {split} split of Omniglot is empty; name alphabets in task.{split}_alphabets")
    return chosen


def build_task(config: ExperimentConfig, support_shots=None, query_shots=None, split: str = "train",
               ways: int | None = None):
    task = config.task
    support_shots, query_shots = support_shots or task.support_shots, query_shots or task.query_shots
    if task.name == "sinusoid":
        return Sinusoid(support_shots, query_shots)
    if split not in SPLITS:
        raise MetakitError(f"split must be one of {SPLITS}, got {split!r}")
    classes = omniglot_split(config, split)
    return FewShotClassification(classes.images, ways or task.ways, support_shots, query_shots)


def is_classification(config: ExperimentConfig) -> bool:
    return config.task.name == "omniglot"


def build_model(config: ExperimentConfig):
    if config.model.name == "mlp":
        return MLP(1, config.model.hidden_sizes, 1)
    metric = config.algorithm.name in METRIC_ALGORITHMS  # an embedding network: no head
    return Conv4(1, None if metric else config.task.ways, config.model.channels,
                 config.task.image_size, config.model.strided)


def loss_function(config: ExperimentConfig):
    return F.cross_entropy if is_classification(config) else F.mse_loss


def build_learner(config: ExperimentConfig, model):
    algo, loss = config.algorithm, loss_function(config)
    if algo.name == "protonet":
        return PrototypicalNetwork(model)
    if algo.name == "matching":
        return MatchingNetwork(model)
    common = dict(chunk_size=algo.chunk_size)
    if algo.name == "reptile":
        return Reptile(model, loss, algo.inner_lr, algo.inner_steps, algo.meta_step_size,
                       algo.meta_step_size_final, config.train.iterations, **common)
    adapt = algo.adapt_params
    if algo.name == "anil" and adapt is None:
        adapt = [list(dict(model.named_parameters()))[-1].rsplit(".", 1)[0]]  # the last layer
    # "pretrain" is the paper's baseline: no inner step in training (plain regression on all
    # tasks), fine-tuned by gradient steps at evaluation like the others
    return MAML(model, loss, algo.inner_lr,
                inner_steps=0 if algo.name == "pretrain" else algo.inner_steps,
                first_order=algo.name == "fomaml", learn_inner_lr=algo.name == "metasgd",
                adapt_params=adapt, compile=config.train.compile, **common)
