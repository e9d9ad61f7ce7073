"""What a new user meets in the first hour: configs that accept what people type, honest
messages, runs that say where they are, and the data and Gymnasium entry points."""
import json
import os
import shlex
import stat
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml

import metakit
from metakit import MetakitError
from metakit.experiment import TrainingDiverged, load_config, train
from metakit.experiment.supervised import SupervisedAlgorithm

QUICK = ["train.iterations=40", "train.log_every=10", "train.checkpoint_every=10", "eval.num_tasks=5",
         "eval.steps=[0,1]"]


def test_numbers_in_scientific_notation_work_everywhere(tmp_path):
    config = load_config("sinusoid", ["train.outer_lr=1e-3", "train.iterations=1e3",
                                      "algorithm.inner_lr=2.5E-2"])
    assert (config.train.outer_lr, config.train.iterations, config.algorithm.inner_lr) == (1e-3, 1000, 0.025)
    with pytest.raises(MetakitError, match=r"'algorithm.inner_lr' must be >= 0, got '-1e-2'"):
        load_config("sinusoid", ["algorithm.inner_lr=-1e-2"])
    with pytest.raises(MetakitError, match=r"'train.iterations' must be int, got '1.5e0'"):
        load_config("sinusoid", ["train.iterations=1.5e0"])
    path = tmp_path / "c.yaml"
    path.write_text("task: {name: sinusoid}\nalgorithm: {name: maml, inner_lr: 1e-2}\n"
                    "train: {outer_lr: 5e-4}\n")
    assert load_config(path).train.outer_lr == 5e-4 and load_config(path).algorithm.inner_lr == 0.01


@pytest.mark.parametrize("text, missing", [("", "algorithm"), ("name: x\n", "algorithm"),
                                           ("algorithm: {name: maml}\n", "task"),
                                           ("algorithm: {name: rl2}\n", "env")])
def test_a_config_must_name_its_task_or_env_and_its_algorithm(tmp_path, text, missing):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(MetakitError, match=rf"names no {missing}; add `{missing}: \{{name: \.\.\.\}}`"):
        load_config(tmp_path / "c.yaml")


def test_a_sinusoid_run_saves_only_the_keys_that_apply_to_it(tmp_path):
    train(load_config("sinusoid", QUICK[:1] + ["train.log_every=40", "eval.num_tasks=2", "eval.steps=[0]"]),
          tmp_path / "run", progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert set(saved["task"]) == {"name", "support_shots", "query_shots"}
    assert set(saved["model"]) == {"name", "hidden_sizes"}
    with pytest.raises(MetakitError, match="'task.ways' applies to task.name omniglot, not 'sinusoid'"):
        load_config("sinusoid", ["task.ways=5"])


def test_nan_at_the_first_iteration_says_no_checkpoint_exists(tmp_path):
    config = load_config("sinusoid", ["algorithm.inner_lr=1e30", *QUICK])
    with pytest.raises(TrainingDiverged, match="at iteration 1; stopped. No checkpoint had been written yet"):
        train(config, tmp_path / "run", progress=False)


def test_resume_without_a_checkpoint_says_it_starts_over(tmp_path, cli):
    code, _, err = cli("train", "sinusoid", "--out", tmp_path / "run", "--resume", "--quiet", *_sets(QUICK))
    assert code == 0 and f"{tmp_path / 'run'} holds no checkpoint; starting from iteration 0" in err


def _sets(overrides):
    return [a for item in overrides for a in ("--set", item)]


def test_ctrl_c_prints_the_checkpoint_and_the_exact_resume_command(tmp_path, cli, monkeypatch):
    step = SupervisedAlgorithm.step
    calls = []

    def interrupted_step(self, generator):
        calls.append(1)
        if len(calls) == 25:
            raise KeyboardInterrupt
        return step(self, generator)

    monkeypatch.setattr(SupervisedAlgorithm, "step", interrupted_step)
    code, _, err = cli("train", "sinusoid", "--quiet", "--out", tmp_path / "run", *_sets(QUICK))
    assert code == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"The last checkpoint is {tmp_path / 'run' / 'checkpoint.pt'}; continue with: metakit train" in err
    command = shlex.split(err.split("continue with: ")[1])
    assert command[-1] == "--resume" and command[0] == "metakit"
    monkeypatch.setattr(SupervisedAlgorithm, "step", step)
    code, _, err = cli(*command[1:])
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["iterations"] == 40


def test_eval_writes_a_new_file_with_progress_and_replace_keeps_the_training_time(tmp_path, cli):
    run = tmp_path / "run"
    train(load_config("sinusoid", QUICK), run, progress=False)
    trained = json.loads((run / "results.json").read_text())
    for expected in ("results-eval.json", "results-eval-2.json"):
        code, out, err = cli("eval", run, "--set", "eval.num_tasks=3")
        assert code == 0 and f"results: {run / expected}" in out
        assert "evaluating" in err  # the progress bar
        assert json.loads((run / expected).read_text())["eval_tasks"] == 3
    assert json.loads((run / "results.json").read_text()) == trained  # untouched
    code, _, _ = cli("eval", run, "--replace", "--quiet")
    replaced = json.loads((run / "results.json").read_text())
    assert code == 0 and replaced["train_seconds"] == trained["train_seconds"]
    assert replaced["mse_after_steps"] == trained["mse_after_steps"]


def test_run_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        train(load_config("sinusoid", QUICK), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "results.json", "config.yaml", "metrics.jsonl"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


def test_root_data_and_metakit_data_name_the_same_folder(tmp_path, monkeypatch, make_archive):
    from metakit.data import omniglot

    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    make_archive(tmp_path / "data" / "omniglot" / "images_background.zip", "images_background")
    monkeypatch.setenv("METAKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("METAKIT_DATA", str(tmp_path / "data"))
    from_env = omniglot.load_omniglot(["images_background"])
    from_root = omniglot.load_omniglot(["images_background"], root=tmp_path / "data")
    assert torch.equal(from_env.images, from_root.images)
    monkeypatch.setenv("METAKIT_DATA", str(tmp_path / "empty"))
    with pytest.raises(MetakitError, match=r"not found in .*empty/omniglot.*--download"):
        omniglot.load_omniglot(["images_background"])
    # --download sets METAKIT_DOWNLOAD=1, which lets load_omniglot fetch (here: from a local file)
    source = tmp_path / "data" / "omniglot" / "images_background.zip"
    monkeypatch.setattr(omniglot, "URL", source.as_uri().replace("images_background", "{name}"))
    monkeypatch.setenv("METAKIT_DOWNLOAD", "1")
    assert torch.equal(omniglot.load_omniglot(["images_background"]).images, from_env.images)
    assert (tmp_path / "empty" / "omniglot" / "images_background.zip").is_file()


@pytest.mark.parametrize("order", ["import metakit, gymnasium", "import gymnasium, metakit"])
def test_gymnasium_make_works_after_import_metakit_in_either_order(order):
    script = f"{order}\nprint(gymnasium.make('metakit/Navigation2D-v0').reset(seed=0)[0].tolist())"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0.0, 0.0]"


def test_public_entry_points_check_shapes_and_dtypes():
    x = torch.zeros(10, 1)
    with pytest.raises(MetakitError, match=r"support_x has shape \(10, 1\); expected \[tasks, examples, f"):
        metakit.TaskBatch(x, x, x, x)
    maml = metakit.MAML(metakit.nets.MLP(1, [4], 1), F.mse_loss, 0.1)
    batch = metakit.tasks.Sinusoid().sample(2)
    with pytest.raises(MetakitError, match=r"inputs are torch.float64 on cpu but the model's parameters are "
                                           r"torch.float32"):
        maml.meta_loss(metakit.TaskBatch(*(t.double() for t in batch)))
    wide = metakit.TaskBatch(batch.support_x.repeat(1, 1, 3), batch.support_y, batch.query_x.repeat(1, 1, 3),
                             batch.query_y)
    with pytest.raises(MetakitError, match=r"the model could not take examples of shape \(3,\)"):
        maml.meta_loss(wide)
    with pytest.raises(MetakitError, match="inputs must be floating point"):
        maml.adapt(batch.support_x.long(), batch.support_y)
    proto = metakit.PrototypicalNetwork(metakit.nets.Conv4(num_classes=None))
    images = torch.zeros(1, 2, 1, 28, 28, dtype=torch.uint8)
    labels = torch.tensor([[0, 1]])
    with pytest.raises(MetakitError, match=r"support_x is torch.uint8; expected torch.float32 like the enc"):
        proto.loss(metakit.TaskBatch(images, labels, images, labels))


def test_hardware_counts_threads_in_words():
    from metakit.experiment.reproduce import hardware

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert "1 thread," in hardware("cpu")
    finally:
        torch.set_num_threads(threads)
