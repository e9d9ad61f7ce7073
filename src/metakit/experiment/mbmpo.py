"""MB-MPO (metakit.rl.MBMPO) as an experiment: a learned dynamics ensemble, MAML-TRPO over
its models, and the real return of the meta-policy against real steps.

Each runner iteration is one MB-MPO iteration (collect real data, fit the models, meta-steps)
followed by an evaluation that does not count as training data: `return` is the mean real
return of the meta-policy over `eval.episodes` episodes, `return_adapted` after one inner
step on those episodes. `metakit.load(run_dir).policy.act(observations)` gives actions."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..rl import MAMLTRPO
from ..rl.dynamics import PRECISIONS, DynamicsEnsemble
from ..rl.maml_trpo import FISHERS
from ..rl.mbmpo import MBMPO, META_UPDATES
from .config import check, non_negative, positive, sizes
from .maml_trpo import MLPPolicyConfig, policy_from_config
from .metarl import MetaRLAlgorithm, MetaRLConfig, build_env


@dataclass
class MBMPOSection:
    name: str = "mbmpo"
    fast_lr: float = check(*non_negative, default=1e-3)  # the inner policy-gradient step
    gamma: float = check(lambda v: 0 < v <= 1, "in (0, 1]", default=0.99)
    gae_lambda: float = check(lambda v: 0 <= v <= 1, "in [0, 1]", default=1.0)
    max_kl: float = check(*positive, default=0.01)
    cg_damping: float = check(*non_negative, default=1e-5)
    # the TRPO step's KL Hessian: "exact" (through the inner step) or "adapted" (cheaper)
    fisher: str = check(lambda v: v in FISHERS, f"one of {FISHERS}", default="exact")
    meta_steps: int = check(*positive, default=30)  # meta-updates per iteration
    # "trpo" (the paper's) or "ppo": RLlib's, `ppo_steps` Adam steps (`meta_lr`) on PPO's
    # surrogate clipped at `ppo_clip`, through the inner step (max_kl, cg_damping, fisher unused)
    meta_update: str = check(lambda v: v in META_UPDATES, f"one of {META_UPDATES}", default="trpo")
    meta_lr: float = check(*positive, default=1e-3)
    ppo_steps: int = check(*positive, default=8)
    ppo_clip: float = check(*positive, default=0.5)
    # the policy's surrogate and KL through the inner step as compiled graphs (torch.compile):
    # 1.2x (TRPO) and 1.3x (PPO-style) less policy optimisation on 2 CPU threads
    # (docs/mbmpo.md); the first meta-step compiles, about a minute
    compile: bool = check(lambda v: isinstance(v, bool), "true or false", default=False)
    random_steps: int = check(*positive, default=5000)  # real steps of random actions first
    models: int = check(*positive, default=5)
    model_hidden_sizes: list[int] = check(*sizes, default_factory=lambda: [512, 512])
    model_lr: float = check(*positive, default=1e-3)
    model_batch_size: int = check(*positive, default=500)
    model_epochs: int = check(*positive, default=50)  # at most, per fit
    model_updates: int | None = check(
        lambda v: v is None or v > 0, "null or > 0", default=None
    )  # at most, per fit
    patience: int = check(*positive, default=5)  # epochs without a better validation loss
    # the official code's rule instead: stop when this running average of the validation loss
    # rises (0.99 there), keeping the last weights; null: the best epoch and `patience`
    model_rolling: float | None = check(lambda v: v is None or 0 < v < 1, "null or in (0, 1)", default=None)
    model_weight_norm: bool = check(lambda v: isinstance(v, bool), "true or false",
                                    default=False)  # weight-normalised models, as the official code's
    # the models' matmuls: "bfloat16" (autocast; float32 weights) halves fitting and is 2.5x
    # faster a model step on CPUs with bfloat16 instructions (AVX512-BF16, AMX) and on GPUs
    model_precision: str = check(lambda v: v in PRECISIONS, f"one of {PRECISIONS}", default="float32")
    valid_fraction: float = check(lambda v: 0 < v < 1, "in (0, 1)", default=0.2)
    buffer_size: int = check(*positive, default=100_000)  # the last real transitions kept
    # the models see actions clipped to the env's bound, as it applies them; false: the
    # policy's raw actions, as the official code
    clip_model_actions: bool = check(lambda v: isinstance(v, bool), "true or false", default=True)


@dataclass
class MBMPOEvalConfig:
    episodes: int = check(*positive, default=10)  # real episodes per evaluation point
    seed: int = 1234


@dataclass
class MBMPOConfig(MetaRLConfig):
    policy: MLPPolicyConfig = field(default_factory=lambda: MLPPolicyConfig([32, 32], 1.0, "tanh"))
    algorithm: MBMPOSection = field(default_factory=MBMPOSection)
    eval: MBMPOEvalConfig = field(default_factory=MBMPOEvalConfig)


class MBMPOExperiment(MetaRLAlgorithm):
    """train.meta_batch_size: tasks per meta-step (spread over the models); train.episodes:
    imagined episodes per task."""

    Config = MBMPOConfig
    shard_key = "train.meta_batch_size"  # under torchrun each rank rolls out its share of the tasks
    cuda_ready = True  # the policy, the ensemble and the imagined episodes on the device; MuJoCo on the CPU
    curve = {"return": "meta-policy", "return_adapted": "after one step"}
    curve_ylabel = "real return"

    def __init__(self, config: MBMPOConfig, device: str = "cpu"):
        super().__init__(config, device)
        a, seed = config.algorithm, config.seed
        self.task = self.env.sample_tasks(1, torch.Generator().manual_seed(seed))[0]  # the one real task
        self.policy = policy_from_config(self.env, config.policy).to(device)
        meta = MAMLTRPO(self.policy, a.fast_lr, 1, False, a.gamma, a.gae_lambda, a.max_kl, a.cg_damping,
                        fisher=a.fisher, compile=a.compile)
        ensemble = DynamicsEnsemble(
            self.env.observation_size,
            self.env.action_size,
            a.models,
            tuple(a.model_hidden_sizes),
            a.model_lr,
            torch.Generator().manual_seed(seed),
            a.model_weight_norm,
            a.model_precision,
        ).to(device)
        fit = {
            "batch_size": a.model_batch_size,
            "valid_fraction": a.valid_fraction,
            "patience": a.patience,
            "epochs": a.model_epochs,
            "max_updates": a.model_updates,
            "rolling": a.model_rolling,
        }
        self.mbmpo = MBMPO(
            self.env,
            meta,
            ensemble,
            self.task,
            config.train.meta_batch_size,
            config.train.episodes,
            a.meta_steps,
            a.random_steps,
            a.buffer_size,
            fit,
            eval_env=build_env(config.env),
            clip_actions=a.clip_model_actions,
            meta_update=a.meta_update,
            meta_lr=a.meta_lr,
            ppo_steps=a.ppo_steps,
            ppo_clip=a.ppo_clip,
        )
        self.history: list[dict] = []  # one evaluation point per iteration

    def step(self, generator):
        metrics = self.mbmpo.iteration(generator)
        evaluation = self.mbmpo.evaluate(
            self.config.eval.episodes,
            torch.Generator().manual_seed(self.config.eval.seed + len(self.history)),
        )
        self.history.append({"real_steps": self.mbmpo.real_steps, **evaluation})
        return {**metrics, **evaluation}

    def state_dict(self):
        return {
            "policy": self.policy.state_dict(),
            "ensemble": self.mbmpo.ensemble.state_dict(),
            "mbmpo": self.mbmpo.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state):
        self.policy.load_state_dict(state["policy"])
        self.mbmpo.ensemble.load_state_dict(state["ensemble"])
        self.mbmpo.load_state_dict(state["mbmpo"])
        self.history = list(state["history"])

    def evaluate(self):
        """A fresh evaluation of the trained meta-policy (`metakit eval` repeats it), beside
        the curve of the evaluations made during training."""
        final = self.mbmpo.evaluate(
            self.config.eval.episodes, torch.Generator().manual_seed(self.config.eval.seed)
        )
        return {
            "env": self.config.env.name,
            "real_steps": self.mbmpo.real_steps,
            **final,
            "curve": self.history,
            "eval_episodes": self.config.eval.episodes,
        }
