"""Speed of one MAML meta-iteration: metakit against learn2learn, higher and TorchOpt.

Every implementation first computes the meta-gradient of the same batch from the same weights;
they must agree (relative error < 1e-4) before any timing. Timings are interleaved
(A B C A B C ...) because shared machines are noisy; we report the median ms per
meta-iteration (meta-gradient + Adam step), the ratio of each peer to metakit, and the
peak tensor memory of one meta-iteration (profiler allocation events on CPU, the allocator's
peak on GPU).

    python benchmarks/speed.py [--device cuda] [--cases sinusoid-1step,conv4-so] [--rounds 7]

Peers come from the `bench` extra (pip install -e .[bench]); missing ones are skipped and said
so. learn2learn needs numpy < 2 and parallel-metalearn numpy >= 2: install one set in a second
environment (with metakit, `pip install -e .`) and name its interpreter with `--peer-python
ENV/bin/python`; its peers then run in that process, timed in the same interleaved rounds.
Writes benchmarks/results/speed-<device>.json with each peer's version and environment.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import metakit
from metakit import MAML, TaskBatch
from metakit.engine import peak_memory_mb

CASES = {
    # name: (model, meta-batch, inner steps, first order)
    "sinusoid-1step": ("mlp", 25, 1, False),
    "sinusoid-5step": ("mlp", 25, 5, False),
    "conv4-so": ("conv4", 32, 1, False),
    "conv4-fo": ("conv4", 32, 1, True),
}
INNER_LR = {"mlp": 0.01, "conv4": 0.4}


def make_case(name: str, device: str):
    kind, tasks, steps, first_order = CASES[name]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if kind == "mlp":
        model = metakit.nets.MLP(1, [40, 40], 1)
        batch = metakit.tasks.Sinusoid(10, 10).sample(tasks, g)
        loss = F.mse_loss
    else:  # Omniglot-shaped: 5-way 1-shot, 28x28, one query per class, random pixels
        model = metakit.nets.Conv4(1, 5, image_size=28)
        x = lambda: torch.rand(tasks, 5, 1, 28, 28, generator=g)
        y = torch.arange(5).repeat(tasks, 1)
        batch = TaskBatch(x(), y, x(), y)
        loss = F.cross_entropy
    return model.to(device), batch.to(device), loss, steps, first_order, INNER_LR[kind]


# --- implementations: each returns a function computing the meta-gradient into model.grad ---


class _HarnessSteps:
    """meta_step's optimiser calls, left to the harness: it zeroes and steps the same Adam for
    every implementation, so meta_step is timed doing exactly what a training iteration does."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


def metakit_impl(strategy):
    def build(model, batch, loss, steps, first_order, lr):
        chunk = {"vmap": batch.num_tasks, "loop": 1, "default": None, "chunk8": 8, "meta_step": None,
                 "meta_step-default": None, "meta_step-loop": 1, "meta_step-chunk2": 2,
                 }[strategy.replace("-compiled", "")]
        compiled = None if strategy == "meta_step-default" else "compiled" in strategy  # None: MAML's default
        maml = MAML(model, loss, lr, steps, first_order=first_order, chunk_size=chunk, compile=compiled)
        if strategy.startswith("meta_step"):  # torch.func's gradient of the whole meta-loss
            return lambda: maml.meta_step(batch, _HarnessSteps())
        return lambda: maml.meta_backward(batch)  # backward per chunk: memory of one chunk

    return build


def learn2learn_impl(model, batch, loss, steps, first_order, lr):
    _torchvision_shim()
    import learn2learn as l2l

    maml = l2l.algorithms.MAML(model, lr=lr, first_order=first_order)
    tasks = batch.num_tasks

    def meta_grad():
        for sx, sy, qx, qy in zip(*batch):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(loss(learner(sx), sy))
            (loss(learner(qx), qy) / tasks).backward()

    return meta_grad


def higher_impl(model, batch, loss, steps, first_order, lr):
    import higher

    if first_order:
        return None  # higher has no first-order MAML (track_higher_grads=False cuts the meta-gradient)
    inner = torch.optim.SGD(model.parameters(), lr=lr)
    tasks = batch.num_tasks

    def meta_grad():
        for sx, sy, qx, qy in zip(*batch):
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(loss(fmodel(sx), sy))
                (loss(fmodel(qx), qy) / tasks).backward()

    return meta_grad


def torchopt_impl(model, batch, loss, steps, first_order, lr):
    import torchopt

    if first_order:
        return None  # stop_gradient on the fast weights cuts the meta-gradient entirely
    inner = torchopt.MetaSGD(model, lr=lr)
    tasks = batch.num_tasks
    start = torchopt.extract_state_dict(model)

    def meta_grad():
        for sx, sy, qx, qy in zip(*batch):
            for _ in range(steps):
                inner.step(loss(model(sx), sy))
            (loss(model(qx), qy) / tasks).backward()
            torchopt.recover_state_dict(model, start)

    return meta_grad


def parallel_metalearn_impl(model, batch, loss, steps, first_order, lr):
    """parallel-metalearn 0.5.6 (torch.func + vmap over tasks; needs numpy >= 2, so it lives
    in another environment than learn2learn): its MAML on our model's own parameters."""
    from metalearn.algorithms.MAML import MAML as VmapMAML
    from metalearn.inner_optimizers.optimizers import InnerSGD
    from metalearn.loss.base import BaseLoss
    from metalearn.model_wrappers.MAMLWrapper import MAML_Model
    from torch import nn

    class Plain(nn.Module):  # its wrapper hands `training` and `num_step` keywords to every module
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x, **kwargs):
            return self.module(x)

    class Loss(BaseLoss):
        def forward(self, out_dict, targets, model_states=None, **kwargs):
            value = loss(out_dict["logits"], targets)
            return value, value.detach()

    class HarnessOptimizer:  # the harness zeroes and steps the same Adam for everyone
        def add_param_group(self, group):
            pass

        def zero_grad(self, set_to_none=True):
            pass

        def step(self):
            pass

    wrapped = MAML_Model(Plain(model), Plain(nn.Identity()))
    inner = InnerSGD(
        wrapped.get_fast_weights(),
        first_order=first_order,
        inner_lr=lr,
        max_inner_steps=steps,
        learn_lr=False,
    )
    device = next(model.parameters()).device
    maml = VmapMAML(
        model=wrapped,
        optimizer=HarnessOptimizer(),
        inner_optimizer=inner,
        support_loss_fn=Loss(),
        inner_steps=steps,
        chunk_size=batch.num_tasks,
        device=device,
    )
    data = tuple(batch)
    return lambda: maml.step(iter([data]))


IMPLS = {
    "metakit": metakit_impl("default"),
    "metakit-vmap": metakit_impl("vmap"),
    "metakit-loop": metakit_impl("loop"),
    "metakit-chunk8": metakit_impl("chunk8"),
    "metakit-compiled": metakit_impl("default-compiled"),
    "metakit-meta_step": metakit_impl("meta_step"),
    "metakit-meta_step-compiled": metakit_impl("meta_step-compiled"),
    "metakit-meta_step-default": metakit_impl("meta_step-default"),  # MAML(...) as it comes
    "metakit-meta_step-compiled-loop": metakit_impl("meta_step-loop-compiled"),  # one task a graph
    "metakit-meta_step-compiled-chunk2": metakit_impl("meta_step-chunk2-compiled"),
    "learn2learn": learn2learn_impl,
    "higher": higher_impl,
    "torchopt": torchopt_impl,
    "parallel-metalearn": parallel_metalearn_impl,
}


def _torchvision_shim() -> None:
    """learn2learn imports torchvision, whose PyPI build fails to load beside a CPU-only torch
    ('operator torchvision::nms does not exist'): declare the two op schemas it registers."""
    if not hasattr(torch.ops.torchvision, "nms"):
        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _torchvision_shim.keep = lib
        except RuntimeError:  # already defined
            pass


PEER_MODULES = {
    "learn2learn": "learn2learn",
    "higher": "higher",
    "torchopt": "torchopt",
    "parallel-metalearn": "metalearn",
}
PEER_DISTRIBUTIONS = {
    "learn2learn": "learn2learn",
    "higher": "higher",
    "torchopt": "torchopt",
    "parallel-metalearn": "parallel-metalearn",
}


def available(name: str) -> bool:
    module = PEER_MODULES.get(name)
    if module is None:
        return True
    try:
        if module == "learn2learn":
            _torchvision_shim()
        __import__(module)
        return True
    except Exception:
        return False


def version(name: str) -> str:
    from importlib.metadata import version as installed  # noqa: PLC0415

    return installed(PEER_DISTRIBUTIONS.get(name, "metakit"))


def setup(impl: str, case: str, device: str):
    model, batch, loss, steps, first_order, lr = make_case(case, device)
    meta_grad = IMPLS[impl](model, batch, loss, steps, first_order, lr)
    if meta_grad is None:
        return None
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=True)  # the same for everyone
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def iteration():
        optimizer.zero_grad(set_to_none=True)
        meta_grad()
        optimizer.step()

    return model, meta_grad, iteration, initial


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Local:
    """An implementation in this process: its meta-gradient, timed iterations, peak memory."""

    def __init__(self, impl: str, device: str):
        self.impl, self.device, self.built = impl, device, None

    def gradient(self, case: str):
        built = setup(self.impl, case, self.device)
        if built is None:
            return None
        model, meta_grad, iteration, _ = built
        model.zero_grad()
        meta_grad()
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double().cpu()
        self.built = setup(self.impl, case, self.device)  # fresh weights for the timing
        return grad

    def warm_up(self, count: int = 3) -> None:  # and compile
        for _ in range(count):
            self.built[2]()

    def time(self, count: int) -> list[float]:
        seconds = []
        for _ in range(count):
            sync(self.device)
            start = time.perf_counter()
            self.built[2]()
            sync(self.device)
            seconds.append(time.perf_counter() - start)
        return seconds

    def memory(self) -> float:
        return peak_memory_mb(self.built[2], self.device)


class Remote:
    """The same, in another Python environment (`--peer-python`): learn2learn needs numpy < 2
    and parallel-metalearn numpy >= 2, so one interpreter cannot hold every peer. The other
    process serves one command at a time, so rounds stay interleaved across processes."""

    def __init__(self, python: str, device: str):
        import subprocess  # noqa: PLC0415

        self.python = python
        self.process = subprocess.Popen(
            [python, __file__, "--serve", "--device", device],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, command: str, **arguments):
        self.process.stdin.write(json.dumps({"command": command, **arguments}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"{self.python}: {answer['error']}")
        return answer["result"]

    def runner(self, impl: str):
        remote = self

        class Proxy:
            def gradient(self, case):
                values = remote.call("gradient", impl=impl, case=case)
                return None if values is None else torch.tensor(values, dtype=torch.float64)

            def warm_up(self):
                remote.call("warm_up", impl=impl)

            def time(self, count):
                return remote.call("time", impl=impl, count=count)

            def memory(self):
                return remote.call("memory", impl=impl)

        return Proxy()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def serve(device: str) -> None:
    """The other end of Remote: JSON commands on stdin, one JSON answer a line on stdout."""
    import sys  # noqa: PLC0415

    answers, sys.stdout = sys.stdout, sys.stderr  # peers' prints must not corrupt the answers
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    runners = {}
    for line in sys.stdin:
        message = json.loads(line)
        command = message.pop("command")
        try:
            if command == "available":
                result = {impl: version(impl) for impl in message["impls"] if available(impl)}
            elif command == "gradient":
                runners[message["impl"]] = Local(message["impl"], device)
                grad = runners[message["impl"]].gradient(message["case"])
                result = None if grad is None else grad.tolist()
            elif command == "warm_up":
                result = runners[message["impl"]].warm_up()
            elif command == "time":
                result = runners[message["impl"]].time(message["count"])
            else:  # memory
                result = runners[message["impl"]].memory()
            answers.write(json.dumps({"result": result}) + "\n")
        except Exception as error:  # noqa: BLE001 (reported to the caller, which stops)
            answers.write(json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
        answers.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=0, help="per round (0: by case)")
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--peer-python",
        action="append",
        default=[],
        metavar="PYTHON",
        help="another environment's interpreter, for peers missing here (repeatable)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.device)
    # TF32 convolutions (cuDNN's default) round differently per batching strategy, so float32
    # meta-gradients of conv-4 could not be compared to 1e-4: full float32 for everyone
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    wanted = args.impls.split(",")
    where = {i: None for i in wanted if available(i)}  # None: this process
    versions = {i: version(i) for i in where}
    remotes = [Remote(python, args.device) for python in args.peer_python]
    for remote in remotes:
        for impl, found in remote.call("available", impls=[i for i in wanted if i not in where]).items():
            where[impl], versions[impl] = remote, found
    impls = [i for i in wanted if i in where]
    skipped = [i for i in wanted if i not in where]
    report = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine(),
        "versions": versions,
        "environments": {i: (where[i].python if where[i] else sys.executable) for i in impls},
        "skipped_unavailable": skipped,
        "cases": {},
    }
    for case in args.cases.split(","):
        print(f"\n== {case} ({args.device}) ==", flush=True)
        reference = Local("metakit-loop", args.device).gradient(case)
        runs, agree = {}, {}
        for impl in impls:
            runner = where[impl].runner(impl) if where[impl] else Local(impl, args.device)
            grad = runner.gradient(case)
            if grad is None:
                continue
            error = ((grad - reference).norm() / reference.norm()).item()
            agree[impl] = error
            if error > 1e-4:  # never time a wrong answer
                print(f"  EXCLUDED {impl}: meta-gradient rel. error {error:.2e} against the reference")
                report.setdefault("excluded", {})[f"{case}/{impl}"] = error
                continue
            runs[impl] = runner
        per_round = args.iterations or (50 if CASES[case][0] == "mlp" else 5)
        for runner in runs.values():  # warm-up, compile
            runner.warm_up()
        times = {impl: [] for impl in runs}
        for _ in range(args.rounds):
            for impl, runner in runs.items():  # interleaved, across processes too
                times[impl] += runner.time(per_round)
        rows = {}
        for impl in runs:
            rows[impl] = {
                "median_ms": statistics.median(times[impl]) * 1e3,
                "peak_mb": runs[impl].memory(),
                "grad_rel_error": agree[impl],
            }
        ours = rows["metakit"]["median_ms"] if "metakit" in rows else None
        print(f"{'implementation':18} {'ms/iter':>9} {'x metakit':>10} {'peak MB':>9} {'grad err':>9}")
        for impl, row in rows.items():
            row["ratio_to_metakit"] = row["median_ms"] / ours if ours else None
            peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.1f}"
            print(
                f"{impl:18} {row['median_ms']:9.2f} {row['ratio_to_metakit'] or float('nan'):10.2f} "
                f"{peak:>9} {row['grad_rel_error']:9.1e}",
                flush=True,
            )
        report["cases"][case] = rows
    out = Path(args.out or Path(__file__).parent / "results" / f"speed-{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    for remote in remotes:
        remote.close()


if __name__ == "__main__":
    main()
