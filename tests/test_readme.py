"""The README's Python tour runs as written."""

import re
from pathlib import Path

import torch


def test_readme_python_tour_runs():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["x"].shape == (10_000, 2)
    assert torch.allclose(namespace["back"], namespace["data"], atol=1e-2)
    assert namespace["nfe"] > 0
