"""MAML-TRPO (metakit.rl.MAMLTRPO) as an experiment: Gaussian or categorical MLP policy,
returns after 0..k policy-gradient steps on new tasks, the paper's figures."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import MetakitError
from ..rl import MAMLTRPO, policy_for
from ..rl.maml_trpo import FISHERS
from ..rl.policies import ACTIVATIONS
from .config import check, non_negative, positive, sizes
from .metarl import MetaRLAlgorithm, MetaRLConfig


@dataclass
class MLPPolicyConfig:
    hidden_sizes: list[int] = check(*sizes, default_factory=lambda: [100, 100])
    init_std: float = check(*positive, default=1.0)  # Gaussian policies
    activation: str = check(lambda v: v in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}", default="relu")


@dataclass
class MAMLTRPOSection:
    name: str = "maml-trpo"
    fast_lr: float = check(*non_negative, default=0.1)
    inner_steps: int = check(*non_negative, default=1)
    first_order: bool = False
    gamma: float = check(lambda v: 0 < v <= 1, "in (0, 1]", default=0.99)
    gae_lambda: float = check(lambda v: 0 <= v <= 1, "in [0, 1]", default=1.0)
    max_kl: float = check(*positive, default=0.01)
    cg_damping: float = check(*non_negative, default=1e-5)
    # the TRPO step's KL Hessian: "exact" (through the inner step) or "adapted" (cheaper)
    fisher: str = check(lambda v: v in FISHERS, f"one of {FISHERS}", default="exact")
    # the surrogate and KL through the inner step as compiled graphs (torch.compile)
    compile: bool = check(lambda v: isinstance(v, bool), "true or false", default=False)


@dataclass
class MAMLTRPOEvalConfig:
    num_tasks: int = check(*positive, default=40)
    episodes: int = check(*positive, default=20)
    step_sizes: list[float] = check(lambda v: all(s >= 0 for s in v), "step sizes >= 0",
                                    default_factory=lambda: [0.1, 0.05, 0.05])  # one per test step
    seed: int = 1234


@dataclass
class MAMLTRPOConfig(MetaRLConfig):
    policy: MLPPolicyConfig = field(default_factory=MLPPolicyConfig)
    algorithm: MAMLTRPOSection = field(default_factory=MAMLTRPOSection)
    eval: MAMLTRPOEvalConfig = field(default_factory=MAMLTRPOEvalConfig)


def policy_from_config(env, config: MLPPolicyConfig):
    if env.discrete:
        if config.activation != "relu":
            raise MetakitError(f"'policy.activation' applies to Gaussian policies; {config.activation!r} "
                               f"given for discrete {type(env).__name__}")
        return policy_for(env, tuple(config.hidden_sizes))
    return policy_for(env, tuple(config.hidden_sizes), init_std=config.init_std, activation=config.activation)


class MAMLTRPOExperiment(MetaRLAlgorithm):
    Config = MAMLTRPOConfig
    shard_key = "train.meta_batch_size"  # under torchrun each rank rolls out its share of the tasks
    cuda_ready = True
    curve = {"return_before": "before adaptation", "return_after": "after 1 step"}
    curve_ylabel = "mean episode return"

    def __init__(self, config: MAMLTRPOConfig, device: str = "cpu"):
        super().__init__(config, device)
        self.policy = policy_from_config(self.env, config.policy).to(device)
        a = config.algorithm
        self.algo = MAMLTRPO(self.policy, a.fast_lr, a.inner_steps, a.first_order, a.gamma, a.gae_lambda,
                             a.max_kl, a.cg_damping, fisher=a.fisher, compile=a.compile)
        self._record: list = []

    def step(self, generator):
        return self.algo.step(
            self.env, self.config.train.meta_batch_size, self.config.train.episodes, generator
        )

    def state_dict(self):
        return {"algorithm": self.algo.state_dict()}

    def load_state_dict(self, state):
        self.algo.load_state_dict(state["algorithm"])

    def evaluate(self):
        ev = self.config.eval
        self._tasks, self._record = self.eval_tasks(), []
        returns = self.algo.evaluate(
            self.env,
            self._tasks,
            len(ev.step_sizes),
            ev.step_sizes,
            ev.episodes,
            torch.Generator().manual_seed(ev.seed + 1),
            record=self._record,
            progress=self.progress,
        )
        return {
            "env": self.config.env.name,
            "returns_after_steps": returns,
            "eval_tasks": ev.num_tasks,
            "eval_episodes": ev.episodes,
            "eval_step_sizes": ev.step_sizes,
        }

    def plots(self, run_dir: Path) -> None:
        from .plots import figure, integer_ticks, save  # noqa: PLC0415 (matplotlib only when plotting)

        if not self._record:
            self.evaluate()
        returns = [t.episode_returns().mean().item() for t in self._record]
        fig, ax = figure(figsize=(5, 4))
        ax.plot(range(len(returns)), returns, "o-")
        ax.set(xlabel="policy-gradient steps at test", ylabel="mean episode return",
               title=f"{self.config.env.name}, {self.config.eval.num_tasks} new tasks")
        integer_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
        save(fig, Path(run_dir) / "returns_vs_steps.png")
        if self.config.env.name == "Navigation2D":  # the paper's figure: one task, before and after
            fig, ax = figure(figsize=(5, 5))
            for k, trajectories in enumerate(self._record):
                length = int(trajectories.mask[0, 0].sum())
                path = trajectories.observations[0, 0, :length]  # from the start, every state visited
                label = "pre-update" if k == 0 else f"{k} step{'s' * (k > 1)}"
                ax.plot(path[:, 0], path[:, 1], "-", label=label)
            ax.plot(0, 0, "ko", markersize=6, label="start")
            ax.plot(*self._tasks[0].tolist(), "r*", markersize=14, label="goal")
            ax.set(aspect="equal", title="2D navigation: one test task")  # limits fit every trajectory
            ax.legend(fontsize=8)
            save(fig, Path(run_dir) / "trajectories.png")
