"""How often MB-MPO's first iteration turns the HalfCheetah over, per setting, over many seeds.

The failed seeds of `mbmpo-halfcheetah` ran on the cheetah's back from the second iteration on
(so did two of the best seeds at first, which then got up): the first iteration's policy, trained
on models fitted to the 5,000 random steps alone, turns it over in the second iteration's real
episodes. This runs, for each
seed and setting (`--set` overrides of the config, as `metakit train` takes them), the first
iteration exactly as `metakit train` does (the same generator) and then the second iteration's
real collection, and reports the first fit's validation loss and epochs, the imagined and real
returns, and the share of those real episodes (one per task, adapted policies) that turn past
2 rad (|obs[1]| > 2) and of their steps spent there; the same for the adapted policies' imagined
episodes (do the models foresee the turn-over?), the random steps' largest pitch, and the untrained
policy's real episodes. Minutes, not the hour of a whole run; `--untrained` reports only the last
two, in seconds.
Writes benchmarks/results/mbmpo-first-iteration.json (or --out; --merge keeps rows already there).

    OMP_NUM_THREADS=2 python benchmarks/mbmpo_first_iteration.py --seeds 0-7 --label bundled
    OMP_NUM_THREADS=2 python benchmarks/mbmpo_first_iteration.py --seeds 0-7 --label L --set algorithm.K=V
    python benchmarks/mbmpo_first_iteration.py --untrained --seeds 0-7 --label L --set policy.init_std=V
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from metakit.experiment import build, load_config
from metakit.experiment.reproduce import hardware
from metakit.files import save_json
from metakit.rl.sampling import rollout

ON_ITS_BACK = 2.0  # rad of torso pitch, as benchmarks/mbmpo_seeds.py


def seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    try:
        return list(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed or a range such as 0-7, got {text!r}") from None


def first_iteration(config_name: str, seed: int, overrides: list[str]) -> dict:
    config = load_config(config_name, [f"seed={seed}", *overrides])
    algo = build(config, "cpu")
    algo.progress = False
    before = before_training(algo.mbmpo, seed)
    generator = torch.Generator().manual_seed(config.seed)  # as the runner's
    start = time.perf_counter()
    metrics = algo.step(generator)  # iteration 1 and its evaluation
    mbmpo = algo.mbmpo
    random_pitch = largest_pitch(mbmpo)  # D holds the random steps alone yet
    own = torch.Generator().manual_seed(10_000 + seed)  # its own, so the real episodes stay the run's
    fast = mbmpo.adapted_in_models(own)  # binds the model env to its tasks
    imagined = rollout(mbmpo.model_env, mbmpo.policy, 1, own, params=fast)
    second = mbmpo.collect(generator)  # iteration 2's real episodes
    return {
        "seed": seed,
        "first_fit_valid_loss": metrics["model_valid_loss"],
        "first_fit_epochs": metrics["model_epochs"],
        "imagined_return": metrics["imagined_return"],
        "return": metrics["return"],
        "return_adapted": metrics["return_adapted"],
        "second_collection_return": second.episode_returns().mean().item(),
        **turned_over("second_collection", second),
        # do the models foresee it? the adapted policies' imagined episodes, one per task
        "imagined_adapted_return": imagined.episode_returns().mean().item(),
        **turned_over("imagined_adapted", imagined),
        "random_steps_max_pitch": random_pitch,
        **before,
        "seconds": time.perf_counter() - start,
    }


def before_training(mbmpo, seed: int) -> dict:
    """The untrained policy's real episodes, one per task, on a generator of their own."""
    mbmpo.env.set_tasks(mbmpo.task.expand(mbmpo.num_tasks, *mbmpo.task.shape))
    episodes = rollout(mbmpo.env, mbmpo.policy, 1, torch.Generator().manual_seed(20_000 + seed))
    returns = episodes.episode_returns().mean().item()
    return {"untrained_return": returns, **turned_over("untrained", episodes)}


def untrained_only(config_name: str, seed: int, overrides: list[str]) -> dict:
    """Seconds: the random steps' largest pitch and the untrained policy's episodes."""
    algo = build(load_config(config_name, [f"seed={seed}", *overrides]), "cpu")
    before = before_training(algo.mbmpo, seed)
    algo.mbmpo.collect(torch.Generator().manual_seed(seed))  # the random steps, as the runner's
    return {"seed": seed, "random_steps_max_pitch": largest_pitch(algo.mbmpo), **before}


def largest_pitch(mbmpo) -> float:
    """The largest |torso pitch| in the real data D, in radians."""
    return mbmpo.data["observations"][:, 1].abs().max().item()


def turned_over(name: str, episodes) -> dict:
    """The share of `episodes` (one per task) that turn past ON_ITS_BACK, and of their steps."""
    pitch = episodes.observations[..., 1].abs() > ON_ITS_BACK  # [tasks, episodes, steps]
    valid = episodes.mask.bool()
    return {
        f"{name}_turned_over": (pitch & valid).any(-1).float().mean().item(),
        f"{name}_steps_on_back": (pitch & valid).sum().item() / valid.sum().item(),
    }


def summarise(overrides: list[str], rows: list[dict]) -> dict:
    if "first_fit_valid_loss" not in rows[0]:  # --untrained
        return {"overrides": overrides, "rows": rows,
                "mean_untrained_turned_over": statistics.fmean(r["untrained_turned_over"] for r in rows)}
    turned = [r["second_collection_turned_over"] for r in rows]
    return {
        "overrides": overrides,
        "rows": rows,
        "seeds_with_any_turned_over": sum(t > 0 for t in turned),
        "seeds_with_most_turned_over": sum(t > 0.5 for t in turned),
        "mean_turned_over": statistics.fmean(turned),
        "mean_first_fit_valid_loss": statistics.fmean(r["first_fit_valid_loss"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="mbmpo-halfcheetah")
    parser.add_argument("--seeds", type=seeds, default="0-7", help="a range, e.g. 0-7")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--label", required=True, help="the setting's name in the JSON")
    parser.add_argument("--out", default="benchmarks/results/mbmpo-first-iteration.json")
    parser.add_argument("--untrained", action="store_true",
                        help="only the random steps' largest pitch and the untrained policy's episodes")
    parser.add_argument("--merge", action="store_true", help="keep the settings already in --out")
    args = parser.parse_args()

    out = Path(args.out)
    settings = json.loads(out.read_text())["settings"] if args.merge and out.exists() else {}
    # each setting keeps its own: settings merged from several commands ran on different threads
    machine = hardware("cpu")
    rows = []
    for seed in args.seeds:
        probe = untrained_only if args.untrained else first_iteration
        rows.append(probe(args.config, seed, args.overrides))
        print(json.dumps(rows[-1]), flush=True)
        settings[args.label] = {**summarise(args.overrides, rows), "hardware": machine}
        save_json({"config": args.config, "settings": settings}, out)  # after every seed: a stop keeps them
    summary = {k: v for k, v in settings[args.label].items() if k != "rows"}
    print(args.label, json.dumps(summary))


if __name__ == "__main__":
    main()
