"""Matching Networks (Vinyals et al. 2016), without full-context embeddings.

    a(q, s_i) = softmax_i( scale * cos(embed(q), embed(s_i)) )
    p(y | q)  = sum_i a(q, s_i) * onehot(y_i)
    loss      = -log p(y_q | q), averaged over queries and tasks

`scale` is a learned inverse temperature (starting at 10). Without it, attention over the
non-negative features of a ReLU network (cosines in [0, 1]) can put at most e / (e + N - 1)
on the right support image: 12.5% for 20-way 1-shot, a loss floor of 2.08 that our first
Omniglot run sat on. Cosine classifiers learn such a scale (Gidaris & Komodakis 2018).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import TaskBatch
from ..errors import MetakitError
from .protonet import PrototypicalNetwork


class MatchingNetwork(PrototypicalNetwork):
    """Shares the per-episode embedding, label checks and inductive mode of
    PrototypicalNetwork; only the classifier differs: attention over the support set."""

    def __init__(self, encoder: nn.Module, scale: float = 10.0, learn_scale: bool = True):
        super().__init__(encoder)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
            raise MetakitError(
                f"MatchingNetwork scale (the inverse temperature) must be a finite number > 0, got {scale!r}"
            )
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def scores(self, support, support_y, queries, ways: int) -> torch.Tensor:
        """[T, Q, ways]: log p(class | query); argmax and cross-entropy on log-probabilities
        are what we want, so these serve as logits."""
        cosine = F.normalize(queries, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)
        attention = (self.log_scale.exp() * cosine).softmax(-1)  # [T, Q, S]
        probs = attention @ F.one_hot(support_y, ways).to(attention.dtype)  # [T, Q, ways]
        return probs.clamp_min(1e-12).log()

    def log_probs(self, batch: TaskBatch, inductive: bool = False) -> torch.Tensor:
        return self.logits(batch, inductive)
