"""PNG plots of a run: the learning curve of every family and, for sinusoid, the paper's
Figure 2. Figures are drawn with matplotlib's object API (no pyplot), so metakit never
changes the backend of the program that imports it (a notebook keeps its own)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import distributed
from .builders import build_task


def figure(**kwargs) -> tuple[Figure, object]:
    fig = Figure(**kwargs)
    return fig, fig.add_subplot()


def integer_ticks(axis) -> None:
    """Ticks at whole numbers only (steps, iterations, pulls)."""
    axis.set_major_locator(MaxNLocator(integer=True))


def save(fig: Figure, out: Path) -> None:
    if not distributed.is_main():  # under torchrun, rank 0 alone draws
        return
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def plot_learning_curve(metrics_path: Path, out: Path, series: dict[str, str], ylabel: str,
                        log_scale: bool = False) -> None:
    """Each metrics.jsonl column of `series` (key -> label) against the iteration; validation
    accuracy, where logged, on a second axis."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    fig, ax = figure(figsize=(6, 4))
    for key, label in series.items():
        points = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([i for i, _ in points], [v for _, v in points], label=label)
    ax.set(xlabel="meta-iteration", ylabel=ylabel, yscale="log" if log_scale else "linear")
    integer_ticks(ax.xaxis)
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    validated = [r for r in rows if "val_accuracy" in r]
    if validated:
        right = ax.twinx()
        right.plot([r["iteration"] for r in validated], [r["val_accuracy"] for r in validated], "C1.-")
        right.set_ylabel("validation accuracy", color="C1")
    save(fig, out)


def plot_sinusoid_adaptation(learner, config, out: Path, steps=(1, 10), device="cpu", seed=7) -> None:
    """One unseen task: the true function, the K support points, and the prediction before
    adaptation and after each number of `steps` (Finn et al. 2017, Figure 2)."""
    task = build_task(config, config.eval.support_shots, 1)
    generator = torch.Generator().manual_seed(seed)
    amplitude, phase = task.sample_functions(1, generator)
    support_x = task.x_range[0] + (task.x_range[1] - task.x_range[0]) * torch.rand(
        1, config.eval.support_shots, 1, generator=generator)
    support_y = task.evaluate(amplitude, phase, support_x)
    grid = torch.linspace(*task.x_range, 200).reshape(1, -1, 1)
    was_training = learner.training
    learner.eval()
    fig, ax = figure(figsize=(6, 4))
    ax.plot(grid[0, :, 0], task.evaluate(amplitude, phase, grid)[0, :, 0], "r", label="ground truth")
    ax.plot(
        support_x[0, :, 0], support_y[0, :, 0], "^", color="purple", label=f"{support_x.shape[1]} points used"
    )
    for k, style in zip((0, *steps), (":", "--", "-", "-.")):
        with torch.no_grad():
            fast = learner.adapt(support_x.to(device), support_y.to(device), steps=k)
            prediction = learner.predict(fast, grid.to(device)).cpu()
        ax.plot(
            grid[0, :, 0],
            prediction[0, :, 0],
            style,
            color="C0" if k else "C2",
            label="pre-update" if k == 0 else f"{k} grad step{'s' if k > 1 else ''}",
        )
    learner.train(was_training)
    ax.set(xlabel="x", ylabel="y", title=f"{config.name}: adaptation to an unseen task")
    ax.legend(fontsize=8)
    save(fig, out)
