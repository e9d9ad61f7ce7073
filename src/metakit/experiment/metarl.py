"""Meta-RL experiments: config, training loop (checkpoints, --resume), evaluation and plots.

A run directory holds the same files as a supervised run: config.yaml, metrics.jsonl (one
row per iteration: returns before and after adaptation, the TRPO step's KL), checkpoint.pt
(policy, and the sampler's generator, so a resumed run ends with the same weights),
results.json (`returns_after_steps`) and PNG plots.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import yaml
from tqdm.auto import tqdm

from ..errors import MetakitError
from ..files import save_json
from ..rl import MAMLTRPO, envs, policy_for
from ..rl.envs.gym import ENVIRONMENTS
from ..rl.rl2 import RL2, RecurrentPolicy
from .checkpoint import (
    CHECKPOINT,
    METRICS,
    load_checkpoint,
    open_run_dir,
    save_checkpoint,
)
from .config import check, from_dict, non_negative, positive
from .evaluate import mean_ci95

METARL_ALGORITHMS = ["maml-trpo", "rl2"]


@dataclass
class EnvConfig:
    name: str = check(lambda v: v in ENVIRONMENTS, f"one of {sorted(ENVIRONMENTS)}", default="Navigation2D")
    horizon: int | None = check(lambda v: v is None or v >= 1, "null or >= 1", default=None)
    arms: int | None = check(lambda v: v is None or v >= 2, "null or >= 2", default=None)  # BernoulliBandit


@dataclass
class PolicyConfig:
    hidden_sizes: list[int] = check(lambda v: all(s > 0 for s in v), "sizes > 0",
                                    default_factory=lambda: [100, 100])
    init_std: float = check(*positive, default=1.0)  # Gaussian policies
    recurrent_size: int = check(*positive, default=256)  # RL^2's GRU


@dataclass
class MetaRLAlgorithmConfig:
    name: str = check(lambda v: v in METARL_ALGORITHMS, f"one of {METARL_ALGORITHMS}", default="maml-trpo")
    fast_lr: float = check(*non_negative, default=0.1)
    inner_steps: int = check(*non_negative, default=1)
    first_order: bool = False
    gamma: float = check(lambda v: 0 < v <= 1, "in (0, 1]", default=0.99)
    gae_lambda: float = check(lambda v: 0 <= v <= 1, "in [0, 1]", default=1.0)
    max_kl: float = check(*positive, default=0.01)
    cg_damping: float = check(*non_negative, default=1e-5)
    # RL^2
    optimizer: str = check(lambda v: v in ("ppo", "trpo"), "'ppo' or 'trpo'", default="ppo")
    lr: float = check(*positive, default=2e-3)
    clip: float = check(*positive, default=0.2)
    epochs: int = check(*positive, default=4)
    minibatches: int = check(*positive, default=4)
    value_coef: float = check(*non_negative, default=0.5)
    entropy_coef: float = check(*non_negative, default=0.0)


@dataclass
class MetaRLTrainConfig:
    iterations: int = check(*positive, default=500)
    meta_batch_size: int = check(*positive, default=20)  # tasks per iteration (RL^2: trials)
    episodes: int = check(*positive, default=20)  # per task, before and after adaptation (RL^2: per trial)
    checkpoint_every: int = check(*positive, default=10)


@dataclass
class MetaRLEvalConfig:
    num_tasks: int = check(*positive, default=40)
    episodes: int = check(*positive, default=20)
    step_sizes: list[float] = check(lambda v: all(s >= 0 for s in v), "step sizes >= 0",
                                    default_factory=lambda: [0.1, 0.05, 0.05])  # one per test step
    seed: int = 1234


@dataclass
class MetaRLConfig:
    name: str = "meta-rl"
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algorithm: MetaRLAlgorithmConfig = field(default_factory=MetaRLAlgorithmConfig)
    train: MetaRLTrainConfig = field(default_factory=MetaRLTrainConfig)
    eval: MetaRLEvalConfig = field(default_factory=MetaRLEvalConfig)


def build(config: MetaRLConfig):
    kwargs = {key: value for key in ("horizon", "arms") if (value := getattr(config.env, key)) is not None}
    if "arms" in kwargs and config.env.name != "BernoulliBandit":
        raise MetakitError(f"'env.arms' applies to BernoulliBandit, not to {config.env.name}")
    env = envs.make(config.env.name, **kwargs)
    a = config.algorithm
    if a.name == "rl2":
        if not env.discrete:
            raise MetakitError(f"'algorithm.name' rl2 needs a discrete-action env (BernoulliBandit, TabularMDP, "
                               f"CartPole), got {config.env.name}")
        policy = RecurrentPolicy(env.observation_size, env.action_size, config.policy.recurrent_size)
        return env, RL2(policy, a.optimizer, a.lr, a.gamma, a.gae_lambda, a.clip, a.epochs, a.minibatches,
                        a.value_coef, a.entropy_coef, a.max_kl)
    options = {} if env.discrete else {"init_std": config.policy.init_std}
    policy = policy_for(env, tuple(config.policy.hidden_sizes), **options)
    algo = MAMLTRPO(policy, a.fast_lr, a.inner_steps, a.first_order, a.gamma, a.gae_lambda, a.max_kl, a.cg_damping)
    return env, algo


def load_metarl_run(run_dir: Path):
    config = from_dict(MetaRLConfig, yaml.safe_load((Path(run_dir) / "config.yaml").read_text()))
    env, algo = build(config)
    restore(algo, load_checkpoint(Path(run_dir) / CHECKPOINT))
    return config, env, algo


def snapshot(algo) -> dict:
    """The algorithm's weights, and its optimizer's state where it has one (RL^2's Adam)."""
    return {"algorithm": algo.state_dict(), **({"adam": algo.adam.state_dict()} if hasattr(algo, "adam") else {})}


def restore(algo, state: dict) -> None:
    algo.load_state_dict(state["algorithm"])
    if "adam" in state:
        algo.adam.load_state_dict(state["adam"])


def train_metarl(config: MetaRLConfig, run_dir: Path, resume: bool = False, device: str = "cpu",
                 progress: bool = True) -> dict:
    if device != "cpu":
        raise MetakitError(f"meta-RL runs on the CPU for now (its environments are CPU tensors); got --device {device}")
    run_dir = Path(run_dir)
    checkpoint_path, metrics_path = run_dir / CHECKPOINT, run_dir / METRICS
    state = open_run_dir(config, run_dir, resume)
    torch.manual_seed(config.seed)
    env, algo = build(config)
    generator = torch.Generator().manual_seed(config.seed)
    start, seconds = 0, 0.0
    if state is not None:
        restore(algo, state)
        generator.set_state(state["generator"])
        start, seconds = state["iteration"], state["seconds"]
    tc = config.train
    began = time.perf_counter() - seconds
    bar = tqdm(range(start, tc.iterations), initial=start, total=tc.iterations, disable=not progress,
               desc=config.name, dynamic_ncols=True)
    with metrics_path.open("a") as metrics:
        for iteration in bar:
            info = algo.step(env, tc.meta_batch_size, tc.episodes, generator)
            done, seconds = iteration + 1, time.perf_counter() - began
            metrics.write(json.dumps({"iteration": done, **info, "seconds": round(seconds, 2)}) + "\n")
            metrics.flush()
            bar.set_postfix({k: f"{info[k]:.1f}" for k in ("return_before", "return_after", "trial_return") if k in info})
            if done % tc.checkpoint_every == 0 or done == tc.iterations:
                save_checkpoint({**snapshot(algo), "generator": generator.get_state(),
                                 "iteration": done, "seconds": seconds}, checkpoint_path)
    bar.close()
    return finish_metarl(config, env, algo, run_dir, seconds)


def finish_metarl(config: MetaRLConfig, env, algo, run_dir: Path, train_seconds: float | None = None,
                  results_path: Path | None = None) -> dict:
    ev = config.eval
    tasks = env.sample_tasks(ev.num_tasks, torch.Generator().manual_seed(ev.seed))
    if config.algorithm.name == "rl2":
        return finish_rl2(config, env, algo, tasks, run_dir, train_seconds, results_path)
    record: list = []
    returns = algo.evaluate(env, tasks, len(ev.step_sizes), ev.step_sizes, ev.episodes,
                            torch.Generator().manual_seed(ev.seed + 1), record=record)
    results = {"name": config.name, "algorithm": config.algorithm.name, "env": config.env.name,
               "iterations": config.train.iterations, "returns_after_steps": returns,
               "eval_tasks": ev.num_tasks, "eval_episodes": ev.episodes, "eval_step_sizes": ev.step_sizes}
    if train_seconds is not None:
        results["train_seconds"] = round(train_seconds, 1)
    save_json(results, results_path or run_dir / "results.json")
    plot_metarl(run_dir, returns, record, tasks, config.env.name)
    return results


def finish_rl2(config: MetaRLConfig, env, algo, tasks, run_dir: Path, train_seconds, results_path) -> dict:
    """Mean total reward of one trial (train.episodes episodes) on each of eval.num_tasks new tasks."""
    totals = algo.evaluate(env, tasks, config.train.episodes, torch.Generator().manual_seed(config.eval.seed + 1))
    mean, ci95 = mean_ci95(totals)
    results = {"name": config.name, "algorithm": "rl2", "env": config.env.name, "arms": config.env.arms,
               "episodes": config.train.episodes, "iterations": config.train.iterations,
               "trial_return": mean, "ci95": ci95, "eval_tasks": len(totals)}
    if train_seconds is not None:
        results["train_seconds"] = round(train_seconds, 1)
    save_json(results, results_path or run_dir / "results.json")
    plot_training_curve(run_dir, {"training trials": "trial_return"}, "mean trial return")
    return results


def plot_training_curve(run_dir: Path, series: dict[str, str], ylabel: str) -> None:
    """learning_curve.png: each metrics.jsonl column in `series` (label -> key) per iteration."""
    metrics = run_dir / METRICS
    if not metrics.exists():
        return
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, key in series.items():
        ax.plot([r["iteration"] for r in rows], [r[key] for r in rows], label=label)
    ax.set(xlabel="meta-iteration", ylabel=ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "learning_curve.png", dpi=120)
    plt.close(fig)


def plot_metarl(run_dir: Path, returns: dict, record: list, tasks: torch.Tensor, env_name: str) -> None:
    plot_training_curve(run_dir, {"before adaptation": "return_before", "after 1 step": "return_after"},
                        "mean episode return")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([int(k) for k in returns], list(returns.values()), "o-")
    ax.set(xlabel="policy-gradient steps at test", ylabel="mean episode return", title=env_name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "returns_vs_steps.png", dpi=120)
    plt.close(fig)
    if env_name == "Navigation2D" and record:  # the paper's figure: one task, before and after
        fig, ax = plt.subplots(figsize=(5, 5))
        for k, trajectories in enumerate(record):
            length = int(trajectories.mask[0, 0].sum())
            path = torch.cat([torch.zeros(1, 2), trajectories.observations[0, 0, 1:length]])
            ax.plot(path[:, 0], path[:, 1], "-", label="pre-update" if k == 0 else f"{k} step{'s' if k > 1 else ''}")
        ax.plot(*tasks[0].tolist(), "r*", markersize=14, label="goal")
        ax.set(xlim=(-0.6, 0.6), ylim=(-0.6, 0.6), aspect="equal", title="2D navigation: one test task")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / "trajectories.png", dpi=120)
        plt.close(fig)
