"""Configs, checkpoints, the trainer (exact resume after SIGKILL, DDP with gloo) and the CLI."""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scoresde.build import build_model, build_score
from scoresde.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_weights_strict,
    prune_checkpoints,
    save_checkpoint,
)
from scoresde.cli import main
from scoresde.config import ConfigError, load_config, parse_override
from scoresde.model import load_for_inference
from scoresde.nets import count_parameters
from scoresde.sampling import sample
from scoresde.toy import demo_mixture, mixture_errors
from scoresde.train import EMA, learning_rate, train
from scoresde.validation import check_config

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
TOY = CONFIGS / "toy_mixture.toml"
FAST = ["sampling.steps=20", "training.log_every=10"]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.training.n_iters > 0


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("cifar10_ve_ncsnpp_continuous", 62_758_915),
        ("cifar10_ve_ncsnpp_deep_continuous", 107_587_075),
        ("cifar10_vp_ddpmpp_continuous", 61_804_419),
        ("cifar10_subvp_ddpmpp_continuous", 61_804_419),
        ("cifar10_vp_ddpmpp_deep_continuous", 106_632_579),
        ("cifar10_subvp_ddpmpp_deep_continuous", 106_632_579),
        ("cifar10_vp_ddpm", 35_218_947),
    ],
)
def test_cifar10_configs_build_the_paper_models(name, count):
    cfg = load_config(CONFIGS / f"{name}.toml")
    with torch.device("meta"):
        assert count_parameters(build_model(cfg)) == count


def test_config_errors_and_overrides(tmp_path):
    assert parse_override("training.lr=1e-4") == ("training", "lr", 1e-4)
    assert parse_override("sampling.sampler=ode") == ("sampling", "sampler", "ode")
    assert parse_override("model.net.nf=64") == ("model", "net", {"nf": 64})
    cfg = load_config(TOY, ["training.lr=0.5", "model.net.hidden=64", "data.data_range=[0.0, 1.0]"])
    assert cfg.training.lr == 0.5 and cfg.model.net["hidden"] == 64 and cfg.model.net["depth"] == 3
    assert cfg.data.data_range == [0.0, 1.0]
    with pytest.raises(ConfigError, match=r"unknown key training\.lrate"):
        load_config(TOY, ["training.lrate=1"])
    with pytest.raises(ConfigError, match=r"unknown config section \[optim\]"):
        load_config(TOY, ["optim.lr=1"])
    with pytest.raises(ConfigError, match=r"training\.n_iters must be int"):
        load_config(TOY, ["training.n_iters=1.5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(TOY, ["training.lr"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\nlr = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="model.arch"):
        build_model(load_config(TOY, ["model.arch=transformer"]))
    with pytest.raises(ValueError, match="does not accept"):
        build_model(load_config(TOY, ["model.net.width=3"]))


def test_checkpoint_round_trip_and_corruption(tmp_path):
    tensors = {"model.w": torch.randn(3, 4), "rng.data": torch.Generator().get_state()}
    path = save_checkpoint(tmp_path / "checkpoint_00000007.safetensors", tensors, {"step": 7, "config": {}})
    loaded, meta = load_checkpoint(path)
    assert meta["step"] == 7 and torch.equal(loaded["model.w"], tensors["model.w"])
    assert load_checkpoint(tmp_path)[1]["step"] == 7  # a folder means its newest checkpoint
    assert (tmp_path / "checkpoint_00000007.json").is_file()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "checkpoint_00000009.safetensors")
    (tmp_path / ".checkpoint_00000009.safetensors.abc.tmp").write_bytes(b"partial")
    for step in (10, 20, 30):
        save_checkpoint(tmp_path / f"checkpoint_{step:08d}.safetensors", tensors, {"step": step})
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == "checkpoint_00000030.safetensors"
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name[11:19] for p in list_checkpoints(tmp_path)] == ["00000020", "00000030"]


def test_strict_loading_names_the_mismatch():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = model.state_dict()
    load_weights_strict(model, state)
    wrong = dict(state)
    wrong["1.weight"] = torch.zeros(2, 3)
    del wrong["1.bias"]
    wrong["2.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_weights_strict(model, wrong)
    message = str(err.value)
    assert "1.bias" in message and "2.weight" in message and "1.weight" in message and "(2, 3)" in message


def test_ema_and_warmup():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, 0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    ema.update(model)
    assert float(ema.shadow["weight"]) == pytest.approx(1 - 0.9**2)
    with ema.applied(model):
        assert float(model.weight.detach()) == pytest.approx(0.19)
    assert float(model.weight.detach()) == 1.0
    cfg = load_config(TOY, ["training.lr=1e-3", "training.warmup=100"])
    assert learning_rate(cfg, 0) == pytest.approx(1e-5) and learning_rate(cfg, 99) == 1e-3
    assert learning_rate(cfg, 5000) == 1e-3


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_learning_rate_decay_after_the_warmup(decay):
    # 100 warm-up updates, then 400 updates whose rate falls from lr towards 0: half way (update 300) the cosine
    # and the linear decay both give lr / 2; the last update keeps a positive rate; the warmup is unchanged
    cfg = load_config(TOY, ["training.lr=1e-3", "training.warmup=100", "training.n_iters=500",
                            f"training.lr_decay={decay}"])  # fmt: skip
    assert learning_rate(cfg, 0) == pytest.approx(1e-5) and learning_rate(cfg, 99) == pytest.approx(1e-3)
    assert learning_rate(cfg, 100) == pytest.approx(1e-3)
    assert learning_rate(cfg, 300) == pytest.approx(5e-4)
    quarter = 1e-3 * (0.5 * (1 + math.cos(math.pi / 4)) if decay == "cosine" else 0.75)
    assert learning_rate(cfg, 200) == pytest.approx(quarter)
    rates = [learning_rate(cfg, step) for step in range(100, 500)]
    assert all(a > b for a, b in itertools.pairwise(rates)) and 0 < rates[-1] < 1e-3 / 50


def test_unknown_learning_rate_decay_is_one_line_error():
    with pytest.raises(ValueError, match="unknown training.lr_decay 'step'; choose one of 'none', 'cosine'"):
        check_config(load_config(TOY, ["training.lr_decay=step"]))


def test_ema_warmup_forgets_the_initialisation():
    # with the weights held at 1 from an EMA of 0, e_n = 1 - prod_k d_k, d_k = min(d, (1 + k) / (10 + k))
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(50):
        ema.update(model)
    remaining = math.prod(min(0.999, (1 + k) / (10 + k)) for k in range(50))
    assert remaining < 1e-9
    assert float(ema.shadow["weight"]) == pytest.approx(1 - remaining, abs=1e-7)
    assert ema.num_updates == 50 and ema.current_decay() == pytest.approx(51 / 60)
    for _ in range(20_000):
        ema.num_updates += 1
    assert ema.current_decay() == 0.999


def test_mlp_trained_on_the_mixture_recovers_the_mode_weights(tmp_path):
    cfg = load_config(TOY, ["training.n_iters=1500", "training.snapshot_every=1500", *FAST])
    final = train(cfg, tmp_path, progress=False)
    cfg, sde, model = load_for_inference(final)
    x = sample(sde, build_score(model, sde, cfg), (8000, 2), sampler="euler_maruyama", steps=500,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    mixture = demo_mixture()
    errors = mixture_errors(mixture, x, mixture.sample(50_000, generator=torch.Generator().manual_seed(1)))
    assert errors["tv"] < 0.05, errors
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "samples" / "step_00001500.png").is_file()
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 150 and "images_per_s" in lines[-1]
    left = [json.loads(line)["seconds_left"] for line in lines]
    assert left[-1] == 0 and all(v > 0 for v in left[:-1])  # the time left, falling to 0 at the last step


def _train_cmd(workdir, *extra):
    return [sys.executable, "-m", "scoresde.cli", "--threads", "1", "train", str(TOY), "--workdir", str(workdir),
            "--no-progress", "--set", "training.n_iters=240", "--set", "training.snapshot_every=40",
            "--set", "sampling.steps=5", "--set", "training.keep=10", *extra]  # fmt: skip


def test_resume_after_sigkill_is_exact(tmp_path):
    reference = tmp_path / "straight"
    subprocess.run(_train_cmd(reference), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(killed / "checkpoints")) < 2:
        for ckpt in list_checkpoints(killed / "checkpoints"):  # every visible checkpoint is readable
            load_checkpoint(ckpt)
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(killed / "checkpoints")
    assert 2 <= len(done) < 6, "the run should have been killed mid-way"
    for ckpt in done:
        load_checkpoint(ckpt)
    subprocess.run(_train_cmd(killed), check=True, capture_output=True)
    a, _ = load_checkpoint(reference / "checkpoints")
    b, meta = load_checkpoint(killed / "checkpoints")
    assert meta["step"] == 240 and set(a) == set(b)
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 240  # no duplicated records after the resume
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_ddp_with_two_gloo_processes_matches_one_process(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    extra = ["--set", "training.n_iters=40", "--set", "training.snapshot_every=40", "--set", "training.batch_size=64"]
    cmd = _train_cmd(single, *extra)
    subprocess.run(cmd, check=True, capture_output=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
              "scoresde.cli", *_train_cmd(multi, *extra)[3:]]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, meta_a = load_checkpoint(single / "checkpoints")
    b, meta_b = load_checkpoint(multi / "checkpoints")
    assert meta_a["world_size"] == 1 and meta_b["world_size"] == 2
    for key in (k for k in a if k.startswith(("model.", "ema."))):
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy")
    cfg = load_config(TOY, ["training.n_iters=100", "training.snapshot_every=100", *FAST])
    return train(cfg, workdir, progress=False)


def test_cli_sample_and_likelihood(toy_checkpoint, tmp_path, capsys):
    png, npz = tmp_path / "s.png", tmp_path / "s.npz"
    assert main(["sample", str(toy_checkpoint), "--steps", "20", "-n", "300", "--out", str(png)]) == 0
    assert png.is_file()
    assert main(["sample", str(toy_checkpoint.parent), "--sampler", "ode", "--option", "rtol=1e-3",
                 "--option", "atol=1e-3", "-n", "50", "--out", str(npz)]) == 0  # fmt: skip
    import numpy as np

    assert np.load(npz)["samples"].shape == (50, 2)
    assert main(["likelihood", str(toy_checkpoint), "--rtol", "1e-3", "--atol", "1e-3", "--batch-size", "20000",
                 "--out", str(tmp_path / "ll.json")]) == 0  # fmt: skip
    assert "nats/sample" in capsys.readouterr().out


def test_cli_errors_are_clear(toy_checkpoint, tmp_path, capsys):
    assert main(["sample", str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    broken = tmp_path / "checkpoint_00000001.safetensors"
    broken.write_bytes(b"\x00" * 64)
    assert main(["likelihood", str(broken)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["sample", str(toy_checkpoint), "--sampler", "leapfrog"]) == 2
    assert "unknown sampler" in capsys.readouterr().err
    assert main(["sample", str(toy_checkpoint), "--out", str(tmp_path / "x.gif"), "--steps", "3", "-n", "4"]) == 2
    assert main(["train", str(TOY), "--workdir", str(tmp_path / "w"), "--set", "training.lrate=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_digits_main_job_smoke(tmp_path, capsys):
    """The main job's three commands on the real config, with a handful of steps."""
    work = tmp_path / "digits"
    args = ["--set", "training.n_iters=6", "--set", "training.snapshot_every=3", "--set", "sampling.steps=5"]
    assert main(["train", str(CONFIGS / "digits_vp.toml"), "--workdir", str(work), "--no-progress", *args]) == 0
    assert main(["sample", str(work / "checkpoints"), "--steps", "5", "-n", "16", "--out", str(work / "g.png")]) == 0
    assert main(["sample", str(work / "checkpoints"), "--steps", "5", "-n", "4", "--out", str(work / "g.npz")]) == 0
    assert main(["likelihood", str(work / "checkpoints"), "-n", "40", "--rtol", "1e-2", "--atol", "1e-2"]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "4.087" in out
    import numpy as np

    levels = np.load(work / "g.npz")["levels"]
    assert levels.shape == (4, 1, 8, 8) and levels.max() <= 16


@pytest.mark.slow  # two torchrun launches (35 s); test_ddp_with_two_gloo_processes_matches_one_process runs by default
def test_distributed_likelihood_and_sampling(toy_checkpoint, tmp_path):
    """Two gloo processes split the work with no collectives during the solves; the likelihood
    (exact divergence, per-sample error control) equals the single-process result."""
    import json

    base = ["likelihood", str(toy_checkpoint), "--exact", "--rtol", "1e-3", "--atol", "1e-3", "--batch-size", "700"]
    assert main([*base, "--out", str(tmp_path / "single.json")]) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
              "scoresde.cli", "--threads", "1"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([*launch, *base, "--out", str(tmp_path / "multi.json")], capture_output=True, text=True,
                         env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    single = json.loads((tmp_path / "single.json").read_text())
    multi = json.loads((tmp_path / "multi.json").read_text())
    assert multi["mean"] == pytest.approx(single["mean"], rel=1e-5)  # only matmul rounding differs
    npz, one = tmp_path / "s.npz", tmp_path / "one.npz"
    run = subprocess.run([*launch, "sample", str(toy_checkpoint), "--steps", "5", "-n", "5", "--out", str(npz)],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    import numpy as np

    assert main(["sample", str(toy_checkpoint), "--steps", "5", "-n", "5", "--out", str(one)]) == 0
    # one noise stream per sample: two ranks draw the single-process samples (to matmul rounding)
    np.testing.assert_allclose(np.load(npz)["samples"], np.load(one)["samples"], rtol=1e-5, atol=1e-5)
