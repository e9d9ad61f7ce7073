"""Every Python block in the README and docs/ runs as pasted, with its sizes shrunk (loops to 3
rounds, task and episode counts to 4, training runs to 20 iterations), so the documentation
cannot rot."""
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(page, i, code) for page in PAGES
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))]


def shorten(code: str) -> str:
    """range(10_000) -> range(min(10_000, 3)), num_tasks=20 -> min(20, 4), ...: the same code,
    smaller."""
    code = re.sub(r"range\(([\d_]+)\)", r"range(min(\1, 3))", code)
    code = re.sub(r"\b(num_tasks|episodes|num_trials|pulls)=([\d_]+)", r"\1=min(\2, 4)", code)
    code = re.sub(r"sample_tasks\(([\d_]+)\)", r"sample_tasks(min(\1, 4))", code)
    return re.sub(r"train\.iterations=(\d+)", "train.iterations=20", code)


def test_there_are_blocks_to_run():
    assert len(BLOCKS) >= 6 and {page.name for page, _, _ in BLOCKS} >= {"README.md", "usage.md", "rl2.md"}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_code_block_closes_on_a_line_of_its_own(page):
    """A closing fence with text after it does not close: the block runs on into the prose."""
    fences = [line.strip() for line in page.read_text().splitlines() if line.lstrip().startswith("```")]
    assert all(re.fullmatch(r"```[\w-]*", f) for f in fences[0::2]), fences
    assert all(f == "```" for f in fences[1::2]) and len(fences) % 2 == 0, fences


@pytest.mark.parametrize("page, index, code", BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in BLOCKS])
def test_block_runs_as_pasted(page, index, code, tmp_path, monkeypatch, request):
    if "load_omniglot" in code:
        request.getfixturevalue("real_omniglot")  # the data (skips where it is not installed)
    monkeypatch.chdir(tmp_path)  # blocks that write runs/ write here
    if "reproduce-mbmpo-halfcheetah/mbmpo" in code:  # a block that reads a trained run: a tiny one
        from metakit.experiment import load_config, train
        from metakit.experiment.reproduce_mbmpo import BUDGETS

        config = load_config("mbmpo-halfcheetah", [*BUDGETS["smoke"]["mbmpo"], "train.iterations=1"])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # MuJoCo copies in this process: no worker processes to spawn
        try:
            train(config, tmp_path / "runs/reproduce-mbmpo-halfcheetah/mbmpo", progress=False)
        finally:
            torch.set_num_threads(threads)
    exec(compile(shorten(code), f"{page.name} block {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("row, section", [
    ("maml-trpo", "metakit.experiment.maml_trpo:MAMLTRPOSection"),
    ("mbmpo", "metakit.experiment.mbmpo:MBMPOSection"),
    ("rl2", "metakit.experiment.rl2:RL2Section"),
])
def test_usage_names_every_algorithm_key_of_the_meta_rl_configs(row, section):
    """docs/usage.md's table of keys: a key added to a config and not to its row is found here."""
    import dataclasses
    import importlib

    module, name = section.split(":")
    line = next(line for line in (ROOT / "docs" / "usage.md").read_text().splitlines()
                if line.startswith(f"| {row} |"))
    keys = [f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))]
    missing = [k for k in keys if k != "name" and not re.search(rf"\b{k}\b", line.split("`algorithm`")[1])]
    assert not missing, f"docs/usage.md's {row} row lacks {missing}"
