"""Bad input and faults at the CLI and the trainer: one clear line on stderr, exit code 2, checked before any
work, and nothing already written lost or mixed up. Also the config -> objects module and progress bars."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde.build
import scoresde.checkpoint
from scoresde.build import ARCHS, DATASETS, LOSSES, SDES, build_sde
from scoresde.checkpoint import LOCK_NAME, list_checkpoints, load_checkpoint, workdir_lock
from scoresde.cli import main
from scoresde.config import ConfigError, load_config
from scoresde.devices import pick_device
from scoresde.sampling.options import parse_sampler_options
from scoresde.sde import VESDE, VPSDE, SubVPSDE
from scoresde.train import train
from scoresde.validation import check_config

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
TOY = CONFIGS / "toy_mixture.toml"
QUICK = ["--no-progress", "--set", "training.n_iters=10", "--set", "training.snapshot_every=10",
         "--set", "training.log_every=5", "--set", "sampling.steps=5", "--set", "data.toy_size=2000"]  # fmt: skip


def _train_args(workdir, *extra):
    return ["--threads", "1", "train", str(TOY), "--workdir", str(workdir), *QUICK, *extra]


def _error(capsys) -> str:
    """The command's stderr, which must be one line and no traceback."""
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy")
    cfg = load_config(TOY, ["training.n_iters=10", "training.snapshot_every=10", "sampling.steps=5",
                            "data.toy_size=300"])  # fmt: skip
    return train(cfg, workdir, progress=False)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading a model or a dataset."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the command did expensive work before rejecting its input")

    import scoresde.evaluate  # loaded before the patch: it binds load_dataset at import, and must bind the real one

    monkeypatch.setattr(scoresde.checkpoint.Checkpoint, "tensors", forbidden)
    monkeypatch.setattr(scoresde.build, "load_dataset", forbidden)


# -- A: config -> objects lives in scoresde.build; inference never imports the trainer ---------
def test_registries_are_dicts_and_build_the_sdes():
    for registry in (SDES, DATASETS, ARCHS, LOSSES):
        assert type(registry) is dict
    for name, kind in (("vp", VPSDE), ("subvp", SubVPSDE), ("ve", VESDE)):
        assert type(build_sde(load_config(TOY, [f"sde.type={name}"]))) is kind


def test_sample_and_likelihood_do_not_import_the_trainer(ckpt, tmp_path):
    script = (
        "import sys\n"
        "from scoresde.cli import main\n"
        f"assert main(['sample', {str(ckpt)!r}, '--steps', '3', '-n', '8', '--out', {str(tmp_path / 's.npz')!r}])"
        " == 0\n"
        f"assert main(['likelihood', {str(ckpt)!r}, '--rtol', '1e-2', '--atol', '1e-2', '--batch-size', '5000'])"
        " == 0\n"
        "print('TRAINER IMPORTED' if 'scoresde.train' in sys.modules else 'TRAINER NOT IMPORTED')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "TRAINER NOT IMPORTED" in run.stdout


# -- B1: --no-resume refuses a used workdir; --overwrite starts clean ------------------------------
def _used_workdir(tmp_path, capsys):
    work = tmp_path / "run"
    assert main(_train_args(work, "--set", "training.n_iters=20", "--set", "training.keep=10")) == 0
    capsys.readouterr()
    assert [p.name for p in list_checkpoints(work / "checkpoints")] == [
        "checkpoint_00000010.safetensors",
        "checkpoint_00000020.safetensors",
    ]
    return work


def test_no_resume_refuses_a_workdir_with_checkpoints(tmp_path, capsys):
    work = _used_workdir(tmp_path, capsys)
    before = {p.name: p.read_bytes() for p in (work / "checkpoints").iterdir()}
    log = (work / "log.jsonl").read_text()
    assert main(_train_args(work, "--no-resume")) == 2
    err = _error(capsys)
    assert str(work) in err and "checkpoint" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in (work / "checkpoints").iterdir()} == before
    assert (work / "log.jsonl").read_text() == log
    with pytest.raises(ValueError, match="already has 2 checkpoint"):
        train(load_config(TOY, ["training.n_iters=10"]), work, resume=False, progress=False)


def test_overwrite_deletes_the_old_run_and_nothing_else(tmp_path, capsys):
    work = _used_workdir(tmp_path, capsys)
    (work / "notes.txt").write_text("keep me")
    assert main(_train_args(work, "--overwrite")) == 0
    assert "checkpoint_00000010.safetensors" in capsys.readouterr().out
    ckpts = list_checkpoints(work / "checkpoints")
    assert [p.name for p in ckpts] == ["checkpoint_00000010.safetensors"]
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == [
        "checkpoint_00000010.json",
        "checkpoint_00000010.safetensors",
    ]
    assert load_checkpoint(ckpts[0])[1]["config"]["training"]["n_iters"] == 10  # the new run's
    steps = [json.loads(line)["step"] for line in (work / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10]
    assert sorted(p.name for p in (work / "samples").iterdir()) == ["step_00000010.png"]
    assert (work / "loss.png").is_file() and (work / "notes.txt").read_text() == "keep me"


# -- B2: one training run per workdir -------------------------------------------------------------
def test_a_second_run_in_a_locked_workdir_fails_at_once(tmp_path, capsys):
    work = tmp_path / "busy"
    (work / "checkpoints").mkdir(parents=True)
    partial = work / "checkpoints" / ".checkpoint_00000010.safetensors.abc123.tmp"
    partial.write_bytes(b"the other run is writing this")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(120)", str(work / LOCK_NAME)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        assert main(_train_args(work)) == 2
        assert time.perf_counter() - start < 10  # at once, no waiting for the lock
        err = _error(capsys)
        assert str(work) in err and "in use" in err
        assert partial.is_file()  # the other run's temporary file survives
        assert not (work / "log.jsonl").exists() and not list_checkpoints(work / "checkpoints")
    finally:
        holder.kill()
        holder.wait()
    assert main(_train_args(work)) == 0  # the lock went away with the killed process
    assert not partial.exists() and len(list_checkpoints(work / "checkpoints")) == 1
    with workdir_lock(work):  # and the finished run released its own
        pass


# -- B3: sampler options are parsed and type-checked against the sampler ----------------------------
def test_sampler_options_are_typed_from_the_sampler_signature():
    assert parse_sampler_options("euler_maruyama", ["probability_flow=true"]) == {"probability_flow": True}
    opts = parse_sampler_options("ode", ["rtol=1e-3", "atol=1", "method=heun"])
    assert opts == {"rtol": 1e-3, "atol": 1.0, "method": "heun"} and isinstance(opts["atol"], float)
    assert parse_sampler_options("pc", ["corrector_steps=2", "predictor=none"]) == {
        "corrector_steps": 2,
        "predictor": "none",
    }
    bad = [
        ("euler_maruyama", "probability_flow=no", "true or false"),
        ("euler_maruyama", "probability_flow=1", "true or false"),
        ("ode", "rtol=abc", "must be a number"),
        ("ode", "rtol=0", "must be a finite number > 0"),
        ("ode", "method=rk5", "must be one of"),
        ("ode", "error_norm=max", "must be one of"),
        ("pc", "corrector_steps=1.5", "must be an integer"),
        ("pc", "corrector=gibbs", "must be one of"),
        ("pc", "snr=-1", "must be a finite number > 0"),
        ("ddim", "eta=2", r"must be in \[0, 1\]"),
        ("ddim", "snr=0.1", "unknown option"),
        ("ode", "rtol", "KEY=VALUE"),
    ]
    for sampler, item, message in bad:
        with pytest.raises(ValueError, match=message):
            parse_sampler_options(sampler, [item])


def test_cli_rejects_mistyped_sampler_options(ckpt, tmp_path, capsys, no_work):
    out = str(tmp_path / "s.png")
    assert main(["sample", str(ckpt), "--option", "probability_flow=no", "--out", out]) == 2
    assert "probability_flow" in _error(capsys)
    assert main(["sample", str(ckpt), "--sampler", "ode", "--option", "method=rk5", "--out", out]) == 2
    assert "method" in _error(capsys)
    assert main(["sample", str(ckpt), "--option", "snr=0.1", "--out", out]) == 2
    assert "unknown option" in _error(capsys)


# -- B4: counts and tolerances must be positive; --steps does not apply to rk45 ---------------------
@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--steps", "0"],
        ["sample", "--steps", "-3"],
        ["sample", "--steps", "ten"],
        ["sample", "-n", "0"],
        ["sample", "--sampler", "ode", "--steps", "5"],
        ["likelihood", "--batch-size", "0"],
        ["likelihood", "--repeats", "0"],
        ["likelihood", "--rtol", "0"],
        ["likelihood", "--atol", "-0.001"],
        ["likelihood", "--atol", "nan"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_counts_and_tolerances(ckpt, tmp_path, capsys, no_work, args):
    command, *rest = args
    out = ["--out", str(tmp_path / ("s.png" if command == "sample" else "l.json"))]
    assert main([command, str(ckpt), *rest, *out]) == 2
    err = _error(capsys)
    assert ("rk45" in err) if "ode" in args else ("must be a positive" in err)


# -- B5/B6: paths and devices are checked before any work; OS errors are one line -------------------
def test_output_paths_are_checked_before_any_work(ckpt, tmp_path, capsys, no_work, monkeypatch):
    assert main(["sample", str(ckpt), "--out", str(tmp_path / "x.gif")]) == 2
    assert ".png or .npz" in _error(capsys)
    assert main(["likelihood", str(ckpt), "--out", str(tmp_path / "x.txt")]) == 2
    assert ".json" in _error(capsys)
    folder = tmp_path / "taken.png"
    folder.mkdir()
    assert main(["sample", str(ckpt), "--out", str(folder)]) == 2
    assert "is a directory" in _error(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["sample", str(ckpt), "--out", str(blocker / "deeper" / "x.png")]) == 2
    assert "not a directory" in _error(capsys)
    assert main(["sample", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.png")]) == 2
    assert "not found" in _error(capsys)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == readonly else real_access(p, mode))
    assert main(["sample", str(ckpt), "--out", str(readonly / "new" / "x.png")]) == 2
    assert "not writable" in _error(capsys)
    assert not (readonly / "new").exists()


def test_devices_are_checked_before_any_work(ckpt, tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in ("sample", "likelihood"):
        assert main([command, str(ckpt), "--device", "cuda"]) == 2
        assert "CUDA is not available" in _error(capsys)
        assert main([command, str(ckpt), "--device", "gpu0"]) == 2
        assert "unknown device 'gpu0'" in _error(capsys)
    assert main(_train_args(tmp_path / "w", "--set", "training.device=cuda")) == 2
    assert "CUDA is not available" in _error(capsys)
    assert not (tmp_path / "w").exists()
    assert pick_device("cpu") == torch.device("cpu") and pick_device("auto") == torch.device("cpu")


def test_workdir_in_the_way_or_not_writable(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert main(_train_args(a_file)) == 2
    assert "not a directory" in _error(capsys) and a_file.read_text() == "not a folder"
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == readonly else real_access(p, mode))
    assert main(_train_args(readonly / "run")) == 2
    assert "not writable" in _error(capsys)
    assert not (readonly / "run").exists()


def test_a_full_disk_while_training_is_one_line_and_keeps_what_was_written(tmp_path, capsys, monkeypatch):
    work = tmp_path / "run"
    assert main(_train_args(work)) == 0
    first = (work / "checkpoints" / "checkpoint_00000010.safetensors").read_bytes()
    capsys.readouterr()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("scoresde.checkpoint.save_file", full_disk)
    assert main(_train_args(work, "--set", "training.n_iters=20")) == 2
    err = _error(capsys)
    assert "No space left on device" in err and "checkpoint_00000020.safetensors" in err
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == [  # no temporary file left behind
        "checkpoint_00000010.json",
        "checkpoint_00000010.safetensors",
    ]
    assert (work / "checkpoints" / "checkpoint_00000010.safetensors").read_bytes() == first
    with workdir_lock(work):  # the failed run released the workdir
        pass


def test_write_errors_of_sample_and_likelihood_are_one_line(ckpt, tmp_path, capsys, monkeypatch):
    from PIL import Image

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    monkeypatch.setattr(np, "savez", full_disk)
    for name in ("s.png", "s.npz"):
        assert main(["sample", str(ckpt), "--steps", "3", "-n", "8", "--out", str(tmp_path / name)]) == 2
        err = _error(capsys)
        assert "No space left on device" in err and name in err
        assert not list(tmp_path.iterdir())  # no partial output, no temporary file

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr("scoresde.plotting.tempfile.mkstemp", denied)
    args = ["--threads", "1", "likelihood", str(ckpt), "--rtol", "1e-2", "--atol", "1e-2", "--batch-size", "5000"]
    assert main([*args, "--out", str(tmp_path / "l.json")]) == 2
    assert "Permission denied" in _error(capsys)


# -- B6/B7: config values are range-checked at load; names and combinations before any work ---------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.n_iters=-5", r"training\.n_iters must be >= 1"),
        ("training.batch_size=0", r"training\.batch_size must be >= 1"),
        ("training.lr=0.0", r"training\.lr must be > 0"),
        ("training.lr=nan", r"training\.lr must be a finite number"),
        ("training.ema=1.0", r"training\.ema must be in \[0, 1\)"),
        ("training.warmup=-1", r"training\.warmup must be >= 0"),
        ("training.grad_clip=-1.0", r"training\.grad_clip must be >= 0"),
        ("training.log_every=0", r"training\.log_every must be >= 1"),
        ("training.snapshot_every=0", r"training\.snapshot_every must be >= 1"),
        ("training.keep=-1", r"training\.keep must be >= 0"),
        ("training.eps=0.0", r"training\.eps must be in \(0, 1\)"),
        ("training.eps=1.0", r"training\.eps must be in \(0, 1\)"),
        ("sde.beta_min=0.0", r"sde\.beta_min must be > 0"),
        ("sde.beta_min=30.0", r"sde\.beta_min must be <= sde\.beta_max"),
        ("sde.sigma_min=100.0", r"sde\.sigma_min is not read by sde\.type 'vp' \(its keys: beta_min, beta_max, N\)"),
        ("sde.N=1", r"sde\.N must be >= 2"),
        ("data.image_size=0", r"data\.image_size must be >= 1"),
        ("data.channels=0", r"data\.channels must be >= 1"),
        ("data.data_range=[1.0, -1.0]", r"data\.data_range must be \[low, high\]"),
        ("data.data_range=[0.0]", r"data\.data_range must be \[low, high\]"),
        ("sampling.steps=0", r"sampling\.steps must be >= 1"),
    ],
)
def test_config_ranges_are_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TOY, [override])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sde.type=vpp"], r"unknown sde\.type 'vpp'"),
        (["data.dataset=imagenet"], r"unknown data\.dataset 'imagenet'"),
        (["data.toy=spiral"], r"unknown data\.toy 'spiral'"),
        (["model.arch=transformer"], r"unknown model\.arch 'transformer'"),
        (["model.prediction=noise"], r"unknown model\.prediction 'noise'"),
        (["model.time_input=step"], r"unknown model\.time_input 'step'"),
        (["training.loss=l2"], r"unknown training\.loss 'l2'"),
        (["training.weighting=snr"], r"unknown training\.weighting 'snr'"),
        (["training.reduce=max"], r"unknown training\.reduce 'max'"),
        (["sampling.sampler=leapfrog"], r"unknown sampling\.sampler 'leapfrog'"),
        (["training.loss=ddpm", "sde.type=ve"], r"training\.loss 'ddpm' needs sde\.type 'vp'"),
        (["sde.type=ve", "sde.sigma_min=100.0"], r"^\[sde\] type 've': need 0 < sigma_min < sigma_max < inf"),
        (["sde.type=edm", "sde.sigma_max=0.001"], r"^\[sde\] type 'edm': need 0 < sigma_min < sigma_max < inf"),
        (["sde.type=rectified_flow", "sde.T=1.0"], r"^\[sde\] type 'rectified_flow': T must be < 1"),
        (
            ["training.time_sampling=lognormal", "training.loss=smld", "sde.type=ve"],
            r"training\.time_sampling other than 'uniform' needs training\.loss 'dsm'",
        ),
        (["training.time_sampling=importance"], r"training\.time_sampling 'importance' needs training\.loss 'dsm'"),
        (["training.time_mean=0.5"], r"training\.time_mean and training\.time_std set the lognormal"),
        (["model.prediction=edm", "model.sigma_data=0.0"], r"model\.sigma_data must be > 0"),
        (["training.loss=smld"], r"training\.loss 'smld' needs sde\.type 've'"),
        (["model.arch=ddpmpp_small"], r"model\.arch 'ddpmpp_small' is for images"),
        (["model.net.width=3"], r"model\.net has option\(s\) \['width'\]"),
        (["sampling.options.snr=0.1"], r"unknown sampling\.options"),
        (["data.dataset=digits", "model.arch=ddpmpp_small", "data.image_size=16"], r"data\.image_size = 8"),
    ],
)
def test_config_names_and_combinations_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_config(load_config(TOY, overrides))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_config_passes_the_checks(path):
    check_config(load_config(path), data=False)


@pytest.mark.parametrize(
    "overrides",
    [["training.n_iters=-5"], ["training.log_every=0"], ["training.loss=ddpm", "sde.type=ve"]],
    ids=lambda o: " ".join(o),
)
def test_train_rejects_bad_configs_before_touching_the_workdir(tmp_path, capsys, overrides):
    work = tmp_path / "run"
    assert main(_train_args(work, *[a for o in overrides for a in ("--set", o)])) == 2
    _error(capsys)
    assert not work.exists()


# -- B8: progress bars on a terminal only --------------------------------------------------------------
def test_train_writes_plain_lines_not_a_bar_when_stderr_is_not_a_terminal(tmp_path):
    cmd = [sys.executable, "-m", "scoresde.cli", *_train_args(tmp_path / "run")]
    cmd.remove("--no-progress")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "training" not in run.stderr and "it/s" not in run.stderr  # no progress bar in a log
    assert "training steps 1 to 10 on cpu" in run.stdout and "step 10/10  loss" in run.stdout  # the plan, the end


def test_progress_bars_follow_the_terminal_and_the_flags(ckpt, tmp_path, capsys, monkeypatch):
    lik = ["--threads", "1", "likelihood", str(ckpt), "--rtol", "1e-2", "--atol", "1e-2", "--batch-size", "100"]
    assert main(lik) == 0
    assert "likelihood" not in capsys.readouterr().err  # not a terminal: quiet
    assert main([*lik, "--progress"]) == 0
    assert "likelihood: 100%" in capsys.readouterr().err  # asked for: one step per batch
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(lik) == 0
    assert "likelihood: 100%" in capsys.readouterr().err
    assert main([*lik, "--no-progress"]) == 0
    assert "likelihood" not in capsys.readouterr().err
    assert main(["sample", str(ckpt), "--steps", "3", "-n", "8", "--out", str(tmp_path / "s.npz")]) == 0
    assert "sampling" in capsys.readouterr().err
    work = tmp_path / "run"
    assert main([a for a in _train_args(work) if a != "--no-progress"]) == 0
    assert "training" in capsys.readouterr().err


def test_a_checkpoint_without_a_training_config_is_one_line(tmp_path, capsys, no_work):
    from scoresde.checkpoint import save_checkpoint

    other = save_checkpoint(tmp_path / "checkpoint_00000001.safetensors", {"w": torch.zeros(2)}, {"step": 1})
    for command in ("sample", "likelihood"):
        assert main([command, str(other)]) == 2
        assert "not a scoresde training checkpoint" in _error(capsys)


# -- a newcomer's defaults: threads, devices, resumed runs, data folders, likelihood selections ---------------------
def test_threads_and_devices_default_to_the_machine(ckpt, tmp_path):
    from scoresde.cli import build_parser

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["sample", str(ckpt), "--steps", "2", "-n", "2", "--out", str(tmp_path / "s.npz")]) == 0
        assert torch.get_num_threads() == 1  # no --threads: $OMP_NUM_THREADS / torch's own setting is kept
    finally:
        torch.set_num_threads(before)
    parser = build_parser()
    for command in (["sample"], ["likelihood"], ["evaluate"], ["inpaint", "--out", "x.png"],
                    ["optimize-grid", "--steps", "3"]):  # fmt: skip
        assert parser.parse_args([command[0], str(ckpt), *command[1:]]).device == "auto"


def test_a_resumed_run_reports_the_steps_it_trained(tmp_path, capsys):
    work = tmp_path / "run"
    assert main(_train_args(work)) == 0
    assert "trained 10 steps in" in capsys.readouterr().out
    assert main(_train_args(work, "--set", "training.n_iters=14", "--set", "training.snapshot_every=14")) == 0
    assert "trained 4 steps (resumed at step 10, now 14)" in capsys.readouterr().out


def test_a_relative_data_root_is_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    final = train(load_config(TOY, ["training.n_iters=2", "training.snapshot_every=2", "data.toy_size=200",
                                    "data.root=data"]), "run", progress=False)  # fmt: skip
    stored = json.loads(final.with_suffix(".json").read_text())["config"]["data"]["root"]
    assert stored == str(tmp_path.resolve() / "data")


def test_likelihood_of_a_selection_is_the_same_per_point(ckpt, tmp_path, capsys):
    """Point i keeps its noise stream: the mean over [5, 15) is the weighted mean over [5, 9) and [9, 15)."""

    def mean(first, n):
        out = tmp_path / f"l{first}-{n}.json"
        assert main(["likelihood", str(ckpt), "--first", str(first), "-n", str(n), "--rtol", "1e-3", "--atol", "1e-3",
                     "--out", str(out)]) == 0  # fmt: skip
        result = json.loads(out.read_text())
        assert (result["first"], result["n"]) == (first, n)
        return result["mean"]

    whole = mean(5, 10)
    assert whole == pytest.approx((4 * mean(5, 4) + 6 * mean(9, 6)) / 10, rel=1e-6, abs=1e-9)
    assert "likelihood of 10 test point(s) from index 5" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "adams", "--steps", "2"], "steps must be an integer from 3"),
        (["--method", "adams", "--rtol", "1e-3"], "--method adams takes --steps"),
        (["--method", "rk45", "--steps", "20"], "--method rk45 takes --rtol"),
        (["--rtol", "1e-3", "--steps", "20"], "--method rk45 takes --rtol"),
    ],
)
def test_likelihood_method_errors_are_one_line_before_any_work(ckpt, capsys, no_work, args, message):
    assert main(["likelihood", str(ckpt), *args]) == 2
    assert message in _error(capsys)


def test_likelihood_says_which_method_and_bound_produced_the_number(ckpt, tmp_path, capsys):
    out = tmp_path / "l.json"
    assert main(["likelihood", str(ckpt), "-n", "20", "--method", "adams", "--steps", "9", "--truncation",
                 "decoder", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "adams 9 steps, Hutchinson, 1 probe; Gaussian-decoder bound at eps" in printed
    result = json.loads(out.read_text())
    assert result["nfe"] == 10 and "adams 9 steps" in result["method"]
    assert main(["likelihood", str(ckpt), "-n", "20", "--rtol", "1e-3", "--atol", "1e-3"]) == 0  # implies rk45
    assert "RK45 rtol 0.001 atol 0.001" in capsys.readouterr().out


def test_likelihood_refuses_a_selection_past_the_split_before_loading_the_model(ckpt, tmp_path, capsys, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the selection was checked")

    monkeypatch.setattr(scoresde.checkpoint.Checkpoint, "tensors", forbidden)
    assert main(["likelihood", str(ckpt), "--first", "290", "-n", "20"]) == 2
    assert "the test split has 300 data points; --first 290 -n 20 asks for more" in _error(capsys)
    assert main(["likelihood", str(ckpt), "--first", "-1"]) == 2
    assert "--first" in _error(capsys)
