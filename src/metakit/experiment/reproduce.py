"""`metakit reproduce NAME`: the paper's headline experiment, our numbers beside the paper's."""
from __future__ import annotations

import platform
from pathlib import Path

import torch

from ..errors import MetakitError
from ..files import save_json
from .config import load_config
from .trainer import train

# Finn et al. 2017 as quoted in the issue: 5-shot sinusoid query MSE after 1 / 5 / 10 steps
SINUSOID_PAPER = {"maml": {"1": 0.67, "5": 0.38, "10": 0.35},
                  "maml-k5": {"1": 0.67, "5": 0.38, "10": 0.35},
                  "pretrained": {"1": 2.41, "5": 2.23, "10": 2.19}}

REPRODUCTIONS = {
    # maml: the setting (meta-trained with K=10); maml-k5: meta-trained with K=5, the
    # K of the evaluation; pretrained: the paper's baseline
    "sinusoid": {"runs": {"maml": "sinusoid", "maml-k5": "sinusoid-k5", "pretrained": "sinusoid-pretrained"},
                 "paper": SINUSOID_PAPER,
                 "smoke": ["train.iterations=300", "train.log_every=50",
                           "train.checkpoint_every=100", "eval.num_tasks=100"]},
}


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def reproduce(name: str, out: Path, budget: str = "full", device: str = "cpu",
              progress: bool = True, resume: bool = False) -> dict:
    if name not in REPRODUCTIONS:
        raise MetakitError(f"unknown reproduction {name!r}; expected one of {sorted(REPRODUCTIONS)}")
    if budget not in ("smoke", "full"):
        raise MetakitError(f"--budget must be 'smoke' or 'full', got {budget!r}")
    spec, out = REPRODUCTIONS[name], Path(out)
    runs = {}
    for label, config_name in spec["runs"].items():
        config = load_config(config_name, spec["smoke"] if budget == "smoke" else [])
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
    results = {"name": name, "budget": budget, "hardware": hardware(device),
               "mse_after_steps": main["mse_after_steps"], "ci95": main["ci95"],
               "paper": spec["paper"], "runs": runs, "table": table}
    save_json(results, out / "results.json")
    return results


def format_table(results: dict) -> str:
    labels = list(results["runs"])
    header = ["steps"] + [f"{label} {kind}" for label in labels for kind in ("paper", "ours")]
    header += [f"{label} median" for label in labels]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in results["table"]:
        cells = [str(row["steps"])]
        for label in labels:
            paper = row[f"paper_{label}"]
            mean, ci = row[label], row[f"{label}_ci95"]
            cells += ["-" if paper is None else f"{paper:.2f}",
                      "diverged" if mean is None else f"{mean:.3f} ± {ci:.3f}"]
        cells += [f"{row[f'{label}_median']:.3f}" for label in labels]
        lines.append(" | ".join(cells))
    return "\n".join(lines)
