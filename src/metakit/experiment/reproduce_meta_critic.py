"""`metakit reproduce meta-critic-sine | meta-critic-cartpole | meta-critic-bandits`: Meta-Critic
Networks in the authors' three settings, each beside its baselines.

- sine: test MSE of actors trained against the meta-learned critic for K = 4, 6, 8 labelled
  points, beside an actor trained from scratch on them, MAML, and the critic with z fixed to 0;
- cartpole: training games until fresh actors on unseen pole lengths reach a greedy return of
  195, with the meta-critic, with a critic meta-trained without z (a second run), and
  actor-critic from scratch; the correlation of the learned z with the pole length;
- bandits: expected reward after 10 pulls at 2, 4 and 6 arms (a run each), beside the best arm,
  equal pulls then commit, Thompson sampling, and policy gradient without a critic.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MetakitError
from ..files import save_json
from .config import load_config
from .runner import train

RUNS = {
    "meta-critic-sine": "meta-critic-sine",
    "meta-critic-cartpole": "meta-critic-cartpole",
    "meta-critic-bandits": "meta-critic-bandit",
}
SMOKE = ["train.iterations=2", "train.log_every=1", "train.checkpoint_every=1"]
BUDGETS = {
    "meta-critic-sine": {
        "full": [],
        "smoke": [
            *SMOKE,
            "train.num_tasks=8",
            "train.steps=10",
            "eval.num_tasks=8",
            "eval.steps=10",
            "eval.maml_iterations=5",
            "eval.test_points=20",
        ],
    },
    "meta-critic-cartpole": {
        "full": [],
        "smoke": [
            *SMOKE,
            "train.num_tasks=4",
            "train.steps=5",
            "eval.lengths=2",
            "eval.seeds=2",
            "eval.steps=10",
            "eval.test_every=5",
            "eval.test_episodes=2",
        ],
    },
    "meta-critic-bandits": {
        "full": [],
        "smoke": [
            *SMOKE,
            "train.num_tasks=4",
            "train.steps=5",
            "eval.num_tasks=20",
            "eval.steps=5",
            "eval.particles=64",
        ],
    },
}
BANDIT_ARMS = (2, 4, 6)


def reproduce_meta_critic(
    name: str, out: Path, budget: str, device: str, progress: bool, resume: bool, hardware: str
) -> dict:
    if budget not in BUDGETS[name]:
        raise MetakitError(f"--budget for {name} must be one of {sorted(BUDGETS[name])}, got {budget!r}")
    overrides = BUDGETS[name][budget]

    def run(suffix: str = "", extra: tuple = ()) -> dict:
        config = load_config(RUNS[name], [*overrides, *extra, f"name={RUNS[name]}{suffix}"])
        return train(config, out / f"{RUNS[name]}{suffix}", resume=resume, device=device, progress=progress)

    results = {"name": name, "budget": budget, "hardware": hardware}
    if name == "meta-critic-sine":
        sine = run()
        results.update(
            {
                "mse": sine["mse"],
                "ci95": sine["ci95"],
                "eval_tasks": sine["eval_tasks"],
                "meta_test_steps": sine["meta_test_steps"],
                "iterations": sine["iterations"],
                "train_seconds": sine.get("train_seconds"),
                "run": sine,
            }
        )
        save_json(results, out / "results.json")
        plot_mse_by_shots(results, out / "mse_by_shots.png")
    elif name == "meta-critic-cartpole":
        with_z, no_z = run(), run("-no-z", ("algorithm.task_encoder=false",))
        results.update(
            {
                key: {**with_z[key], "no-z": no_z[key]["meta-critic"]}
                for key in ("games_to_195", "reached_195", "games_to_195_censored", "final_return")
            }
        )
        results.update(
            {
                "z_length_correlation": with_z["z_length_correlation"],
                "eval_tasks": with_z["eval_tasks"],
                "iterations": with_z["iterations"],
                "train_seconds": {
                    "meta-critic": with_z.get("train_seconds"),
                    "no-z": no_z.get("train_seconds"),
                },
                "curves": {**with_z["curves"], "no-z": no_z["curves"]["meta-critic"]},
            }
        )
        save_json(results, out / "results.json")
        plot_cartpole_curves(results["curves"], out / "return_by_games.png")
        plot_z_by_length(with_z["z"], out / "z_by_length.png")
    else:
        runs = {k: run(f"-{k}", (f"task.arms={k}",)) for k in BANDIT_ARMS}
        results.update(
            {
                "reward": {str(k): r["reward"][str(k)] for k, r in runs.items()},
                "ci95": {str(k): r["ci95"][str(k)] for k, r in runs.items()},
                "minus_equal_pulls": {str(k): r["minus_equal_pulls"][str(k)] for k, r in runs.items()},
                "eval_tasks": runs[BANDIT_ARMS[0]]["eval_tasks"],
                "pulls": runs[BANDIT_ARMS[0]]["pulls"],
                "iterations": runs[BANDIT_ARMS[0]]["iterations"],
                "train_seconds": {str(k): r.get("train_seconds") for k, r in runs.items()},
            }
        )
        save_json(results, out / "results.json")
    return results


def format_meta_critic_table(results: dict) -> str:
    if "games_to_195" in results:
        return format_cartpole_table(results)
    if "reward" in results:
        return format_bandit_table(results)
    shots = list(results["mse"])
    labels = list(results["mse"][shots[0]])
    lines = [
        f"{results['name']}: test MSE on {results['eval_tasks']} unseen tasks (± 95% CI), "
        f"{results['iterations']} meta-training episodes in {results['train_seconds']} s on "
        f"{results['hardware']}",
        " | ".join(["K", *labels]),
        " | ".join("---" for _ in range(len(labels) + 1)),
    ]
    for k in shots:
        cells = []
        for label in labels:
            mean, ci = results["mse"][k][label], results["ci95"][k][label]
            cells.append("diverged" if mean is None else f"{mean:.3f} ± {ci or 0:.3f}")
        lines.append(" | ".join([k, *cells]))
    return "\n".join(lines)


def format_cartpole_table(results: dict) -> str:
    ev = results["eval_tasks"]
    lines = [
        f"{results['name']}: training games until the greedy return reaches {ev['threshold']:g} on "
        f"{ev['lengths']} unseen pole lengths x {ev['seeds']} seeds ({ev['steps']} actor-critic steps); "
        f"{results['iterations']} meta-training episodes on {results['hardware']}",
        "method | games to 195 (those that reached it) | reached | games, unreached counted at the end "
        "| final return",
        "--- | --- | --- | --- | ---",
    ]
    for label, games in results["games_to_195"].items():
        lines.append(
            f"{label} | {'never' if games is None else f'{games:.1f}'} | "
            f"{100 * results['reached_195'][label]:.0f}% | {results['games_to_195_censored'][label]:.1f} | "
            f"{results['final_return'][label]:.1f}"
        )
    correlation = results.get("z_length_correlation")
    if correlation:
        lines.append(
            f"z against pole length: cross-validated correlation {correlation['cross_validated']:.3f}; "
            f"components {', '.join(f'{c:.3f}' for c in correlation['components'])}"
        )
    return "\n".join(lines)


def format_bandit_table(results: dict) -> str:
    arms = list(results["reward"])
    labels = list(results["reward"][arms[0]])
    lines = [
        f"{results['name']}: expected reward after {results['pulls']} pulls on {results['eval_tasks']} "
        f"unseen tasks (± 95% CI), {results['iterations']} meta-training episodes on {results['hardware']}",
        " | ".join(["arms", *labels, "meta-critic minus equal-pulls, paired"]),
        " | ".join("---" for _ in range(len(labels) + 2)),
    ]
    for k in arms:
        cells = [
            f"{results['reward'][k][label]:.3f} ± {results['ci95'][k][label] or 0:.3f}" for label in labels
        ]
        difference, ci = results["minus_equal_pulls"][k]["meta-critic"]
        lines.append(" | ".join([k, *cells, f"{difference:+.4f} ± {ci:.4f}"]))
    return "\n".join(lines)


def plot_mse_by_shots(results: dict, out: Path) -> None:
    from .plots import figure, integer_ticks, save  # noqa: PLC0415 (matplotlib only when plotting)

    fig, ax = figure(figsize=(5, 4))
    shots = list(results["mse"])
    for label in results["mse"][shots[0]]:
        points = [(int(k), results["mse"][k][label]) for k in shots if results["mse"][k][label] is not None]
        ax.plot([k for k, _ in points], [v for _, v in points], "o-", label=label)
    ax.set(
        xlabel="labelled points K",
        ylabel="test MSE",
        yscale="log",
        title=f"sine regression, {results['eval_tasks']} unseen tasks",
    )
    integer_ticks(ax.xaxis)
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, out)


def plot_cartpole_curves(curves: dict, out: Path, title: str = "cart-pole, unseen pole lengths") -> None:
    """Greedy test return against training games, mean and interquartile band per method."""
    from .plots import figure, save  # noqa: PLC0415

    fig, ax = figure(figsize=(5.5, 4))
    for label, curve in curves.items():
        ax.plot(curve["games"], curve["mean"], label=label)
        ax.fill_between(curve["games"], curve["q25"], curve["q75"], alpha=0.2)
    ax.axhline(195, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="training games", ylabel="greedy test return (200 max)", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, out)


def plot_z_by_length(z: dict, out: Path) -> None:
    """Each component of the task embedding z against the pole length (what the TAEN encodes)."""
    from .plots import figure, save  # noqa: PLC0415

    fig, ax = figure(figsize=(5.5, 4))
    values = list(zip(*z["z"]))
    for k, component in enumerate(values):
        ax.scatter(z["length"], component, s=4, alpha=0.4, label=f"z[{k}]")
    ax.set(xlabel="half pole length", ylabel="z", title="task embedding against pole length")
    ax.legend(markerscale=3)
    ax.grid(alpha=0.3)
    save(fig, out)
