"""Preset configs ship in the package: listed, trainable by name from an installed wheel outside the repository;
a starter config for an image folder; a flat image folder holds out a test split."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scoresde.build import HOLDOUT_EVERY, load_dataset
from scoresde.cli import main
from scoresde.config import PRESETS_DIR, config_path, load_config, presets

ROOT = Path(__file__).parents[1]


def test_the_presets_are_the_repository_configs_and_load_by_name(tmp_path, monkeypatch):
    names = presets()
    assert set(names) == {p.stem for p in (ROOT / "configs").glob("*.toml")} and "digits_vp" in names
    assert names["digits_vp"].startswith("The main job")
    monkeypatch.chdir(tmp_path)  # outside the repository: no configs/ folder here
    assert config_path("digits_vp") == config_path("digits_vp.toml") == PRESETS_DIR / "digits_vp.toml"
    assert load_config("digits_vp").data.dataset == "digits"
    with pytest.raises(FileNotFoundError, match="not a preset; presets: cifar10_small_vp"):
        load_config("digits_vq")
    (tmp_path / "digits_vp.toml").write_text('[data]\ndataset = "toy"\n')  # a file of that name wins
    assert load_config("digits_vp.toml").data.dataset == "toy"


def test_configs_lists_and_prints_the_presets(capsys):
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name} " in listing for name in presets())
    assert main(["configs", "toy_mixture"]) == 0
    assert capsys.readouterr().out == (PRESETS_DIR / "toy_mixture.toml").read_text()
    assert main(["configs", "nothing"]) == 2
    assert "presets:" in capsys.readouterr().err


def test_an_installed_wheel_trains_a_preset_outside_the_repository(tmp_path):
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir)], check=True, capture_output=True, timeout=300)  # fmt: skip
    wheel = next(wheel_dir.glob("scoresde-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)  # fmt: skip
    env = {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "scoresde.cli", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = subprocess.run([sys.executable, "-c", "import scoresde; print(scoresde.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert where.startswith(str(site))  # the wheel, not the repository
    listing = run("--help")  # every preset is named in the help
    assert all(f"  {name}\n" in listing for name in presets()) and "digits_vp" in run("configs")
    out = run("train", "digits_vp", "--workdir", "d", "--set", "training.n_iters=2", "--set",
              "training.snapshot_every=2", "--set", "training.batch_size=8", "--set", "model.net.nf=8")  # fmt: skip
    assert "trained 2 steps" in out and (work / "d" / "checkpoints").is_dir()


def _images(folder: Path, n: int, size: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def test_a_flat_image_folder_holds_out_every_tenth_image(tmp_path):
    _images(tmp_path / "flat", 25)
    cfg = load_config(None, ["data.dataset=image_folder", f"data.root={tmp_path / 'flat'}", "data.channels=3"])
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert (len(train), len(test)) == (25 - 25 // HOLDOUT_EVERY, 25 // HOLDOUT_EVERY)
    every = Image.open(tmp_path / "flat" / "009.png")
    assert torch.equal(test.images[0], torch.from_numpy(np.array(every)).permute(2, 0, 1).to(test.images.dtype))
    _images(tmp_path / "few", 5)
    cfg.data.root = str(tmp_path / "few")
    with pytest.raises(ValueError, match="too few to hold out a test split"):
        load_dataset(cfg, "test")
    _images(tmp_path / "half" / "train", 3)
    cfg.data.root = str(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="has a train/ folder but no test/ folder"):
        load_dataset(cfg, "test")


def test_init_config_writes_a_starter_that_trains(tmp_path, capsys):
    _images(tmp_path / "mine", 20, size=16)
    out = tmp_path / "mine.toml"
    assert main(["init-config", "--root", str(tmp_path / "mine"), "--image-size", "16", "--out", str(out)]) == 0
    cfg = load_config(out, ["training.n_iters=2", "training.snapshot_every=2", "training.batch_size=4",
                            "model.net.nf=8"])  # fmt: skip
    assert (cfg.data.dataset, cfg.data.image_size, cfg.data.channels, cfg.data.flip) == ("image_folder", 16, 3, True)
    assert cfg.data.root == str((tmp_path / "mine").resolve())
    assert "every 10th image" in out.read_text()
    from scoresde.train import train

    train(cfg, tmp_path / "run", progress=False)
    assert main(["init-config", "--root", str(tmp_path / "mine"), "--image-size", "16", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err  # never overwritten
    assert main(["init-config", "--root", str(tmp_path / "none"), "--image-size", "16", "--out",
                 str(tmp_path / "x.toml")]) == 2  # fmt: skip
    assert not (tmp_path / "x.toml").exists()
