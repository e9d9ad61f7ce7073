"""A learned optimiser (Andrychowicz et al. 2016): a two-layer LSTM applied coordinatewise
maps each gradient entry to that entry's update, with its own hidden state per entry.

    x_i     = preprocess(g_i)                      log-sign (Appendix A) or the raw gradient
    h_i, u  = LSTM(x_i, h_i)                       the same weights for every entry i
    theta_i = theta_i + output_scale * Linear(u)

`CoordinatewiseLSTM` is the network (meta-trained by metakit.experiment.l2o);
`LearnedOptimizer` applies a trained one to any model as a torch.optim.Optimizer.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import MetakitError

PREPROCESSING = ("log-sign", "none")


def log_sign(grad: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """[...] -> [..., 2]: (log|g| / p, sign g) where |g| >= e^-p, else (-1, e^p g). Both
    branches give (-1, +-1) at the threshold, so the map is continuous."""
    large = grad.abs() >= math.exp(-p)
    magnitude = torch.where(large, grad.abs().clamp_min(torch.finfo(grad.dtype).tiny).log() / p, -1.0)
    direction = torch.where(large, grad.sign(), grad * math.exp(p))
    return torch.stack([magnitude, direction], dim=-1)


class CoordinatewiseLSTM(nn.Module):
    """The update rule: gradient entries [N] and their LSTM states in, updates [N] and new
    states out. Every entry is one row of one batch."""

    def __init__(self, hidden_size: int = 20, layers: int = 2, preprocessing: str = "log-sign",
                 p: float = 10.0, output_scale: float = 0.1):
        super().__init__()
        if preprocessing not in PREPROCESSING:
            raise MetakitError(f"preprocessing must be one of {list(PREPROCESSING)}, got {preprocessing!r}")
        for name, value in (("hidden_size", hidden_size), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MetakitError(f"CoordinatewiseLSTM {name} must be an integer >= 1, got {value!r}")
        if not (p > 0 and output_scale > 0):
            raise MetakitError(f"p and output_scale must be > 0, got p={p!r}, output_scale={output_scale!r}")
        self.hidden_size, self.layers = hidden_size, layers
        self.preprocessing, self.p, self.output_scale = preprocessing, float(p), float(output_scale)
        inputs = 2 if preprocessing == "log-sign" else 1
        self.cells = nn.ModuleList(nn.LSTMCell(inputs if i == 0 else hidden_size, hidden_size)
                                   for i in range(layers))
        self.head = nn.Linear(hidden_size, 1)

    def signature(self) -> dict:
        """What a trained state (weights or an optimiser's hidden states) only fits."""
        return {"preprocessing": self.preprocessing, "p": self.p, "output_scale": self.output_scale,
                "hidden_size": self.hidden_size, "layers": self.layers}

    def initial_state(self, entries: int, device=None, dtype=None) -> list[torch.Tensor]:
        """Zeros: [h, c] of each layer, each [entries, hidden] (a list, so a step copies nothing)."""
        reference = self.head.weight
        zeros = torch.zeros(entries, self.hidden_size, device=device or reference.device,
                            dtype=dtype or reference.dtype)
        return [zeros] * (2 * self.layers)

    def forward(self, grad: torch.Tensor, state: list[torch.Tensor]):
        """grad [N] and state (initial_state's layout) -> (update [N], new state)."""
        x = log_sign(grad, self.p) if self.preprocessing == "log-sign" else grad.unsqueeze(-1)
        new_state = []
        for i, cell in enumerate(self.cells):
            h, c = cell(x, (state[2 * i], state[2 * i + 1]))
            new_state += [h, c]
            x = h
        return self.output_scale * self.head(x).squeeze(-1), new_state

    # the signature travels with the weights, so a net trained with another preprocessing
    # (whose weights have the same shapes) cannot be loaded silently
    def get_extra_state(self) -> dict:
        return self.signature()

    def set_extra_state(self, state: dict) -> None:
        check_signature(state, self.signature(), "the weights being loaded")


def check_signature(saved: dict, expected: dict, what: str) -> None:
    differing = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
    if differing:
        detail = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in differing.items())
        raise MetakitError(f"{what} belong to a CoordinatewiseLSTM with other settings ({detail}); build the "
                           "net with the settings it was trained with")


class LearnedOptimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer whose update rule is a trained CoordinatewiseLSTM:

        optimizer = LearnedOptimizer(model.parameters(), metakit.load("runs/l2o-mlp"))
        loss.backward(); optimizer.step(); optimizer.zero_grad()

    Each parameter entry keeps its LSTM state in `optimizer.state[p]["hidden"]` ([2 * layers,
    numel, hidden]: h and c of each layer; saved by state_dict()). All entries of all
    parameters are one batch."""

    def __init__(self, params, net: CoordinatewiseLSTM):
        if not isinstance(net, CoordinatewiseLSTM):
            raise MetakitError(f"LearnedOptimizer needs a CoordinatewiseLSTM (e.g. metakit.load(run_dir) of "
                               f"an l2o run), got {type(net).__name__}")
        super().__init__(params, {"net": net.signature()})
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                if not p.requires_grad:
                    raise MetakitError(f"parameter {i} (shape {tuple(p.shape)}) does not require grad: the "
                                       "optimiser could never update it; pass only trainable parameters")
                if not p.is_floating_point():
                    raise MetakitError(f"parameter {i} must be floating point, got {p.dtype}")
        self.net = net

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        reference = self.net.head.weight
        grads = torch.cat([p.grad.reshape(-1) for p in params]).to(reference)
        if not torch.isfinite(grads).all():  # checked before the state moves: NaN never enters it
            bad = [tuple(p.shape) for p in params if not torch.isfinite(p.grad).all()]
            raise MetakitError(f"non-finite gradient in parameter(s) of shape {bad}; the optimiser state is "
                               "unchanged. Check the loss (or lower the inputs' scale) before stepping")
        saved = [self.state[p].get("hidden") for p in params]  # [layers * 2, numel, hidden] each
        if any(h is None for h in saved):
            saved = [h if h is not None else torch.stack(self.net.initial_state(p.numel()))
                     for p, h in zip(params, saved)]
        update, state = self.net(grads, list(torch.cat(saved, dim=1).to(reference)))
        state = torch.stack(state)
        start = 0
        for p in params:
            end = start + p.numel()
            p.add_(update[start:end].view_as(p).to(p.dtype))
            self.state[p]["hidden"] = state[:, start:end].clone()
            start = end
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        for group in state_dict.get("param_groups", []):
            check_signature(group.get("net", {}), self.net.signature(), "the optimiser state being loaded")
        super().load_state_dict(state_dict)
        for p, entry in self.state.items():
            hidden, expected = entry.get("hidden"), (2 * self.net.layers, p.numel(), self.net.hidden_size)
            if hidden is not None and tuple(hidden.shape) != expected:
                raise MetakitError(f"saved hidden state {tuple(hidden.shape)} does not fit a parameter of "
                                   f"{p.numel()} entries (expected {expected})")
