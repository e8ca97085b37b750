"""The CLI demo and the PNG writers."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde.cli import main
from scoresde.plotting import save_image_grid, save_line_plot, save_scatter_grid


def test_demo_writes_png_and_results(tmp_path, capsys):
    assert main(["demo", "--quick", "-n", "400", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PF-ODE rk45" in out and "log-likelihood" in out
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {r["sde"] for r in rows} == {"vp", "subvp", "ve"}
    assert all(r["nfe"] > 0 for r in rows)
    with Image.open(tmp_path / "samples.png") as img:
        assert img.size[0] > 1000 and img.size[1] > 500


def test_cli_help_and_bad_arguments():
    run = subprocess.run([sys.executable, "-m", "scoresde.cli", "demo", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "example" in run.stdout
    run = subprocess.run([sys.executable, "-m", "scoresde.cli", "fly"], capture_output=True, text=True)
    assert run.returncode != 0 and "invalid choice" in run.stderr
    assert main(["demo", "-n", "5"]) == 2


def test_png_writers(tmp_path):
    pts = torch.randn(500, 2)
    path = save_scatter_grid([("a", pts), ("b", pts.numpy() + 1)], tmp_path / "s.png", cols=2)
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size[0] > 400
    grid = save_image_grid(torch.rand(10, 1, 8, 8), tmp_path / "g.png", nrow=5, scale=2)
    with Image.open(grid) as img:
        assert img.size == ((5 * 9 + 1) * 2, (2 * 9 + 1) * 2)
    line = save_line_plot({"loss": (np.arange(10), np.exp(-np.arange(10)))}, tmp_path / "l.png", log_y=True)
    assert line.exists()
    with pytest.raises(ValueError):
        save_image_grid(torch.rand(2, 8, 8), tmp_path / "x.png")
    with pytest.raises(ValueError):
        save_scatter_grid([("bad", torch.randn(5, 3))], tmp_path / "y.png")
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind
