"""Optimised time grids: ``optimize_grid`` on the exact-score 2-D mixture, grid files, and the CLI around them.

* The mixture (VP, UniPC at 10 NFE, float64): the optimised grid is a valid grid and brings the sampler's outputs
  from fresh starting points much closer to an accurate ODE solve than the plain log-SNR grid; the distribution it
  gives meets the moderate-budget criteria of test_fast_solvers (TV < 0.03, std < 0.08, |logp| < 0.06).
* Seeds, refusals of the stochastic samplers before any score evaluation, and argument errors.
* Grid files: no overwriting, lookup by path and by name in a run's grids/ folder, clear errors.
* The CLI on a tiny toy checkpoint: ``optimize-grid``, then ``sample``/``evaluate --grid NAME|FILE``, and bad
  arguments rejected in one line before the model loads; ``optimize-grid --likelihood`` then
  ``likelihood --grid NAME``, and a likelihood grid checked against the SDE and the method.
"""

import contextlib
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde as sd
import scoresde.build
import scoresde.checkpoint
import scoresde.evaluate
from scoresde.cli import main
from scoresde.config import load_config
from scoresde.sampling.grids import check_grid
from scoresde.sampling.optimize import grid_dir, grid_info, load_grid, optimize_grid, save_grid
from scoresde.toy import mixture_errors
from scoresde.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops: a second intra-op thread only waits

ROOT = Path(__file__).parents[1]
VP = sd.VPSDE()
EPS = sd.default_eps(VP)


def _optimised(mixture, n, seed, steps=10, sampler="unipc", **kwargs):
    return optimize_grid(VP, mixture.score_fn(VP), steps, shape=(2,), sampler=sampler, n=n,
                         generator=torch.Generator().manual_seed(seed), dtype=torch.float64, **kwargs)  # fmt: skip


def _prior(n, seed):
    return VP.prior_sampling((n, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- the exact-score mixture --------------------------------------------------------------------------------------
def test_optimised_grid_is_valid_and_lands_closer_to_the_ode_on_fresh_points(mixture):
    score = mixture.score_fn(VP)
    grid = _optimised(mixture, 256, 0)
    assert len(grid) == 10  # 9 steps: 10 NFE with the final denoising evaluation
    assert grid[0] == VP.T and grid[-1] == EPS
    assert all(b < a for a, b in itertools.pairwise(grid))
    assert check_grid(VP, grid) == grid
    plain = sd.time_grid(VP, 9, EPS, "log_snr")
    assert max(abs(a - b) for a, b in zip(grid, plain, strict=True)) > 1e-2  # the search moved the times

    x_T = _prior(2000, 11)  # fresh: the optimiser drew its 256 points from seed 0
    accurate = sd.sample(VP, score, None, sampler="unipc", steps=300, grid="log_snr", order=3, x_init=x_T)
    tuned, nfe = sd.sample(VP, score, None, sampler="unipc", grid=grid, x_init=x_T, return_nfe=True)
    assert nfe == 10
    base = sd.sample(VP, score, None, sampler="unipc", steps=10, grid="log_snr", x_init=x_T)
    d_tuned, d_base = (tuned - accurate).norm(dim=1), (base - accurate).norm(dim=1)
    # measured: medians 0.0041 vs 0.120 (29x); 99th percentiles 0.18 vs 2.1
    assert float(d_base.median()) > 2 * float(d_tuned.median()), (float(d_tuned.median()), float(d_base.median()))
    q = torch.tensor(0.99, dtype=torch.float64)
    assert float(d_tuned.quantile(q)) < float(d_base.quantile(q))


@pytest.mark.parametrize(
    ("n", "seed"),
    [
        (256, 0),  # measured: tv 0.012, std 0.050, logp -0.046
        (256, 2),
        (512, 0),
    ],
)
def test_optimised_grid_meets_the_mixture_criteria_at_10_nfe(mixture, reference, n, seed):
    grid = _optimised(mixture, n, seed)
    x = sd.sample(VP, mixture.score_fn(VP), (8000, 2), sampler="unipc", grid=grid,
                  generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # fmt: skip
    errors = mixture_errors(mixture, x, reference)
    assert errors["tv"] < 0.03, errors
    assert errors["std"] < 0.08, errors
    assert abs(errors["logp"]) < 0.06, errors


# -- seeds, refusals, argument errors -------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_grid(mixture):
    lines = []
    first = _optimised(mixture, 64, 3, steps=6, report=lines.append)
    assert _optimised(mixture, 64, 3, steps=6) == first
    assert _optimised(mixture, 64, 4, steps=6) != first  # other starting points, another optimum
    assert len(first) == 6 and len(lines) == 1 + 6  # the scan's line, then one per sweep
    assert "log_snr grid" in lines[0] and lines[-1].startswith("sweep 6/6")


def _no_score(x, t):
    raise AssertionError("the score was evaluated before the arguments were checked")


def _error_of(**kwargs) -> str:
    args = {"shape": (2,), "sampler": "unipc", "n": 16, **kwargs}
    steps = args.pop("steps", 10)
    with pytest.raises(ValueError) as info:
        optimize_grid(VP, _no_score, steps, **args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("sampler", "options"),
    [
        ("sde_dpm_solver++", {}),
        ("ddim", {"eta": 0.5}),
        ("edm_heun", {"churn": 2.0}),
        ("euler_maruyama", {}),
        ("ode", {}),  # the adaptive rk45: no grid to optimise
    ],
)
def test_samplers_without_a_deterministic_grid_are_refused_before_any_score(sampler, options):
    message = _error_of(sampler=sampler, **options)
    assert sampler in message and ("deterministic" in message or "picks its own steps" in message)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 1}, "n must be"),
        ({"n": 0}, "n must be"),
        ({"n": True}, "n must be"),
        ({"n": 8.0}, "n must be"),
        ({"steps": 0}, "steps must be"),
        ({"steps": -3}, "steps must be"),
        ({"steps": True}, "steps must be"),
        ({"steps": 4.0}, "steps must be"),
        ({"steps": 1}, "least NFE budget"),  # UniPC needs an evaluation besides the final denoising one
        ({"eta": 0.1}, "unknown option"),
        ({"sampler": "unipc", "churn": 1.0}, "unknown option"),
        ({"sampler": "nope"}, "unknown sampler"),
        ({"sweeps": -1}, "sweeps"),
        ({"reference_nfe": 5}, "reference_nfe"),
    ],
)
def test_bad_arguments_are_refused_before_any_score(kwargs, message):
    assert message in _error_of(**kwargs)


def test_a_budget_of_one_step_has_nothing_to_optimise():
    assert optimize_grid(VP, _no_score, 2, shape=(2,), sampler="unipc", n=8) == [VP.T, EPS]


# -- grid files -----------------------------------------------------------------------------------------------------
def test_save_grid_writes_json_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "run" / "grids" / "g.json"
    info = grid_info(VP, "unipc", 4, {"order": 2}, 16, error=0.5, extra={"seed": 3})
    assert save_grid(path, [1.0, 0.25, 1e-3], info) == path
    data = json.loads(path.read_text())
    assert data == {"times": [1.0, 0.25, 1e-3], "sde": repr(VP), "sampler": "unipc", "steps": 4,
                    "options": {"order": 2}, "n": 16, "rms_error": 0.5, "seed": 3}  # fmt: skip
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        save_grid(path, [1.0, 0.5, 1e-3], info)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["g.json"]  # no temporary file left behind


def test_load_grid_by_path_and_by_name_from_a_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt_file = run / "checkpoints" / "checkpoint_00000010.safetensors"
    assert grid_dir(run / "checkpoints") == run / "grids"
    assert grid_dir(ckpt_file) == run / "grids"
    assert grid_dir(tmp_path / "elsewhere.safetensors") == tmp_path / "grids"
    times = [1.0, 0.3, 0.05, 1e-3]
    path = save_grid(run / "grids" / "mine.json", times, grid_info(VP, "unipc", 4, {}, 16))
    expected = (times, grid_info(VP, "unipc", 4, {}, 16))
    assert load_grid(path) == expected
    assert load_grid(str(path)) == expected
    for checkpoint in (run / "checkpoints", ckpt_file):
        assert load_grid("mine", checkpoint) == expected
        assert load_grid("mine.json", checkpoint) == expected


def test_a_missing_grid_names_the_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as info:
        load_grid("absent", run / "checkpoints")
    assert str(run / "grids") in str(info.value) and "'absent'" in str(info.value)
    with pytest.raises(FileNotFoundError, match="absent"):
        load_grid(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "text",
    [
        "not json at all",
        '{"time": [1.0, 0.001]}',
        "[1.0, 0.5, 0.001]",
        "null",
        '{"times": 3}',
        '{"times": null}',
        '{"times": [1.0, "half", 0.001]}',
        '{"times": [1.0, [0.5], 0.001]}',
        '{"times": "10"}',  # a string is not a list of times
    ],
)
def test_a_malformed_grid_file_is_a_clear_value_error(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_grid(path)
    assert str(path) in str(info.value) and "not a grid file" in str(info.value)


# -- the CLI on a tiny checkpoint -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory):
    over = ["training.n_iters=10", "training.snapshot_every=10", "training.batch_size=64", "sampling.steps=5",
            "data.toy_size=300"]  # fmt: skip
    return train(
        load_config(ROOT / "configs" / "toy_mixture.toml", over), tmp_path_factory.mktemp("toy"), progress=False
    )


def _run(*args) -> int:
    return main(["--threads", "1", *map(str, args)])


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def saved(toy_ckpt):
    """``optimize-grid --sampler unipc --steps 4 -n 16`` once: (checkpoint, grid file, its stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert _run("optimize-grid", toy_ckpt, "--sampler", "unipc", "--steps", 4, "-n", 16, "--no-progress") == 0
    return toy_ckpt, toy_ckpt.parents[1] / "grids" / "unipc-4.json", out.getvalue()


@pytest.fixture
def no_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the command did expensive work before rejecting its input")

    monkeypatch.setattr(scoresde.checkpoint.Checkpoint, "tensors", forbidden)
    monkeypatch.setattr(scoresde.evaluate, "evaluate", forbidden)


def test_cli_optimize_grid_writes_the_grid_under_the_run_and_prints_it(saved):
    ckpt, path, printed = saved
    assert path.is_file() and path.parent == grid_dir(ckpt)
    times, info = load_grid(path)
    assert len(times) == 4 and times[0] == 1.0 and times[-1] == EPS  # 3 steps + the final denoising evaluation
    assert check_grid(VP, times) == times
    assert info["sde"] == repr(VP) and info["sampler"] == "unipc" and info["steps"] == 4 and info["n"] == 16
    assert info["seed"] == 0 and info["options"] == {} and Path(info["checkpoint"]) == ckpt
    assert str(path) in printed
    assert "times: " + ", ".join(f"{t:.5g}" for t in times) in printed


def test_cli_optimize_grid_refuses_an_existing_name_and_keeps_the_file(saved, capsys, no_work):
    ckpt, path, _ = saved
    before = path.read_bytes()
    assert _run("optimize-grid", ckpt, "--sampler", "unipc", "--steps", 4, "-n", 16) == 2
    assert str(path) in _error(capsys)
    assert _run("optimize-grid", ckpt, "--sampler", "unipc", "--steps", 6, "--name", "unipc-4") == 2
    assert "exists" in _error(capsys)
    assert path.read_bytes() == before


def test_cli_optimize_grid_with_a_name_is_reproducible(saved, capsys):
    ckpt, path, _ = saved
    args = ["optimize-grid", ckpt, "--sampler", "unipc", "--steps", 4, "-n", 16, "--no-progress"]
    assert _run(*args, "--name", "again") == 0
    assert load_grid("again", ckpt)[0] == load_grid(path)[0]  # the same seed: the same grid
    assert str(path.with_name("again.json")) in capsys.readouterr().out


def test_cli_sample_with_a_saved_grid_by_name_and_by_path(saved, tmp_path, capsys):
    ckpt, path, _ = saved
    base = ["sample", ckpt, "--sampler", "unipc", "-n", 12, "--no-progress"]
    assert _run(*base, "--grid", "unipc-4", "--out", tmp_path / "by_name.npz") == 0
    assert "(4 NFE" in capsys.readouterr().out
    assert _run(*base, "--grid", path, "--out", tmp_path / "by_path.npz") == 0
    assert _run(*base, "--steps", 4, "--out", tmp_path / "plain.npz") == 0  # the log-SNR grid of the same budget
    by_name, by_path, plain = (np.load(tmp_path / f"{k}.npz")["samples"] for k in ("by_name", "by_path", "plain"))
    assert by_name.shape == (12, 2) and np.isfinite(by_name).all()
    np.testing.assert_array_equal(by_name, by_path)
    assert not np.allclose(by_name, plain)
    # any fixed-grid sampler takes the grid: ddim's 3 steps + denoising
    assert _run("sample", ckpt, "--sampler", "ddim", "--grid", "unipc-4", "-n", 4, "--out", tmp_path / "d.npz") == 0
    assert "(4 NFE" in capsys.readouterr().out


def test_cli_evaluate_with_a_saved_grid(saved, tmp_path):
    ckpt, path, _ = saved
    out = tmp_path / "report.json"
    assert _run("evaluate", ckpt, "--sampler", "unipc", "--grid", "unipc-4", "-n", 50, "--no-likelihood",
                "--no-progress", "--out", out) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["grid"] == load_grid(path)[0] and report["nfe"] == 4 and report["n"] == 50


def test_cli_a_grid_named_with_the_json_suffix_can_be_used_by_its_name(saved, tmp_path, capsys):
    ckpt, _, _ = saved
    code = _run("optimize-grid", ckpt, "--sampler", "unipc", "--steps", 3, "-n", 8, "--name", "g.json")
    if code == 2:  # refusing such a name would do as well
        assert "--name" in _error(capsys)
        return
    assert code == 0
    assert _run("sample", ckpt, "--sampler", "unipc", "--grid", "g.json", "-n", 4, "--out", tmp_path / "g.npz") == 0


def _late(*args):
    return pytest.param(*args, id=" ".join(args[0][2:]))


OPT = ["optimize-grid", "{ckpt}", "--name", "fresh"]
SAMPLE = ["sample", "{ckpt}", "-n", "4", "--out", "{tmp}/x.npz"]
LIK = ["likelihood", "{ckpt}", "-n", "4", "--out", "{tmp}/x.json"]
EVAL = ["evaluate", "{ckpt}", "-n", "4", "--no-likelihood", "--out", "{tmp}/x.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*OPT, "--steps", "4", "--sampler", "euler_maruyama"], "draws noise"),
        ([*OPT, "--steps", "4", "--sampler", "sde_dpm_solver++"], "draws noise"),
        ([*OPT, "--steps", "4", "--sampler", "nope"], "unknown sampler"),
        ([*OPT, "--steps", "4", "--sampler", "unipc", "--option", "bogus=1"], "bogus"),
        ([*OPT, "--steps", "4", "--sampler", "unipc", "--name", "log_snr"], "--name"),
        ([*OPT, "--steps", "4", "--sampler", "unipc", "--name", "../up"], "--name"),
        ([*OPT, "--steps", "0", "--sampler", "unipc"], "--steps"),
        _late([*OPT, "--steps", "4", "--sampler", "ddim", "--option", "eta=0.5"], "ddim"),
        _late([*OPT, "--steps", "4", "--sampler", "edm_heun", "--option", "churn=1"], "edm_heun"),
        _late([*OPT, "--steps", "4", "--sampler", "ode"], "ode"),
        _late([*OPT, "--steps", "4", "--sampler", "unipc", "-n", "1"], "n must be"),
        _late([*OPT, "--steps", "1", "--sampler", "unipc"], "budget"),
        ([*SAMPLE, "--sampler", "unipc", "--grid", "unipc-4", "--steps", "4"], "--steps does not go"),
        ([*SAMPLE, "--sampler", "unipc", "--grid", "{grid}", "--steps", "4"], "--steps does not go"),
        ([*SAMPLE, "--sampler", "unipc", "--grid", "{tmp}/ve.json"], "VESDE"),
        ([*SAMPLE, "--sampler", "unipc", "--grid", "{tmp}/increasing.json"], "decreasing"),
        ([*SAMPLE, "--sampler", "unipc", "--grid", "{tmp}/malformed.json"], "not a grid file"),
        ([*SAMPLE, "--sampler", "unipc", "--grid", "absent"], "grids"),
        ([*SAMPLE, "--sampler", "unipc", "--rho", "3"], "--grid karras"),
        ([*SAMPLE, "--sampler", "unipc", "--grid", "log_snr", "--rho", "3"], "--grid karras"),
        ([*SAMPLE, "--sampler", "adaptive_sde", "--grid", "unipc-4"], "adaptive"),
        ([*SAMPLE, "--sampler", "ode", "--grid", "unipc-4"], "adaptive"),
        ([*SAMPLE, "--sampler", "ode", "--grid", "log_snr"], "adaptive"),
        ([*SAMPLE, "--sampler", "ode", "--grid", "karras", "--rho", "3"], "adaptive"),
        ([*EVAL, "--sampler", "unipc", "--grid", "unipc-4", "--steps", "4"], "--steps does not go"),
        ([*EVAL, "--sampler", "unipc", "--grid", "{tmp}/ve.json"], "VESDE"),
        ([*EVAL, "--sampler", "unipc", "--grid", "absent"], "grids"),
        ([*EVAL, "--sampler", "unipc", "--rho", "3"], "--grid karras"),
        ([*EVAL, "--sampler", "adaptive_sde", "--grid", "unipc-4"], "adaptive"),
        ([*EVAL, "--sampler", "ode", "--grid", "log_snr"], "adaptive"),
        ([*OPT, "--likelihood", "--sampler", "unipc"], "--sampler"),
        ([*OPT, "--likelihood", "--steps", "2"], "at least 3"),
        (OPT, "--steps is required"),
        ([*LIK, "--grid", "unipc-4"], "not for the likelihood"),
        ([*LIK, "--grid", "{tmp}/ve_likelihood.json"], "VESDE"),
        ([*LIK, "--grid", "{tmp}/short_likelihood.json"], "at least 3"),
        ([*LIK, "--grid", "log_snr"], "grid kind"),
        ([*LIK, "--grid", "absent"], "grids"),
        ([*LIK, "--grid", "{tmp}/ve_likelihood.json", "--method", "rk45"], "does not take one"),
        ([*LIK, "--grid", "{tmp}/ve_likelihood.json", "--steps", "5"], "--steps does not go"),
        ([*EVAL[:-3], "--likelihood-grid", "unipc-4", "--out", "{tmp}/x.json"], "not for the likelihood"),
        ([*EVAL[:-3], "--likelihood-grid", "{tmp}/ve_likelihood.json", "--out", "{tmp}/x.json"], "VESDE"),
        ([*EVAL, "--likelihood-grid", "{tmp}/ve_likelihood.json"], "which is off"),
    ],
)
def test_cli_bad_arguments_fail_in_one_line_before_the_model_loads(saved, tmp_path, capsys, no_work, args, message):
    ckpt, path, _ = saved
    save_grid(tmp_path / "ve.json", [1.0, 0.5, 1e-3], grid_info(sd.VESDE(), "unipc", 3, {}, 16))
    likelihood = {"purpose": "likelihood", "method": "adams"}
    save_grid(tmp_path / "ve_likelihood.json", [1.0, 0.5, 0.1, 0.01, 1e-5], {"sde": repr(sd.VESDE()), **likelihood})
    save_grid(tmp_path / "short_likelihood.json", [1.0, 0.1, 1e-5], {"sde": repr(VP), **likelihood})
    save_grid(tmp_path / "increasing.json", [1.0, 0.2, 0.5, 1e-3], grid_info(VP, "unipc", 4, {}, 16))
    (tmp_path / "malformed.json").write_text('{"steps": 4}')
    filled = [a.format(ckpt=ckpt, tmp=tmp_path, grid=path) for a in args]
    assert _run(*filled) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.json").exists()
    assert not (grid_dir(ckpt) / "fresh.json").exists()


def test_cli_optimize_grid_claims_its_name_before_the_search(saved, capsys, no_work):
    """A run that holds the name (another optimize-grid making the same grid) is refused before the model loads."""
    from scoresde.checkpoint import file_lock

    ckpt, _, _ = saved
    out = grid_dir(ckpt) / "claimed.json"
    with file_lock(out.parent / f".{out.name}.lock", "held"):
        assert _run("optimize-grid", ckpt, "--sampler", "unipc", "--steps", 4, "-n", 16, "--name", "claimed") == 2
    assert f"{out} is being made by another optimize-grid run" in _error(capsys)
    assert not out.exists()


def test_a_failed_grid_write_leaves_no_file(tmp_path, monkeypatch):
    """A full disk while writing the grid: an OSError naming the file, and neither the grid nor a temporary left."""
    import os

    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device"):
        save_grid(tmp_path / "g.json", [1.0, 0.5, 1e-3], grid_info(VP, "unipc", 3, {}, 16))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(tmp_path.iterdir()) == []


def test_cli_likelihood_grid_is_tuned_saved_and_used_by_name(saved, tmp_path, capsys):
    """``optimize-grid --likelihood`` writes ``likelihood-<steps>.json`` (with its purpose and SDE) under the run;
    ``likelihood --grid NAME`` integrates on it and says so."""
    ckpt = saved[0]
    assert _run("optimize-grid", ckpt, "--likelihood", "--steps", 5, "-n", 8, "--no-progress") == 0
    printed = capsys.readouterr().out
    path = grid_dir(ckpt) / "likelihood-5.json"
    times, info = load_grid(path)
    assert info["purpose"] == "likelihood" and info["steps"] == 5 and info["sde"] == repr(sd.VPSDE())
    assert len(times) == 6 and times[0] == 1.0 and times[-1] == pytest.approx(1e-5)
    assert str(path) in printed
    assert _run("likelihood", ckpt, "--grid", "likelihood-5", "-n", 4, "--out", tmp_path / "l.json",
                "--no-progress") == 0  # fmt: skip
    result = json.loads((tmp_path / "l.json").read_text())
    assert "tuned grid of 5 steps" in result["method"] and math.isfinite(result["mean"])
    assert result["nfe"] == 6
    assert _run("evaluate", ckpt, "-n", 4, "--likelihood-grid", "likelihood-5", "--out", tmp_path / "e.json",
                "--no-progress") == 0  # fmt: skip
    report = json.loads((tmp_path / "e.json").read_text())
    assert "tuned grid of 5 steps" in report["likelihood_method"] and report["likelihood_nfe"] == 6
