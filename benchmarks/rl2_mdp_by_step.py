"""Where a trained RL^2 policy earns its reward on random MDPs: mean reward at each step of the
10-step episode, for RL^2 and the classical methods, on the same 1000 new MDPs.

Every episode starts in state 0, so a policy that only remembers its first action of each
episode and the reward it got already beats random at step 0, from the second episode on; the
later steps visit states in random order and need a memory keyed by state. Writes the table to
benchmarks/results/rl2-mdp-by-step.json.

    python benchmarks/rl2_mdp_by_step.py RUN_DIR   # e.g. runs/reproduce-rl2-mdp/n10
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import metakit
from metakit.rl.classical.mdps import play_mdps
from metakit.rl.envs import TabularMDP
from metakit.rl.sampling import sample_trials


class RecordingMDP(TabularMDP):
    """Keeps each step's rewards, [T] per step, for the classical methods' play."""

    def __init__(self):
        super().__init__()
        self.rewards: list[torch.Tensor] = []

    def _step(self, actions, generator):
        obs, reward, done = super()._step(actions, generator)
        self.rewards.append(reward[:, 0])
        return obs, reward, done


def by_step(rewards: torch.Tensor, horizon: int) -> dict:
    """rewards [T, n * horizon] -> mean reward at each step of the episode, first episode left out."""
    steps = rewards.view(rewards.shape[0], -1, horizon)[:, 1:]
    return {"by_step": steps.mean((0, 1)).tolist(), "total": rewards.sum(-1).mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "rl2-mdp-by-step.json"))
    args = parser.parse_args()
    algo = metakit.load(Path(args.run_dir))
    config, env = algo.config, algo.env
    n = config.train.episodes
    tasks = env.sample_tasks(args.tasks, torch.Generator().manual_seed(config.eval.seed))
    table = {
        "rl2": by_step(
            sample_trials(env, algo.policy, tasks, n, torch.Generator().manual_seed(0)).rewards, env.horizon
        )
    }
    for method in ("random", "greedy", "psrl"):
        recorder = RecordingMDP()
        play_mdps(method, tasks, n, torch.Generator().manual_seed(0), env=recorder)
        table[method] = by_step(torch.stack(recorder.rewards, 1), env.horizon)
    print(f"mean reward at each step of episodes 2..{n} ({args.tasks} MDPs), and the trial total")
    for method, row in table.items():
        print(f"{method:8s}", " ".join(f"{r:5.2f}" for r in row["by_step"]), f"| {row['total']:7.1f}")
    Path(args.out).write_text(
        json.dumps({"run_dir": args.run_dir, "episodes": n, "tasks": args.tasks, "table": table}, indent=1)
    )


if __name__ == "__main__":
    main()
