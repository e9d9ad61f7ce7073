"""`metakit reproduce meta-critic-sine`: Meta-Critic Networks on sine regression, the test
MSE of actors trained against the meta-learned critic for K = 4, 6, 8 labelled points,
beside an actor trained from scratch on them, MAML, and the critic with z fixed to 0."""
from __future__ import annotations

from pathlib import Path

from ..errors import MetakitError
from ..files import save_json
from .config import load_config
from .runner import train

RUNS = {"meta-critic-sine": "meta-critic-sine"}
BUDGETS = {"full": [], "smoke": ["train.iterations=2", "train.num_tasks=8", "train.steps=10",
                                 "train.log_every=1", "train.checkpoint_every=1", "eval.num_tasks=8",
                                 "eval.steps=10", "eval.maml_iterations=5", "eval.test_points=20"]}


def reproduce_meta_critic(name: str, out: Path, budget: str, device: str, progress: bool, resume: bool,
                          hardware: str) -> dict:
    if budget not in BUDGETS:
        raise MetakitError(f"--budget for {name} must be one of {sorted(BUDGETS)}, got {budget!r}")
    run = train(load_config(RUNS[name], BUDGETS[budget]), out / RUNS[name], resume=resume, device=device,
                progress=progress)
    results = {"name": name, "budget": budget, "hardware": hardware, "mse": run["mse"], "ci95": run["ci95"],
               "eval_tasks": run["eval_tasks"], "meta_test_steps": run["meta_test_steps"],
               "iterations": run["iterations"], "train_seconds": run.get("train_seconds"), "run": run}
    save_json(results, out / "results.json")
    plot_mse_by_shots(results, out / "mse_by_shots.png")
    return results


def format_meta_critic_table(results: dict) -> str:
    shots = list(results["mse"])
    labels = list(results["mse"][shots[0]])
    lines = [f"{results['name']}: test MSE on {results['eval_tasks']} unseen tasks (± 95% CI), "
             f"{results['iterations']} meta-training episodes in {results['train_seconds']} s on "
             f"{results['hardware']}", " | ".join(["K", *labels]),
             " | ".join("---" for _ in range(len(labels) + 1))]
    for k in shots:
        cells = []
        for label in labels:
            mean, ci = results["mse"][k][label], results["ci95"][k][label]
            cells.append("diverged" if mean is None else f"{mean:.3f} ± {ci or 0:.3f}")
        lines.append(" | ".join([k, *cells]))
    return "\n".join(lines)


def plot_mse_by_shots(results: dict, out: Path) -> None:
    from .plots import figure, integer_ticks, save  # noqa: PLC0415 (matplotlib only when plotting)

    fig, ax = figure(figsize=(5, 4))
    shots = list(results["mse"])
    for label in results["mse"][shots[0]]:
        points = [(int(k), results["mse"][k][label]) for k in shots if results["mse"][k][label] is not None]
        ax.plot([k for k, _ in points], [v for _, v in points], "o-", label=label)
    ax.set(xlabel="labelled points K", ylabel="test MSE", yscale="log",
           title=f"sine regression, {results['eval_tasks']} unseen tasks")
    integer_ticks(ax.xaxis)
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, out)
