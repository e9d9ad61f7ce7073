"""The gradient-based family as experiments: MAML, first-order MAML, Meta-SGD, ANIL, the
pretrained baseline (metakit.gradient.MAML) and Reptile (metakit.gradient.Reptile)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..gradient import MAML, Reptile
from .builders import loss_function
from .config import check, non_negative
from .supervised import AdamTrainConfig, StepsEvalConfig, SupervisedAlgorithm, SupervisedConfig, TrainConfig

MAML_NAMES = ["anil", "fomaml", "maml", "metasgd", "pretrain"]
chunk_size = (lambda v: v is None or v >= 1, "null or >= 1")


@dataclass
class PretrainSection:
    name: str = check(lambda v: v in MAML_NAMES, f"one of {MAML_NAMES}", default="maml")
    inner_lr: float = check(*non_negative, default=0.01)  # at test time (and MAML's inner loop)
    adapt_params: list[str] | None = None  # parameters the inner loop updates; ANIL: the model's last layer
    chunk_size: int | None = check(*chunk_size, default=None)  # tasks per vmap (null: all at once)
    # or: the most tasks a chunk within this peak memory, measured at the first step
    memory_budget_mb: float | None = check(lambda v: v is None or v > 0, "null or > 0", default=None)


@dataclass
class MAMLSection(PretrainSection):
    inner_steps: int = check(*non_negative, default=1)


@dataclass
class MAMLTrainConfig(AdamTrainConfig):
    # torch.compile the meta-gradient; null: MAML's default (meta_step compiled) when the run is
    # long enough to repay compiling, eager otherwise (see compile_by_default)
    compile: bool | None = None


@dataclass
class GradientEvalConfig(StepsEvalConfig):
    inner_lr: float | None = None  # null: the algorithm's inner_lr


@dataclass
class MAMLConfig(SupervisedConfig):
    algorithm: MAMLSection = field(default_factory=MAMLSection)
    train: MAMLTrainConfig = field(default_factory=MAMLTrainConfig)
    eval: GradientEvalConfig = field(default_factory=GradientEvalConfig)


@dataclass
class MetaSGDConfig(MAMLConfig):
    eval: StepsEvalConfig = field(default_factory=StepsEvalConfig)  # its step sizes are learned


@dataclass
class PretrainConfig(MAMLConfig):
    algorithm: PretrainSection = field(default_factory=PretrainSection)  # no inner step in training


COMPILE_FROM_ITERATIONS = 5000


def compile_by_default(config) -> bool | None:
    """train.compile, or when null: MAML's default (meta_step compiled) for runs of at least
    5,000 iterations, eager below. Measured (benchmarks/compile_rule.py, 2 CPU threads): the
    first meta_step compiles for 7-16 s (MLPs) to 20-88 s (conv-4), repaid after about 750
    (first-order conv-4) to 7,400 (the smallest MLP) iterations."""
    if config.train.compile is not None:
        return config.train.compile
    return None if config.train.iterations >= COMPILE_FROM_ITERATIONS else False


class MAMLExperiment(SupervisedAlgorithm):
    Config = MAMLConfig

    @classmethod
    def config_class(cls, name: str) -> type:
        return {"metasgd": MetaSGDConfig, "pretrain": PretrainConfig}.get(name, MAMLConfig)

    def build_learner(self, model):
        config, algo = self.config, self.config.algorithm
        adapt = algo.adapt_params
        if algo.name == "anil" and adapt is None:
            adapt = [list(dict(model.named_parameters()))[-1].rsplit(".", 1)[0]]  # the last layer
        # "pretrain" is the paper's baseline: no inner step in training (plain regression on all
        # tasks), fine-tuned by gradient steps at evaluation like the others
        return MAML(model, loss_function(config), algo.inner_lr,
                    inner_steps=getattr(algo, "inner_steps", 0), first_order=algo.name == "fomaml",
                    learn_inner_lr=algo.name == "metasgd", adapt_params=adapt,
                    chunk_size=algo.chunk_size, compile=compile_by_default(config),
                    memory_budget_mb=algo.memory_budget_mb)


@dataclass
class ReptileSection:
    name: str = "reptile"
    inner_lr: float = check(*non_negative, default=0.01)
    inner_steps: int = check(*non_negative, default=1)
    meta_step_size: float = check(*non_negative, default=1.0)  # epsilon
    meta_step_size_final: float | None = None  # anneal linearly to this over train.iterations
    chunk_size: int | None = check(*chunk_size, default=None)


@dataclass
class ReptileConfig(SupervisedConfig):
    algorithm: ReptileSection = field(default_factory=ReptileSection)
    train: TrainConfig = field(default_factory=TrainConfig)  # no outer_lr: Reptile's step is its own
    eval: GradientEvalConfig = field(default_factory=GradientEvalConfig)


class ReptileExperiment(SupervisedAlgorithm):
    Config = ReptileConfig

    def build_learner(self, model):
        algo = self.config.algorithm
        return Reptile(
            model,
            loss_function(self.config),
            algo.inner_lr,
            algo.inner_steps,
            algo.meta_step_size,
            algo.meta_step_size_final,
            self.config.train.iterations,
            chunk_size=algo.chunk_size,
        )
