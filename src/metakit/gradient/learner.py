"""What MAML and Reptile share: the per-task inner loop, adapt() and predict()."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import grad, vmap
from torch.utils._pytree import tree_leaves

from ..batch import check_pair, with_each_query
from ..engine import Params, call, may_call_norms, run_over_tasks
from ..errors import MetakitError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def select_params(model: nn.Module, adapt_params: Sequence[str] | None) -> list[str]:
    """Names of the parameters the inner loop updates: all, or those named (or under a named
    submodule, so ANIL's head is just ["head"] or ["3"] for a Sequential's last layer)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if adapt_params is None:
        return names
    if isinstance(adapt_params, str):
        adapt_params = [adapt_params]
    chosen = []
    for wanted in adapt_params:
        hits = [n for n in names if n == wanted or n.startswith(wanted + ".")]
        if not hits:
            raise MetakitError(
                f"adapt_params entry {wanted!r} matches no trainable parameter or submodule; "
                f"the model's parameters are {names}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def check_lr(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise MetakitError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class TaskLearner(nn.Module):
    """Holds the model and runs the inner loop of every task as one batched computation."""

    first_order = True  # whether adapt() treats inner gradients as constants (MAML overrides)

    def __init__(self, model: nn.Module, loss_fn: LossFn, inner_lr: float, inner_steps: int,
                 adapt_params: Sequence[str] | None, chunk_size: int | None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise MetakitError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise MetakitError(f"loss_fn must be callable (prediction, target) -> scalar, got {loss_fn!r}")
        if not isinstance(inner_steps, int) or inner_steps < 0:
            raise MetakitError(f"inner_steps must be an integer >= 0, got {inner_steps!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise MetakitError(
                f"chunk_size must be None (all tasks at once) or an integer >= 1, got {chunk_size!r}"
            )
        self.model = model
        self.loss_fn = loss_fn
        self.inner_lr = check_lr("inner_lr", inner_lr)
        self.inner_steps = inner_steps
        self.chunk_size = chunk_size
        self.adapt_names = select_params(model, adapt_params)
        self.exact_norms = may_call_norms(model)  # the engine's norm fix, where it can matter

    # -- pure per-task functions (run under vmap or in a loop) --------------------------------
    def _loss(self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(call(self.model, params, buffers, x), y)
        if loss.dim() != 0:
            raise MetakitError(
                f"loss_fn returned shape {tuple(loss.shape)} for one task; expected a scalar "
                "(use a loss averaged over the task's examples, e.g. F.mse_loss)"
            )
        return loss

    def _adapt_task(
        self, params: Params, lrs: Params, buffers: Params, x, y, steps: int, first_order: bool
    ) -> Params:
        fast = dict(params)
        for _ in range(steps):
            # buffers go in as an argument so that in-place updates (BatchNorm's running
            # statistics) are legal inside the grad transform
            def support_loss(adapted: Params, buffers: Params) -> torch.Tensor:
                return self._loss({**fast, **adapted}, buffers, x, y)

            grads = grad(support_loss)({n: fast[n] for n in self.adapt_names}, buffers)
            for name, g in grads.items():
                # first order: the inner gradient is a constant, so d(fast)/d(params) = I
                fast[name] = fast[name] - lrs[name] * (g.detach() if first_order else g)
        return fast

    # -- batched entry points ------------------------------------------------------------------
    def step_sizes(self) -> Params:
        """Inner step size per adapted parameter (Meta-SGD overrides with learned tensors)."""
        return {n: self.inner_lr for n in self.adapt_names}

    def map_tasks(self, fn: Callable, shared: tuple, per_task: tuple, keep_buffers: bool = True):
        """run_over_tasks(fn) with the model's buffers as fn's first argument.

        In training mode a module may update its buffers in place (BatchNorm running stats):
        each task then gets its own copy, and the model keeps their mean over tasks.
        """
        buffers = dict(self.model.named_buffers())
        num_tasks = tree_leaves(per_task)[0].shape[0]
        if not (self.model.training and buffers):
            return run_over_tasks(
                lambda *a: fn(buffers, *a), shared, per_task, self.chunk_size, self.exact_norms
            )
        copies = {k: b.unsqueeze(0).expand(num_tasks, *b.shape).clone() for k, b in buffers.items()}
        out, copies = run_over_tasks(
            lambda *a: (fn(a[-1], *a[:-1]), a[-1]),
            shared,
            per_task + (copies,),
            self.chunk_size,
            self.exact_norms,
        )
        if keep_buffers:
            with torch.no_grad():
                for name, live in buffers.items():
                    value = copies[name]
                    live.copy_(value.float().mean(0) if live.is_floating_point() else value.max(0).values)
        return out

    def check_inputs(self, *xs: torch.Tensor) -> None:
        """Inputs must be floating point on the model's dtype and device: say so here, not as a
        raw error from inside a vmapped matmul."""
        param = next(self.model.parameters(), None)
        for x in xs:
            if not x.is_floating_point():
                raise MetakitError(f"inputs must be floating point, got {x.dtype} of shape {tuple(x.shape)} "
                                   "(images: x.float() / 255)")
            if param is not None and (x.dtype, x.device) != (param.dtype, param.device):
                raise MetakitError(f"inputs are {x.dtype} on {x.device} but the model's parameters are "
                                   f"{param.dtype} on {param.device}; use x.to(model's dtype and device)")

    @contextlib.contextmanager
    def model_errors(self, x: torch.Tensor):
        """A shape mismatch inside the model becomes a MetakitError naming the example shape."""
        try:
            yield
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if any(word in first for word in ("shape", "size", "mat1", "dimension", "channels")):
                raise MetakitError(f"the model could not take examples of shape {tuple(x.shape[2:])} "
                                   f"(inputs {tuple(x.shape)} = [tasks, examples, ...]): {first}") from error
            raise

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int | None = None) -> Params:
        """Fast weights of every task after `steps` inner steps (default inner_steps).

        Returns name -> tensor with a leading task dimension, differentiable w.r.t. the model's
        parameters as the algorithm defines it (second order for MAML unless first_order).
        """
        check_pair("support", support_x, support_y)
        self.check_inputs(support_x)
        steps = self.inner_steps if steps is None else steps
        if not isinstance(steps, int) or steps < 0:
            raise MetakitError(f"steps must be an integer >= 0, got {steps!r}")
        params = dict(self.model.named_parameters())

        def one_task(buffers, params, lrs, x, y):
            return self._adapt_task(params, lrs, buffers, x, y, steps, self.first_order)

        with self.model_errors(support_x):
            return self.map_tasks(one_task, (params, self.step_sizes()), (support_x, support_y))

    def predict(
        self, fast_params: Params, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Map x [T, N, ...] through each task's fast weights to predictions [T, N, ...].

        context [T, S, ...] (e.g. the support set): predict each example of x in a batch with
        the context alone, so that batch normalisation never sees another example of x (the
        inductive setting); None: all of x in one batch (transductive).
        """
        if x.dim() < 2:
            raise MetakitError(f"x has shape {tuple(x.shape)}; expected [tasks, examples, ...]")
        num_tasks = x.shape[0]
        for name, value in fast_params.items():
            if value.shape[0] != num_tasks:
                raise MetakitError(
                    f"fast_params[{name!r}] holds {value.shape[0]} tasks but x holds {num_tasks}"
                )
        if context is None:
            return self.map_tasks(
                lambda buffers, p, xx: call(self.model, p, buffers, xx),
                (),
                (fast_params, x),
                keep_buffers=False,
            )
        if context.shape[0] != num_tasks or context.shape[2:] != x.shape[2:]:
            raise MetakitError(
                f"context has shape {tuple(context.shape)}; expected [{num_tasks}, S, "
                f"{', '.join(map(str, x.shape[2:]))}] like x"
            )

        def each_alone(buffers, p, batches):  # batches [N, S + 1, ...]: keep the last output of each
            return vmap(lambda one: call(self.model, p, buffers, one)[-1])(batches)

        return self.map_tasks(each_alone, (), (fast_params, with_each_query(context, x)), keep_buffers=False)

    def query_losses(self, fast_params: Params, batch) -> torch.Tensor:
        """Loss of each task's fast weights on its query set: shape [T]."""
        prediction = self.predict(fast_params, batch.query_x)
        return vmap(self.loss_fn)(prediction, batch.query_y)
