"""The one training loop (scoresde.training.fit): any objective, gradient accumulation, precision, channels-last,
gradient checkpointing, compile, skipped non-finite steps, exact resume with each option, DDP with the options,
and post-hoc EMA against a directly tracked one."""

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from scoresde.build import build_model
from scoresde.checkpoint import load_checkpoint
from scoresde.cli import main
from scoresde.config import load_config
from scoresde.train import train
from scoresde.training import (
    EMA,
    FitOptions,
    Objective,
    PostHocEMA,
    check_fit_options,
    checkpoint_blocks,
    fit,
    reconstruct_posthoc,
    sigma_rel_to_gamma,
)
from scoresde.training.ema import posthoc_coefficients, power_profile_dot, power_sigma_rel

ROOT = Path(__file__).parents[1]
TOY = ROOT / "configs" / "toy_mixture.toml"
DIGITS = ROOT / "configs" / "digits_vp.toml"
SHORT = ["training.n_iters=30", "training.snapshot_every=15", "training.log_every=5", "sampling.steps=5"]
TINY_DIGITS = ["model.net={nf = 8, ch_mult = [1, 2], num_res_blocks = 1, attn_resolutions = [4]}",
               "training.batch_size=16", *SHORT]  # fmt: skip
DROPOUT = "model.net={nf = 8, ch_mult = [1, 2], num_res_blocks = 1, attn_resolutions = [4], dropout = 0.1}"


def _weights(workdir: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(workdir / "checkpoints")
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema.", "optim."))}


def _log(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]


# -- any objective ------------------------------------------------------------------------------------------
def _regression(n_iters: int, bad_step: int | None = None, grad_accum: int = 1) -> tuple[Objective, FitOptions]:
    """Least squares y = A x + b with a known (A, b): the loop must find them."""
    truth_w, truth_b = torch.tensor([[2.0, -1.0, 0.5]]), torch.tensor([0.25])
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    calls = {"n": 0}

    def draw(step, generator):
        x = torch.randn(64, 3, generator=generator)
        return {"x": x, "y": x @ truth_w.T + truth_b}

    def make_loss(network):
        def loss(batch):
            calls["n"] += 1
            value = ((network(batch["x"]) - batch["y"]) ** 2).mean()
            if bad_step is not None and calls["n"] == (bad_step + 1) * grad_accum:
                value = value * float("nan")
            return value, {"abs_error": (network(batch["x"]) - batch["y"]).abs().mean()}

        return loss

    objective = Objective(model=model, draw=draw, make_loss=make_loss, lr=lambda step: 0.05,
                          metadata={"format": "test-regression", "config": {}}, check_resume=lambda meta, path: None,
                          what="regression", lr_key="the lr")  # fmt: skip
    opts = FitOptions(n_iters=n_iters, batch_size=64, grad_clip=0.0, grad_accum=grad_accum, log_every=10,
                      snapshot_every=n_iters, keep=1)  # fmt: skip
    return objective, opts


def test_fit_trains_any_objective_to_its_closed_form_solution(tmp_path):
    objective, opts = _regression(300)
    final = fit(objective, opts, tmp_path, torch.device("cpu"))
    assert final.name == "checkpoint_00000300.safetensors"
    torch.testing.assert_close(objective.model.weight.detach(), torch.tensor([[2.0, -1.0, 0.5]]), atol=1e-3, rtol=0)
    torch.testing.assert_close(objective.model.bias.detach(), torch.tensor([0.25]), atol=1e-3, rtol=0)
    log = _log(tmp_path)
    assert [r["step"] for r in log] == list(range(10, 301, 10))
    assert log[-1]["abs_error"] < 1e-2 < log[0]["abs_error"]  # metrics are logged beside the loss
    assert all(r["images_per_s"] > 0 and r["seconds_left"] >= 0 for r in log)


def test_a_non_finite_loss_never_updates_the_weights(tmp_path):
    objective, opts = _regression(20, bad_step=3)
    model = objective.model
    seen = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        before = [p.detach().clone() for p in model.parameters()]
        out = original(self, *args, **kwargs)
        seen.append(all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)))
        return out

    torch.optim.Adam.step = spy
    try:
        with pytest.raises(FloatingPointError, match=r"NaN or inf at 1 step\(s\) of steps 1-10 .*lower the lr"):
            fit(objective, opts, tmp_path, torch.device("cpu"))
    finally:
        torch.optim.Adam.step = original
    assert seen == [False, False, False, True, *[False] * 6]  # the 4th update (step 3) was skipped on the device
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (tmp_path / "checkpoints").exists()  # nothing was saved from the run that went wrong


def test_gradient_accumulation_gives_the_same_update(tmp_path):
    one, opts1 = _regression(25)
    fit(one, opts1, tmp_path / "one", torch.device("cpu"))
    four, opts4 = _regression(25, grad_accum=4)
    fit(four, opts4, tmp_path / "four", torch.device("cpu"))
    for a, b in zip(one.model.parameters(), four.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_keeps_the_gradients():
    cfg = load_config(DIGITS, ["model.net={nf = 8}"])
    torch.manual_seed(0)
    plain = build_model(cfg)
    recomputed = build_model(cfg)
    recomputed.load_state_dict(plain.state_dict())
    assert checkpoint_blocks(recomputed) > 4
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4) * 999
    plain(x, t).square().sum().backward()
    recomputed(x, t).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)


# -- the options through train(): results, exact resume -------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _straight_and_resumed(tmp_path: Path, base: Path, options: list[str]) -> tuple[dict, dict]:
    common = SHORT if base == TOY else []
    straight = load_config(base, [*common, *options])
    train(straight, tmp_path / "straight", progress=False)
    train(load_config(base, [*common, *options, "training.n_iters=15"]), tmp_path / "resumed", progress=False)
    train(straight, tmp_path / "resumed", progress=False)  # resumes at 15
    return _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")


@pytest.mark.parametrize(
    ("base", "options"),
    [
        (TOY, ["training.precision=bf16", "training.grad_accum=2"]),
        (DIGITS, [*TINY_DIGITS, "training.channels_last=true", "training.grad_checkpointing=true"]),
        (TOY, ["training.ema_type=posthoc", "training.posthoc_every=5"]),
    ],
    ids=["bf16-accum", "channels_last-checkpointing", "posthoc"],
)
def test_each_option_trains_and_resumes_bit_exactly(tmp_path, base, options):
    a, b = _straight_and_resumed(tmp_path, base, options)  # n_iters may change on resume
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = _log(tmp_path / "straight")
    assert all(math.isfinite(r["loss"]) for r in log) and log[-1]["loss"] < log[0]["loss"] * 1.5
    if "training.ema_type=posthoc" in options:
        names = sorted(p.name for p in (tmp_path / "resumed" / "posthoc").glob("*.safetensors"))
        assert names == [f"ema_{s:08d}.safetensors" for s in range(5, 31, 5)]
        for step in (15, 30):
            first, _ = load_checkpoint(tmp_path / "straight" / "posthoc" / f"ema_{step:08d}.safetensors")
            second, _ = load_checkpoint(tmp_path / "resumed" / "posthoc" / f"ema_{step:08d}.safetensors")
            assert all(torch.equal(first[k], second[k]) for k in first)


@cuda
@pytest.mark.parametrize(
    "options",
    [[], ["training.precision=fp16"], ["training.precision=bf16", "training.channels_last=true"]],
    ids=["fp32", "fp16", "bf16-channels_last"],
)
def test_cuda_training_resumes_bit_exactly(tmp_path, options):
    """On a GPU (deterministic kernels): dropout draws from the CUDA generator and fp16 steps depend on the
    gradient scaler's state; both are checkpointed, so the resumed run is the uninterrupted one."""
    a, b = _straight_and_resumed(tmp_path, DIGITS, [*TINY_DIGITS, DROPOUT, "training.device=cuda",
                                                    "training.deterministic=true", *options])  # fmt: skip
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = _log(tmp_path / "straight")
    assert all(math.isfinite(r["loss"]) for r in log) and log[-1]["loss"] < log[0]["loss"]
    _, meta = load_checkpoint(tmp_path / "straight" / "checkpoints")
    assert ("grad_scaler" in meta) == ("training.precision=fp16" in options)


@cuda
def test_fp16_with_the_scaler_trains_to_the_closed_form_solution(tmp_path):
    objective, opts = _regression(300)
    fit(objective, FitOptions(**{**opts.__dict__, "precision": "fp16"}), tmp_path, torch.device("cuda"))
    weight = objective.model.weight.detach().cpu()
    torch.testing.assert_close(weight, torch.tensor([[2.0, -1.0, 0.5]]), atol=2e-2, rtol=0)


def test_each_process_restores_its_own_generators(tmp_path):
    """Under DDP every process draws its own dropout masks: a checkpoint keeps each process's generator state
    (``rng.torch.<rank>``), and a resumed process takes its own, not process 0's."""
    from scoresde.training.loop import _restore_random_state

    scaler = torch.amp.GradScaler("cuda", enabled=False)
    states = {f"rng.torch{s}": torch.Generator().manual_seed(seed).get_state()
              for s, seed in (("", 1), (".1", 2))}  # fmt: skip
    _restore_random_state(states, {}, torch.device("cpu"), 1, scaler)
    assert torch.equal(torch.get_rng_state(), states["rng.torch.1"])
    _restore_random_state(states, {}, torch.device("cpu"), 0, scaler)
    assert torch.equal(torch.get_rng_state(), states["rng.torch"])
    torch.manual_seed(7)
    before = torch.get_rng_state()
    _restore_random_state(states, {}, torch.device("cpu"), 2, scaler)  # a process the checkpoint did not have
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow  # three torchrun launches (about 30 s)
def test_ddp_run_with_dropout_resumes_bit_exactly(tmp_path):
    """Two gloo processes with dropout (the digits network): killed at a checkpoint and resumed, the run equals
    the uninterrupted one bit for bit (each process gets back its own generator)."""
    args = ["train", str(DIGITS), "--no-progress", *[x for o in (*TINY_DIGITS, DROPOUT) for x in ("--set", o)]]

    def torchrun(workdir: Path, *extra: str) -> None:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                  "scoresde.cli", *args, *extra, "--workdir", str(workdir)]  # fmt: skip
        run = subprocess.run(launch, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                             timeout=300)  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]

    torchrun(tmp_path / "straight")
    torchrun(tmp_path / "resumed", "--set", "training.n_iters=15")
    torchrun(tmp_path / "resumed")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_bf16_training_stays_close_to_fp32(tmp_path):
    """bfloat16 autocast on the CPU: the same run within bf16 rounding of the float32 one."""
    runs = {}
    for precision in ("fp32", "bf16"):
        train(load_config(TOY, [*SHORT, f"training.precision={precision}"]), tmp_path / precision, progress=False)
        runs[precision] = _log(tmp_path / precision)
    for a, b in zip(runs["fp32"], runs["bf16"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 0.05 * a["loss"]


def test_compiled_training_matches_eager(tmp_path):
    """training.compile on the CPU (inductor): the compiled network trains like the eager one."""
    pytest.importorskip("torch._inductor")
    for name, extra in (("eager", []), ("compiled", ["training.compile=true"])):
        train(load_config(TOY, [*SHORT, "training.n_iters=10", "training.snapshot_every=10", *extra]),
              tmp_path / name, progress=False)  # fmt: skip
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    for key in (k for k in a if k.startswith("model.")):
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.precision=fp16"], "training.precision 'fp16' needs a CUDA device"),
        (["training.precision=half"], "unknown training.precision 'half'"),
        (["training.grad_accum=3"], "training.batch_size must be divisible by training.grad_accum"),
        (["training.ema_type=hourly"], "unknown training.ema_type"),
        (["training.posthoc_lengths=[0.5]"], "posthoc_lengths must be a non-empty list of EMA lengths"),
        (["training.amp=true", "training.precision=bf16"], "training.amp = true is training.precision 'fp16'"),
        (["training.grad_checkpointing=true"], "MLP has no residual or attention blocks"),
    ],
)
def test_bad_options_are_one_line_errors_before_any_work(tmp_path, capsys, overrides, message):
    config = TOY if "training.grad_checkpointing=true" in overrides else DIGITS
    args = ["train", str(config), "--workdir", str(tmp_path / "w"), "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_ddp_with_accumulation_and_bf16_matches_one_process(tmp_path):
    """Two gloo processes with grad_accum=2 and bfloat16 compute the single-process update."""
    extra = ["--set", "training.n_iters=20", "--set", "training.snapshot_every=20", "--set",
             "training.batch_size=64", "--set", "training.grad_accum=2", "--set", "training.precision=bf16", "--set",
             "sampling.steps=5"]  # fmt: skip
    cmd = ["train", str(TOY), "--no-progress", *extra]
    assert main([*cmd, "--workdir", str(tmp_path / "single")]) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
              "scoresde.cli", *cmd, "--workdir", str(tmp_path / "multi")]  # fmt: skip
    run = subprocess.run(launch, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "multi")
    for key in (k for k in a if k.startswith(("model.", "ema."))):
        torch.testing.assert_close(b[key], a[key], rtol=2e-3, atol=2e-4, msg=key)


@pytest.mark.slow  # a torchrun launch (7 s); test_ddp_with_accumulation_and_bf16_matches_one_process runs by default
def test_the_classifier_trains_data_parallel_through_the_same_loop(tmp_path):
    """The noise-conditional classifier under torchrun (2 gloo processes) computes the single-process update."""
    cmd = ["train-classifier", str(TOY), "--no-progress", "--set", "classifier.arch=mlp", "--set",
           "classifier.n_iters=20", "--set", "classifier.snapshot_every=20", "--set", "classifier.batch_size=64",
           "--set", "classifier.num_classes=3", "--set", "classifier.eval_times=[0.1]"]  # fmt: skip
    assert main([*cmd, "--workdir", str(tmp_path / "single")]) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
              "scoresde.cli", *cmd, "--workdir", str(tmp_path / "multi")]  # fmt: skip
    run = subprocess.run(launch, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("trained the classifier") == 1  # rank 0 reports
    a, _ = load_checkpoint(tmp_path / "single" / "checkpoints")
    b, meta = load_checkpoint(tmp_path / "multi" / "checkpoints")
    assert meta["world_size"] == 2
    for key in (k for k in a if k.startswith("model.")):
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


# -- post-hoc EMA -------------------------------------------------------------------------------------------
def test_sigma_rel_and_gamma_are_inverse_and_match_edm2():
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)  # EDM2's sigma_rel -> gamma table
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for sigma in (0.01, 0.05, 0.13, 0.28):
        assert power_sigma_rel(sigma_rel_to_gamma(sigma)) == pytest.approx(sigma, rel=1e-12)
    for bad in (0.0, 0.3, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="EMA length"):
            sigma_rel_to_gamma(bad)


def test_profile_inner_products_match_quadrature():
    grid = torch.linspace(0, 7, 700_001, dtype=torch.float64)

    def profile(t, gamma):
        return torch.where(grid <= t, (gamma + 1) * grid.clamp(max=t) ** gamma / t ** (gamma + 1), 0.0)

    for ta, ga, tb, gb in ((3.0, 6.9, 7.0, 17.0), (7.0, 2.0, 5.0, 9.5), (4.0, 1.0, 4.0, 1.0)):
        numeric = torch.trapezoid(profile(ta, ga) * profile(tb, gb), grid)
        assert power_profile_dot(ta, ga, tb, gb) == pytest.approx(float(numeric), rel=1e-4)


def test_power_ema_weights_follow_the_profile():
    """The update n decay (1 - 1/n)^(gamma+1) gives weight ~ (gamma+1) k^gamma / n^(gamma+1) to update k."""
    model = torch.nn.Linear(1, 200, bias=False)
    ema = PostHocEMA(model, (0.1,))
    n = 200
    for k in range(1, n + 1):  # parameter j holds 1 at update j only: the EMA reads each update's weight
        with torch.no_grad():
            model.weight.zero_()
            model.weight[k - 1] = 1.0
        ema.update(model)
    weights = ema.shadows[0]["weight"][:, 0].double()
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-5)
    gamma = ema.gammas[0]
    k = torch.arange(1, n + 1, dtype=torch.float64)
    exact = (1 - (1 - 1 / k) ** (gamma + 1)) * (k / n) ** (gamma + 1)  # telescoped product of the decays
    torch.testing.assert_close(weights, exact, rtol=1e-4, atol=1e-6)
    coefficients = posthoc_coefficients([(float(n), gamma)], float(n), gamma)
    assert coefficients == pytest.approx([1.0])


def test_posthoc_reconstruction_matches_a_directly_tracked_ema(tmp_path, capsys):
    """Train with profiles 0.05 and 0.10 (snapshots every 20 steps), rebuild 0.07 after training, and compare with
    a run that tracked 0.07 directly on the same trajectory."""
    common = ["training.n_iters=400", "training.snapshot_every=400", "training.log_every=100", "sampling.steps=5",
              "training.ema_type=posthoc", "training.posthoc_every=20"]  # fmt: skip
    train(load_config(TOY, [*common, "training.posthoc_lengths=[0.05, 0.1]"]), tmp_path / "pair", progress=False)
    train(load_config(TOY, [*common, "training.posthoc_lengths=[0.07]"]), tmp_path / "direct", progress=False)
    pair, _ = load_checkpoint(tmp_path / "pair" / "checkpoints")
    direct, _ = load_checkpoint(tmp_path / "direct" / "checkpoints")
    assert all(torch.equal(pair[k], direct[k]) for k in pair if k.startswith("model."))  # the same trajectory
    rebuilt, buffers, meta = reconstruct_posthoc(tmp_path / "pair" / "posthoc", 0.07)
    assert meta["step"] == 400 and buffers.keys() == {k for k in (n[6:] for n in pair if n.startswith("model."))} - set(
        rebuilt
    )
    target = {k[len("ema_posthoc.0.") :]: v for k, v in direct.items() if k.startswith("ema_posthoc.0.")}
    raw = {k[len("model.") :]: v for k, v in pair.items() if k.startswith("model.")}
    error = math.sqrt(sum(float((rebuilt[k] - target[k]).square().sum()) for k in target))
    spread = math.sqrt(sum(float((raw[k] - target[k]).square().sum()) for k in target))
    assert error < 0.01 * spread, (error, spread)  # measured 0.0014: far closer to the tracked EMA than the raw
    # the CLI writes it as a checkpoint that sampling reads
    out = tmp_path / "ema_0.07"
    assert main(["ema", str(tmp_path / "pair"), "--length", "0.07", "--out", str(out)]) == 0
    assert "checkpoint_00000400.safetensors" in capsys.readouterr().out
    written, meta = load_checkpoint(out)
    assert meta["posthoc_ema"]["sigma_rel"] == 0.07
    assert all(torch.equal(written[f"ema.{k}"], v) for k, v in rebuilt.items())
    assert main(["sample", str(out), "--steps", "5", "-n", "8", "--out", str(tmp_path / "s.npz")]) == 0
    assert main(["ema", str(tmp_path / "pair"), "--length", "0.07", "--out", str(out)]) == 2  # never replaced
    assert "exists" in capsys.readouterr().err
    assert main(["ema", str(tmp_path / "direct"), "--length", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert "EMA length" in capsys.readouterr().err
    assert main(["ema", str(tmp_path / "nothing"), "--length", "0.1", "--out", str(tmp_path / "x")]) == 2
    assert "no post-hoc EMA snapshots" in capsys.readouterr().err


def test_classic_ema_is_unchanged_by_the_loop():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, 0.9, warmup=False)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], start + 0.1)


# -- no host synchronisation between logging steps (CUDA), and the GPU check's CPU parts ---------------------
def run_fit_steps(device: str, sync_mode: str | None) -> torch.nn.Module:
    """Fit the regression on ``device`` with ``sync_mode`` set during steps 2-4 (whole steps: forward, backward,
    clipping, Adam, EMA; the logging step 5 reads the device once, after it)."""
    objective, _ = _regression(10)
    opts = FitOptions(n_iters=10, batch_size=64, log_every=5, snapshot_every=10, keep=1, ema=0.9, grad_accum=2,
                      grad_clip=1.0, posthoc=(0.1,), posthoc_every=100)  # fmt: skip
    draw, calls = objective.draw, {"n": 0}

    def watched(step, generator):
        calls["n"] += 1
        if sync_mode is not None and calls["n"] in (2, 5):
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode(sync_mode if calls["n"] == 2 else "default")
        return draw(step, generator)

    objective.draw = watched
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fit(objective, opts, Path(tmp), torch.device(device))
    finally:
        if sync_mode is not None:
            torch.cuda.set_sync_debug_mode("default")
    return objective.model


@cuda
def test_training_steps_never_sync_with_the_host():
    model = run_fit_steps("cuda", "error")
    assert model.weight.device.type == "cuda"


def test_the_training_sync_check_runs_on_the_cpu_too():
    a, b = run_fit_steps("cpu", None), run_fit_steps("cpu", None)
    assert torch.equal(a.weight, b.weight)


def test_the_gpu_check_runs_its_cpu_parts(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--device", "cpu", "--tiny", "--skip-tests", "--only", "fp32,bf16,channels_last", "--steps", "2",
            "--warmup", "1", "--batch-size", "4"]  # fmt: skip
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    for row in ("training, batch 4, fp32", "training, batch 4, bf16", "training, batch 4, channels_last",
                "sampling, DPM-Solver++ 2M, 10 NFE, batch 4"):  # fmt: skip
        assert row in out
    assert bench.main(["--device", "cpu", "--only", "fp64"]) == 2
    assert "unknown option row" in capsys.readouterr().err


@pytest.mark.parametrize("cxx", [None, "no-such-compiler"])
def test_compile_without_a_cpu_compiler_is_a_one_line_error_before_training(tmp_path, monkeypatch, capsys, cxx):
    """torch.compile's CPU code needs a C++ compiler: without one, the config is refused before any work (not a
    traceback from inside the first step)."""
    import scoresde.training.options as options

    real_which = options.shutil.which
    monkeypatch.setattr(options.shutil, "which", lambda name: None if name in (*options.CPU_COMPILERS, cxx) else
                        real_which(name))  # fmt: skip
    if cxx is None:
        monkeypatch.delenv("CXX", raising=False)
    else:
        monkeypatch.setenv("CXX", cxx)
    with pytest.raises(ValueError, match="training.compile on cpu needs a C..? compiler") as info:
        check_fit_options(FitOptions(n_iters=1, batch_size=8, compile=True), torch.device("cpu"))
    assert "\n" not in str(info.value) and (cxx is None or cxx in str(info.value))
    cfg = ROOT / "configs" / "toy_mixture.toml"
    assert main(["train", str(cfg), "--workdir", str(tmp_path / "run"), "--set", "training.compile=true",
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "training.compile on cpu needs" in err and "\n" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_that_emulates_it_warns_in_one_line(monkeypatch, native):
    """Without AVX-512 BF16 or AMX, torch emulates bfloat16 (the main job trained 17x slower on an AVX2 CPU): the
    option stays allowed, with a warning before training; a CPU that has it gets none."""
    import warnings

    import scoresde.training.options as options

    monkeypatch.setattr(options, "cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_fit_options(FitOptions(n_iters=1, batch_size=8, precision="bf16"), torch.device("cpu"))
        check_fit_options(FitOptions(n_iters=1, batch_size=8), torch.device("cpu"))
    slow = [w for w in caught if issubclass(w.category, options.SlowPrecisionWarning)]
    assert len(slow) == (0 if native else 1)
    assert all("\n" not in str(w.message) and "emulated" in str(w.message) for w in slow)
