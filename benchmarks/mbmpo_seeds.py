"""MB-MPO HalfCheetah runs side by side: for each run directory (`metakit train mbmpo-halfcheetah
--set seed=S --out DIR`), its settings and return at the last point, the mean of the last 3 and 5
points, the best point and after one adaptation step, from its metrics.jsonl; and how often the
final meta-policy runs on its back: of 10 real episodes (sampled actions, the config's
evaluation seeds), those in which the torso turns past 2 rad (|obs[1]| > 2), HalfCheetah's known
trap, and each iteration's share of real steps spent there (from the checkpoint's kept data);
and the final meta-policy's return before and after adaptation over more real episodes
(`--final-episodes`, 100: the run's own evaluation again, its 10-episode points carrying tens
of points of noise). Then the mean, standard deviation and standard error of the mean over the runs of each
setting. Writes benchmarks/results/mbmpo-seeds.json (or --out); with --merge the runs already
recorded there are kept (run directories are not kept with the project, the JSON is), a run
given again replacing its row. `--label` tags the runs given (e.g. the code they ran, where
the settings are the same): runs group by settings and label.

    python benchmarks/mbmpo_seeds.py runs/mbmpo-s0 runs/mbmpo-s1 ... [--out FILE] [--merge] [--label L]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import gymnasium as gym
import torch

from metakit.experiment import load, load_config
from metakit.files import save_json
from metakit.rl.envs.locomotion import FRAME_SKIP

SETTINGS = ("fisher", "model_precision", "meta_steps", "models", "model_updates", "model_rolling",
            "model_weight_norm", "clip_model_actions", "max_kl")
PPO = ("meta_lr", "ppo_steps", "ppo_clip")  # settings of the PPO-style meta-update, when it is used
# rows recorded before these were kept had the bundled values of then (the paper's): --merge fills them in
EARLIER = {"max_kl": 0.01, "init_std": 1.0}
ON_ITS_BACK = 2.0  # rad of torso pitch: past it the cheetah has turned over


def on_its_back(policy, episodes: int, seed: int, frame_skip: int = FRAME_SKIP) -> int:
    """Of `episodes` real episodes of a run's final meta-policy, those that turn over."""
    env = gym.make("HalfCheetah-v5", max_episode_steps=200, frame_skip=frame_skip)
    generator = torch.Generator().manual_seed(seed)
    turned = 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        over = False
        for _ in range(200):
            with torch.no_grad():
                action = policy.act(obs, deterministic=False, generator=generator)
            obs, _, terminated, truncated, _ = env.step(action.clamp(-1, 1).numpy())
            over |= bool(abs(obs[1]) > ON_ITS_BACK)
            if terminated or truncated:
                break
        turned += over
    return turned


def steps_on_back_by_iteration(mbmpo, rows: list[dict]) -> list[float | None]:
    """Of the real steps each iteration collected (the first: the random ones; then one episode
    per task of the adapted policies), the share with the torso past ON_ITS_BACK; from the data
    the checkpoint keeps (the last `buffer_size` steps: None where all of an iteration's are gone)."""
    pitch = mbmpo.data["observations"][:, 1].abs() > ON_ITS_BACK
    dropped = mbmpo.real_steps - len(pitch)  # the oldest steps, beyond the buffer
    ends = [0] + [int(r["real_steps"]) for r in rows]
    shares = []
    for start, end in zip(ends[:-1], ends[1:]):
        kept = pitch[max(start - dropped, 0) : max(end - dropped, 0)]
        shares.append(kept.float().mean().item() if len(kept) else None)
    return shares


def summarise(run: Path, label: str = "", final_episodes: int = 100) -> dict:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"{run}: no metrics.jsonl; expected a `metakit train` run directory")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    config = load_config(str(run / "config.yaml"))
    algo = load(run, "cpu", [f"eval.episodes={final_episodes}"])  # the run's own evaluation, more episodes
    returns = [r["return"] for r in rows]
    return {
        "run": str(run),
        "seed": config.seed,
        "settings": {k: getattr(config.algorithm, k) for k in SETTINGS} | {"episodes": config.train.episodes}
        | ({"frame_skip": config.env.frame_skip} if config.env.frame_skip is not None else {})
        | ({"meta_update": config.algorithm.meta_update, **{k: getattr(config.algorithm, k) for k in PPO}}
           if config.algorithm.meta_update != "trpo" else {})
        | {"init_std": config.policy.init_std},
        "label": label,
        "iterations": len(rows),
        "real_steps": rows[-1]["real_steps"],
        "last": returns[-1],
        "last3": statistics.fmean(returns[-3:]),
        "last5": statistics.fmean(returns[-5:]),
        "best": max(returns),
        "adapted": rows[-1]["return_adapted"],
        "on_its_back": on_its_back(algo.trained().policy, config.eval.episodes, config.eval.seed,
                                   config.env.frame_skip or FRAME_SKIP),
        "episodes": config.eval.episodes,
        "steps_on_back_by_iteration": steps_on_back_by_iteration(algo.mbmpo, rows),
        "minutes": rows[-1]["seconds"] / 60,
        "final": {k: v for k, v in algo.evaluate().items() if k in ("return", "return_adapted")}
        | {"episodes": final_episodes},
    }


def by_setting(runs: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        key = json.dumps([run["settings"], run.get("label", "")], sort_keys=True)
        groups.setdefault(key, []).append(run)
    summary = []
    for key, members in groups.items():
        settings, label = json.loads(key)
        row = {"settings": settings, "label": label, "seeds": [m["seed"] for m in members]}
        for field in ("last", "last5", "best", "final"):
            values = [m[field]["return"] if field == "final" else m[field] for m in members if field in m]
            if not values:  # runs recorded before `final` existed
                continue
            std = statistics.stdev(values) if len(values) > 1 else None
            row[field] = {"mean": statistics.fmean(values), "std": std, "runs": len(values),
                          "sem": None if std is None else std / len(values) ** 0.5}
        row["on_its_back"] = f"{sum(m['on_its_back'] for m in members)}/{sum(m['episodes'] for m in members)}"
        summary.append(row)
    return summary


def _mean_std(stat: dict) -> str:
    spread = "" if stat["std"] is None else f" +- {stat['std']:.1f} (standard error {stat['sem']:.1f})"
    return f"{stat['mean']:.1f}{spread}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mbmpo-seeds.json")
    parser.add_argument("--merge", action="store_true", help="keep the runs --out already records")
    parser.add_argument("--final-episodes", type=int, default=100,
                        help="real episodes for the final meta-policy's return (default 100)")
    parser.add_argument("--label", default="", help="a tag for the runs given; groups: settings and label")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = [summarise(run, args.label, args.final_episodes) for run in args.runs]
    if args.merge and args.out.is_file():
        given = {r["run"] for r in runs}
        kept = [r for r in json.loads(args.out.read_text())["runs"] if r["run"] not in given]
        runs = [{**r, "settings": EARLIER | r["settings"]} for r in kept] + runs
    print("run | seed | iterations | last | last 3 | last 5 | best | adapted | on its back | minutes | final")
    for r in runs:
        final = f"{r['final']['return']:.1f} ({r['final']['episodes']} episodes)" if "final" in r else "-"
        print(f"{r['run']} | {r['seed']} | {r['iterations']} | {r['last']:.1f} | {r['last3']:.1f} | "
              f"{r['last5']:.1f} | {r['best']:.1f} | {r['adapted']:.1f} | "
              f"{r['on_its_back']}/{r['episodes']} | {r['minutes']:.1f} | {final}")
    summary = by_setting(runs)
    for s in summary:
        print(f"seeds {s['seeds']} {s['settings']} {s['label']}: last {_mean_std(s['last'])}, "
              f"last 5 {_mean_std(s['last5'])}, on its back {s['on_its_back']}"
              + (f", final {_mean_std(s['final'])} over {s['final']['runs']} runs" if "final" in s else ""))
    save_json({"runs": runs, "by_setting": summary}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
