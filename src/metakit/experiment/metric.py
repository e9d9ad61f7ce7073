"""The metric family as experiments: Prototypical and Matching Networks over a conv-4 embedding."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import MetakitError
from ..metric import MatchingNetwork, PrototypicalNetwork
from .config import check
from .supervised import AdamTrainConfig, EvalConfig, SupervisedAlgorithm, SupervisedConfig

METRIC_NAMES = ["matching", "protonet"]


@dataclass
class MetricSection:
    name: str = check(lambda v: v in METRIC_NAMES, f"one of {METRIC_NAMES}", default="protonet")


@dataclass
class MetricConfig(SupervisedConfig):
    algorithm: MetricSection = field(default_factory=MetricSection)
    train: AdamTrainConfig = field(default_factory=AdamTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # no inner steps: nothing is adapted


class MetricExperiment(SupervisedAlgorithm):
    Config = MetricConfig
    fixed_head = False  # an embedding: one model serves every N

    @classmethod
    def check_config(cls, config) -> None:
        if config.task.name != "omniglot":
            raise MetakitError(
                f"algorithm {config.algorithm.name!r} classifies; task {config.task.name!r} is "
                "regression (use task.name: omniglot)"
            )
        super().check_config(config)

    def build_learner(self, model):
        return (
            PrototypicalNetwork(model) if self.config.algorithm.name == "protonet" else MatchingNetwork(model)
        )
