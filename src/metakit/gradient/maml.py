"""MAML (Finn et al. 2017), first-order MAML, Meta-SGD (Li et al. 2017) and ANIL (Raghu et al. 2020).

    for each task i (all at once, vmapped):
        phi_i = theta - alpha * grad L_support_i(theta)      (inner_steps times)
    meta_loss = mean_i L_query_i(phi_i)                     (backward: exact second order)

Meta-SGD learns alpha as a tensor per parameter; ANIL adapts only `adapt_params` (the head).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import grad_and_value

from ..batch import TaskBatch
from ..engine import Params, compile_own, peak_memory_mb
from ..errors import MetakitError
from .learner import LossFn, TaskLearner


class MAML(TaskLearner):
    def __init__(self, model: nn.Module, loss_fn: LossFn, inner_lr: float, inner_steps: int = 1,
                 first_order: bool = False, learn_inner_lr: bool = False,
                 adapt_params: Sequence[str] | None = None, chunk_size: int | None = None,
                 compile: bool | None = None, meta_gradient: str | None = None,
                 memory_budget_mb: float | None = None):
        super().__init__(model, loss_fn, inner_lr, inner_steps, adapt_params, chunk_size)
        if memory_budget_mb is not None:
            if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)) \
                    or not memory_budget_mb > 0:
                raise MetakitError(f"memory_budget_mb must be a number of MB > 0, got {memory_budget_mb!r}")
            if chunk_size is not None:
                raise MetakitError(f"give chunk_size ({chunk_size}) or memory_budget_mb "
                                   f"({memory_budget_mb}), not both: the budget chooses the chunk")
        self.memory_budget_mb = memory_budget_mb
        self._budget_for = None  # the number of tasks the chunk was chosen for
        if meta_gradient not in (None, "tape", "functional"):
            raise MetakitError(f"meta_gradient must be None (choose by compile), 'tape' or 'functional', "
                               f"got {meta_gradient!r}")
        if compile not in (None, True, False):
            raise MetakitError(f"compile must be None (meta_step compiled), True or False, "
                               f"got {compile!r}")
        # compile=None: meta_step compiles torch.func's gradient, measured faster for every model
        # (docs/speed.md: MLPs 1.4-4.1x, conv-4 1.57x, first order 1.38x), paying once at the
        # first meta_step (7-16 s for MLPs, 20-88 s for conv-4); meta_loss() stays eager
        self.compiled = compile if compile is not None else meta_gradient != "tape"
        # meta_step's path, measured (docs/speed.md): torch.func's gradient of the whole meta-loss
        # is the fastest compiled (1.8x the compiled tape) and the slowest eager (0.7x the tape)
        self.meta_gradient = meta_gradient or ("functional" if self.compiled else "tape")
        self.first_order = bool(first_order)
        self.learn_inner_lr = bool(learn_inner_lr)
        if learn_inner_lr:  # Meta-SGD: one learned step size per parameter entry, starting at alpha
            params = dict(model.named_parameters())
            self.inner_lrs = nn.ParameterDict({
                _key(n): nn.Parameter(torch.full_like(params[n], self.inner_lr)) for n in self.adapt_names})
        # compile=True also compiles the tape (meta_loss), through norm layers too: as exact as
        # eager through every one (benchmarks/compiled_norms.py). The ~1e-3 once measured on
        # conv-4 was a ReLU flipping on float32 rounding, not the norms (docs/speed.md)
        self._task_losses = compile_own(self._chunk_losses) if compile else self._chunk_losses
        gradient = grad_and_value(self._functional_meta_loss)
        self._meta_gradient, self._compile_pending = gradient, self.compiled  # at the first meta_step

    def step_sizes(self) -> Params:
        if self.learn_inner_lr:
            return {n: self.inner_lrs[_key(n)] for n in self.adapt_names}
        return super().step_sizes()

    def _chunk_losses(self, batch: TaskBatch | tuple, params: Params | None = None,
                      lrs: Params | None = None) -> torch.Tensor:
        """Query loss after adaptation, one per task: shape [T]; from the model's parameters
        and step sizes, or from those given."""
        steps, first_order = self.inner_steps, self.first_order

        def one_task(buffers, params, lrs, sx, sy, qx, qy):
            fast = self._adapt_task(params, lrs, buffers, sx, sy, steps, first_order)
            return self._loss(fast, buffers, qx, qy)

        params = dict(self.model.named_parameters()) if params is None else params
        lrs = self.step_sizes() if lrs is None else lrs
        return self.map_tasks(one_task, (params, lrs), tuple(batch))

    def _functional_meta_loss(self, trainable: Params, *batch: torch.Tensor) -> torch.Tensor:
        """meta_loss as a pure function of the trainable parameters (the learner's names)."""
        params = {n: trainable.get(f"model.{n}", p) for n, p in self.model.named_parameters()}
        lrs = self.step_sizes()
        if self.learn_inner_lr:
            lrs = {n: trainable.get(f"inner_lrs.{_key(n)}", lr) for n, lr in lrs.items()}
        return self._chunk_losses(batch, params, lrs).mean()

    def meta_step(self, batch: TaskBatch, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One meta-iteration: the meta-gradient of meta_loss(batch) into each parameter's
        .grad, then optimizer.step(); returns the meta-loss (detached).

        With meta_gradient "functional" (the default when compiled) the gradient is
        torch.func's gradient of the whole meta-loss, one compiled graph with compile=True;
        with "tape", or where the model updates buffers as it trains (BatchNorm in training
        mode), it is meta_backward's. Either equals meta_loss(batch).backward()'s
        (tests/test_meta_gradients.py)."""
        self._check(batch)
        self._fit_budget(batch)
        optimizer.zero_grad(set_to_none=True)
        if self.meta_gradient == "tape" or (self.model.training and any(True for _ in self.model.buffers())):
            loss = self.meta_backward(batch)
        else:
            named = dict(self.named_parameters())
            trainable = {n: p.detach() for n, p in named.items() if p.requires_grad}
            size = batch.num_tasks if self.chunk_size is None else self.chunk_size
            if self._compile_pending:  # Dynamo only once meta_step runs, on the batch's device
                # on CPU inductor's channels-last layout change made conv-4 slower and larger
                # (docs/speed.md: without it 1.07-1.31x faster, one task 4.0 MB against 4.6)
                cpu = batch.support_x.device.type == "cpu"
                options = {"options": {"layout_optimization": False}} if cpu else {}
                self._meta_gradient = compile_own(self._meta_gradient, **options)
                self._compile_pending = False
            loss = 0.0
            for start in range(0, batch.num_tasks, size):  # one graph a chunk: memory of one chunk
                chunk = batch[start:start + size] if size < batch.num_tasks else batch
                with self.model_errors(chunk.support_x):
                    grads, chunk_loss = self._meta_gradient(trainable, *chunk)
                share = chunk.num_tasks / batch.num_tasks  # each chunk's loss is its own mean
                loss = loss + share * chunk_loss.detach()
                for name, g in grads.items():
                    g = g if share == 1 else share * g
                    named[name].grad = g if named[name].grad is None else named[name].grad + g
        optimizer.step()
        return loss

    def choose_chunk_size(self, batch: TaskBatch, budget_mb: float) -> int:
        """The most tasks a chunk (1, 2, 4, ... or all of batch) whose meta-gradient stays
        within budget_mb of peak memory, each candidate measured once on batch's first tasks
        (engine.peak_memory_mb). Measured eagerly: compiled graphs took no more here."""
        self._check(batch)
        params = [p for p in self.parameters() if p.requires_grad]
        device = params[0].device
        saved_chunk, buffers = self.chunk_size, {k: b.clone() for k, b in self.model.named_buffers()}
        chosen, size = None, 1
        try:
            while True:
                self.chunk_size, chunk = size, batch[:size]
                with self.model_errors(chunk.support_x):
                    peak = peak_memory_mb(lambda: torch.autograd.grad(  # noqa: B023 (called at once)
                        self._chunk_losses(chunk).sum(), params, allow_unused=True), device)
                if peak > budget_mb:
                    break
                chosen = size
                if size == batch.num_tasks:
                    break
                size = min(2 * size, batch.num_tasks)
        finally:
            self.chunk_size = saved_chunk
            with torch.no_grad():  # the measuring passes must not move BatchNorm's statistics
                for name, live in self.model.named_buffers():
                    live.copy_(buffers[name])
        if chosen is None:
            raise MetakitError(f"memory_budget_mb={budget_mb} is below one task's meta-gradient "
                               f"({peak:.1f} MB measured); raise the budget")
        return chosen

    def _fit_budget(self, batch: TaskBatch) -> None:
        if self.memory_budget_mb is not None and self._budget_for != batch.num_tasks:
            self.chunk_size = self.choose_chunk_size(batch, self.memory_budget_mb)
            self._budget_for = batch.num_tasks

    def task_losses(self, batch: TaskBatch) -> torch.Tensor:
        self._check(batch)
        with self.model_errors(batch.support_x):
            return self._task_losses(batch)

    def _check(self, batch: TaskBatch) -> None:
        _check_batch(batch)
        self.check_inputs(batch.support_x, batch.query_x)

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        """Mean over tasks of the query loss after adaptation; backward() gives the meta-gradient."""
        return self.task_losses(batch).mean()

    def meta_backward(self, batch: TaskBatch) -> torch.Tensor:
        """meta_loss(batch).backward() one chunk of tasks at a time, so that memory holds one
        chunk's graph; returns the (detached) meta-loss. Same gradient as meta_loss."""
        self._check(batch)
        self._fit_budget(batch)
        size = batch.num_tasks if self.chunk_size is None else self.chunk_size
        buffers = dict(self.model.named_buffers()) if self.model.training else {}
        start_values = {k: b.clone() for k, b in buffers.items()}
        chunk_values = []
        total = 0.0
        for start in range(0, batch.num_tasks, size):
            with torch.no_grad():  # every chunk starts from the same running statistics
                for name, live in buffers.items():
                    live.copy_(start_values[name])
            chunk = batch[start:start + size]
            with self.model_errors(chunk.support_x):
                chunk_loss = self._task_losses(chunk).sum() / batch.num_tasks
            chunk_loss.backward()
            total = total + chunk_loss.detach()  # stays on the device: no sync per chunk
            chunk_values.append((chunk.num_tasks, {k: b.clone() for k, b in buffers.items()}))
        with torch.no_grad():  # the mean over all tasks, as one map over the whole batch keeps
            for name, live in buffers.items():
                if live.is_floating_point():
                    live.copy_(sum(n * values[name] for n, values in chunk_values) / batch.num_tasks)
                else:
                    live.copy_(torch.stack([values[name] for _, values in chunk_values]).max(0).values)
        return total


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


def _check_batch(batch: TaskBatch) -> None:
    if not isinstance(batch, TaskBatch):
        raise MetakitError(f"expected a metakit.TaskBatch, got {type(batch).__name__}")
