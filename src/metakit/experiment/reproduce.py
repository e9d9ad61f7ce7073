"""`metakit reproduce NAME`: the paper's headline experiment, our numbers beside the paper's."""
from __future__ import annotations

import platform
from pathlib import Path

import torch

from .. import distributed
from ..errors import MetakitError
from ..files import save_json
from .config import load_config
from .reproduce_l2o import RUNS as L2O_RUNS
from .reproduce_l2o import format_l2o_table, reproduce_l2o
from .reproduce_mann import format_mann_table, reproduce_mann
from .reproduce_mbmpo import NAME as MBMPO_NAME
from .reproduce_mbmpo import format_mbmpo_table, reproduce_mbmpo
from .reproduce_meta_critic import RUNS as META_CRITIC_RUNS
from .reproduce_meta_critic import format_meta_critic_table, reproduce_meta_critic
from .reproduce_rl2 import ROWS as RL2_ROWS
from .reproduce_rl2 import format_rl2_table, reproduce_rl2
from .runner import train

# Finn et al. 2017 as quoted in the issue: 5-shot sinusoid query MSE after 1 / 5 / 10 steps
SINUSOID_PAPER = {"maml": {"1": 0.67, "5": 0.38, "10": 0.35},
                  "maml-k5": {"1": 0.67, "5": 0.38, "10": 0.35},
                  "pretrained": {"1": 2.41, "5": 2.23, "10": 2.19}}

# Full Omniglot (1200 training characters), 1-shot accuracy in percent, transductive BatchNorm:
# Finn et al. 2017 (MAML, first-order MAML), Nichol et al. 2018 (Reptile), Snell et al. 2017,
# Vinyals et al. 2016 (Matching Networks without fine-tuning).
OMNIGLOT_PAPER = {"maml": {"5way1shot": 98.7, "20way1shot": 95.8},
                  "fomaml": {"5way1shot": 98.3, "20way1shot": 89.4},
                  "reptile": {"5way1shot": 97.68, "20way1shot": 89.43},
                  "protonet": {"5way1shot": 98.8, "20way1shot": 96.0},
                  "matching": {"5way1shot": 98.1, "20way1shot": 93.8}}
# Lake et al. 2015, error on their 20 official runs (percent): the ConvNet trained on the full
# background set (the target), and the MHD nearest-neighbour baseline
LAKE_PAPER = {"convnet": 13.5, "mhd": 38.8}

OMNIGLOT_RUNS = {"maml": ["omniglot-maml-5way", "omniglot-maml-20way"],
                 "fomaml": ["omniglot-fomaml-5way", "omniglot-fomaml-20way"],
                 "reptile": ["omniglot-reptile-5way", "omniglot-reptile-20way"],
                 "protonet": ["omniglot-protonet"],  # one embedding serves every N
                 "matching": ["omniglot-matching"]}

# `--budget hour`: what runs in about an hour on the project's 2-core CPU (16 s an iteration
# on one thread): half the paper's tasks and episodes per iteration, 200 iterations
CHEETAH_BUDGETS = {"smoke": ["train.iterations=1", "train.meta_batch_size=2", "train.episodes=2",
                             "env.horizon=10", "eval.num_tasks=2", "eval.episodes=2"],
                   "hour": ["train.iterations=200", "train.meta_batch_size=20", "train.episodes=10"],
                   # ~2 hours under `torchrun --nproc_per_node 2` on 2 cores (6.7 s an iteration)
                   "two-hours": ["train.iterations=1000", "train.meta_batch_size=20", "train.episodes=10",
                                 "train.checkpoint_every=10"]}

REPRODUCTIONS = {
    # maml: the setting (meta-trained with K=10); maml-k5: meta-trained with K=5, the
    # K of the evaluation; pretrained: the paper's baseline
    "sinusoid": {
        "runs": {"maml": "sinusoid", "maml-k5": "sinusoid-k5", "pretrained": "sinusoid-pretrained"},
        "paper": SINUSOID_PAPER,
        "budgets": {
            "smoke": [
                "train.iterations=300",
                "train.log_every=50",
                "train.checkpoint_every=100",
                "eval.num_tasks=100",
            ]
        },
    },
    # Finn et al. 2017, Figure 4 / Table: 40 test tasks, mean return after 0-3 test steps
    "maml-trpo-nav2d": {
        "config": "maml-trpo-nav2d",
        "paper": {"0": -40.4, "1": -11.7, "2": -3.3, "3": -3.2},
        "budgets": {
            "smoke": [
                "train.iterations=2",
                "train.meta_batch_size=4",
                "train.episodes=4",
                "eval.num_tasks=4",
                "eval.episodes=4",
            ]
        },
    },
    "maml-trpo-cheetah-dir": {
        "config": "maml-trpo-cheetah-dir",
        "paper": {"0": -50.7, "1": 293.2},
        "budgets": CHEETAH_BUDGETS,
    },
    "maml-trpo-cheetah-vel": {
        "config": "maml-trpo-cheetah-vel",
        "paper": {"0": -129.5, "1": -78.6},
        "budgets": CHEETAH_BUDGETS,
    },
    "omniglot-minimal": {
        "algos": OMNIGLOT_RUNS,
        "paper": OMNIGLOT_PAPER,
        "budgets": {
            "smoke": [
                "train.iterations=4",
                "train.log_every=2",
                "train.checkpoint_every=2",
                "train.validate_every=2",
                "eval.num_tasks=8",
            ]
        },
    },
}


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    threads = torch.get_num_threads()
    plural = "s" if threads > 1 else ""
    ranks = distributed.world_size()
    processes = f"{ranks} processes (torchrun) x " if ranks > 1 else ""
    return f"{platform.machine()} CPU, {processes}{threads} thread{plural}, torch {torch.__version__}"


SMOKE_NOTE = ("smoke budget: a check that the command runs end to end, on a few iterations and tasks; "
              "its numbers are noise, not results")


def reproduce(name: str, out: Path, budget: str = "full", device: str = "cpu", progress: bool = True,
              resume: bool = False, algo: str | None = None, lake_runs: Path | None = None) -> dict:
    """The paper's headline experiment `name` into `out`; results.json's content."""
    results = _reproduce(name, Path(out), budget, device, progress, resume, algo, lake_runs)
    if budget == "smoke":  # said in the JSON and atop the printed table
        results = {"note": SMOKE_NOTE, **results}
        save_json(results, Path(out) / "results.json")
    return results


def reproduction_names() -> list[str]:
    return sorted([*REPRODUCTIONS, *RL2_ROWS, *L2O_RUNS, *META_CRITIC_RUNS, "mann-omniglot", MBMPO_NAME])


def _reproduce(name, out, budget, device, progress, resume, algo, lake_runs) -> dict:
    if name == "mann-omniglot" or name in L2O_RUNS or name in META_CRITIC_RUNS or name == MBMPO_NAME:
        if algo is not None or lake_runs is not None:
            raise MetakitError(f"--algo and --runs apply to omniglot-minimal, not to {name}")
        if name == MBMPO_NAME:
            return reproduce_mbmpo(Path(out), budget, device, progress, resume, hardware(device))
        if name in L2O_RUNS:
            return reproduce_l2o(name, Path(out), budget, device, progress, resume, hardware(device))
        if name in META_CRITIC_RUNS:
            return reproduce_meta_critic(name, Path(out), budget, device, progress, resume, hardware(device))
        return reproduce_mann(out, budget, device, progress, resume)
    if name in RL2_ROWS:
        if algo is not None or lake_runs is not None:
            raise MetakitError(f"--algo and --runs apply to omniglot-minimal, not to {name}")
        return reproduce_rl2(name, Path(out), budget, device, progress, resume)
    if name not in REPRODUCTIONS:
        raise MetakitError(
            f"unknown reproduction {name!r}; expected one of {reproduction_names()}"
        )
    budgets = {"full": [], **REPRODUCTIONS[name]["budgets"]}
    if budget not in budgets:
        raise MetakitError(f"--budget for {name} must be one of {sorted(budgets)}, got {budget!r}")
    if name == "omniglot-minimal":
        return reproduce_omniglot(Path(out), algo, budget, device, progress, resume, lake_runs)
    if algo is not None or lake_runs is not None:
        raise MetakitError(f"--algo and --runs apply to omniglot-minimal, not to {name}")
    spec, out = REPRODUCTIONS[name], Path(out)
    if "config" in spec:  # one meta-RL run, returns after 0..3 test steps against the paper
        config = load_config(spec["config"], budgets[budget])
        run = train(config, out / spec["config"], resume=resume, device=device, progress=progress)
        results = {
            "name": name,
            "budget": budget,
            "hardware": hardware(device),
            "returns_after_steps": run["returns_after_steps"],
            "paper": spec["paper"],
            "train_seconds": run.get("train_seconds"),
            "iterations": run["iterations"],
            "run": run,
        }
        save_json(results, out / "results.json")
        return results
    runs = {}
    for label, config_name in spec["runs"].items():
        config = load_config(config_name, budgets[budget])
        runs[label] = train(config, out / label, resume=resume, device=device, progress=progress)
    main = runs["maml"]
    table = []
    for steps in main["mse_after_steps"]:
        row = {"steps": int(steps)}
        for label, result in runs.items():
            row[f"paper_{label}"] = spec["paper"][label].get(steps)
            row[label] = result["mse_after_steps"][steps]
            row[f"{label}_ci95"] = result["ci95"][steps]
            row[f"{label}_median"] = result["median_after_steps"][steps]
            row[f"{label}_diverged_tasks"] = result["diverged_tasks"][steps]
        table.append(row)
    results = {
        "name": name,
        "budget": budget,
        "hardware": hardware(device),
        "mse_after_steps": main["mse_after_steps"],
        "ci95": main["ci95"],
        "paper": spec["paper"],
        "runs": runs,
        "table": table,
    }
    save_json(results, out / "results.json")
    return results


def reproduce_omniglot(
    out: Path,
    algo: str | None,
    budget: str,
    device: str,
    progress: bool,
    resume: bool,
    lake_runs: Path | None,
) -> dict:
    """Meta-train `algo` on the minimal splits (one run per N for gradient learners, whose head
    has N outputs; one for metric learners), test on held-out alphabets, and score Lake's runs
    in `lake_runs` with the 20-way model."""
    from .lake import score_checkpoint  # noqa: PLC0415 (Lake's runs only when asked for)

    algos = REPRODUCTIONS["omniglot-minimal"]["algos"]
    if algo not in algos:
        raise MetakitError(f"omniglot-minimal needs --algo, one of {sorted(algos)}; got {algo!r}")
    smoke = REPRODUCTIONS["omniglot-minimal"]["budgets"].get(budget, [])
    runs, accuracy, ci95, lake = {}, {}, {}, None
    for config_name in algos[algo]:
        config = load_config(config_name, smoke)
        runs[config_name] = result = train(
            config, out / config_name, resume=resume, device=device, progress=progress
        )
        accuracy.update({k: 100 * v for k, v in result["accuracy"].items()})
        ci95.update({k: 100 * v for k, v in result["ci95"].items()})
        if lake_runs is not None and lake is None and "20way1shot" in result["accuracy"]:
            lake = score_checkpoint(lake_runs, out / config_name, device)
    results = {
        "name": "omniglot-minimal",
        "algorithm": algo,
        "budget": budget,
        "hardware": hardware(device),
        "accuracy": accuracy,
        "ci95": ci95,
        "paper": OMNIGLOT_PAPER[algo],
        "normalisation": sorted({r["normalisation"] for r in runs.values()}),
        "train_seconds": round(sum(r.get("train_seconds", 0) for r in runs.values()), 1),
        "runs": runs,
    }
    if lake is not None:
        results.update(
            lake_runs_mean_error=lake["mean_error"],
            lake_runs=lake["runs"],
            lake_runs_dir=str(lake_runs),
            lake_paper=LAKE_PAPER,
        )
    save_json(results, out / "results.json")
    return results


def format_omniglot_table(results: dict) -> str:
    lines = [
        f"omniglot-minimal, {results['algorithm']}, normalisation {'/'.join(results['normalisation'])}, "
        f"trained {results['train_seconds']} s on {results['hardware']}",
        "episodes | paper (full Omniglot) | ours (held-out alphabets, 95% CI)",
        "--- | --- | ---",
    ]
    for key, value in results["accuracy"].items():
        paper = results["paper"].get(key)
        lines.append(
            f"{key} | {'-' if paper is None else f'{paper:.1f}%'} | {value:.1f}% ± {results['ci95'][key]:.1f}"
        )
    if "lake_runs_mean_error" in results:
        lines.append(
            f"Lake's runs error | {LAKE_PAPER['convnet']}% (ConvNet) | {results['lake_runs_mean_error']:.1f}%"
        )
    return "\n".join(lines)


def format_table(results: dict) -> str:
    table = _format_table(results)
    return f"[{results['note']}]\n{table}" if "note" in results else table


def _format_table(results: dict) -> str:
    if results["name"] == "omniglot-minimal":
        return format_omniglot_table(results)
    if results["name"] == "mann-omniglot":
        return format_mann_table(results)
    if results["name"] in L2O_RUNS:
        return format_l2o_table(results)
    if results["name"] in META_CRITIC_RUNS:
        return format_meta_critic_table(results)
    if results["name"] in RL2_ROWS:
        return format_rl2_table(results)
    if results["name"] == MBMPO_NAME:
        return format_mbmpo_table(results)
    if "returns_after_steps" in results:
        lines = [
            f"{results['name']}: {results['iterations']} iterations, {results['train_seconds']} s on "
            f"{results['hardware']}",
            "steps | paper | ours",
            "--- | --- | ---",
        ]
        lines += [
            f"{k} | {results['paper'].get(k, '-')} | {v:.1f}"
            for k, v in results["returns_after_steps"].items()
        ]
        return "\n".join(lines)
    labels = list(results["runs"])
    header = ["steps"] + [f"{label} {kind}" for label in labels for kind in ("paper", "ours")]
    header += [f"{label} median" for label in labels]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in results["table"]:
        cells = [str(row["steps"])]
        for label in labels:
            paper = row[f"paper_{label}"]
            mean, ci = row[label], row[f"{label}_ci95"]
            cells += [
                "-" if paper is None else f"{paper:.2f}",
                "diverged" if mean is None else f"{mean:.3f} ± {ci:.3f}",
            ]
        cells += [f"{row[f'{label}_median']:.3f}" for label in labels]
        lines.append(" | ".join(cells))
    return "\n".join(lines)
