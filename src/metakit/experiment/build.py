"""Config -> task distribution, model and learner: the only place that maps names to classes."""
from __future__ import annotations

import torch.nn.functional as F

from ..gradient import MAML, Reptile
from ..gradient.learner import TaskLearner
from ..nets import MLP
from ..tasks import Sinusoid
from .config import ExperimentConfig


def build_task(config: ExperimentConfig, support_shots=None, query_shots=None):
    task = config.task
    return Sinusoid(support_shots or task.support_shots, query_shots or task.query_shots)


def build_model(config: ExperimentConfig):
    return MLP(1, config.model.hidden_sizes, 1)


def loss_function(config: ExperimentConfig):
    return F.mse_loss


def build_learner(config: ExperimentConfig, model) -> TaskLearner:
    algo, loss = config.algorithm, loss_function(config)
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
