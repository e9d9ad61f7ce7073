"""Lake et al.'s one-shot runs: the reader, the scorer, MHD and the CLI, on runs made here."""
import json

import pytest
import torch

from metakit import MetakitError
from metakit.data.lake_runs import (
    ink_points,
    make_runs,
    mhd_classifier,
    modified_hausdorff,
    read_runs,
    score_runs,
)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, drawing):
    # 2 alphabets x 20 characters x 2 drawers; a character's drawers differ only slightly
    groups = {a: {f"character{c:02d}": [drawing(1000 * i + c), drawing(1000 * i + c)] for c in range(20)}
              for i, a in enumerate(["Alpha", "Beta"])}
    return make_runs(
        groups, tmp_path_factory.mktemp("runs"), num_runs=3, generator=torch.Generator().manual_seed(0)
    )


def test_reader_follows_the_official_format(runs_dir):
    runs = read_runs(runs_dir)
    assert [r.name for r in runs] == ["run01", "run02", "run03"]
    first = runs[0]
    assert len(first.training) == 20 and len(first.test) == 20 and sorted(first.answers) == list(range(20))
    line = (runs_dir / "run01" / "class_labels.txt").read_text().splitlines()[0]
    item, truth = line.split()
    assert item.startswith("run01/test/item") and truth.startswith("run01/training/class")
    assert first.training[first.answers[0]].name == truth.split("/")[-1]


def test_oracle_scores_zero_and_constant_guesser_95(runs_dir):
    runs = read_runs(runs_dir)
    assert score_runs(runs, lambda run: run.answers)["mean_error"] == 0.0
    constant = score_runs(runs, lambda run: [0] * len(run.test))
    assert constant["mean_error"] == 95.0
    assert [r["error"] for r in constant["runs"]] == [95.0, 95.0, 95.0]


def test_mhd_is_zero_on_identical_images_and_symmetric():
    a = ink_points(torch.rand(30, 30) > 0.8)
    b = ink_points(torch.rand(30, 30) > 0.8)
    assert modified_hausdorff(a, a) == 0.0
    assert modified_hausdorff(a, b) == modified_hausdorff(b, a) > 0
    # by hand: A = {0, 2}, B = {0} on a line (centred: {-1, 1} and {0}); means 1 and 1
    assert modified_hausdorff(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 0.0]])) == 1.0


def test_mhd_baseline_finds_identical_drawings(runs_dir):
    # test drawings equal their training drawing here, so MHD must be perfect
    assert score_runs(read_runs(runs_dir), mhd_classifier)["mean_error"] == 0.0


def test_cli_prints_each_run_and_the_mean(runs_dir, cli):
    code, out, _ = cli("omniglot-runs", "--runs", runs_dir, "--baseline", "mhd", "--json")
    assert code == 0
    result = json.loads(out)
    assert result == {"runs": [{"run": f"run0{i}", "error": 0.0} for i in (1, 2, 3)], "mean_error": 0.0}


def test_reader_errors(tmp_path, runs_dir, drawing):
    with pytest.raises(MetakitError, match="no run directories"):
        read_runs(tmp_path)
    broken = tmp_path / "run01"
    (broken / "training").mkdir(parents=True)
    (broken / "training" / "class01.png").write_bytes(drawing(1))
    with pytest.raises(MetakitError, match="class_labels.txt is missing"):
        read_runs(tmp_path)
    (broken / "class_labels.txt").write_text("run01/test/item01.png\n")
    with pytest.raises(MetakitError, match="line 1: expected 'test_image training_image'"):
        read_runs(tmp_path)
    (broken / "class_labels.txt").write_text("run01/test/item01.png run01/training/class01.png\n")
    with pytest.raises(MetakitError, match="item01.png, which does not exist"):
        read_runs(tmp_path)
