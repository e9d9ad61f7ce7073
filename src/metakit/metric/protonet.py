"""Prototypical Networks (Snell et al. 2017).

    prototype_n = mean of the embedded support images of class n
    logits(query) = -|embed(query) - prototype_n|^2          (squared Euclidean)
    loss = cross-entropy of the query labels, averaged over tasks
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from ..batch import TaskBatch
from ..errors import MetakitError


class PrototypicalNetwork(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[T, N, ...] -> [T, N, D], each task on its own, so that batch normalisation uses the
        statistics of one episode (the papers' transductive setting), never of other tasks."""
        if any(True for _ in self.encoder.buffers()):  # running stats update in place: a loop
            return torch.stack([self.encoder(task) for task in x]).flatten(2)
        return vmap(self.encoder)(x).flatten(2)

    def check_labels(self, batch: TaskBatch) -> int:
        """The number of classes; labels must be 0..ways-1, each present in every support set."""
        if not isinstance(batch, TaskBatch):
            raise MetakitError(f"expected a metakit.TaskBatch, got {type(batch).__name__}")
        if batch.support_y.dtype != torch.long or batch.support_y.dim() != 2:
            raise MetakitError("metric learners need integer class labels [T, S], got "
                               f"{batch.support_y.dtype} {tuple(batch.support_y.shape)}")
        ways = int(batch.support_y.max()) + 1
        if (F.one_hot(batch.support_y, ways).sum(1) == 0).any():
            raise MetakitError(f"every task needs support examples of all labels 0..{ways - 1}")
        return ways

    def logits(self, batch: TaskBatch) -> torch.Tensor:
        """[T, Q, ways]: negative squared distances from each query to each class prototype."""
        ways = self.check_labels(batch)
        one_hot = F.one_hot(batch.support_y, ways).to(batch.support_x.dtype)  # [T, S, ways]
        counts = one_hot.sum(1)  # [T, ways]
        prototypes = one_hot.transpose(1, 2) @ self.embed(batch.support_x) / counts[..., None]
        queries = self.embed(batch.query_x)
        return -((queries[:, :, None] - prototypes[:, None]) ** 2).sum(-1)

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        logits = self.logits(batch)
        return F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())

    @torch.no_grad()
    def accuracy(self, batch: TaskBatch) -> torch.Tensor:
        """Query accuracy of each task: [T]."""
        return (self.logits(batch).argmax(-1) == batch.query_y).float().mean(1)
