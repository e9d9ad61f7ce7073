"""Independent MLPs as one module, stepped as one tensor computation: the actors of a batch of
tasks (Meta-Critic), the models of a dynamics ensemble (MB-MPO)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import distributed
from ..errors import MetakitError


class BatchedMLP(nn.Module):
    """`num_tasks` independent MLPs as one module: weights [T, in, out]; x [T, N, in] ->
    [T, N, out]. Each task's layers start as nn.Linear's would (U(+-1/sqrt(fan_in))), and
    a loss summed over tasks gives each task's slice its own gradient. Drawn task-first: built
    inside `distributed.task_share`, the networks are this rank's of the whole batch's. `weight_norm`: each
    layer's weight is g * v / ||v|| per output unit (Salimans & Kingma 2016; g and v learned,
    g starting at ||v|| so the network starts as without it), as MB-MPO's official models are."""

    def __init__(self, num_tasks: int, sizes: list[int], generator: torch.Generator | None = None,
                 weight_norm: bool = False):
        super().__init__()
        if num_tasks < 1 or len(sizes) < 2 or min(sizes) < 1:
            raise MetakitError(
                f"BatchedMLP needs num_tasks >= 1 and sizes [in, ..., out] >= 1, got {num_tasks!r}, {sizes!r}"
            )
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / math.sqrt(n_in)
            self.weights.append(
                nn.Parameter((distributed.rand(num_tasks, n_in, n_out, generator=generator) * 2 - 1) * bound)
            )
            self.biases.append(
                nn.Parameter((distributed.rand(num_tasks, 1, n_out, generator=generator) * 2 - 1) * bound)
            )
        self.gains = nn.ParameterList(
            [nn.Parameter(w.detach().norm(dim=1, keepdim=True)) for w in self.weights] if weight_norm else []
        )

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """x [T, N, in] -> [T, N, out], network t on x[t]; with `index` (long [B]), network
        index[b] on x[b] (x [B, N, in]): several rows may share a network."""
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if len(self.gains):  # [T, 1, out] gains times unit-norm columns
                weight = self.gains[i] * weight / weight.norm(dim=1, keepdim=True)
            if index is not None:
                weight, bias = weight[index], bias[index]
            x = torch.baddbmm(bias, x, weight)
            if i < len(self.weights) - 1:
                x = torch.relu(x)
        return x


class BatchedAdam(torch.optim.Optimizer):
    """torch.optim.Adam's update for parameters whose first dimension indexes independent
    networks [T, ...] (a BatchedMLP's), each network with its own step count: `step(active)`
    (bool [T]) updates only the active networks' weights, moments and counts, so a network
    stopped early (a dynamics ensemble's model) resumes a later fit from the state it stopped in,
    and its bias correction counts its own steps."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if lr <= 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or eps < 0:
            raise MetakitError(
                f"BatchedAdam needs lr > 0, betas in [0, 1) and eps >= 0, got {lr!r}, {betas!r}, {eps!r}"
            )
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if active is not None and (active.dtype != torch.bool or tuple(active.shape) != p.shape[:1]):
                    raise MetakitError(
                        f"BatchedAdam.step expects active as bool [{p.shape[0]}], got {active.dtype} "
                        f"{tuple(active.shape)}"
                    )
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(p.shape[0], device=p.device)
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                elif state["step"].dim() == 0:  # a torch.optim.Adam state (older checkpoints): one count
                    state["step"] = state["step"].expand(p.shape[0]).to(p.device, torch.float32).clone()
                on = torch.ones(p.shape[0], dtype=torch.bool, device=p.device) if active is None else active
                rows = on.view(-1, *[1] * (p.dim() - 1))

                def by_row(value, inactive: float) -> torch.Tensor:  # [T, 1, ...] in p's dtype
                    value = torch.as_tensor(value, dtype=torch.float64)
                    return torch.where(rows, value, inactive).to(p.dtype)

                state["step"] += on
                # the bias corrections in float64, as torch.optim.Adam takes them from a Python float
                step = state["step"].view(rows.shape).clamp_min(1).double()
                correction2 = (1 - beta2**step).sqrt().to(p.dtype)
                # in place, as torch's Adam; an inactive row's factors 0 and 1 leave it bit for bit
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(p.grad, by_row(1 - beta1, 0))
                exp_avg_sq.mul_(by_row(beta2, 1)).add_(p.grad.square().mul_(by_row(1 - beta2, 0)))
                update = exp_avg_sq.sqrt().div_(correction2).add_(eps).reciprocal_().mul_(exp_avg)
                p.sub_(update.mul_(by_row(lr / (1 - beta1**step), 0)))
