"""TaskBatch: T supervised tasks as four tensors with a leading task dimension."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import MetakitError


@dataclass(frozen=True)
class TaskBatch:
    """support_x [T, S, ...], support_y [T, S, ...], query_x [T, Q, ...], query_y [T, Q, ...]."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("support_x", "support_y", "query_x", "query_y"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise MetakitError(f"TaskBatch.{name} must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() < 2:
                raise MetakitError(
                    f"TaskBatch.{name} has shape {tuple(value.shape)}; expected [tasks, examples, ...] "
                    "(a leading task dimension, then the examples of each task)")
        for name in ("support_x", "query_x"):
            value = getattr(self, name)
            if value.dim() < 3:
                raise MetakitError(
                    f"TaskBatch.{name} has shape {tuple(value.shape)}; expected [tasks, examples, "
                    "features...]: without a feature dimension it would read as tasks of one-number "
                    "examples. Add the missing dimension: x[None] for one task, x[..., None] for "
                    "scalar inputs")
        check_pair("support", self.support_x, self.support_y)
        check_pair("query", self.query_x, self.query_y)
        if self.support_x.shape[0] != self.query_x.shape[0]:
            raise MetakitError(
                f"support has {self.support_x.shape[0]} tasks but query has {self.query_x.shape[0]}; "
                "both need the same leading task dimension")
        if self.support_x.shape[2:] != self.query_x.shape[2:]:
            raise MetakitError(
                f"support_x examples have shape {tuple(self.support_x.shape[2:])} but query_x examples "
                f"have shape {tuple(self.query_x.shape[2:])}; they must match")

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(*(t.to(device) for t in self))

    def __iter__(self):
        return iter((self.support_x, self.support_y, self.query_x, self.query_y))

    def __getitem__(self, index: slice) -> TaskBatch:
        """Tasks `index` (a slice or index tensor) as a smaller TaskBatch."""
        return TaskBatch(*(t[index] for t in self))


def check_pair(split: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """x and y must agree on tasks and examples: [T, N, ...] and [T, N, ...]."""
    if x.dim() < 2 or y.dim() < 2 or x.shape[:2] != y.shape[:2]:
        raise MetakitError(
            f"{split}_x has shape {tuple(x.shape)} and {split}_y has shape {tuple(y.shape)}; "
            "expected the same [tasks, examples] leading dimensions")


def with_each_query(support_x: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
    """[T, S, ...], [T, Q, ...] -> [T, Q, S + 1, ...]: the support set followed by one query,
    once for each query, so that a query is never normalised with the statistics of another
    (the inductive, non-transductive setting of Nichol et al. 2018)."""
    tasks, queries = query_x.shape[:2]
    support = support_x.unsqueeze(1).expand(tasks, queries, *support_x.shape[1:])
    return torch.cat([support, query_x.unsqueeze(2)], dim=2)
