"""Configs, the trainer, resume after a kill, divergence, the CLI."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from metakit import MetakitError
from metakit.experiment import TrainingDiverged, load_config, train
from metakit.experiment.trainer import load_run

FAST = ["train.log_every=10", "eval.num_tasks=20", "eval.steps=[0,1]"]


def test_unknown_key_and_bad_values_name_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {iteratons: 10}\n")
    with pytest.raises(MetakitError, match=r"unknown config key 'train.iteratons'; expected one of .*'iterations'"):
        load_config(path)
    with pytest.raises(MetakitError, match=r"'algorithm.inner_lr' must be >= 0, got -0.5"):
        load_config("sinusoid", ["algorithm.inner_lr=-0.5"])
    with pytest.raises(MetakitError, match=r"'train.iterations' must be int, got 'many'"):
        load_config("sinusoid", ["train.iterations=many"])
    with pytest.raises(MetakitError, match=r"'algorithm.name' must be one of \['anil'.*got 'mamal'"):
        load_config("sinusoid", ["algorithm.name=mamal"])
    with pytest.raises(MetakitError, match="neither a file nor a bundled config"):
        load_config("no-such-config")


def test_smoke_run_learns_to_adapt(tmp_path):
    config = load_config("sinusoid", ["train.iterations=1000", "train.log_every=100",
                                      "eval.num_tasks=200", "eval.steps=[0,10]"])
    results = train(config, tmp_path / "run", progress=False)
    before, after = results["mse_after_steps"]["0"], results["mse_after_steps"]["10"]
    assert after < 0.65 * before, results
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "results.json",
                 "learning_curve.png", "adaptation.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert json.loads((tmp_path / "run" / "results.json").read_text())["mse_after_steps"]["10"] == after
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(100, 1001, 100))


def _cli(*args):
    return [sys.executable, "-m", "metakit.cli", *args]


def kill_at_first_checkpoint(command, run_dir, env):
    """Start `command` (a training run into run_dir) and SIGKILL it once its first checkpoint exists."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def whole_and_resumed_runs(config: str, overrides: list[str], iterations: int, tmp_path):
    """Train `config` uninterrupted, and again killed at its first checkpoint and resumed, on
    one thread (float sums then repeat exactly); returns the two run directories."""
    sets = [a for s in [*overrides, f"train.iterations={iterations}"] for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_cli("train", config, "--out", str(whole), "--quiet", *sets), check=True, env=env, capture_output=True)
    kill_at_first_checkpoint(_cli("train", config, "--out", str(killed), "--quiet", *sets), killed, env)
    assert torch.load(killed / "checkpoint.pt", weights_only=False)["iteration"] < iterations, \
        "the run finished before it could be killed; the test proves nothing"
    subprocess.run(_cli("train", config, "--out", str(killed), "--resume", "--quiet", *sets),
                   check=True, env=env, capture_output=True)
    return whole, killed


def _final_params(run_dir):
    _, learner = load_run(run_dir)
    return torch.nn.utils.parameters_to_vector(learner.parameters())


@pytest.mark.parametrize("algorithm", ["maml", "reptile"])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path, algorithm):
    sets = ["--set", f"algorithm.name={algorithm}", "--set", "train.iterations=1500",
            "--set", "train.checkpoint_every=50"] + [a for s in FAST for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli("train", "sinusoid", "--out", str(tmp_path / "whole"), "--quiet", *sets),
                   check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    kill_at_first_checkpoint(_cli("train", "sinusoid", "--out", str(killed), "--quiet", *sets), killed, env)
    iteration = torch.load(killed / "checkpoint.pt", weights_only=False)["iteration"]
    assert iteration < 1500, "the run finished before it could be killed; the test proves nothing"
    assert not (killed / "results.json").exists()

    result = subprocess.run(_cli("train", "sinusoid", "--out", str(killed), "--quiet", *sets),
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "already holds a run; pass --resume" in result.stderr
    subprocess.run(_cli("train", "sinusoid", "--out", str(killed), "--resume", "--quiet", *sets),
                   check=True, env=env, capture_output=True)
    assert torch.equal(_final_params(killed), _final_params(tmp_path / "whole"))
    metrics = [json.loads(l)["iteration"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert metrics == list(range(10, 1501, 10))  # nothing lost, nothing written twice


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(tmp_path):
    config = load_config("sinusoid", ["train.iterations=200", "train.checkpoint_every=1",
                                      "train.outer_lr=1.0e+6", *FAST])
    with pytest.raises(TrainingDiverged, match=r"meta-loss became (nan|inf) at iteration (\d+)") as info:
        train(config, tmp_path / "run", progress=False)
    failed_at = int(info.value.args[0].split("at iteration ")[1].split(";")[0])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == failed_at - 1
    assert all(torch.isfinite(v).all() for v in state["learner"].values())


def test_cli_reports_user_errors_without_traceback(tmp_path):
    result = subprocess.run(_cli("train", "sinusoid", "--set", "train.meta_batch_size=0", "--out", str(tmp_path)),
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "metakit: error: config key 'train.meta_batch_size' must be > 0, got 0" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(_cli("eval", str(tmp_path / "nothing")), capture_output=True, text=True)
    assert result.returncode == 2 and "holds no config.yaml" in result.stderr


def test_reproduce_smoke_writes_the_paper_table(tmp_path):
    result = subprocess.run(_cli("reproduce", "sinusoid", "--budget", "smoke", "--out", str(tmp_path), "--json"),
                            capture_output=True, text=True, check=True)
    results = json.loads(result.stdout)
    assert set(results["mse_after_steps"]) == {"0", "1", "5", "10"}
    assert set(results["ci95"]) == {"0", "1", "5", "10"}
    assert results["paper"]["maml"]["10"] == 0.35
    assert set(results["runs"]) == {"maml", "maml-k5", "pretrained"}
    assert results["runs"]["maml-k5"]["eval_support_shots"] == 5
    assert json.loads((tmp_path / "results.json").read_text())["table"] == results["table"]
    # eval of a finished run gives the same numbers
    again = subprocess.run(_cli("eval", str(tmp_path / "maml"), "--json"), capture_output=True, text=True, check=True)
    assert json.loads(again.stdout)["mse_after_steps"] == results["runs"]["maml"]["mse_after_steps"]


def test_a_diverged_task_gives_a_null_mean_not_invalid_json():
    from metakit.experiment.evaluate import mean_ci95
    assert mean_ci95(torch.tensor([1.0, float("inf"), 2.0])) == (None, None)
    mean, ci = mean_ci95(torch.tensor([1.0, 2.0, 3.0]))
    assert mean == 2.0 and abs(ci - 1.96 / 3 ** 0.5) < 1e-9
