"""Prototypical Networks (Snell et al. 2017).

    prototype_n = mean of the embedded support images of class n
    logits(query) = -|embed(query) - prototype_n|^2          (squared Euclidean)
    loss = cross-entropy of the query labels, averaged over tasks
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import TaskBatch, with_each_query
from ..engine import may_call_norms, run_over_tasks
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
        return run_over_tasks(self.encoder, (), (x,), exact=may_call_norms(self.encoder)).flatten(2)

    def check_labels(self, batch: TaskBatch) -> int:
        """The number of classes; labels must be 0..ways-1, each present in every support set."""
        if not isinstance(batch, TaskBatch):
            raise MetakitError(f"expected a metakit.TaskBatch, got {type(batch).__name__}")
        param = next(self.encoder.parameters(), None)
        for name, x in (("support_x", batch.support_x), ("query_x", batch.query_x)):
            if not x.is_floating_point() or (param is not None and x.dtype != param.dtype):
                expected = "floating point" if param is None else f"{param.dtype} like the encoder"
                raise MetakitError(f"{name} is {x.dtype}; expected {expected} (images: x.float() / 255)")
        if batch.support_y.dtype != torch.long or batch.support_y.dim() != 2:
            raise MetakitError("metric learners need integer class labels [T, S], got "
                               f"{batch.support_y.dtype} {tuple(batch.support_y.shape)}")
        if batch.support_y.min() < 0:
            raise MetakitError(f"support labels must be 0..ways-1, got {int(batch.support_y.min())}")
        ways = int(batch.support_y.max()) + 1
        if (F.one_hot(batch.support_y, ways).sum(1) == 0).any():
            raise MetakitError(f"every task needs support examples of all labels 0..{ways - 1}")
        query_y = batch.query_y
        if query_y.dtype != torch.long or query_y.dim() != 2:
            raise MetakitError(f"metric learners need integer query labels [T, Q], got {query_y.dtype} "
                               f"{tuple(query_y.shape)}")
        if query_y.numel() and (query_y.min() < 0 or query_y.max() >= ways):
            raise MetakitError(f"query labels must be among the support labels 0..{ways - 1}, got values in "
                               f"[{int(query_y.min())}, {int(query_y.max())}]")
        return ways

    def scores(self, support: torch.Tensor, support_y: torch.Tensor, queries: torch.Tensor,
               ways: int) -> torch.Tensor:
        """Embedded support [T, S, D] with labels [T, S] and queries [T, Q, D] -> [T, Q, ways]:
        negative squared distances from each query to each class prototype."""
        one_hot = F.one_hot(support_y, ways).to(support.dtype)  # [T, S, ways]
        prototypes = one_hot.transpose(1, 2) @ support / one_hot.sum(1)[..., None]
        return -((queries[:, :, None] - prototypes[:, None]) ** 2).sum(-1)

    def logits(self, batch: TaskBatch, inductive: bool = False) -> torch.Tensor:
        """[T, Q, ways]. inductive=True embeds each query in a batch with the support set alone."""
        ways = self.check_labels(batch)
        if not inductive:
            return self.scores(self.embed(batch.support_x), batch.support_y, self.embed(batch.query_x), ways)
        tasks, queries, shots = *batch.query_x.shape[:2], batch.support_x.shape[1]
        both = self.embed(with_each_query(batch.support_x, batch.query_x).flatten(0, 1))  # [T*Q, S+1, D]
        support_y = batch.support_y.repeat_interleave(queries, dim=0)
        return self.scores(both[:, :shots], support_y, both[:, shots:], ways).view(tasks, queries, ways)

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        logits = self.logits(batch)
        return F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())

    def meta_backward(self, batch: TaskBatch) -> torch.Tensor:
        """loss(batch).backward(); returns the detached loss (what the runner's step uses)."""
        loss = self.loss(batch)
        loss.backward()
        return loss.detach()

    @torch.no_grad()
    def accuracy(self, batch: TaskBatch, inductive: bool = False) -> torch.Tensor:
        """Query accuracy of each task: [T]."""
        return (self.logits(batch, inductive).argmax(-1) == batch.query_y).float().mean(1)
