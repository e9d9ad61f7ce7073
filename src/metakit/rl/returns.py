"""Discounted returns, generalised advantage estimation, and the linear feature baseline of
the MAML paper (Duan et al. 2016). All work on [..., H] tensors with a validity mask."""
from __future__ import annotations

import torch

from ..errors import MetakitError


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_h = sum_{k >= h} gamma^(k - h) r_k over the valid steps: [..., H]."""
    returns, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for h in reversed(range(rewards.shape[-1])):
        running = (rewards[..., h] + gamma * running) * mask[..., h]
        returns[..., h] = running
    return returns


def gae(rewards, values, mask, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016), no bootstrap past the end:
    delta_h = r_h + gamma V_{h+1} - V_h, A_h = sum_k (gamma lambda)^k delta_{h+k}."""
    values = values * mask
    following = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1)
    deltas = (rewards + gamma * following - values) * mask
    advantages, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for h in reversed(range(rewards.shape[-1])):
        running = (deltas[..., h] + gamma * lam * running) * mask[..., h]
        advantages[..., h] = running
    return advantages


def normalize(advantages: torch.Tensor, mask: torch.Tensor, dims=(-2, -1), eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the valid steps of `dims` (per task by default)."""
    count = mask.sum(dims, keepdim=True).clamp_min(1)
    mean = (advantages * mask).sum(dims, keepdim=True) / count
    var = (((advantages - mean) * mask) ** 2).sum(dims, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + eps) * mask


def linear_feature_baseline(observations, returns, mask, reg: float = 1e-5) -> torch.Tensor:
    """Value estimates [T, E, H] from a ridge regression per task of the returns on the
    features [obs, obs^2, t, t^2, t^3, 1] (t = step / 100), as rllab's LinearFeatureBaseline."""
    steps = observations.shape[-2]
    t = (
        (torch.arange(steps, dtype=observations.dtype, device=observations.device) / 100.0)
        .view(1, 1, -1, 1)
        .expand(*observations.shape[:-1], 1)
    )
    obs = observations.clamp(-10, 10)
    features = torch.cat([obs, obs**2, t, t**2, t**3, torch.ones_like(t)], -1) * mask[..., None]
    flat_f = features.flatten(1, 2)  # [T, N, F]
    flat_r = (returns * mask).flatten(1, 2)[..., None]
    gram = flat_f.transpose(1, 2) @ flat_f
    if not (torch.isfinite(gram).all() and torch.isfinite(flat_r).all()):
        raise MetakitError(
            "linear_feature_baseline: the observations or returns hold NaN or infinite values "
            "(a diverged policy or environment); no baseline can be fitted"
        )
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    for _ in range(5):  # rllab raises the regulariser until the system is solvable
        coeffs, info = torch.linalg.solve_ex(gram + reg * eye, flat_f.transpose(1, 2) @ flat_r)
        if (info == 0).all() and torch.isfinite(coeffs).all():
            return (features @ coeffs[:, None]).squeeze(-1) * mask
        reg *= 10
    raise MetakitError(
        f"linear_feature_baseline: the ridge regression stayed singular up to a regulariser of "
        f"{reg / 10:g}; the features are degenerate"
    )
