"""The README's Python blocks run as written, in order, in one namespace (the site's pages: tests/test_docs.py)."""

import re
from pathlib import Path

import torch

from scoresde.config import load_config
from scoresde.train import train

ROOT = Path(__file__).parents[1]
# the README's Python example reads `make demo`'s run; here a tiny digits run of the same config stands in for it
TINY_DEMO = ["training.n_iters=4", "training.snapshot_every=4", "training.batch_size=16", "model.net.nf=8",
             "training.log_every=2"]  # fmt: skip


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 1
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the official-format test checkpoints
    monkeypatch.chdir(tmp_path)
    train(load_config(ROOT / "configs" / "digits_vp.toml", TINY_DEMO), "outputs/digits", progress=False)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["filled"].shape == (8, 1, 8, 8) and namespace["bpd"].shape == (16,)
    torch.testing.assert_close(namespace["filled"][..., :4], namespace["originals"][..., :4])
