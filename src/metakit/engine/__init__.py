"""The engine: call an ordinary nn.Module as a pure function of its parameters, per task.

Every family maps a per-task function over a batch of tasks through `run_over_tasks`: one
vmap, vmaps over chunks of tasks, or a plain loop. Wherever vmap runs, normalisation layers
are routed through an exact formulation (`exact_norms`), scoped to that call.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

Params = dict[str, torch.Tensor]


def _affine(out: torch.Tensor, weight, bias, shape) -> torch.Tensor:
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def _exact_batch_norm(input, running_mean, running_var, weight=None, bias=None,
                      training=False, momentum=0.1, eps=1e-5):
    out = F.batch_norm(input, running_mean, running_var, None, None, training, momentum, eps)
    return _affine(out, weight, bias, [1, -1] + [1] * (input.dim() - 2))


def _exact_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    out = F.layer_norm(input, normalized_shape, None, None, eps)
    return _affine(out, weight, bias, list(normalized_shape))


def _exact_instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                         use_input_stats=True, momentum=0.1, eps=1e-5):
    out = F.instance_norm(input, running_mean, running_var, None, None, use_input_stats, momentum, eps)
    return _affine(out, weight, bias, [1, -1] + [1] * (input.dim() - 2))


_EXACT = {F.batch_norm: _exact_batch_norm, F.layer_norm: _exact_layer_norm,
          F.instance_norm: _exact_instance_norm}


class _ExactNorms(TorchFunctionMode):
    """Routes affine batch/layer/instance norm through `normalise, then * weight + bias`.

    Why: second-order gradients under vmap through F.batch_norm, F.layer_norm and
    F.instance_norm given their weight and bias are silently wrong (about 1% off, often more).
    Seen on torch 2.13.0 CPU, the version metakit is tested on; other versions were not
    checked, so the fix stays on everywhere (it is exact and as fast). GroupNorm and RMSNorm
    are exact as they are (tested). A mode sees every call of these functions, from nn.*Norm
    modules and user code alike, only while it is active: nothing outside is patched.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        exact = _EXACT.get(func)
        # inside this method the mode is off, so the exact version's own F.* call is the native one
        return exact(*args, **kwargs) if exact is not None else func(*args, **kwargs)


@contextlib.contextmanager
def exact_norms() -> Iterator[None]:
    """Exact normalisation layers under vmap, for the calls inside this context only."""
    with _ExactNorms():
        yield


# modules whose forward is known not to call a normalisation function
_NORM_FREE = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
              nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softmax,
              nn.LogSoftmax, nn.Dropout, nn.Flatten, nn.Unflatten, nn.Identity, nn.MaxPool1d, nn.MaxPool2d,
              nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Embedding, nn.GRU, nn.LSTM, nn.RNN)


def may_call_norms(model: nn.Module) -> bool:
    """False only when every submodule is a known norm-free layer or a plain container (such as
    metakit's MLP): then the exact-norm mode, whose per-op dispatch costs ~10% of a sinusoid
    meta-iteration, can be skipped. Any custom forward might call F.layer_norm: True."""
    for module in model.modules():
        if type(module) in _NORM_FREE:
            continue
        if _plain_container(module):
            continue
        return True
    return False


def _plain_container(module: nn.Module) -> bool:
    for base in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
        if isinstance(module, base) and type(module).forward is base.forward:
            return True
    return False


def run_over_tasks(fn: Callable, shared: tuple, per_task: tuple, chunk_size: int | None = None,
                   exact: bool = True):
    """Apply fn(*shared, *one_task_of(per_task)) to every task; stack the outputs along dim 0.

    `per_task` holds tensors (or dicts of tensors) with a leading task dimension. chunk_size
    None: one vmap over all tasks; k > 1: vmaps over k tasks at a time; 1: a plain Python
    loop without vmap (the least memory, with MAML.meta_backward). exact=False skips the
    exact-norm mode, for functions that call no normalisation (see may_call_norms).
    """
    num_tasks = tree_leaves(per_task)[0].shape[0]
    in_dims = (None,) * len(shared) + (0,) * len(per_task)
    if chunk_size == 1:  # no vmap, so no need for exact_norms either
        outputs = [fn(*shared, *tree_map(lambda t: t[i], per_task)) for i in range(num_tasks)]
        return tree_map(lambda *xs: torch.stack(xs), *outputs)
    size = num_tasks if chunk_size is None else chunk_size
    # one chunk takes the tensors as they are: a slice would add a node to the backward graph
    chunks = [per_task] if size >= num_tasks else [
        tree_map(lambda t: t[start:start + size], per_task) for start in range(0, num_tasks, size)]
    with exact_norms() if exact else contextlib.nullcontext():
        outputs = [vmap(fn, in_dims=in_dims)(*shared, *chunk) for chunk in chunks]
    return outputs[0] if len(outputs) == 1 else tree_map(lambda *xs: torch.cat(xs), *outputs)


@contextlib.contextmanager
def _quiet_c_stderr() -> Iterator[None]:
    sys.stderr.flush()
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 2 to quieten
        yield
        return
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory_mb(fn: Callable[[], object], device: torch.device | str) -> float:
    """Peak tensor memory that fn() allocates above what was allocated before it, in MB: the
    CUDA allocator's own peak, or on CPU the profiler's record of every allocation and free
    summed in time order (a compiled graph's buffers included)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415 (only when measuring)

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_c_stderr():  # Kineto writes a line to the C stderr as it starts and stops
        prof.__enter__()
    try:
        fn()
    finally:
        with _quiet_c_stderr():
            prof.__exit__(None, None, None)
    # the raw records: ops' net allocations would miss what an op allocates and frees inside
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for record in sorted(records, key=lambda e: e.start_ns()):
        current += record.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def compile_own(fn: Callable, **options) -> Callable:
    """torch.compile(fn) with a compiled-code cache of its own. Dynamo keeps compiled graphs,
    and its limit of 8 recompilations, per code object: every learner's method (or torch.func
    wrapper) shares one, so a 9th learner in a process would silently run eager."""

    def compiled_call(*args, **kwargs):
        return fn(*args, **kwargs)

    compiled_call.__code__ = compiled_call.__code__.replace()  # a new code object: a new cache
    # static shapes: with Dynamo's automatic dynamic shapes a recompile goes symbolic, a
    # different graph from the one a learner compiled alone gets (on conv-4's benchmark batch it
    # rounded a ReLU to its other side: 1.6e-3 off, with ELU 1.2e-6; docs/speed.md)
    return torch.compile(compiled_call, **{"dynamic": False, **options})


def call(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
    return functional_call(model, (params, buffers), (x,), strict=False, tie_weights=False)
