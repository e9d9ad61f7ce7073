"""Omniglot experiments: normalisation policies, config checks, Lake's runs scored by a
trained run, `metakit reproduce omniglot-minimal`, and a short MAML run that learns."""
import json
import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import metakit
from metakit import MAML, MatchingNetwork, MetakitError, PrototypicalNetwork, TaskBatch
from metakit.data.lake_runs import make_runs
from metakit.experiment import load_config, train
from metakit.nets import Conv4


def _episodes(tasks=2, ways=5, queries=3, size=28):
    support_x = torch.rand(tasks, ways, 1, size, size)
    query_x = torch.rand(tasks, ways * queries, 1, size, size)
    support_y = torch.arange(ways).repeat(tasks, 1)
    return TaskBatch(
        support_x, support_y, query_x, torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1)
    )


def _change_other_queries(batch):
    query_x = batch.query_x.clone()
    query_x[:, 1:] = torch.rand_like(query_x[:, 1:])
    return TaskBatch(batch.support_x, batch.support_y, query_x, batch.query_y)


def test_inductive_maml_predicts_each_query_with_the_support_set_alone():
    maml = MAML(Conv4(num_classes=5), F.cross_entropy, inner_lr=0.4)
    batch = _episodes()
    fast = maml.adapt(batch.support_x, batch.support_y)
    inductive = maml.predict(fast, batch.query_x, context=batch.support_x)
    # by hand: the batch [support, query j] through task 1's fast weights, keep the last row
    task = {k: v[1] for k, v in fast.items()}
    for j in (0, 4):
        alone = functional_call(
            maml.model, task, torch.cat([batch.support_x[1], batch.query_x[1, j : j + 1]])
        )[-1]
        torch.testing.assert_close(inductive[1, j], alone, rtol=1e-4, atol=1e-5)
    other = _change_other_queries(batch)
    torch.testing.assert_close(
        maml.predict(fast, other.query_x, context=other.support_x)[:, 0], inductive[:, 0]
    )
    # transductive: the queries share batch statistics, so the first one's output moves
    moved = maml.predict(fast, other.query_x)[:, 0] - maml.predict(fast, batch.query_x)[:, 0]
    assert moved.abs().max() > 1e-3


@pytest.mark.parametrize("learner", [PrototypicalNetwork, MatchingNetwork])
def test_inductive_metric_learners_never_see_other_queries(learner):
    net = learner(Conv4(num_classes=None))
    batch = _episodes()
    other = _change_other_queries(batch)
    inductive = net.logits(batch, inductive=True)
    assert inductive.shape == (2, 15, 5)
    torch.testing.assert_close(net.logits(other, inductive=True)[:, 0], inductive[:, 0])
    # by hand: task 1's support set and its query 2 embedded as one batch, then classified
    both = net.encoder(torch.cat([batch.support_x[1], batch.query_x[1, 2:3]])).flatten(1)
    by_hand = net.scores(both[None, :5], batch.support_y[1:2], both[None, 5:], 5)[0, 0]
    torch.testing.assert_close(inductive[1, 2], by_hand, rtol=1e-4, atol=1e-4)
    assert (net.logits(other)[:, 0] - net.logits(batch)[:, 0]).abs().max() > 1e-3


def test_predict_context_must_match_the_examples():
    maml = MAML(nn.Linear(3, 2), F.cross_entropy, inner_lr=0.1)
    fast = {k: v.expand(2, *v.shape) for k, v in maml.model.named_parameters()}
    with pytest.raises(MetakitError, match=r"context has shape \(2, 4, 5\); expected \[2, S, 3\]"):
        maml.predict(fast, torch.rand(2, 6, 3), context=torch.rand(2, 4, 5))


def test_config_combinations_that_do_not_go_together_are_named(tmp_path):
    (tmp_path / "conv.yaml").write_text("task: {name: sinusoid}\nmodel: {name: conv4}\n"
                                        "algorithm: {name: maml}\n")
    with pytest.raises(MetakitError, match="task 'sinusoid' needs model 'mlp'"):
        load_config(tmp_path / "conv.yaml")
    with pytest.raises(MetakitError, match="'model.hidden_sizes' applies to model.name mlp, not 'conv4'"):
        load_config("sinusoid", ["model.name=conv4"])
    (tmp_path / "c.yaml").write_text(
        "task: {name: sinusoid}\nmodel: {name: mlp}\nalgorithm: {name: protonet}\n"
    )
    with pytest.raises(MetakitError, match="algorithm 'protonet' classifies; task 'sinusoid' is regression"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(MetakitError, match="'task.test_alphabets' must name at least one held-out alphabet"):
        load_config("omniglot-maml-5way", ["task.test_alphabets=[]"])
    with pytest.raises(MetakitError, match=r"'eval.ways' is \[5, 20\], but a maml model has a 5-way head"):
        load_config("omniglot-maml-5way", ["eval.ways=[5,20]"])
    with pytest.raises(MetakitError, match=r"alphabets \['Korean'\] are in both"):
        load_config("omniglot-protonet", ["task.validation_alphabets=[Korean]"])
    with pytest.raises(
        MetakitError, match="'train.validate_every' \\(150\\) must be a multiple of train.log_every"
    ):
        load_config("omniglot-protonet", ["train.validate_every=150"])
    with pytest.raises(
        MetakitError, match="'eval.normalisation' must be one of \\['inductive', 'transductive'\\]"
    ):
        load_config("omniglot-protonet", ["eval.normalisation=batch"])


def test_unknown_held_out_alphabet_is_named(real_omniglot, tmp_path):
    config = load_config("omniglot-protonet", ["task.test_alphabets=[Klingon]"])
    with pytest.raises(MetakitError, match=r"unknown alphabet\(s\) \['Klingon'\]"):
        train(config, tmp_path / "run", progress=False)


def _held_out_runs(root, directory, alphabets=("Korean", "Balinese"), num_runs=3):
    """Lake-format runs from the held-out alphabets of the bundled configs."""
    groups = {}
    for name in ("images_background_small1", "images_background_small2"):
        with zipfile.ZipFile(root / f"{name}.zip") as archive:
            for path in sorted(n for n in archive.namelist() if n.endswith(".png")):
                _, alphabet, character, _ = path.split("/")
                if alphabet in alphabets:
                    groups.setdefault(alphabet, {}).setdefault(character, []).append(archive.read(path))
    return make_runs(groups, directory, num_runs=num_runs, generator=torch.Generator().manual_seed(0))


def test_reproduce_omniglot_smoke_writes_accuracy_and_lake_error(real_omniglot, tmp_path, cli):
    runs = _held_out_runs(real_omniglot, tmp_path / "lake")
    out = tmp_path / "repro"
    code, _, err = cli(
        "reproduce",
        "omniglot-minimal",
        "--algo",
        "protonet",
        "--budget",
        "smoke",
        "--out",
        out,
        "--runs",
        runs,
        "--json",
        "--quiet",
    )
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert set(results["accuracy"]) == {"5way1shot", "20way1shot"} == set(results["ci95"])
    assert 20 < results["accuracy"]["5way1shot"] <= 100 and results["normalisation"] == ["transductive"]
    assert len(results["lake_runs"]) == 3 and 0 <= results["lake_runs_mean_error"] <= 100
    rows = [
        json.loads(line) for line in (out / "omniglot-protonet" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all("val_accuracy" in row for row in rows)
    # the same checkpoint scored through `metakit omniglot-runs` gives the same error
    code, scored, err = cli(
        "omniglot-runs", "--runs", runs, "--checkpoint", out / "omniglot-protonet", "--json"
    )
    assert code == 0, err
    assert json.loads(scored)["mean_error"] == results["lake_runs_mean_error"]
    # metakit.load gives the trained ProtoNet back: its episodes score as results.json says
    algo = metakit.load(out / "omniglot-protonet")
    assert isinstance(algo.learner, PrototypicalNetwork) and algo.config.algorithm.name == "protonet"
    assert algo.evaluate()["accuracy"] == results["runs"]["omniglot-protonet"]["accuracy"]
    code, _, err = cli(
        "reproduce", "omniglot-minimal", "--algo", "mamal", "--budget", "smoke", "--out", tmp_path / "x"
    )
    assert code == 2 and "--algo, one of ['fomaml', 'maml', 'matching', 'protonet', 'reptile']" in err


@pytest.mark.heavy
def test_short_maml_run_beats_chance_on_held_out_alphabets_and_refuses_20way_runs(real_omniglot, tmp_path,
                                                                                   cli):
    config = load_config("omniglot-maml-5way", [
        "train.iterations=60", "train.meta_batch_size=10", "train.log_every=20", "train.validate_every=0",
        "eval.num_tasks=100", "eval.steps=[0,3]", "eval.normalisation=transductive"])
    results = train(config, tmp_path / "run", progress=False)
    assert results["normalisation"] == "transductive"
    # chance: 0.2; 60 iterations of 10 tasks reach 0.50 (float sums differ with the thread count)
    assert results["accuracy"]["5way1shot"] > 0.4, results
    assert results["accuracy_after_steps"]["5way1shot"]["0"] < 0.35  # the head knows nothing before adapting
    runs = _held_out_runs(real_omniglot, tmp_path / "lake", num_runs=1)
    code, _, err = cli("omniglot-runs", "--runs", runs, "--checkpoint", tmp_path / "run")
    assert code == 2 and "run01 is 20-way but this run's model has a 5-way head" in err
    # the same run evaluated again with the other normalisation policy, beside its results
    # (inductive: each query with the support set alone, 26 forward passes an episode)
    code, _, err = cli("eval", tmp_path / "run", "--set", "eval.normalisation=inductive",
                       "--set", "eval.num_tasks=20", "--results", tmp_path / "inductive.json", "--quiet")
    assert code == 0, err
    other = json.loads((tmp_path / "inductive.json").read_text())
    assert other["normalisation"] == "inductive" and other["eval_tasks"] == 20
    assert other["accuracy"]["5way1shot"] > 0.3, other
    assert json.loads((tmp_path / "run" / "results.json").read_text())["normalisation"] == "transductive"
    code, _, err = cli("eval", tmp_path / "run", "--set", "train.iterations=5")
    assert code == 2 and "only eval.* settings can change after training" in err
