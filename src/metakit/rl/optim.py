"""Policy optimisers: conjugate gradient, the TRPO step (Schulman et al. 2015) and PPO's
clipped loss (Schulman et al. 2017). Reused by MAML-TRPO, RL^2 and the other meta-RL methods."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import MetakitError


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       iterations: int = 10, tolerance: float = 1e-10, with_residual: bool = False):
    """Solve A x = b for symmetric positive definite A given only x -> A x. With
    `with_residual`, gives (x, r), r = b - A x as CG tracks it (so x^T A x = x^T (b - r))."""
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iterations):
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x, r = x + alpha * p, r - alpha * ap
        rr_new = r @ r
        if rr_new < tolerance:
            break
        p, rr = r + (rr_new / rr) * p, rr_new
    return (x, r) if with_residual else x


def hessian_vector_product(scalar: torch.Tensor, params: Sequence[torch.Tensor],
                           damping: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> (H + damping I) v, H the Hessian of `scalar` (a tensor still attached to its graph)
    w.r.t. params: exact, by double backward; the gradient graph is built once and reused."""
    grads = flat(torch.autograd.grad(scalar, params, create_graph=True))

    def product(vector: torch.Tensor) -> torch.Tensor:
        hv = flat(torch.autograd.grad(grads @ vector, params, retain_graph=True))
        return hv + damping * vector

    return product


def fisher_vector_product(outputs: torch.Tensor, metric: torch.Tensor, params: Sequence[torch.Tensor],
                          damping: float = 0.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> (J^T M J + damping I) v, J = d outputs / d params, M = diag(metric) (same shape as
    outputs). With `outputs` the policy's distribution parameters and `metric` the Fisher of
    the distribution in them (the policy's `fisher_diagonal`, times each state's weight in
    the mean KL), this is the Hessian of the mean KL at the old policy, exactly, since the
    KL's first derivative vanishes there; and cheaper than double backward (measured 1.5x
    on MAML-TRPO: J v comes from a second backward through the linear map u -> J^T u)."""
    u = torch.zeros_like(outputs, requires_grad=True)
    jt_u = flat(torch.autograd.grad(outputs, params, u, create_graph=True))

    def product(vector: torch.Tensor) -> torch.Tensor:
        jv = torch.autograd.grad(jt_u @ vector, u, retain_graph=True)[0]
        return flat(torch.autograd.grad(outputs, params, metric * jv, retain_graph=True)) + damping * vector

    return product


@torch.no_grad()
def _set(params: Sequence[torch.Tensor], vector: torch.Tensor) -> None:
    start = 0
    for p in params:
        p.copy_(vector[start:start + p.numel()].view_as(p))
        start += p.numel()


def trpo_step(params: Sequence[torch.Tensor], objectives: Callable[[], tuple[torch.Tensor, torch.Tensor]],
              max_kl: float = 0.01, damping: float = 1e-5, cg_iterations: int = 10,
              backtrack_ratio: float = 0.8, max_backtracks: int = 15,
              fisher: Callable[..., Callable[[torch.Tensor], torch.Tensor]] | None = None,
              average: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict:
    """One TRPO update of `params` in place. objectives() gives (loss, mean KL from the old
    policy) at the current params, sharing one forward pass, and optionally that pass's outputs
    as a third item. The natural gradient direction comes from conjugate gradient on the exact
    KL Hessian, scaled to the trust region; a backtracking line search accepts the first step
    that lowers the loss with KL <= max_kl. No step is taken when none qualifies. `fisher`, if
    given, builds the KL Hessian-vector product at the current params from those outputs (e.g.
    by fisher_vector_product: no second forward pass); otherwise it is the double-backward
    Hessian of the KL. `average` (e.g. distributed.mean) makes the gradient, every
    Hessian-vector product and the line search's loss and KL means over processes that each
    hold a share of the tasks: every process then takes the one-process step."""
    if max_kl <= 0:
        raise MetakitError(f"max_kl must be > 0, got {max_kl!r}")
    params = list(params)
    loss, kl, *outputs = objectives()
    # the graph is kept for the Hessian products built from it (a compiled pass, which gives no
    # outputs, cannot keep its graph)
    keep = fisher is None or bool(outputs)
    gradient = average(flat(torch.autograd.grad(loss, params, retain_graph=keep)))
    local_hvp = fisher(*outputs) if fisher is not None else hessian_vector_product(kl, params, damping)
    hvp = lambda vector: average(local_hvp(vector))  # noqa: E731
    direction, residual = conjugate_gradient(hvp, -gradient, cg_iterations, with_residual=True)
    # x^T A x from CG's residual, not one more product (equal to 1e-7 on half-cheetah's Fisher)
    shs = 0.5 * direction @ (-gradient - residual)
    step = direction * torch.sqrt(max_kl / shs.clamp_min(1e-12))
    old = flat(params).detach().clone()
    loss = average(loss.detach())
    with torch.no_grad():
        for k in range(max_backtracks):
            _set(params, old + backtrack_ratio**k * step)
            new_loss, new_kl = (average(value) for value in objectives()[:2])
            if new_loss < loss and new_kl <= max_kl:
                return {"loss_before": loss.item(), "loss_after": new_loss.item(), "kl": new_kl.item(),
                        "backtracks": k, "accepted": True}
        _set(params, old)
    return {"loss_before": loss.item(), "loss_after": loss.item(), "kl": 0.0, "backtracks": max_backtracks,
            "accepted": False}


def optimizer_steps(params: Sequence[torch.Tensor], objectives: Callable[[], tuple[torch.Tensor, ...]],
                    optimizer: torch.optim.Optimizer, steps: int,
                    average: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict:
    """`steps` updates of `optimizer` on the loss objectives() gives, all on the same data (as
    RLlib's MAML and MB-MPO meta-update: Adam on PPO's clipped surrogate through the inner
    step). objectives() and `average` as in trpo_step; the KL given is the one after the steps."""
    params = list(params)
    for k in range(steps):
        loss = objectives()[0]
        if k == 0:
            before = average(loss.detach())
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = average(g)
        optimizer.step()
    with torch.no_grad():
        after, kl = (average(value) for value in objectives()[:2])
    return {"loss_before": before.item(), "loss_after": after.item(), "kl": kl.item(), "backtracks": 0,
            "accepted": True}


def clipped_objective(ratio: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's per-step objective: min(ratio A, clip(ratio, 1 - clip, 1 + clip) A)."""
    return torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)


def ppo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
             mask: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """-mean over valid steps of PPO's clipped objective."""
    objective = clipped_objective((log_prob - old_log_prob).exp(), advantages, clip)
    return -(objective * mask).sum() / mask.sum().clamp_min(1)


def policy_gradient_loss(log_prob: torch.Tensor, advantages: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """REINFORCE with advantages: -mean over valid steps of log pi(a|s) A."""
    return -(log_prob * advantages * mask).sum() / mask.sum().clamp_min(1)
