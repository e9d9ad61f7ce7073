"""Model-free baselines on one task, MB-MPO's comparison at the same real steps: PPO
(metakit.rl.PPO) and TRPO (metakit.rl.TRPO). Each runner iteration is one update from
`train.episodes` fresh episodes; `return` is then the mean real return of the policy over
`eval.episodes` further episodes that are not training data."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..rl.policies import mlp
from ..rl.ppo import PPO
from ..rl.sampling import rollout
from ..rl.trpo import TRPO
from .config import check, non_negative, positive, sizes
from .maml_trpo import MLPPolicyConfig, policy_from_config
from .mbmpo import MBMPOEvalConfig
from .metarl import MetaRLAlgorithm, MetaRLConfig, build_env


@dataclass
class PPOSection:
    name: str = "ppo"
    lr: float = check(*positive, default=3e-4)
    epochs: int = check(*positive, default=10)  # passes over each batch
    minibatch_size: int = check(*positive, default=64)
    clip: float = check(*positive, default=0.2)
    gamma: float = check(lambda v: 0 < v <= 1, "in (0, 1]", default=0.99)
    gae_lambda: float = check(lambda v: 0 <= v <= 1, "in [0, 1]", default=0.95)
    max_grad_norm: float = check(*positive, default=0.5)
    value_hidden_sizes: list[int] = check(*sizes, default_factory=lambda: [32, 32])


@dataclass
class TRPOSection:
    name: str = "trpo"
    gamma: float = check(lambda v: 0 < v <= 1, "in (0, 1]", default=0.99)
    gae_lambda: float = check(lambda v: 0 <= v <= 1, "in [0, 1]", default=1.0)
    max_kl: float = check(*positive, default=0.01)
    cg_damping: float = check(*non_negative, default=1e-5)


@dataclass
class SingleTaskConfig(MetaRLConfig):
    policy: MLPPolicyConfig = field(default_factory=lambda: MLPPolicyConfig([32, 32], 1.0, "tanh"))
    eval: MBMPOEvalConfig = field(default_factory=MBMPOEvalConfig)


@dataclass
class PPOConfig(SingleTaskConfig):
    algorithm: PPOSection = field(default_factory=PPOSection)


@dataclass
class TRPOConfig(SingleTaskConfig):
    algorithm: TRPOSection = field(default_factory=TRPOSection)


class SingleTaskExperiment(MetaRLAlgorithm):
    """One task (drawn from the seed), `train.episodes` episodes per update."""

    curve = {"return": "policy"}
    curve_ylabel = "real return"
    cuda_ready = True

    def __init__(self, config, device: str = "cpu"):
        super().__init__(config, device)
        self.task = self.env.sample_tasks(1, torch.Generator().manual_seed(config.seed))
        self.env.set_tasks(self.task)
        self.eval_env = build_env(config.env)  # its own batch size: MuJoCo copies are kept per size
        self.eval_env.set_tasks(self.task)
        self.policy = policy_from_config(self.env, config.policy).to(device)
        self.history: list[dict] = []

    def step(self, generator):
        metrics = self.learner.step(self.env, self.config.train.episodes, generator)
        real_steps = (self.history[-1]["real_steps"] if self.history else 0) + int(metrics["steps"])
        self.history.append({"real_steps": real_steps, "return": self._real_return(len(self.history))})
        return {**metrics, **self.history[-1]}

    def _real_return(self, seed_offset: int) -> float:
        generator = torch.Generator().manual_seed(self.config.eval.seed + seed_offset)
        episodes = rollout(self.eval_env, self.policy, self.config.eval.episodes, generator)
        return episodes.episode_returns().mean().item()

    def state_dict(self):
        return {
            "learner": self.learner.state_dict(),
            "optimizer": getattr(self.learner, "optimizer", None) and self.learner.optimizer.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state):
        self.learner.load_state_dict(state["learner"])
        if state["optimizer"] is not None:
            self.learner.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])

    def evaluate(self):
        """A fresh evaluation of the trained policy, beside the curve made during training."""
        return {
            "env": self.config.env.name,
            "real_steps": self.history[-1]["real_steps"] if self.history else 0,
            "return": self._real_return(0),
            "curve": self.history,
            "eval_episodes": self.config.eval.episodes,
        }


class PPOExperiment(SingleTaskExperiment):
    Config = PPOConfig

    def __init__(self, config, device: str = "cpu"):
        super().__init__(config, device)
        a = config.algorithm
        value = mlp(self.env.observation_size, tuple(a.value_hidden_sizes), 1, config.policy.activation).to(
            device
        )
        self.learner = PPO(
            self.policy,
            value,
            a.lr,
            a.epochs,
            a.minibatch_size,
            a.clip,
            a.gamma,
            a.gae_lambda,
            a.max_grad_norm,
        )


class TRPOExperiment(SingleTaskExperiment):
    Config = TRPOConfig

    def __init__(self, config, device: str = "cpu"):
        super().__init__(config, device)
        a = config.algorithm
        self.learner = TRPO(self.policy, a.gamma, a.gae_lambda, a.max_kl, a.cg_damping)
