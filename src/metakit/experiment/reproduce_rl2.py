"""`metakit reproduce rl2-bandits | rl2-mdp`: Duan et al. 2016's tables, our column beside theirs.

For each row (n pulls x k arms, or n episodes of a random MDP) RL^2 is trained with the
row's trial length and evaluated on 1000 new tasks; every classical baseline plays the same
tasks. Rows whose RL^2 training does not fit the budget report the baselines only.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MetakitError
from ..files import save_json
from ..rl import envs
from ..rl.classical import BANDIT_METHODS, MDP_METHODS, play_bandits, play_mdps
from ..rl.classical.bandits import play_bandits_rewards
from ..rl.sampling import sample_trials
from .config import load_config
from .evaluate import mean_ci95
from .runner import load, train

# As quoted in the issue: RL^2 and the best classical method (Gittins for bandits, PSRL for MDPs)
PAPER = {
    "rl2-bandits": {(10, 5): {"rl2": 6.7, "gittins": 6.6}, (10, 10): {"rl2": 6.7, "gittins": 6.6},
                    (100, 5): {"rl2": 78.7, "gittins": 78.3}, (100, 10): {"rl2": 83.5, "gittins": 82.8},
                    (500, 10): {"rl2": 432.5, "gittins": 437.8}},
    "rl2-mdp": {(10, None): {"rl2": 156.2, "psrl": 138.1}, (25, None): {"rl2": 445.7, "psrl": 408.8},
                (100, None): {"rl2": 1913.7, "psrl": 1939.5}},
}
ROWS = {"rl2-bandits": [(n, k) for n in (10, 100, 500) for k in (5, 10, 50)],
        "rl2-mdp": [(n, None) for n in (10, 25, 50, 75, 100)]}
# RL^2 training iterations per budget and row (n, k); other rows report the baselines only
# ("baselines": no RL^2 at all). "full" takes 1.5-2 hours on one core here for each command.
TRAINING = {
    "rl2-bandits": {
        "full": {
            (10, 5): 500,
            (10, 10): 500,
            (10, 50): 500,
            (100, 5): 250,
            (100, 10): 250,
            (100, 50): 250,
            (500, 10): 150,
        },
        "smoke": {(10, 5): 2, (10, 10): 2, (10, 50): 2},
        "baselines": {},
    },
    "rl2-mdp": {"full": {(10, None): 500, (25, None): 120}, "smoke": {(10, None): 2}, "baselines": {}},
}
SMOKE = ["policy.recurrent_size=16", "train.meta_batch_size=8", "eval.num_tasks=20"]


def reproduce_rl2(name: str, out: Path, budget: str, device: str, progress: bool, resume: bool) -> dict:
    if budget not in TRAINING[name]:
        raise MetakitError(f"--budget for {name} must be one of {sorted(TRAINING[name])}, got {budget!r}")
    plan, rows = TRAINING[name][budget], ROWS[name]
    if budget == "smoke":
        rows = [row for row in rows if row[0] == 10]
    methods = ["rl2"] + (
        list(BANDIT_METHODS) if name == "rl2-bandits" else list(MDP_METHODS) + ["epsilon-greedy"]
    )
    table, runs = [], {}
    for n, k in rows:
        overrides = [f"train.episodes={n}"] + ([f"env.arms={k}"] if k is not None else [])
        overrides += SMOKE if budget == "smoke" else []
        config = load_config(name, overrides)
        env = envs.make(config.env.name, **({"arms": k} if k is not None else {}))
        tasks = env.sample_tasks(config.eval.num_tasks, torch.Generator().manual_seed(config.eval.seed))
        scores = {}
        if (n, k) in plan:
            config = load_config(name, overrides + [f"train.iterations={plan[(n, k)]}"])
            label = f"n{n}" + (f"-k{k}" if k is not None else "")
            runs[label] = train(config, out / label, resume=resume, device=device, progress=progress)
            scores["rl2"] = (runs[label]["trial_return"], runs[label]["ci95"])
        for method in methods[1:]:
            generator = torch.Generator().manual_seed(config.eval.seed + 1)
            totals = (
                play_bandits(method, tasks, n, generator)
                if k is not None
                else play_mdps(method, tasks, n, generator)
            )
            scores[method] = mean_ci95(totals)
        paper = PAPER[name].get((n, k), {})
        for method in methods:
            ours, ci = scores.get(method, (None, None))
            table.append(
                {"n": n, "k": k, "method": method, "paper": paper.get(method), "ours": ours, "ci95": ci}
            )
    results = {
        "name": name,
        "budget": budget,
        "table": table,
        "runs": runs,
        "eval_tasks": config.eval.num_tasks,
        "rl2_iterations": {f"n{n}" + (f"-k{k}" if k else ""): its for (n, k), its in plan.items()},
    }
    save_json(results, out / "results.json")
    plot_cumulative(name, out, runs, rows)
    return results


def format_rl2_table(results: dict) -> str:
    """One line per (n, k): each method's number, ours (paper)."""
    methods = list(dict.fromkeys(row["method"] for row in results["table"]))
    lines = [
        f"{results['name']} ({results['eval_tasks']} new tasks per row; ours ± 95% CI, paper in brackets)",
        " | ".join(["n", "k"] + methods),
        " | ".join("---" for _ in range(len(methods) + 2)),
    ]
    rows: dict = {}
    for row in results["table"]:
        rows.setdefault((row["n"], row["k"]), {})[row["method"]] = row
    for (n, k), cells in rows.items():
        line = [str(n), "-" if k is None else str(k)]
        for method in methods:
            row = cells[method]
            ours = "not trained" if row["ours"] is None else f"{row['ours']:.1f} ± {row['ci95']:.1f}"
            line.append(ours + ("" if row["paper"] is None else f" ({row['paper']})"))
        lines.append(" | ".join(line))
    return "\n".join(lines)


def plot_cumulative(name: str, out: Path, runs: dict, rows) -> None:
    """Cumulative reward against pulls on the first trained bandit row, RL^2 and the baselines,
    on the table's own tasks and random streams: each curve ends at its table entry."""
    if name != "rl2-bandits" or not runs:
        return
    from .plots import figure, integer_ticks, save  # noqa: PLC0415 (matplotlib only when plotting)

    algo = load(out / next(iter(runs)))
    config, env = algo.config, algo.env
    n, count, seed = config.train.episodes, config.eval.num_tasks, config.eval.seed
    tasks = env.sample_tasks(count, torch.Generator().manual_seed(seed))
    fig, ax = figure(figsize=(6, 4))
    rl2 = sample_trials(env, algo.policy, tasks, n, torch.Generator().manual_seed(seed + 1)).rewards
    ax.plot(range(1, n + 1), rl2.mean(0).cumsum(0), label="RL^2", linewidth=2)
    for method in BANDIT_METHODS:
        rewards = play_bandits_rewards(method, tasks, n, torch.Generator().manual_seed(seed + 1))
        ax.plot(range(1, n + 1), rewards.mean(0).cumsum(0), label=method, linewidth=1)
    ax.set(xlabel="pull", ylabel=f"cumulative reward (mean of {count} bandits)",
           title=f"{config.env.arms}-armed Bernoulli bandits, {n} pulls ({count} new bandits, as the table)")
    integer_ticks(ax.xaxis)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save(fig, out / "cumulative_reward.png")
