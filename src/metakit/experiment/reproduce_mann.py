"""`metakit reproduce mann-omniglot`: MANN and its LSTM baseline on Omniglot episodes, accuracy
by the presentation number of each class beside Santoro et al. 2016, Table 1."""
from __future__ import annotations

from pathlib import Path

from ..errors import MetakitError
from ..files import save_json
from .config import load_config
from .runner import train

# Santoro et al. 2016, Table 1 (5 classes, 10 drawings, percent correct at each presentation)
PAPER = {"mann": {"1": 36.4, "2": 82.8, "3": 91.0, "4": 92.6, "5": 94.9, "10": 98.1},
         "lstm": {"1": 24.4, "2": 49.5, "3": 55.3, "4": 61.0, "5": 63.6, "10": 62.5},
         "human": {"1": 34.5, "2": 57.3, "3": 70.1, "4": 71.8, "5": 81.4, "10": 92.4}}
# both read each image through a conv-4 embedding pretrained as a prototypical network and then
# frozen; omniglot-mann and omniglot-lstm are the paper's pixel input (with a small conv beside it)
RUNS = {"mann": "omniglot-mann-conv4", "lstm": "omniglot-lstm-conv4"}
BUDGETS = {"full": [], "smoke": ["train.iterations=3", "algorithm.pretrain_iterations=1", "train.log_every=1",
                                 "train.checkpoint_every=1", "train.validate_every=0",
                                 "eval.num_episodes=20"]}


def reproduce_mann(out: Path, budget: str, device: str, progress: bool, resume: bool) -> dict:
    if budget not in BUDGETS:
        raise MetakitError(f"--budget for mann-omniglot must be one of {sorted(BUDGETS)}, got {budget!r}")
    runs, table = {}, {}
    for label, config_name in RUNS.items():
        config = load_config(config_name, BUDGETS[budget])
        runs[label] = train(config, out / config_name, resume=resume, device=device, progress=progress)
        table[label] = runs[label]["accuracy_by_instance"]
    table["nearest-neighbour"] = runs["mann"]["nearest_neighbour_by_instance"]  # the same test episodes
    results = {"name": "mann-omniglot", "budget": budget, "accuracy_by_instance": table,
               "ci95_by_instance": {label: run["ci95_by_instance"] for label, run in runs.items()},
               "paper": PAPER, "eval_episodes": runs["mann"]["eval_episodes"],
               "train_seconds": {label: run.get("train_seconds") for label, run in runs.items()},
               "iterations": {label: run["iterations"] for label, run in runs.items()}, "runs": runs}
    save_json(results, out / "results.json")
    plot_by_instance(results, out / "accuracy_by_instance.png")
    return results


def format_mann_table(results: dict) -> str:
    instances = list(results["accuracy_by_instance"]["mann"])
    lines = [f"mann-omniglot: percent correct at each presentation of a class, {results['eval_episodes']} "
             "held-out episodes (ours ± 95% CI; the paper's Table 1 in brackets)",
             " | ".join(["model", *instances]), " | ".join("---" for _ in range(len(instances) + 1))]
    for label, row in results["accuracy_by_instance"].items():
        cis = results["ci95_by_instance"].get(label, {})
        paper = results["paper"].get(label, {})
        cells = []
        for k in instances:
            cell = f"{row[k]:.1f}" + (f" ± {cis[k]:.1f}" if cis.get(k) is not None else "")
            cells.append(cell + (f" ({paper[k]})" if k in paper else ""))
        lines.append(" | ".join([label, *cells]))
    lines.append(" | ".join(["human (paper)", *[str(PAPER["human"].get(k, "-")) for k in instances]]))
    return "\n".join(lines)


def plot_by_instance(results: dict, out: Path) -> None:
    """Accuracy against presentation number, ours (solid) and the paper's (dashed)."""
    from .plots import figure, integer_ticks, save  # noqa: PLC0415 (matplotlib only when plotting)

    fig, ax = figure(figsize=(6, 4))
    for i, (label, row) in enumerate(results["accuracy_by_instance"].items()):
        ax.plot([int(k) for k in row], list(row.values()), "o-", color=f"C{i}", label=f"{label} (ours)")
        if label in PAPER:
            paper = PAPER[label]
            ax.plot([int(k) for k in paper], list(paper.values()), "x--", color=f"C{i}",
                    label=f"{label} (paper)")
    ax.set(xlabel="presentation of the class in the episode", ylabel="accuracy (%)", ylim=(0, 100),
           title=f"Omniglot, 5 classes x 10 drawings, {results['eval_episodes']} held-out episodes")
    integer_ticks(ax.xaxis)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save(fig, out)
