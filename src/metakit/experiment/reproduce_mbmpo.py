"""`metakit reproduce mbmpo-halfcheetah`: MB-MPO (Clavera et al. 2018) on HalfCheetah-v5 at about
100,000 real steps, beside MB-MPO with one model (K = 1) and model-free PPO and TRPO at the same
real steps. Four runs in `out/<method>`; each is resumable, and a run already finished is only
read back, so the runs may also be started side by side by hand with `metakit train` into
those directories (see docs/mbmpo.md) and collected here with --resume."""

from __future__ import annotations

from pathlib import Path

from ..errors import MetakitError
from ..files import save_json
from .config import load_config
from .runner import train

NAME = "mbmpo-halfcheetah"
METHODS = {  # method -> (config, overrides)
    "mbmpo": ("mbmpo-halfcheetah", []),
    "mbmpo-k1": ("mbmpo-halfcheetah", ["algorithm.models=1", "name=mbmpo-k1-halfcheetah"]),
    "ppo": ("ppo-halfcheetah", []),
    "trpo": ("trpo-halfcheetah", []),
}
SMOKE = ["env.horizon=20", "train.checkpoint_every=1", "eval.episodes=2"]
BUDGETS = {
    "full": {method: [] for method in METHODS},
    "smoke": {
        **{
            m: [
                *SMOKE,
                "train.iterations=2",
                "train.meta_batch_size=5",
                "train.episodes=2",
                "algorithm.random_steps=100",
                "algorithm.meta_steps=1",
                "algorithm.model_updates=5",
                "algorithm.model_hidden_sizes=[32,32]",
            ]
            for m in ("mbmpo", "mbmpo-k1")
        },
        "ppo": [*SMOKE, "train.iterations=2", "train.episodes=2"],
        "trpo": [*SMOKE, "train.iterations=1", "train.episodes=4"],
    },
}
# HalfCheetah return at about 100k real steps, as RLlib's benchmark repository reports them
PAPER = {"mbmpo (official code)": 550, "mbmpo (RLlib)": 517}
PHASES = ("real_sampling_s", "model_fitting_s", "imagined_sampling_s", "policy_optimisation_s")


def reproduce_mbmpo(out: Path, budget: str, device: str, progress: bool, resume: bool, hardware: str) -> dict:
    if budget not in BUDGETS:
        raise MetakitError(f"--budget for {NAME} must be one of {sorted(BUDGETS)}, got {budget!r}")
    runs = {}
    for method, (config_name, overrides) in METHODS.items():
        config = load_config(config_name, [*BUDGETS[budget][method], *overrides])
        runs[method] = train(config, out / method, resume=resume, device=device, progress=progress)
    curves = {
        m: [
            {"real_steps": p["real_steps"], "return": p["return"], "return_adapted": p.get("return_adapted")}
            for p in run["curve"]
        ]
        for m, run in runs.items()
    }
    results = {
        "name": NAME,
        "budget": budget,
        "hardware": hardware,
        "env": "HalfCheetah-v5 (Gymnasium), horizon 200",
        "curves": curves,
        "final": {m: c[-1] for m, c in curves.items()},
        # one evaluation point is 10 episodes: the last three points' mean is steadier
        "last3_mean_return": {m: sum(p["return"] for p in c[-3:]) / len(c[-3:]) for m, c in curves.items()},
        "paper": PAPER,
        "train_seconds": {m: run.get("train_seconds") for m, run in runs.items()},
        "seconds_per_iteration": {m: _phases(out / m) for m in ("mbmpo", "mbmpo-k1")},
    }
    save_json(results, out / "results.json")
    plot_returns(curves, out / "return_vs_real_steps.png")
    return results


def _phases(run_dir: Path) -> dict[str, float]:
    """Mean seconds per iteration in each MB-MPO phase, from the run's metrics."""
    import json  # noqa: PLC0415

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {phase.removesuffix("_s"): round(sum(r[phase] for r in rows) / len(rows), 2) for phase in PHASES}


def plot_returns(curves: dict, path: Path) -> None:
    from .plots import figure, save  # noqa: PLC0415 (matplotlib only when plotting)

    fig, ax = figure(figsize=(6, 4))
    labels = {"mbmpo": "MB-MPO (5 models)", "mbmpo-k1": "MB-MPO, 1 model", "ppo": "PPO", "trpo": "TRPO"}
    for method, points in curves.items():
        ax.plot(
            [p["real_steps"] for p in points],
            [p["return"] for p in points],
            "o-" if method == "trpo" else "-",
            label=labels[method],
            markersize=4,
        )
    ax.set(
        xlabel="real environment steps",
        ylabel="return (200 steps, before adaptation)",
        title="HalfCheetah-v5",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def format_mbmpo_table(results: dict) -> str:
    lines = [
        f"{NAME} on {results['hardware']}; paper at ~100k real steps: "
        + ", ".join(f"{k} {v}" for k, v in results["paper"].items()),
        "method | real steps | return | after one step | last 3 points' mean | train seconds",
        "--- | --- | --- | --- | --- | ---",
    ]
    for method, last in results["final"].items():
        adapted = "-" if last["return_adapted"] is None else f"{last['return_adapted']:.1f}"
        lines.append(
            f"{method} | {last['real_steps']} | {last['return']:.1f} | {adapted} | "
            f"{results['last3_mean_return'][method]:.1f} | {results['train_seconds'][method]}"
        )
    return "\n".join(lines)
