"""torch.distributed for metakit runs: `torchrun --nproc_per_node N -m metakit train CONFIG`.

Every rank draws the same global meta-batch from the shared seed, keeps its own 1/N of the
tasks, and computes that share of the meta-gradient; gradients (and norm-layer statistics) are
averaged over the ranks, so every rank takes the same step as one process taking the whole
batch. gloo on CPU, nccl on CUDA. Rank 0 alone writes files and shows progress. Outside
torchrun (no WORLD_SIZE, or 1) every function here is the one-process identity.

A collective that waits longer than METAKIT_DIST_TIMEOUT seconds (default 600) raises, so a
rank that dies cannot leave the others hanging; torchrun then stops the run with its error.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from typing import NoReturn

import torch
import torch.distributed as dist

from .errors import MetakitError


def init(device: str) -> str:
    """Join the process group torchrun describes, once; returns this rank's device ("cuda"
    becomes "cuda:LOCAL_RANK")."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    cuda = device.startswith("cuda")
    if cuda and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("METAKIT_DIST_TIMEOUT", "600")))
        if cuda:
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return device


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def check_shardable(total: int, key: str) -> None:
    """Raise unless `total` tasks split evenly over the ranks (equal shards keep the mean of
    the ranks' means equal to the mean over the whole batch)."""
    n = world_size()
    if n > 1 and (total < n or total % n):
        rule = "at least one task per rank" if total < n else "the same number of tasks on every rank"
        raise MetakitError(f"config key {key!r} is {total}, which does not split over {n} ranks ({rule}); "
                           f"use a multiple of {n}")


def shard(batch):
    """This rank's share of a batch with a leading task dimension (a TaskBatch or a tensor)."""
    n = world_size()
    if n == 1:
        return batch
    size = (batch.num_tasks if hasattr(batch, "num_tasks") else len(batch)) // n
    return batch[rank() * size:(rank() + 1) * size]


# -- random numbers that do not depend on the number of ranks (meta-RL rollouts) -------------
_share: tuple[int, int] | None = None  # (tasks in the whole batch, this rank's first), in task_share


@contextlib.contextmanager
def task_share(total: int):
    """While this rank rolls out its share of a batch of `total` tasks: `rand` and `randn` of a
    shape [t, ...] (t its tasks) draw for all `total` tasks, advancing the generator as one
    process would, and keep this rank's rows. Each task's episodes are then the same on any
    number of ranks."""
    global _share
    previous = _share
    _share = (total, rank() * (total // world_size())) if world_size() > 1 else None
    try:
        yield
    finally:
        _share = previous


def for_tasks(draw, count: int) -> torch.Tensor:
    """draw(n) gives [n, ...] for n tasks; inside `task_share`, every rank draws for the whole
    batch and keeps its own `count` rows (the same numbers for each task on any number of ranks)."""
    global _share
    if _share is None:
        return draw(count)
    share = _share
    total, first = share
    _share = None  # the draw is for the whole batch: draws inside it must not keep a share again
    try:
        return draw(total)[first : first + count]
    finally:
        _share = share


def _draw(sample, shape, generator, **kwargs) -> torch.Tensor:
    return for_tasks(lambda n: sample(n, *shape[1:], generator=generator, **kwargs), shape[0])


def own_range(count: int) -> tuple[int, int]:
    """This rank's rows [first, last) of `count` independent items split as evenly as the
    ranks allow (5 models on 2 ranks: 0-1 and 2-4); everything on one process."""
    n, r = world_size(), rank()
    return r * count // n, (r + 1) * count // n


@torch.no_grad()
def assemble_rows(tensors, first: int, last: int) -> None:
    """Each rank computed rows [first, last) of every tensor (its `own_range`): afterwards
    every rank holds every rank's rows, in place (one summing collective over zero-padded copies)."""
    if world_size() == 1:
        return
    tensors = list(tensors)
    for t in tensors:
        t[:first] = 0
        t[last:] = 0
    for dtype in sorted({t.dtype for t in tensors}, key=str):  # exact: each row is one rank's, 0 elsewhere
        _reduce_flat([t for t in tensors if t.dtype == dtype], "sum")


def gather_tasks(tensor: torch.Tensor) -> torch.Tensor:
    """The whole batch [T, ...] from each rank's equal share [T/N, ...], in rank order, on every rank."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def rand(*shape: int, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
    """torch.rand of [tasks, ...], the same numbers for each task on any number of ranks."""
    return _draw(torch.rand, shape, generator, **kwargs)


def randn(*shape: int, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
    """torch.randn of [tasks, ...], the same numbers for each task on any number of ranks."""
    return _draw(torch.randn, shape, generator, **kwargs)


def categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw from each row of probs [tasks, ..., K]: long [tasks, ...], by the inverse CDF of
    a task-first uniform (the same draws for a task on any number of ranks or devices)."""
    u = rand(*probs.shape[:-1], 1, generator=generator, dtype=probs.dtype).to(probs.device)
    return (probs.cumsum(-1) < u).sum(-1).clamp_max(probs.shape[-1] - 1)


def mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean over the ranks of a tensor (a new tensor; no gradient flows through)."""
    return total(tensor) / world_size() if world_size() > 1 else tensor


def total(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over the ranks of a tensor (a new tensor; no gradient flows through)."""
    if world_size() == 1:
        return tensor
    result = tensor.detach().clone()
    dist.all_reduce(result, op=dist.ReduceOp.SUM)
    return result


def average_gradients(parameters, how: str = "mean") -> None:
    """Replace each gradient by its mean (or, how="sum", its sum) over the ranks (a missing
    gradient counts as zero), in one collective over all gradients flattened together (one per
    tensor costs ~0.3 ms each)."""
    if world_size() == 1:
        return
    parameters = list(parameters)
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    _reduce_flat([p.grad for p in parameters], how)


def _reduce_flat(tensors: list[torch.Tensor], how: str) -> None:
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.MAX if how == "max" else dist.ReduceOp.SUM)
    if how == "mean":
        flat.div_(world_size())
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


@torch.no_grad()
def average_tensors(tensors) -> None:
    """Floating tensors averaged over the ranks in place, integer ones (num_batches_tracked)
    their largest: norm-layer statistics as one process over the whole batch has them, or
    parameters after an update that is linear in the tasks' contributions (Reptile)."""
    if world_size() == 1:
        return
    tensors = list(tensors)
    for dtype in sorted({t.dtype for t in tensors}, key=str):  # one order on every rank
        group = [t for t in tensors if t.dtype == dtype]
        _reduce_flat(group, "mean" if dtype.is_floating_point else "max")


def average(value: torch.Tensor | float) -> float:
    """The mean over the ranks of a scalar (a metric such as the shard's meta-loss)."""
    if world_size() == 1:
        return float(value)
    tensor = _for_backend(torch.as_tensor(value, dtype=torch.float64).reshape(1).clone())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.item() / world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank."""
    if world_size() == 1:
        return flag
    tensor = _for_backend(torch.tensor([float(flag)]))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _for_backend(tensor: torch.Tensor) -> torch.Tensor:
    """A scalar for a collective: nccl reduces CUDA tensors only."""
    return tensor.cuda() if dist.get_backend() == "nccl" else tensor


def shutdown(clean: bool = True) -> None:
    """End the process group, after a barrier when every rank got here: a rank that tears down
    its gloo connections while another still uses them (saving, say) can abort the run."""
    if dist.is_initialized():
        if clean and world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End this process now with `code`, its streams flushed, skipping Python's teardown. After
    shutdown() a torchrun rank could still abort in that teardown ("terminate called without an
    active exception", SIGABRT: 3 of 14 runs of the tests' two-rank script beside other work,
    0 of 10 this way), which turns a finished run into a failed one."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
