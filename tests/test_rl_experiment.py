"""Meta-RL experiments: configs, resume after a kill, the reproduce command."""
import json

import pytest
import torch

import metakit
from metakit import MetakitError
from metakit.experiment import load_config
from metakit.rl.policies import GaussianMLPPolicy

SMALL = ["env.horizon=10", "train.meta_batch_size=4", "train.episodes=4", "train.checkpoint_every=2",
         "eval.num_tasks=4", "eval.episodes=4", "policy.hidden_sizes=[16,16]"]


def test_meta_rl_config_errors_name_the_key():
    with pytest.raises(MetakitError, match=r"'env.name' must be one of \['AntDir'.*got 'Nav2D'"):
        load_config("maml-trpo-nav2d", ["env.name=Nav2D"])
    with pytest.raises(MetakitError, match=r"'algorithm.gamma' must be in \(0, 1\], got 1.5"):
        load_config("maml-trpo-nav2d", ["algorithm.gamma=1.5"])
    with pytest.raises(MetakitError, match=r"unknown config key 'train.outer_lr'"):
        load_config("maml-trpo-nav2d", ["train.outer_lr=0.1"])


def _policy(run_dir):
    return torch.nn.utils.parameters_to_vector(metakit.load(run_dir).policy.parameters())


def test_maml_trpo_resumes_after_a_kill_to_the_same_weights(tmp_path, whole_and_resumed_runs):
    whole, killed = whole_and_resumed_runs("maml-trpo-nav2d", SMALL, 16, tmp_path)
    assert torch.equal(_policy(killed), _policy(whole))
    rows = [json.loads(line)["iteration"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, 17))


def test_reproduce_nav2d_smoke_writes_returns_after_steps(tmp_path, cli):
    code, out, err = cli("reproduce", "maml-trpo-nav2d", "--budget", "smoke", "--out", tmp_path, "--json")
    assert code == 0, err
    # a smoke budget says what it is, in the JSON (and above the printed table)
    assert json.loads(out)["note"].startswith("smoke budget: a check that the command runs")
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["returns_after_steps"]) == {"0", "1", "2", "3"} and results["paper"]["1"] == -11.7
    for name in ("learning_curve.png", "returns_vs_steps.png", "trajectories.png"):
        assert (tmp_path / "maml-trpo-nav2d" / name).is_file()
    code, evaluated, err = cli("eval", tmp_path / "maml-trpo-nav2d", "--json")
    assert code == 0, err
    assert json.loads(evaluated)["returns_after_steps"] == results["returns_after_steps"]
    algo = metakit.load(tmp_path / "maml-trpo-nav2d")  # the trained policy, ready to adapt
    assert isinstance(algo.policy, GaussianMLPPolicy) and algo.env.horizon == 100
    assert algo.evaluate()["returns_after_steps"] == results["returns_after_steps"]


@pytest.mark.parametrize("name", ["rl2-bandits", "rl2-mdp"])
def test_reproduce_rl2_smoke_writes_the_paper_table_with_our_column(name, tmp_path, cli):
    code, stdout, err = cli("reproduce", name, "--budget", "smoke", "--out", tmp_path, "--quiet")
    assert code == 0, err
    assert stdout.startswith("[smoke budget: a check that the command runs")
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    methods = {row["method"] for row in table}
    assert "rl2" in methods and (
        "gittins" in methods if name == "rl2-bandits" else {"psrl", "beb"} <= methods
    )
    for row in table:
        assert set(row) == {"n", "k", "method", "paper", "ours", "ci95"} and row["n"] == 10
        assert (row["k"] is None) == (name == "rl2-mdp") and isinstance(row["ours"], float)
    paper = {(row["k"], row["method"]): row["paper"] for row in table}
    assert paper[(5, "rl2")] == 6.7 if name == "rl2-bandits" else paper[(None, "psrl")] == 138.1
    header = next(line for line in stdout.splitlines() if line.startswith("n | k | rl2 | random"))
    assert len(header.split(" | ")) == len(methods) + 2
    if name == "rl2-bandits":
        assert (tmp_path / "cumulative_reward.png").is_file()
