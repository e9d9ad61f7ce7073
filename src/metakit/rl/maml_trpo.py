"""MAML for reinforcement learning with a TRPO outer step (Finn et al. 2017, Algorithm 3).

    for each task i (all at once, mapped over tasks by the engine):
        D_i  = episodes of pi_theta;   phi_i = theta - alpha grad L_PG(theta; D_i)
        D'_i = episodes of pi_phi_i
    theta <- TRPO step on mean_i surrogate(phi_i(theta); D'_i), KL(pi_phi_i_old || pi_phi_i(theta))

The surrogate and KL differentiate through the inner step (second order; first_order=True
treats the inner gradient as a constant). Advantages: discounted returns minus the linear
feature baseline fitted per task on the same episodes, normalised per task.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, grad
from tqdm.auto import tqdm

from .. import distributed
from ..engine import compile_own, may_call_norms, run_over_tasks
from ..errors import MetakitError
from ..gradient.learner import check_lr
from .envs.base import TaskEnv
from .optim import clipped_objective, fisher_vector_product, policy_gradient_loss, trpo_step
from .returns import discounted_returns, gae, linear_feature_baseline, normalize
from .sampling import Trajectories, rollout

FISHERS = ("exact", "adapted")  # the KL Hessian of the TRPO step: see MAMLTRPO.fisher


def advantages(trajectories: Trajectories, gamma: float, gae_lambda: float) -> torch.Tensor:
    returns = discounted_returns(trajectories.rewards, trajectories.mask, gamma)
    values = linear_feature_baseline(trajectories.observations, returns, trajectories.mask)
    return normalize(
        gae(trajectories.rewards, values, trajectories.mask, gamma, gae_lambda), trajectories.mask
    )


class MAMLTRPO(nn.Module):
    def __init__(
        self,
        policy: nn.Module,
        fast_lr: float = 0.1,
        inner_steps: int = 1,
        first_order: bool = False,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        max_kl: float = 0.01,
        cg_damping: float = 1e-5,
        chunk_size: int | None = None,
        fisher: str = "exact",
        compile: bool = False,
    ):
        super().__init__()
        if fisher not in FISHERS:
            raise MetakitError(f"fisher must be one of {FISHERS}, got {fisher!r}")
        fast_lr = check_lr("fast_lr", fast_lr)
        if not isinstance(inner_steps, int) or inner_steps < 0:
            raise MetakitError(f"inner_steps must be an integer >= 0, got {inner_steps!r}")
        for name, value, ok, expected in (
            ("gamma", gamma, lambda v: 0 < v <= 1, "in (0, 1]"),
            ("gae_lambda", gae_lambda, lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("max_kl", max_kl, lambda v: 0 < v < math.inf, "finite and > 0"),
        ):
            if not isinstance(value, (int, float)) or not ok(value):  # NaN fails every comparison
                raise MetakitError(f"{name} must be {expected}, got {value!r}")
        check_lr("cg_damping", cg_damping)
        if not isinstance(compile, bool):
            raise MetakitError(f"compile must be true or false, got {compile!r}")
        self.policy, self.chunk_size, self.exact_norms = policy, chunk_size, may_call_norms(policy)
        self.fast_lr, self.inner_steps, self.first_order = fast_lr, inner_steps, first_order
        self.gamma, self.gae_lambda, self.max_kl, self.cg_damping = gamma, gae_lambda, max_kl, cg_damping
        # compile=True: the surrogate and KL through the inner step as compiled graphs (with and
        # without gradients), compiled at the first use. Such a graph cannot be differentiated
        # twice, so it gives no outputs for the exact Fisher, which takes its own eager pass
        self.fisher_mode, self.compile, self._compiled = fisher, compile, None

    # -- per task, under the engine's vmap ---------------------------------------------------
    def _outputs(self, params, observations):
        return functional_call(self.policy, params, (observations,))

    def _inner_loss(self, params, obs, actions, adv, mask):
        return policy_gradient_loss(self.policy.log_prob(self._outputs(params, obs), actions), adv, mask)

    def adapt(
        self,
        trajectories: Trajectories,
        adv: torch.Tensor,
        params=None,
        lr: float | None = None,
        first_order: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Fast weights [T, ...] after one policy-gradient step on each task's episodes, from the
        shared weights (params None) or from per-task weights [T, ...]."""
        lr = self.fast_lr if lr is None else lr
        first_order = self.first_order if first_order is None else first_order
        shared = params is None
        params = dict(self.policy.named_parameters()) if shared else params

        def one_task(p, obs, actions, a, mask):
            g = grad(self._inner_loss)(p, obs, actions, a, mask)
            return {k: p[k] - lr * (g[k].detach() if first_order else g[k]) for k in p}

        data = (trajectories.observations, trajectories.actions, adv, trajectories.mask)
        if shared:
            return run_over_tasks(one_task, (params,), data, self.chunk_size, self.exact_norms)
        return run_over_tasks(one_task, (), (params, *data), self.chunk_size, self.exact_norms)

    def _fast_outputs(self, fast, observations):
        return run_over_tasks(self._outputs, (), (fast, observations), self.chunk_size, self.exact_norms)

    # -- one meta-iteration ------------------------------------------------------------------
    def sample(self, env: TaskEnv, num_tasks: int | torch.Tensor, episodes: int, generator=None) -> dict:
        """Episodes before (train) and after (valid) adaptation for `num_tasks` new tasks (or
        for the tasks given)."""
        tasks = num_tasks if isinstance(num_tasks, torch.Tensor) else env.sample_tasks(num_tasks, generator)
        env.set_tasks(tasks)
        train = rollout(env, self.policy, episodes, generator)
        train_adv = advantages(train, self.gamma, self.gae_lambda)
        with torch.no_grad():
            fast = {k: v.detach() for k, v in self._adapt_all(train, train_adv).items()}
        valid = rollout(env, self.policy, episodes, generator, params=fast)
        old_out = self._fast_outputs(fast, valid.observations).detach()
        return {
            "train": train,
            "train_adv": train_adv,
            "fast": fast,
            "valid": valid,
            "old_out": old_out,
            "valid_adv": advantages(valid, self.gamma, self.gae_lambda),
        }

    def objectives(self, data: dict, clip: float | None = None):
        """A function of the current weights theta giving (surrogate loss, mean KL from the
        sampling policy, the adapted policies' outputs), all through the inner step, from one
        forward pass (compiled: no outputs). With `clip`, the surrogate is PPO's:
        min(r A, clip(r, 1 - clip, 1 + clip) A)."""
        old_log_prob = self.policy.log_prob(data["old_out"], data["valid"].actions)
        args = (data["train"], data["train_adv"], data["valid"], data["valid_adv"], data["old_out"],
                old_log_prob, clip)
        return lambda: self._objective(*args)

    def _objective(self, *args):
        if not self.compile:
            return self._surrogate_kl_and_outputs(*args)
        if self._compiled is None:
            self._compiled = compile_own(lambda *a: self._surrogate_kl_and_outputs(*a)[:2])
        return self._compiled(*args)

    def _surrogate_kl_and_outputs(self, train, train_adv, valid, valid_adv, old_out, old_log_prob, clip):
        mask = valid.mask
        steps = mask.sum((1, 2))
        out = self._fast_outputs(self._adapt_all(train, train_adv), valid.observations)
        ratio = (self.policy.log_prob(out, valid.actions) - old_log_prob).exp()
        objective = ratio * valid_adv if clip is None else clipped_objective(ratio, valid_adv, clip)
        surrogate = -((objective * mask).sum((1, 2)) / steps).mean()
        kl = ((self.policy.kl(old_out, out) * mask).sum((1, 2)) / steps).mean()
        return surrogate, kl, out

    def fisher(self, data: dict, damping: float | None = None):
        """A function building, from the outputs `objectives` gives at the current theta (the
        sampling one), v -> (H + damping) v, H the Hessian in theta of the mean KL: J^T F J, J
        through the inner step. With fisher="adapted", J is taken as if the inner step's
        Jacobian I - alpha d2L were I: the Fisher of the adapted policies in their own weights,
        exact at alpha = 0, about 4x cheaper a product (no pass through the inner step). The
        line search still checks the exact KL."""
        mask = data["valid"].mask
        weight = mask / mask.sum((1, 2), keepdim=True) / mask.shape[0]  # of each state in the mean KL
        metric = self.policy.fisher_diagonal(data["old_out"]) * weight[..., None]
        damping = self.cg_damping if damping is None else damping
        params = list(self.policy.parameters())
        if self.fisher_mode == "exact":
            if self.compile:  # objectives gave no outputs: J from an eager pass
                out = self._fast_outputs(self._adapt_all(data["train"], data["train_adv"]),
                                         data["valid"].observations)
                return lambda: fisher_vector_product(out, metric, params, damping)
            return lambda out: fisher_vector_product(out, metric, params, damping)
        shifts = {k: torch.zeros_like(v, requires_grad=True) for k, v in self.policy.named_parameters()}
        fast = {k: v + shifts[k] for k, v in data["fast"].items()}  # d fast / d shift = I
        out = self._fast_outputs(fast, data["valid"].observations)
        return lambda *_: fisher_vector_product(out, metric, list(shifts.values()), damping)

    def step(
        self, env: TaskEnv, num_tasks: int, episodes: int, generator: torch.Generator | None = None
    ) -> dict:
        """One meta-update. Under torchrun every rank draws the same `num_tasks` tasks and rolls
        out its share of them (task-first random numbers: the same episodes on any number of
        ranks); the TRPO step averages gradients, Hessian-vector products and line-search
        values over the ranks, so every rank takes the one-process step."""
        tasks = env.sample_tasks(num_tasks, generator)
        with distributed.task_share(num_tasks):
            data = self.sample(env, distributed.shard(tasks), episodes, generator)
        info = trpo_step(
            list(self.policy.parameters()),
            self.objectives(data),
            self.max_kl,
            self.cg_damping,
            fisher=self.fisher(data),
            average=distributed.mean,
        )
        return {
            "return_before": distributed.average(data["train"].episode_returns().mean()),
            "return_after": distributed.average(data["valid"].episode_returns().mean()),
            **info,
        }

    def _adapt_all(self, train, adv):
        fast = None
        for _ in range(self.inner_steps):  # the same episodes each step, as in Finn et al.'s code
            fast = self.adapt(train, adv, params=fast)
        return (
            fast
            if fast is not None
            else {
                k: v.expand(train.observations.shape[0], *v.shape) for k, v in self.policy.named_parameters()
            }
        )

    @torch.no_grad()
    def evaluate(self, env: TaskEnv, tasks: torch.Tensor, steps: int = 3, lrs=(0.1, 0.05, 0.05),
                 episodes: int = 20, generator: torch.Generator | None = None, record: list | None = None,
                 progress: bool = False) -> dict[str, float]:
        """Mean episode return on `tasks` after 0..steps policy-gradient steps, each on fresh
        episodes of the current policy (the paper's test protocol; step k uses lrs[k]).
        `record`, a list, receives the Trajectories of each step."""
        if len(lrs) < steps:
            raise MetakitError(f"evaluate needs a step size for each of {steps} steps, got {list(lrs)}")
        env.set_tasks(tasks)
        fast, returns = None, {}
        for k in tqdm(range(steps + 1), desc="evaluating", disable=not progress, leave=False):
            trajectories = rollout(env, self.policy, episodes, generator, params=fast)
            returns[str(k)] = trajectories.episode_returns().mean().item()
            if record is not None:
                record.append(trajectories)
            if k < steps:
                adv = advantages(trajectories, self.gamma, self.gae_lambda)
                with torch.enable_grad():
                    adapted = self.adapt(trajectories, adv, params=fast, lr=lrs[k], first_order=True)
                fast = {n: v.detach() for n, v in adapted.items()}
        return returns
