"""The engine: call an ordinary nn.Module as a pure function of its parameters, per task.

Everything here is shared by the gradient-based algorithms: reading parameters and buffers as
dicts, the inner-loop step built from torch.func.grad, and running a per-task function over a
batch of tasks either as one vmap, in chunks of vmaps, or as a plain loop.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_leaves, tree_map

Params = dict[str, torch.Tensor]

_batch_norm, _layer_norm, _instance_norm = F.batch_norm, F.layer_norm, F.instance_norm


def _affine(out: torch.Tensor, weight, bias, shape) -> torch.Tensor:
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def _exact_batch_norm(input, running_mean, running_var, weight=None, bias=None,
                      training=False, momentum=0.1, eps=1e-5):
    out = _batch_norm(input, running_mean, running_var, None, None, training, momentum, eps)
    return _affine(out, weight, bias, [1, -1] + [1] * (input.dim() - 2))


def _exact_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    out = _layer_norm(input, normalized_shape, None, None, eps)
    return _affine(out, weight, bias, list(normalized_shape))


def _exact_instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                         use_input_stats=True, momentum=0.1, eps=1e-5):
    out = _instance_norm(input, running_mean, running_var, None, None, use_input_stats, momentum, eps)
    return _affine(out, weight, bias, [1, -1] + [1] * (input.dim() - 2))


_EXACT = {"batch_norm": _exact_batch_norm, "layer_norm": _exact_layer_norm,
          "instance_norm": _exact_instance_norm}
_ORIGINAL = {"batch_norm": _batch_norm, "layer_norm": _layer_norm, "instance_norm": _instance_norm}


@contextlib.contextmanager
def exact_norms() -> Iterator[None]:
    """Route affine batch/layer/instance norm through `normalise, then * weight + bias`.

    On torch 2.13 CPU, second-order gradients under vmap through F.batch_norm, F.layer_norm
    and F.instance_norm given their weight and bias are silently wrong (about 1% off, often
    more). The same computation with the affine part applied separately is exact and as
    fast, so the engine swaps these functions while it runs a model; nn.BatchNorm*,
    nn.LayerNorm, nn.InstanceNorm* and user code calling F.* all pick the swap up (they look
    F.* up at each call). GroupNorm and RMSNorm are exact as they are (tested).
    """
    if F.batch_norm is _exact_batch_norm:  # already inside (re-entrant use)
        yield
        return
    for name, fn in _EXACT.items():
        setattr(F, name, fn)
    try:
        yield
    finally:
        for name, fn in _ORIGINAL.items():
            setattr(F, name, fn)


def run_over_tasks(fn: Callable, shared: tuple, per_task: tuple, chunk_size: int | None):
    """Apply fn(*shared, *one_task_of(per_task)) to every task; stack the outputs along dim 0.

    `per_task` holds tensors (or dicts of tensors) with a leading task dimension. chunk_size
    None: one vmap over all tasks; k > 1: vmaps over k tasks at a time; 1: a plain Python
    loop without vmap (the least memory, with MAML.meta_backward).
    """
    num_tasks = tree_leaves(per_task)[0].shape[0]
    in_dims = (None,) * len(shared) + (0,) * len(per_task)
    if chunk_size == 1:  # no vmap, so no need for exact_norms either
        outputs = [fn(*shared, *tree_map(lambda t: t[i], per_task)) for i in range(num_tasks)]
        return tree_map(lambda *xs: torch.stack(xs), *outputs)
    size = num_tasks if chunk_size is None else chunk_size
    with exact_norms():
        outputs = [vmap(fn, in_dims=in_dims)(*shared, *tree_map(lambda t: t[start:start + size], per_task))
                   for start in range(0, num_tasks, size)]
    return outputs[0] if len(outputs) == 1 else tree_map(lambda *xs: torch.cat(xs), *outputs)


def call(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
    return functional_call(model, (params, buffers), (x,), strict=False, tie_weights=False)
