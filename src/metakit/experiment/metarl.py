"""What the meta-RL families share as experiments: the environment section, the training
section, and an Algorithm base that builds the batched environment from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import distributed
from ..errors import MetakitError
from ..rl import envs
from .config import check, positive
from .protocol import Algorithm


@dataclass
class EnvConfig:
    name: str = check(
        lambda v: v in envs.ENVIRONMENTS, f"one of {sorted(envs.ENVIRONMENTS)}", default="Navigation2D"
    )
    horizon: int | None = check(lambda v: v is None or v >= 1, "null or >= 1", default=None)
    arms: int | None = check(lambda v: v is None or v >= 2, "null or >= 2", default=None)  # BernoulliBandit
    # MuJoCo environments: physics steps an env step (null: Gymnasium's 5)
    frame_skip: int | None = check(lambda v: v is None or v >= 1, "null or >= 1", default=None)


@dataclass
class MetaRLTrainConfig:
    iterations: int = check(*positive, default=500)
    meta_batch_size: int = check(*positive, default=20)  # tasks per iteration (RL^2: trials)
    episodes: int = check(*positive, default=20)  # per task, before and after adaptation (RL^2: per trial)
    log_every: int = check(*positive, default=1)
    checkpoint_every: int = check(*positive, default=10)


@dataclass
class MetaRLConfig:
    name: str = "meta-rl"
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    train: MetaRLTrainConfig = field(default_factory=MetaRLTrainConfig)


def build_env(config: EnvConfig) -> envs.TaskEnv:
    kwargs = {key: value for key in ("horizon", "arms", "frame_skip")
              if (value := getattr(config, key)) is not None}
    if "arms" in kwargs and config.name != "BernoulliBandit":
        raise MetakitError(f"'env.arms' applies to BernoulliBandit, not to {config.name}")
    if "frame_skip" in kwargs and not issubclass(envs.ENVIRONMENTS[config.name], envs.Locomotion):
        mujoco = sorted(n for n, e in envs.ENVIRONMENTS.items() if issubclass(e, envs.Locomotion))
        raise MetakitError(
            f"'env.frame_skip' applies to the MuJoCo environments {mujoco}, not to {config.name}"
        )
    return envs.make(config.name, **kwargs)


class MetaRLAlgorithm(Algorithm):
    """Builds `self.env` from the env section. The environments are CPU tensors; families
    with `cuda_ready` run their policy (and its optimisation) on `--device cuda`, and
    `rollout` moves observations and actions between the two."""

    named_sections = {"env": sorted(envs.ENVIRONMENTS)}
    cuda_ready: bool = False

    def __init__(self, config, device: str = "cpu"):
        if device != "cpu" and not self.cuda_ready:
            raise MetakitError(
                f"{config.algorithm.name} runs on the CPU for now (maml-trpo, mbmpo, rl2, ppo and "
                f"trpo run on CUDA); got --device {device}"
            )
        super().__init__(config, device)
        torch.manual_seed(config.seed)  # the policy's initial weights
        self.env = build_env(config.env)
        if distributed.world_size() > 1 and self.shard_key is not None and not self.env.shardable:
            raise MetakitError(f"{config.env.name} draws its random numbers for all tasks at once, so its "
                               f"episodes would change with the number of ranks; run it as one process")

    def eval_tasks(self) -> torch.Tensor:
        return self.env.sample_tasks(
            self.config.eval.num_tasks, torch.Generator().manual_seed(self.config.eval.seed)
        )
