"""Configs, the trainer, resume after a kill, divergence, the CLI."""
import json
import os
import subprocess
import sys

import pytest
import torch

import metakit
from metakit import MetakitError
from metakit.experiment import TrainingDiverged, load_config, train

FAST = ["train.log_every=10", "eval.num_tasks=20", "eval.steps=[0,1]"]


def test_unknown_key_and_bad_values_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: {name: sinusoid}\nalgorithm: {name: maml}\ntrain: {iteratons: 10}\n")
    with pytest.raises(
        MetakitError, match=r"unknown config key 'train.iteratons'; expected one of .*'iterations'"
    ):
        load_config(path)
    with pytest.raises(MetakitError, match=r"'algorithm.inner_lr' must be >= 0, got -0.5"):
        load_config("sinusoid", ["algorithm.inner_lr=-0.5"])
    with pytest.raises(MetakitError, match=r"'algorithm.memory_budget_mb' must be null or > 0, got 0"):
        load_config("sinusoid", ["algorithm.memory_budget_mb=0"])
    assert load_config("sinusoid", ["algorithm.memory_budget_mb=64"]).algorithm.memory_budget_mb == 64
    with pytest.raises(MetakitError, match=r"'train.iterations' must be int, got 'many'"):
        load_config("sinusoid", ["train.iterations=many"])
    with pytest.raises(MetakitError, match=r"'algorithm.name' must be one of \['anil'.*got 'mamal'"):
        load_config("sinusoid", ["algorithm.name=mamal"])
    with pytest.raises(MetakitError, match="neither a file nor a bundled config"):
        load_config("no-such-config")


@pytest.mark.heavy
def test_smoke_run_learns_to_adapt(tmp_path):
    config = load_config(
        "sinusoid",
        ["train.iterations=1000", "train.log_every=100", "eval.num_tasks=200", "eval.steps=[0,10]"],
    )
    results = train(config, tmp_path / "run", progress=False)
    before, after = results["mse_after_steps"]["0"], results["mse_after_steps"]["10"]
    assert after < 0.65 * before, results
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "checkpoint.pt",
        "results.json",
        "learning_curve.png",
        "adaptation.png",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    assert json.loads((tmp_path / "run" / "results.json").read_text())["mse_after_steps"]["10"] == after
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(100, 1001, 100))


def _final_params(run_dir):
    return torch.nn.utils.parameters_to_vector(metakit.load(run_dir).learner.parameters())


@pytest.mark.parametrize("config", ["sinusoid", "sinusoid-reptile"])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, config, whole_and_resumed_runs):
    fewer_steps = ["algorithm.inner_steps=2"] if config == "sinusoid-reptile" else []
    overrides = ["train.checkpoint_every=50", *FAST, *fewer_steps]
    whole, killed = whole_and_resumed_runs(config, overrides, 200, tmp_path)
    assert torch.equal(_final_params(killed), _final_params(whole))
    metrics = [json.loads(line)["iteration"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(10, 201, 10))  # nothing lost, nothing written twice


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    config = load_config(
        "sinusoid", ["train.iterations=200", "train.checkpoint_every=1", "train.outer_lr=1.0e+6", *FAST]
    )
    with pytest.raises(TrainingDiverged, match=r"meta-loss became (nan|inf) at iteration (\d+)") as info:
        train(config, tmp_path / "run", progress=False)
    failed_at = int(info.value.args[0].split("at iteration ")[1].split(";")[0])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == failed_at - 1
    assert all(torch.isfinite(v).all() for v in state["algorithm"]["learner"].values())


def test_cli_reports_user_errors_without_traceback(tmp_path, cli):
    code, _, err = cli("train", "sinusoid", "--set", "train.meta_batch_size=0", "--out", tmp_path)
    assert code == 2
    assert "metakit: error: config key 'train.meta_batch_size' must be > 0, got 0" in err
    assert "Traceback" not in err
    code, _, err = cli("eval", tmp_path / "nothing")
    assert code == 2 and "holds no config.yaml" in err


def test_reproduce_smoke_writes_the_paper_table(tmp_path, cli):
    code, out, err = cli("reproduce", "sinusoid", "--budget", "smoke", "--out", tmp_path, "--json")
    assert code == 0, err
    results = json.loads(out)
    assert set(results["mse_after_steps"]) == {"0", "1", "5", "10"}
    assert set(results["ci95"]) == {"0", "1", "5", "10"}
    assert results["paper"]["maml"]["10"] == 0.35
    assert set(results["runs"]) == {"maml", "maml-k5", "pretrained"}
    assert results["runs"]["maml-k5"]["eval_support_shots"] == 5
    assert json.loads((tmp_path / "results.json").read_text())["table"] == results["table"]
    # eval of a finished run gives the same numbers
    code, again, err = cli("eval", tmp_path / "maml", "--json")
    assert code == 0, err
    assert json.loads(again)["mse_after_steps"] == results["runs"]["maml"]["mse_after_steps"]


def test_a_diverged_task_gives_a_null_mean_not_invalid_json():
    from metakit.experiment.evaluate import mean_ci95

    assert mean_ci95(torch.tensor([1.0, float("inf"), 2.0])) == (None, None)
    mean, ci = mean_ci95(torch.tensor([1.0, 2.0, 3.0]))
    assert mean == 2.0 and abs(ci - 1.96 / 3**0.5) < 1e-9


def test_lazy_imports_and_plots_that_leave_the_matplotlib_backend_alone(tmp_path):
    """`metakit --help` and the tensor environments import neither gymnasium nor matplotlib;
    a training run's plots do not switch a notebook's backend (matplotlib.use("Agg") did)."""
    script = f"""
import sys, matplotlib
import metakit.cli, metakit.rl.envs
try:
    metakit.cli.main(["--help"])
except SystemExit:
    pass
print("imported:", sorted(m for m in ("gymnasium", "matplotlib.pyplot") if m in sys.modules))
metakit.cli.main(["train", "sinusoid", "--out", {str(tmp_path / "run")!r}, "--quiet",
                  "--set", "train.iterations=2",
                  "--set", "train.log_every=1", "--set", "eval.num_tasks=5", "--set", "eval.steps=[0,1]"])
print("backend:", matplotlib.get_backend())
"""
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "imported: []" in done.stdout and "backend: svg" in done.stdout
    assert (tmp_path / "run" / "learning_curve.png").is_file() and (
        tmp_path / "run" / "adaptation.png"
    ).is_file()


def test_list_names_every_reproduction(cli):
    code, out, _ = cli("list")
    assert code == 0
    reproductions = out.split("reproductions:")[1].split()
    expected = {"sinusoid", "omniglot-minimal", "maml-trpo-nav2d", "rl2-bandits", "rl2-mdp", "mann-omniglot"}
    assert expected <= set(reproductions)
    assert "sinusoid-reptile" in out.split("reproductions:")[0]


def test_evaluation_adapts_without_building_a_meta_gradient_graph(monkeypatch):
    """Test-time adaptation needs inner gradients only: the fast weights evaluation sees carry
    no graph back to the meta-parameters (they used to hold second-order graphs never used)."""
    from metakit.experiment.evaluate import evaluate_regression

    algo = metakit.experiment.build(load_config("sinusoid", ["eval.num_tasks=4", "eval.steps=[0,2]"]))
    seen, adapt = [], algo.learner.adapt

    def recording_adapt(*args, **kwargs):
        fast = adapt(*args, **kwargs)
        seen.append(all(v.grad_fn is None for v in fast.values()))
        return fast

    monkeypatch.setattr(algo.learner, "adapt", recording_adapt)
    results = evaluate_regression(algo.learner, algo.config)
    assert seen == [True, True] and results["mse_after_steps"]["2"] < results["mse_after_steps"]["0"] * 10
    assert torch.isfinite(torch.tensor(results["mse_after_steps"]["2"]))
