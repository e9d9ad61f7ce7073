"""RL^2 (metakit.rl.RL2) as an experiment: a GRU policy over whole trials, scored by the
mean total reward of one trial on new tasks."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import MetakitError
from ..rl.policies import RecurrentPolicy
from ..rl.rl2 import RL2
from .config import check, non_negative, positive
from .evaluate import mean_ci95
from .metarl import MetaRLAlgorithm, MetaRLConfig


@dataclass
class RecurrentPolicyConfig:
    recurrent_size: int = check(*positive, default=256)  # GRU units


@dataclass
class RL2Section:
    name: str = "rl2"
    optimizer: str = check(lambda v: v in ("ppo", "trpo"), "'ppo' or 'trpo'", default="ppo")
    lr: float = check(*positive, default=2e-3)  # Adam (PPO; TRPO: the value head)
    gamma: float = check(lambda v: 0 < v <= 1, "in (0, 1]", default=0.99)
    gae_lambda: float = check(lambda v: 0 <= v <= 1, "in [0, 1]", default=0.3)
    clip: float = check(*positive, default=0.2)
    epochs: int = check(*positive, default=4)
    minibatches: int = check(*positive, default=4)
    value_coef: float = check(*non_negative, default=0.5)
    entropy_coef: float = check(*non_negative, default=0.0)
    max_kl: float = check(*positive, default=0.01)  # TRPO


@dataclass
class RL2EvalConfig:
    num_tasks: int = check(*positive, default=1000)
    seed: int = 1234


@dataclass
class RL2Config(MetaRLConfig):
    policy: RecurrentPolicyConfig = field(default_factory=RecurrentPolicyConfig)
    algorithm: RL2Section = field(default_factory=RL2Section)
    eval: RL2EvalConfig = field(default_factory=RL2EvalConfig)


class RL2Experiment(MetaRLAlgorithm):
    Config = RL2Config
    cuda_ready = True  # the GRU policy and its updates on the device, the environments on the CPU
    shard_key = "train.meta_batch_size"  # under torchrun each rank samples its share of the trials
    curve = {"trial_return": "training trials"}
    curve_ylabel = "mean trial return"

    def __init__(self, config: RL2Config, device: str = "cpu"):
        super().__init__(config, device)
        if not self.env.discrete:
            raise MetakitError(
                f"'algorithm.name' rl2 needs a discrete-action env (BernoulliBandit, TabularMDP, "
                f"CartPole), got {config.env.name}"
            )
        self.policy = RecurrentPolicy(
            self.env.observation_size, self.env.action_size, config.policy.recurrent_size
        ).to(device)
        a = config.algorithm
        self.algo = RL2(
            self.policy,
            a.optimizer,
            a.lr,
            a.gamma,
            a.gae_lambda,
            a.clip,
            a.epochs,
            a.minibatches,
            a.value_coef,
            a.entropy_coef,
            a.max_kl,
        )

    def step(self, generator):
        return self.algo.step(
            self.env, self.config.train.meta_batch_size, self.config.train.episodes, generator
        )

    def state_dict(self):
        return {"algorithm": self.algo.state_dict(), "adam": self.algo.adam.state_dict()}

    def load_state_dict(self, state):
        self.algo.load_state_dict(state["algorithm"])
        self.algo.adam.load_state_dict(state["adam"])

    def evaluate(self):
        """Mean total reward of one trial (train.episodes episodes) on each of eval.num_tasks new tasks."""
        totals = self.algo.evaluate(
            self.env,
            self.eval_tasks(),
            self.config.train.episodes,
            torch.Generator().manual_seed(self.config.eval.seed + 1),
            progress=self.progress,
        )
        mean, ci95 = mean_ci95(totals)
        return {
            "env": self.config.env.name,
            "arms": self.config.env.arms,
            "episodes": self.config.train.episodes,
            "trial_return": mean,
            "ci95": ci95,
            "eval_tasks": len(totals),
        }
