"""Every Python block of the documentation site runs as written: page by page, in order, one namespace per page,
in a scratch folder (with the repository's configs/ and test checkpoints, and a tiny stand-in for `make demo`'s
run at outputs/digits)."""

import re
from pathlib import Path

import pytest
import torch

from scoresde.config import load_config
from scoresde.train import train

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
TINY_DEMO = ["training.n_iters=4", "training.snapshot_every=4", "training.batch_size=16", "model.net.nf=8",
             "training.log_every=2"]  # fmt: skip


def blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


# what some pages compute, checked after they run (name -> check on the page's namespace)
CHECKS = {
    "guides/python-api.md": lambda ns: torch.allclose(ns["back"], ns["data"], atol=1e-2),
    "guides/likelihood.md": lambda ns: ns["error"] < 0.02 and torch.allclose(ns["back"], ns["data"], atol=1e-2),
    "getting-started.md": lambda ns: ns["filled"].shape == (8, 1, 8, 8) and ns["bpd"].shape == (16,),
    "guides/official.md": lambda ns: ns["official_samples"].shape == (4, 1, 8, 8),
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    train(load_config(ROOT / "configs" / "digits_vp.toml", TINY_DEMO), folder / "digits", progress=False)
    return folder


def test_every_page_with_code_is_checked_or_has_none():
    with_code = {str(p.relative_to(DOCS)) for p in PAGES if blocks(p)}
    assert set(CHECKS) <= with_code and "guides/sde-view.md" in with_code


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: str(p.relative_to(DOCS)))
def test_the_page_code_runs(page, tmp_path, monkeypatch, demo_run):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the official-format test checkpoints
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "digits").symlink_to(demo_run / "digits")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks(page):
        exec(compile(block, str(page), "exec"), namespace)
    check = CHECKS.get(str(page.relative_to(DOCS)))
    assert check is None or check(namespace)


def test_the_site_builds_in_strict_mode(tmp_path):
    """Sphinx with -W -n: any warning, broken cross-reference or missing page fails; math is served locally."""
    import subprocess
    import sys

    pytest.importorskip("sphinx", reason="the docs extra (sphinx, furo, myst-parser) is not installed")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS),
                           str(tmp_path / "site")], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "site" / "guides" / "sde-view.html").read_text()  # a page with math
    assert "_static/mathjax/tex-chtml.js" in page and "cdn." not in page.lower()
    for page in ("getting-started", "guides/sde-view", "reference", "benchmarks"):
        assert (tmp_path / "site" / f"{page}.html").is_file()


def test_the_walkthrough_shows_every_figure_the_command_draws():
    from scoresde.figures import FIGURES

    text = (DOCS / "guides" / "sde-view.md").read_text()
    for name in FIGURES:
        assert f"../figures/{name}.png" in text and (DOCS / "figures" / f"{name}.png").is_file(), name
