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
    """Shares the per-episode embedding and label checks of PrototypicalNetwork; only the
    classifier differs: attention over the support set instead of class means."""

    def log_probs(self, batch: TaskBatch) -> torch.Tensor:
        """[T, Q, ways]: log p(class | query)."""
        ways = self.check_labels(batch)
        support = F.normalize(self.embed(batch.support_x), dim=-1)
        queries = F.normalize(self.embed(batch.query_x), dim=-1)
        attention = (queries @ support.transpose(1, 2)).softmax(-1)  # [T, Q, S]
        probs = attention @ F.one_hot(batch.support_y, ways).to(attention.dtype)
        return probs.clamp_min(1e-12).log()

    logits = log_probs  # argmax and cross-entropy on log-probabilities are what we want
