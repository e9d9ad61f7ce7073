"""Fixtures every test module may use; test modules never import each other."""
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

OMNIGLOT = (
    Path(os.environ.get("METAKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "omniglot"
)


def pytest_collection_modifyitems(items):
    """Heavy tests first: pytest-xdist hands tests out in this order, and a heavy test handed out
    last keeps one worker busy while the other idles (15-30 s of a fresh clone's suite)."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield


@pytest.fixture(scope="session")
def omniglot_cache(tmp_path_factory):
    """One decode cache for the whole session, shared with the CLI subprocesses."""
    return tmp_path_factory.mktemp("metakit-cache")


@pytest.fixture
def real_omniglot(monkeypatch, omniglot_cache):
    """The official minimal Omniglot splits (skips where they are not installed), read
    through METAKIT_DATA, decoded once per test session."""
    if not (OMNIGLOT / "images_background_small1.zip").exists():
        pytest.skip(f"the official minimal Omniglot splits are not in {OMNIGLOT} (set METAKIT_DATA)")
    monkeypatch.setenv("METAKIT_DATA", str(OMNIGLOT.parent))
    monkeypatch.setenv("METAKIT_CACHE", str(omniglot_cache))
    return OMNIGLOT


def _drawing(seed: int) -> bytes:
    """A 105x105 binary PNG like Omniglot's: black strokes (0) on white (255)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.full((105, 105), 255, dtype=torch.uint8)
    for _ in range(3):
        r, c = torch.randint(10, 85, (2,), generator=g).tolist()
        pixels[r : r + 12, c : c + 12] = 0
    out = io.BytesIO()
    Image.fromarray(pixels.numpy()).convert("1").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def drawing():
    """drawing(seed) -> PNG bytes of a random Omniglot-like drawing."""
    return _drawing


@pytest.fixture
def make_archive():
    """make_archive(path, name, alphabets, drawings) -> a zip in the official Omniglot layout."""

    def make(path: Path, name: str, alphabets=(("Alpha", 3), ("Beta", 2)), drawings=4) -> Path:
        with zipfile.ZipFile(path, "w") as z:
            for alphabet, characters in alphabets:
                for c in range(1, characters + 1):
                    for d in range(1, drawings + 1):
                        z.writestr(
                            f"{name}/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png", _drawing(c * 100 + d)
                        )
        return path

    return make


@pytest.fixture
def cli(capsys):
    """Run `metakit ARGS` in this process: (exit code, stdout, stderr)."""
    from metakit.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse's own errors and --help
            code = exit_.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def cli_command(*args):
    return [sys.executable, "-m", "metakit.cli", *map(str, args)]


def _kill_at_first_checkpoint(command, run_dir, env):
    """Start `command` (a training run into run_dir) and SIGKILL it once its first checkpoint exists."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _whole_and_resumed_runs(config: str, overrides: list[str], iterations: int, tmp_path):
    """Train `config` uninterrupted, and again killed (SIGKILL, in a subprocess) at its first
    checkpoint and resumed, all on one thread (float sums then repeat exactly); returns the two
    run directories. Only the killed run needs a process of its own."""
    from metakit.cli import main
    from metakit.experiment import load_config, train

    overrides = [*overrides, f"train.iterations={iterations}"]
    sets = [a for s in overrides for a in ("--set", s)]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(config, overrides), whole, progress=False)
        _kill_at_first_checkpoint(
            cli_command("train", config, "--out", killed, "--quiet", *sets),
            killed,
            {**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert torch.load(killed / "checkpoint.pt", weights_only=True)["iteration"] < iterations, (
            "the run finished before it could be killed; the test proves nothing"
        )
        assert not (killed / "results.json").exists()
        assert (
            main(["train", config, "--out", str(killed), "--quiet", *sets]) == 2
        )  # refused without --resume
        train(load_config(config, overrides), killed, resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    return whole, killed


@pytest.fixture
def whole_and_resumed_runs():
    """f(config, overrides, iterations, tmp_path) -> (uninterrupted run dir, killed-and-resumed run dir)."""
    return _whole_and_resumed_runs


@pytest.fixture
def cli_subprocess():
    """Run `metakit ARGS` in a new process (for what must not share this one's state)."""

    def run(*args, env=None):
        return subprocess.run(cli_command(*args), capture_output=True, text=True, env=env)

    return run
