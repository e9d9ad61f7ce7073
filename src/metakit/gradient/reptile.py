"""Reptile (Nichol, Achiam & Schulman 2018), batched version.

    for each task i (all at once, vmapped):  phi_i = k steps of SGD on L_support_i from theta
    theta <- theta + epsilon * mean_i (phi_i - theta)

epsilon is meta_step_size, optionally annealed linearly to meta_step_size_final over
total_iterations, as in the paper's experiments.
"""
from __future__ import annotations

import torch
from torch import nn

from ..batch import TaskBatch
from ..errors import MetakitError
from .learner import LossFn, TaskLearner, check_lr


class Reptile(TaskLearner):
    def __init__(self, model: nn.Module, loss_fn: LossFn, inner_lr: float, inner_steps: int,
                 meta_step_size: float, meta_step_size_final: float | None = None,
                 total_iterations: int | None = None, chunk_size: int | None = None):
        super().__init__(model, loss_fn, inner_lr, inner_steps, None, chunk_size)
        self.meta_step_size = check_lr("meta_step_size", meta_step_size)
        if meta_step_size_final is not None:
            check_lr("meta_step_size_final", meta_step_size_final)
            if not isinstance(total_iterations, int) or total_iterations < 1:
                raise MetakitError(
                    f"annealing to meta_step_size_final needs total_iterations >= 1, got {total_iterations!r}"
                )
        self.meta_step_size_final = meta_step_size_final
        self.total_iterations = total_iterations
        # the iteration count lives in a buffer so checkpoints resume the annealing schedule
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_step_size(self) -> float:
        if self.meta_step_size_final is None:
            return self.meta_step_size
        done = min(int(self.iteration) / self.total_iterations, 1.0)
        return done * self.meta_step_size_final + (1 - done) * self.meta_step_size

    @torch.no_grad()
    def step(self, batch: TaskBatch) -> torch.Tensor:
        """One outer update on `batch`; returns the mean query loss after adaptation."""
        if not isinstance(batch, TaskBatch):
            raise MetakitError(f"expected a metakit.TaskBatch, got {type(batch).__name__}")
        self.check_inputs(batch.query_x)
        fast = self.adapt(batch.support_x, batch.support_y)
        query_loss = self.query_losses(fast, batch).mean()
        epsilon = self.current_step_size()
        for name, theta in self.model.named_parameters():
            if name in fast:
                theta.add_(fast[name].mean(0) - theta, alpha=epsilon)
        self.iteration += 1
        return query_loss
