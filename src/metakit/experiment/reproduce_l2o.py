"""`metakit reproduce l2o-quadratic | l2o-mlp`: the learned LSTM optimiser against SGD,
Nesterov momentum, RMSprop and Adam (learning rates tuned on training problems), mean final
loss on held-out problems, as in Andrychowicz et al. 2016, Figures 4 and 5."""
from __future__ import annotations

from pathlib import Path

from ..errors import MetakitError
from ..files import save_json
from .config import load_config
from .l2o import LEARNED, plot_loss_curves
from .runner import train

RUNS = {"l2o-quadratic": "l2o-quadratic", "l2o-mlp": "l2o-mlp"}
BUDGETS = {"full": [], "smoke": ["train.iterations=3", "train.log_every=1", "train.checkpoint_every=1",
                                 "eval.num_problems=5", "eval.tune_problems=3",
                                 "eval.learning_rates=[0.01,0.1]"]}


def reproduce_l2o(name: str, out: Path, budget: str, device: str, progress: bool, resume: bool,
                  hardware: str) -> dict:
    if budget not in BUDGETS:
        raise MetakitError(f"--budget for {name} must be one of {sorted(BUDGETS)}, got {budget!r}")
    config = load_config(RUNS[name], BUDGETS[budget])
    run = train(config, out / RUNS[name], resume=resume, device=device, progress=progress)
    best_baseline = {case: min((v for k, v in row.items() if k != LEARNED and v is not None), default=None)
                     for case, row in run["final_loss"].items()}
    results = {"name": name, "budget": budget, "hardware": hardware, "final_loss": run["final_loss"],
               "final_loss_ci95": run["final_loss_ci95"], "learning_rates": run["learning_rates"],
               "learned_below_every_baseline": {
                   case: (row[LEARNED] is not None and best_baseline[case] is not None
                          and row[LEARNED] < best_baseline[case]) for case, row in run["final_loss"].items()},
               "eval_problems": run["eval_problems"], "iterations": run["iterations"],
               "train_seconds": run.get("train_seconds"), "run": run}
    save_json(results, out / "results.json")
    plot_loss_curves(run, out / "loss_curves.png")
    return results


def format_l2o_table(results: dict) -> str:
    cases = list(results["final_loss"])
    names = list(results["final_loss"][cases[0]])
    lines = [f"{results['name']}: mean final loss on {results['eval_problems']} held-out problems (± 95% CI; "
             f"baselines at their tuned learning rate), {results['iterations']} meta-training epochs in "
             f"{results['train_seconds']} s on {results['hardware']}",
             " | ".join(["case", *names]), " | ".join("---" for _ in range(len(names) + 1))]
    for case in cases:
        cells = []
        for name in names:
            mean, ci = results["final_loss"][case][name], results["final_loss_ci95"][case][name]
            rate = results["learning_rates"][case].get(name)
            cells.append("diverged" if mean is None else f"{mean:.4g} ± {ci or 0:.2g}"
                         + (f" (lr {rate:.2g})" if rate is not None else ""))
        lines.append(" | ".join([case, *cells]))
    return "\n".join(lines)
