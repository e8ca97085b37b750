"""The README's Python blocks run as written, in order, in one namespace."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the official-format test checkpoints
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["x"].shape == (4000, 2)
    assert torch.allclose(namespace["back"], namespace["data"], atol=1e-2)
    assert (tmp_path / "runs" / "toy" / "checkpoints").is_dir()
    assert namespace["official_samples"].shape == (4, 1, 8, 8)
