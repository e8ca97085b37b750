"""The example scripts run."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_custom_sde_example():
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_sde.py")], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert any(line.startswith("ode") for line in lines) and "exact likelihood" in lines[-1]
    tvs = [float(line.split()[-3]) for line in lines[1:-1]]
    assert max(tvs) < 0.03


def test_train_toy_example(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "train_toy.py"), "--iters", "30", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "samples.png").is_file()
