"""MB-MPO: model-based meta-policy optimisation (Clavera et al. 2018, Algorithm 1).

    D <- `random_steps` real steps of uniformly random actions
    each iteration:
        fit the K dynamics models on D (each its own train/validation split; warm start)
        repeat `meta_steps` times (MAML-TRPO in which model k is a task):
            T tasks spread evenly over the models; imagined episodes of pi_theta in each
            phi_i = theta - alpha grad L_PG(theta);   imagined episodes of pi_phi_i
            theta <- TRPO step on the post-update surrogate, through the inner step
                     (meta_update="ppo": RLlib's update, Adam steps on PPO's clipped surrogate)
        D <- D + one real episode per task of pi_phi_i, phi_i adapted in model(i)

Under torchrun each rank rolls out its share of the tasks, real and imagined (task-first random
numbers: the same episodes on any number of ranks); the real episodes are gathered so every rank
fits the models on the same data, and the TRPO step averages over the ranks.

The imagined rollouts run in a `ModelEnv` whose reward, termination and start states are the
real environment's known functions; the models are given the actions clipped to the
environment's bound, as it applies them, and predicted states are clipped to the range seen in
D widened by its span on each side.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from .. import distributed
from ..errors import MetakitError
from ..gradient.learner import check_lr
from .dynamics import DynamicsEnsemble
from .envs.base import TaskEnv
from .envs.model import ModelEnv
from .maml_trpo import MAMLTRPO, advantages
from .optim import optimizer_steps, trpo_step
from .sampling import Trajectories, rollout

META_UPDATES = ("trpo", "ppo")  # the paper's TRPO step; RLlib's Adam steps on a clipped surrogate


class MBMPO:
    def __init__(
        self,
        env: TaskEnv,
        meta: MAMLTRPO,
        ensemble: DynamicsEnsemble,
        task: torch.Tensor,
        num_tasks: int = 20,
        imagined_episodes: int = 50,
        meta_steps: int = 30,
        random_steps: int = 5000,
        buffer_size: int = 100_000,
        model_fit: dict | None = None,
        eval_env: TaskEnv | None = None,
        clip_actions: bool = True,
        meta_update: str = "trpo",
        meta_lr: float = 1e-3,
        ppo_steps: int = 8,
        ppo_clip: float = 0.5,
    ):
        if env.discrete:
            raise MetakitError(f"MB-MPO needs continuous actions, got {type(env).__name__}")
        if (env.observation_size, env.action_size) != (ensemble.observation_size, ensemble.action_size):
            raise MetakitError(
                f"the ensemble models {ensemble.observation_size} observations and "
                f"{ensemble.action_size} actions; {type(env).__name__} has "
                f"{env.observation_size} and {env.action_size}"
            )
        if meta_update not in META_UPDATES:
            raise MetakitError(f"meta_update must be one of {META_UPDATES}, got {meta_update!r}")
        if not isinstance(ppo_steps, int) or ppo_steps < 1:
            raise MetakitError(f"ppo_steps must be an integer >= 1, got {ppo_steps!r}")
        check_lr("meta_lr", meta_lr)
        check_lr("ppo_clip", ppo_clip)
        env.known_reward(task, *_probe(env))  # fails now, naming the env, if it has no known reward
        self.env, self.eval_env, self.meta, self.ensemble = env, eval_env or env, meta, ensemble
        self.task, self.policy = task, meta.policy
        self.num_tasks, self.imagined_episodes, self.meta_steps = num_tasks, imagined_episodes, meta_steps
        self.random_steps, self.buffer_size, self.model_fit = random_steps, buffer_size, model_fit or {}
        # RLlib's meta-update keeps one Adam over the meta-steps; TRPO needs no state
        self.meta_optimizer = (
            torch.optim.Adam(self.policy.parameters(), lr=meta_lr) if meta_update == "ppo" else None
        )
        self.ppo_steps, self.ppo_clip = ppo_steps, ppo_clip
        # the models see the actions the environment applies, clipped to its bound (the official
        # code feeds raw ones: beyond the bound, where D holds none, the models extrapolate and
        # the policy learns to exploit them)
        self.action_limit = env.action_bound if clip_actions else None
        self.data = {k: torch.zeros(0, n) for k, n in _columns(env).items()}
        self.real_steps = 0  # all real steps taken; the data keeps the last buffer_size of them
        device = ensemble.input_mean.device  # imagined episodes run where the models are
        on_device = task.to(device)
        self.model_env = ModelEnv(
            lambda tasks, s, a: ensemble.dynamics(tasks, s, self._applied(a)),
            lambda s, a, s2: env.known_reward(on_device, s, a, s2),
            lambda tasks, episodes, g: env.initial_observations(tasks * episodes, g).view(
                tasks, episodes, -1
            ),
            env.observation_size,
            env.action_size,
            env.horizon,
            termination=(lambda s, a, s2: env.known_termination(on_device, s, a, s2))
            if type(env).known_termination is not TaskEnv.known_termination
            else None,
            num_models=ensemble.models,
            device=device,
        )

    # -- the three phases of an iteration ----------------------------------------------------
    def collect(self, generator: torch.Generator | None = None) -> Trajectories:
        """Real episodes into D: random actions first, then one per task of its adapted policy."""
        if self.real_steps == 0:
            episodes = -(-self.random_steps // self.env.horizon)
            self.env.set_tasks(self.task.expand(1, *self.task.shape))
            uniform = _UniformPolicy(self.env.action_size, self.env.action_bound)
            trajectories = rollout(self.env, uniform, episodes, generator)
        else:
            with distributed.task_share(self.num_tasks):
                fast = self.adapted_in_models(generator)
                self.env.set_tasks(distributed.shard(self.task.expand(self.num_tasks, *self.task.shape)))
                trajectories = rollout(self.env, self.policy, 1, generator, params=fast)
            trajectories = dataclasses.replace(  # every rank stores every task's episode
                trajectories,
                **{
                    f.name: distributed.gather_tasks(getattr(trajectories, f.name))
                    for f in dataclasses.fields(trajectories)
                },
            )
        self._store(trajectories)
        return trajectories

    def fit_models(self, generator: torch.Generator | None = None) -> dict:
        d = self.data
        info = self.ensemble.fit(
            d["observations"], d["actions"], d["next_observations"], generator=generator, **self.model_fit
        )
        low, high = (v.to(self.model_env.device) for v in d["next_observations"].aminmax(dim=0))
        self.model_env.bounds = (low - (high - low), high + (high - low))  # a sane range around the data
        return info

    def meta_step(self, generator: torch.Generator | None = None) -> dict[str, float]:
        """One meta-update on fresh imagined episodes, model k standing for task k."""
        start = time.perf_counter()
        tasks = self.model_env.sample_tasks(self.num_tasks, generator)
        with distributed.task_share(self.num_tasks):
            data = self.meta.sample(
                self.model_env, distributed.shard(tasks), self.imagined_episodes, generator
            )
        sampled = time.perf_counter()
        params = list(self.policy.parameters())
        if self.meta_optimizer is None:
            info = trpo_step(params, self.meta.objectives(data), self.meta.max_kl, self.meta.cg_damping,
                             fisher=self.meta.fisher(data), average=distributed.mean)
        else:
            clipped = self.meta.objectives(data, clip=self.ppo_clip)
            info = optimizer_steps(params, clipped, self.meta_optimizer, self.ppo_steps, distributed.mean)
        return {
            "imagined_return": distributed.average(data["train"].episode_returns().mean()),
            "imagined_return_adapted": distributed.average(data["valid"].episode_returns().mean()),
            "kl": info["kl"],
            "accepted": float(info["accepted"]),
            "imagined_sampling_s": sampled - start,
            "policy_optimisation_s": time.perf_counter() - sampled,
        }

    def iteration(self, generator: torch.Generator | None = None) -> dict[str, float]:
        """Collect, fit, meta-steps: their metrics and the seconds spent in each phase."""
        clock = time.perf_counter()
        self.collect(generator)
        real = time.perf_counter()
        fit = self.fit_models(generator)
        fitted = time.perf_counter()
        steps = [self.meta_step(generator) for _ in range(self.meta_steps)]
        mean = lambda values: sum(values) / len(values)  # noqa: E731
        return {
            "real_steps": float(self.real_steps),
            "model_valid_loss": mean(fit["valid_loss"]),
            "model_epochs": mean(fit["epochs"]),
            **{
                k: mean([s[k] for s in steps])
                for k in ("imagined_return", "imagined_return_adapted", "kl", "accepted")
            },
            **{k: sum(s[k] for s in steps) for k in ("imagined_sampling_s", "policy_optimisation_s")},
            "real_sampling_s": real - clock,
            "model_fitting_s": fitted - real,
        }

    # -- the adapted policies and their real return -------------------------------------------
    def adapted_in_models(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Fast weights [T, ...]: one inner step of the meta-policy on each model's imagined episodes
        (this rank's share of the tasks inside `distributed.task_share`)."""
        self.model_env.set_tasks(distributed.shard(self.model_env.sample_tasks(self.num_tasks, generator)))
        imagined = rollout(self.model_env, self.policy, self.imagined_episodes, generator)
        fast = self.meta.adapt(imagined, advantages(imagined, self.meta.gamma, self.meta.gae_lambda))
        return {k: v.detach() for k, v in fast.items()}

    @torch.no_grad()
    def evaluate(self, episodes: int = 10, generator: torch.Generator | None = None) -> dict[str, float]:
        """Mean real return of the meta-policy (`return`) and after one inner step on those real
        episodes (`return_adapted`); these steps are not added to D."""
        env = self.eval_env
        env.set_tasks(self.task.expand(1, *self.task.shape))
        before = rollout(env, self.policy, episodes, generator)
        with torch.enable_grad():
            fast = self.meta.adapt(
                before, advantages(before, self.meta.gamma, self.meta.gae_lambda), first_order=True
            )
        after = rollout(
            env, self.policy, episodes, generator, params={k: v.detach() for k, v in fast.items()}
        )
        return {
            "return": before.episode_returns().mean().item(),
            "return_adapted": after.episode_returns().mean().item(),
        }

    # -- checkpoint state beyond the policy's and the ensemble's weights ----------------------
    def state_dict(self) -> dict:
        bounds = self.model_env.bounds
        return {
            "data": dict(self.data),
            "ensemble_optimizer": self.ensemble.optimizer.state_dict(),
            "bounds": None if bounds is None else tuple(b.cpu() for b in bounds),
            "real_steps": self.real_steps,
            **({} if self.meta_optimizer is None else {"meta_optimizer": self.meta_optimizer.state_dict()}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.data = dict(state["data"])
        self.ensemble.optimizer.load_state_dict(state["ensemble_optimizer"])
        bounds = state["bounds"]
        self.model_env.bounds = None if bounds is None else tuple(b.to(self.model_env.device) for b in bounds)
        # runs saved before the count existed: their data had not reached buffer_size
        self.real_steps = state.get("real_steps", self.data["observations"].shape[0])
        if self.meta_optimizer is not None:
            if "meta_optimizer" not in state:
                raise MetakitError("this checkpoint was trained with meta_update='trpo'; it cannot resume "
                                   "with meta_update='ppo' (no Adam state to restore)")
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])

    def _applied(self, actions: torch.Tensor) -> torch.Tensor:
        return actions if self.action_limit is None else actions.clamp(-self.action_limit, self.action_limit)

    def _store(self, trajectories: Trajectories) -> None:
        """The steps really taken, oldest dropped beyond `buffer_size`."""
        valid = trajectories.mask.bool()
        obs, actions = trajectories.observations, self._applied(trajectories.actions)
        following = torch.cat([obs[:, :, 1:], trajectories.last_observations[:, :, None]], 2)
        new = {k: v[valid].cpu() for k, v in (("observations", obs), ("actions", actions),
                                                ("next_observations", following))}  # D lives on the CPU
        self.real_steps += int(valid.sum())
        self.data = {k: torch.cat([self.data[k], new[k]])[-self.buffer_size :] for k in self.data}


class _UniformPolicy(torch.nn.Module):
    """Uniform random actions in [-bound, bound], in the policy interface rollout uses."""

    def __init__(self, size: int, bound: float):
        super().__init__()
        self.size, self.bound = size, bound

    def forward(self, obs):
        return obs

    def sample(self, out, generator=None):
        return (torch.rand(*out.shape[:-1], self.size, generator=generator) * 2 - 1) * self.bound


def _columns(env: TaskEnv) -> dict[str, int]:
    return {
        "observations": env.observation_size,
        "actions": env.action_size,
        "next_observations": env.observation_size,
    }


def _probe(env: TaskEnv):
    """One zero transition, to ask an environment for its known functions."""
    zeros = torch.zeros(1, env.observation_size)
    return zeros, torch.zeros(1, env.action_size), zeros
