"""Lake et al.'s 20 one-shot classification runs: reader, scorer and the MHD baseline.

Format of the official runs (and of any directory this reads): DIR/runNN/ holds
training/classNN.png (one image per class), test/itemNN.png, and class_labels.txt with one
line per test item, `runNN/test/itemXX.png runNN/training/classYY.png` (paths relative to DIR).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import MetakitError


@dataclass
class Run:
    name: str
    training: list[Path]  # one image per class
    test: list[Path]
    answers: list[int]  # for each test item, the index of its class in `training`


def read_runs(directory: str | Path) -> list[Run]:
    directory = Path(directory)
    run_dirs = sorted(p for p in directory.glob("run*") if p.is_dir())
    if not run_dirs:
        raise MetakitError(f"no run directories (run01, run02, ...) in {directory}")
    return [_read_run(directory, run_dir) for run_dir in run_dirs]


def _read_run(directory: Path, run_dir: Path) -> Run:
    labels = run_dir / "class_labels.txt"
    if not labels.is_file():
        raise MetakitError(f"{labels} is missing; each run directory needs its class_labels.txt")
    training = sorted((run_dir / "training").glob("*.png"))
    if not training:
        raise MetakitError(f"{run_dir / 'training'} holds no PNG images")
    position = {p.resolve(): i for i, p in enumerate(training)}
    test, answers = [], []
    for number, line in enumerate(labels.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise MetakitError(f"{labels} line {number}: expected 'test_image training_image', got {line!r}")
        item, truth = (directory / f for f in fields)
        for path in (item, truth):
            if not path.is_file():
                raise MetakitError(f"{labels} line {number} names {path}, which does not exist")
        if truth.resolve() not in position:
            raise MetakitError(f"{labels} line {number}: {truth} is not one of the run's training images")
        test.append(item)
        answers.append(position[truth.resolve()])
    if not test:
        raise MetakitError(f"{labels} lists no test items")
    return Run(run_dir.name, training, test, answers)


def score_runs(runs: list[Run], classify: Callable[[Run], list[int]]) -> dict:
    """Error rate in percent of each run and their mean; classify(run) gives, for each test
    item, the index of the training image it is matched to."""
    rows = []
    for run in runs:
        predicted = list(classify(run))
        if len(predicted) != len(run.test):
            raise MetakitError(
                f"{run.name}: the classifier answered {len(predicted)} items, expected {len(run.test)}"
            )
        wrong = sum(p != a for p, a in zip(predicted, run.answers))
        rows.append({"run": run.name, "error": 100.0 * wrong / len(run.test)})
    return {"runs": rows, "mean_error": sum(r["error"] for r in rows) / len(rows)}


def load_ink(path: Path) -> torch.Tensor:
    """Bool [H, W]: True where the image is dark (ink)."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("L")) < 128)


def ink_points(ink: torch.Tensor) -> torch.Tensor:
    """Coordinates [n, 2] of the inked pixels, centred on their mean."""
    points = ink.nonzero().double()
    if points.numel() == 0:
        raise MetakitError("an image has no ink (dark) pixels")
    return points - points.mean(0)


def modified_hausdorff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dubuisson & Jain (1994): the larger of the two mean nearest-neighbour distances."""
    distances = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")  # exact: MHD(a, a) = 0
    return max(distances.min(1).values.mean().item(), distances.min(0).values.mean().item())


def mhd_classifier(run: Run) -> list[int]:
    """Lake et al.'s baseline: each test item goes to the training image at the smallest MHD."""
    training = [ink_points(load_ink(p)) for p in run.training]
    answers = []
    for item in run.test:
        points = ink_points(load_ink(item))
        answers.append(min(range(len(training)), key=lambda j: modified_hausdorff(points, training[j])))
    return answers


def make_runs(
    drawings: dict[str, dict[str, list[bytes]]],
    directory: str | Path,
    num_runs: int = 20,
    ways: int = 20,
    generator: torch.Generator | None = None,
) -> Path:
    """Write runs in the official format from PNG bytes grouped as alphabet -> character ->
    drawings: each run is `ways`-way within one alphabet, its training images by one drawer
    and its test items by another, in shuffled order (how Lake et al. built theirs)."""
    directory = Path(directory)
    alphabets = sorted(a for a, chars in drawings.items() if len(chars) >= ways)
    if not alphabets:
        raise MetakitError(f"no alphabet has the {ways} characters a {ways}-way run needs")
    for r in range(1, num_runs + 1):
        alphabet = alphabets[int(torch.randint(len(alphabets), (1,), generator=generator))]
        names = sorted(drawings[alphabet])
        chosen = [names[i] for i in torch.randperm(len(names), generator=generator)[:ways].tolist()]
        count = min(len(drawings[alphabet][c]) for c in chosen)
        drawer, other = torch.randperm(count, generator=generator)[:2].tolist()
        run = directory / f"run{r:02d}"
        (run / "training").mkdir(parents=True, exist_ok=True)
        (run / "test").mkdir(parents=True, exist_ok=True)
        lines = []
        for item, c in enumerate(torch.randperm(ways, generator=generator).tolist(), 1):
            (run / "training" / f"class{c + 1:02d}.png").write_bytes(drawings[alphabet][chosen[c]][drawer])
            (run / "test" / f"item{item:02d}.png").write_bytes(drawings[alphabet][chosen[c]][other])
            lines.append(f"{run.name}/test/item{item:02d}.png {run.name}/training/class{c + 1:02d}.png")
        (run / "class_labels.txt").write_text("\n".join(lines) + "\n")
    return directory
