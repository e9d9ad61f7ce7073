"""The one training loop of every family: sample, step, log, checkpoint, evaluate, plot.

A run directory holds config.yaml (resolved), metrics.jsonl, checkpoint.pt (atomic),
results.json and PNG plots. `resume=True` continues from checkpoint.pt and, on the CPU, ends
with the same weights as an uninterrupted run: the algorithm's state (optimiser included),
the task generator and the partial metrics window are all saved.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import distributed
from ..errors import MetakitError, TrainingDiverged
from ..files import save_json
from .checkpoint import CHECKPOINT, METRICS, load_checkpoint, open_run_dir, read_run_config, save_checkpoint
from .protocol import Algorithm
from .registry import algorithm_class


def check_device(device: str) -> str:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MetakitError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MetakitError(f"device {device!r} requested but torch.cuda.is_available() is False "
                           "(a CPU-only torch build or no GPU); use --device cpu")
    return device


def build(config, device: str = "cpu") -> Algorithm:
    """The untrained algorithm of a config (from metakit.experiment.load_config)."""
    setting = getattr(getattr(config, "task", None), "name", None)
    return algorithm_class(config.algorithm.name, setting)(config, check_device(device))


def load(run_dir: str | Path, device: str = "cpu", overrides: list[str] = ()) -> Algorithm:
    """The trained algorithm of a run directory, on `device`, with its config as `.config`:
    `.learner` for supervised runs (MAML, ProtoNet, ...), `.policy` and `.env` for meta-RL.
    `overrides` (`eval.key=value`) change evaluation settings only."""
    for item in overrides:
        if not item.strip().startswith("eval."):
            raise MetakitError(f"only eval.* settings can change after training (the model is trained), "
                               f"got {item!r}")
    run_dir = Path(run_dir)
    algo = build(read_run_config(run_dir, overrides), device)
    algo.load_state_dict(load_checkpoint(run_dir / CHECKPOINT, device)["algorithm"])
    return algo


def train(config, run_dir: str | Path, resume: bool = False, device: str = "cpu",
          progress: bool = True) -> dict:
    """Train `config` into run_dir, evaluate, plot; returns results.json's content."""
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT
    device = distributed.init(check_device(device))  # under torchrun: join the ranks
    main = distributed.is_main()  # rank 0 alone writes files and shows progress
    algo = build(config, device)
    check_shardable(algo)
    algo.progress = progress and main
    if resume and not checkpoint_path.exists() and main:
        print(f"metakit: --resume: {run_dir} holds no checkpoint; starting from iteration 0", file=sys.stderr)
    state = open_run_dir(config, run_dir, resume, write=main)
    generator = torch.Generator().manual_seed(config.seed)  # tasks are drawn on the CPU: same on every device
    start, window, seconds = 0, [], 0.0
    if state is not None:
        algo.load_state_dict(state["algorithm"])
        generator.set_state(state["generator"])
        start, window, seconds = state["iteration"], state["window"], state["seconds"]

    tc = config.train
    bar = tqdm(range(start, tc.iterations), initial=start, total=tc.iterations, disable=not algo.progress,
               desc=config.name, dynamic_ncols=True)
    began = time.perf_counter() - seconds
    with (run_dir / METRICS).open("a") if main else contextlib.nullcontext() as metrics_file:
        for iteration in bar:
            done = iteration + 1
            try:
                metrics = algo.step(generator)  # the same on every rank (averaged over them)
            except TrainingDiverged as error:  # raised inside the step (e.g. a model predicting NaN)
                message = f"{error}, at iteration {done}; stopped. {_kept(checkpoint_path)}"
                raise TrainingDiverged(message) from error
            _check_finite(metrics, done, checkpoint_path)
            window.append(metrics)
            if done % tc.log_every == 0 or done == tc.iterations:
                seconds = time.perf_counter() - began
                if main:
                    row = {"iteration": done, **_mean(window), **algo.extra_metrics(done),
                           "seconds": round(seconds, 3)}
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in algo.curve if k in row})
                window = []
            if (done % tc.checkpoint_every == 0 or done == tc.iterations) and main:
                seconds = time.perf_counter() - began
                save_checkpoint({"algorithm": algo.state_dict(), "generator": generator.get_state(),
                                 "iteration": done, "window": window, "seconds": seconds}, checkpoint_path)
    bar.close()
    return finish(algo, run_dir, seconds)


def check_shardable(algo: Algorithm) -> None:
    """Under torchrun, the family must shard its tasks over the ranks, evenly."""
    if distributed.world_size() == 1:
        return
    key = algo.shard_key
    if key is None:
        raise MetakitError(f"algorithm {algo.config.algorithm.name!r} does not split its work over ranks; "
                           "run it as one process (without torchrun)")
    section, name = key.split(".")
    distributed.check_shardable(getattr(getattr(algo.config, section), name), key)


def _check_finite(metrics: dict, iteration: int, checkpoint_path: Path) -> None:
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise TrainingDiverged(f"{key.replace('_', '-')} became {value} at iteration {iteration}; "
                                   f"stopped. {_kept(checkpoint_path)} Lower the learning rates (e.g. "
                                   "train.outer_lr or algorithm.inner_lr)")


def _kept(checkpoint_path: Path) -> str:
    return (f"The last good checkpoint ({checkpoint_path}) is kept." if checkpoint_path.exists()
            else "No checkpoint had been written yet.")


def _mean(window: list[dict]) -> dict:
    """Each metric's mean over the iterations since the last row that report it (the value itself
    for one); a run's phases may report different metrics."""
    keys = dict.fromkeys(key for row in window for key in row)
    return {key: sum(values) / len(values) for key in keys
            if (values := [row[key] for row in window if key in row])}


def _evaluation(algo: Algorithm) -> dict:
    config = algo.config
    return {"name": config.name, "algorithm": config.algorithm.name, "iterations": config.train.iterations,
            **algo.evaluate()}


def finish(algo: Algorithm, run_dir: Path, train_seconds: float | None = None) -> dict:
    """Evaluate a trained algorithm; write results.json, the learning curve and the
    algorithm's own plots."""
    results = _evaluation(algo)
    if train_seconds is not None:
        results["train_seconds"] = round(train_seconds, 1)
    results["device"] = algo.device
    if not distributed.is_main():  # every rank evaluates (no rank waits on a collective); rank 0 writes
        return results
    save_json(results, run_dir / "results.json")
    from .plots import plot_learning_curve  # noqa: PLC0415 (matplotlib only when plotting)

    if (run_dir / METRICS).exists() and algo.curve:
        plot_learning_curve(run_dir / METRICS, run_dir / "learning_curve.png", algo.curve, algo.curve_ylabel,
                            algo.curve_log_scale)
    algo.plots(run_dir)
    return results


def new_results_path(run_dir: Path) -> Path:
    """RUN_DIR/results-eval.json, or -2, -3, ...: a re-evaluation never overwrites a result."""
    path, number = Path(run_dir) / "results-eval.json", 1
    while path.exists():
        number += 1
        path = Path(run_dir) / f"results-eval-{number}.json"
    return path


def evaluate_run(run_dir: str | Path, device: str = "cpu", overrides: list[str] = (), out: Path | None = None,
                 progress: bool = False) -> dict:
    """Evaluate a finished (or interrupted) run directory again, with `eval.*` overrides.
    Results go to `out` (by default a new file, see new_results_path); the run's plots and
    results.json stay as training wrote them unless `out` is that file."""
    run_dir = Path(run_dir)
    algo = load(run_dir, device, overrides)
    algo.progress = progress
    results = {**_evaluation(algo), "device": algo.device}
    previous = run_dir / "results.json"
    if out is not None and Path(out).resolve() == previous.resolve() and previous.exists():
        kept = {k: v for k, v in json.loads(previous.read_text()).items() if k == "train_seconds"}
        results.update(kept)  # replacing the run's results keeps how long it trained
    save_json(results, out or new_results_path(run_dir))
    return results
