"""Matching Networks (Vinyals et al. 2016), without full-context embeddings.

    a(q, s_i) = softmax_i( cos(embed(q), embed(s_i)) )
    p(y | q)  = sum_i a(q, s_i) * onehot(y_i)
    loss      = -log p(y_q | q), averaged over queries and tasks
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batch import TaskBatch
from .protonet import PrototypicalNetwork


class MatchingNetwork(PrototypicalNetwork):
    """Shares the per-episode embedding, label checks and inductive mode of
    PrototypicalNetwork; only the classifier differs: attention over the support set."""

    def scores(self, support, support_y, queries, ways: int) -> torch.Tensor:
        """[T, Q, ways]: log p(class | query); argmax and cross-entropy on log-probabilities
        are what we want, so these serve as logits."""
        attention = (F.normalize(queries, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)).softmax(-1)
        probs = attention @ F.one_hot(support_y, ways).to(attention.dtype)  # [T, Q, ways]
        return probs.clamp_min(1e-12).log()

    def log_probs(self, batch: TaskBatch, inductive: bool = False) -> torch.Tensor:
        return self.logits(batch, inductive)
