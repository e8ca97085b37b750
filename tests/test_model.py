"""One object for a trained model: ``sd.load``, ``ScoreModel``, ``Checkpoint``; the CLI opens each checkpoint once.

The closed-form checks wrap the exact mixture score in a network (an eps-predicting module), so every function that
takes a model is checked against the mixture's true samples and log-density, not against the library's own output.
"""

import json
import os
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import scoresde as sd
import scoresde.checkpoint as checkpoint_module
from scoresde.build import build_sde
from scoresde.cli import main
from scoresde.config import load_config
from scoresde.model import load_for_inference
from scoresde.toy import mixture_errors
from scoresde.train import train
from tests.test_evaluate import CONFIGS


class ExactEps(nn.Module):
    """Predicts the noise of the mixture exactly: eps = -sigma(t) s(x, t); ``gain`` is a parameter to move and wrap."""

    def __init__(self, mixture, sde):
        super().__init__()
        self.score, self.sde = mixture.score_fn(sde), sde
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x, label):
        sigma = self.sde.marginal_coeffs(label, x)[1].reshape(-1, *([1] * (x.ndim - 1)))
        return -self.gain * sigma * self.score(x, label)


@pytest.fixture(scope="module")
def exact_model(mixture):
    sde = sd.VPSDE()
    sampling = {"sampler": "ode", "steps": 50, "n": 3000, "options": {"method": "heun"}}
    return sd.ScoreModel(ExactEps(mixture, sde), sde, prediction="eps", data_shape=(2,), sampling=sampling)


def test_a_score_model_is_the_exact_score_and_samples_the_mixture(exact_model, mixture, reference):
    x = torch.randn(64, 2, dtype=torch.float64)
    t = torch.rand(64, dtype=torch.float64) * 0.9 + 0.05
    expected = mixture.score_fn(exact_model.sde)(x, t)
    torch.testing.assert_close(exact_model(x, t), expected, rtol=1e-10, atol=1e-10)
    assert isinstance(exact_model, nn.Module) and exact_model.num_classes is None
    samples, nfe = sd.sample(exact_model, n=16_000, generator=torch.Generator().manual_seed(0), return_nfe=True)
    assert samples.shape == (16_000, 2) and nfe == 101  # its configured PF-ODE Heun: 50 steps of 2, denoising 1
    errors = mixture_errors(mixture, samples, reference)
    assert errors["tv"] < 0.03 and errors["std"] < 0.08 and abs(errors["logp"]) < 0.06, errors
    assert sd.sample(exact_model).shape == (3000, 2)  # the configured n
    x, nfe = sd.sample(exact_model, n=5, sampler="ode", method="euler", steps=7, return_nfe=True)
    assert nfe == 8  # a given sampler drops the configured steps and options: 7 Euler steps + denoising


def test_every_function_taking_sde_and_score_takes_the_model(exact_model, mixture):
    data = mixture.sample(200, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    logp, _, _ = sd.log_likelihood(exact_model, data, divergence="exact", rtol=1e-6, atol=1e-6)
    # exact score: the flow's density at eps is the mixture noised to eps (1e-5 of VP time): 0.01 nats a dimension
    assert float((logp - mixture.log_prob(data)).abs().max()) / 2 < 0.01
    z, _ = sd.encode(exact_model, data[:16])
    back, _ = sd.decode(exact_model, z)
    torch.testing.assert_close(back, data[:16], rtol=0, atol=2e-3)
    known = data[:8].clone()
    mask = torch.tensor([1.0, 0.0]).expand_as(known)
    filled = sd.inpaint(exact_model, known, mask, sampler="ddim", steps=20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(filled[:, 0], known[:, 0])
    # a transform of the model's score replaces it, the model still giving the process and the shape
    doubled = sd.sample(exact_model, score_fn=lambda x, t: exact_model(x, t), n=6, generator=torch.Generator())
    assert doubled.shape == (6, 2)


def test_bits_per_dim_takes_the_levels_and_range_from_the_model(exact_model):
    levels = torch.randint(0, 17, (4, 2), generator=torch.Generator().manual_seed(0))
    exact_model.levels, exact_model.data_range = 17, (-1.0, 1.0)
    try:
        a, _, _ = sd.bits_per_dim(exact_model, levels, dequantize_data=False, divergence="exact")
        b, _, _ = sd.bits_per_dim(exact_model.sde, exact_model, levels, levels=17, dequantize_data=False,
                                  divergence="exact")  # fmt: skip
    finally:
        exact_model.levels = None
    torch.testing.assert_close(a, b)


def test_compiled_and_ddp_wrapped_models_sample_alike(exact_model):
    noise = sd.SampleNoise(5, 8)
    plain = sd.sample(exact_model, n=8, generator=noise)
    compiled = torch.compile(exact_model, backend="eager")
    torch.testing.assert_close(sd.sample(compiled, n=8, generator=sd.SampleNoise(5, 8)), plain)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(exact_model)
        torch.testing.assert_close(sd.sample(wrapped, n=8, generator=sd.SampleNoise(5, 8)), plain)
    finally:
        torch.distributed.destroy_process_group()
    moved = exact_model.to(torch.float64)
    assert moved.net.gain.dtype == torch.float64
    exact_model.to(torch.float32)


def test_sample_refuses_mixed_arguments(exact_model):
    with pytest.raises(ValueError, match="score model"):
        sd.sample(exact_model.sde, exact_model, n=4)
    with pytest.raises(ValueError, match="not both"):
        sd.sample(exact_model, shape=(4, 2), n=4)
    with pytest.raises(ValueError, match="positive integer"):
        sd.sample(exact_model, n=0)
    with pytest.raises(TypeError, match="score function"):
        sd.sample(exact_model.sde, None, (4, 2))


# -- loading trained checkpoints ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    over = ["training.n_iters=30", "training.snapshot_every=30", "data.toy_size=400", "sampling.n=9",
            "sampling.steps=10", "training.log_every=10"]  # fmt: skip
    workdir = tmp_path_factory.mktemp("toy")
    return workdir, train(load_config(CONFIGS / "toy_mixture.toml", over), workdir, progress=False)


def test_load_gives_the_trained_model_with_its_process_data_and_weights(toy_run):
    workdir, path = toy_run
    model = sd.load(path)
    for other in (sd.load(path.parent), sd.load(workdir)):  # a checkpoints folder, a workdir: the newest
        assert other.source == model.source == str(path)
    tensors = load_file(str(path))  # read independently of the library
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    raw = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    for name, value in model.net.named_parameters():  # the EMA averages the trained parameters (not fixed ones)
        torch.testing.assert_close(value, ema[name] if value.requires_grad else raw[name])
    assert ema and set(ema) < set(raw)
    raw_model = sd.load(path, ema=False)
    assert raw_model.weights == "raw" and model.weights == "ema"
    for name, value in raw_model.net.named_parameters():
        torch.testing.assert_close(value, raw[name])
    meta = json.loads(path.with_suffix(".json").read_text())
    assert repr(model.sde) == repr(build_sde(model.config))
    assert meta["config"]["sde"]["type"] == "vp" and isinstance(model.sde, sd.VPSDE)
    assert model.data_shape == (2,) and model.levels is None and model.sampling["n"] == 9
    assert not model.training and "VPSDE" in repr(model)
    assert sd.sample(model).shape == (9, 2)
    ckpt = sd.Checkpoint.open(workdir)
    assert ckpt.path == path and ckpt.step == 30 and ckpt.config.training.n_iters == 30
    # the old entry point still gives (config, sde, network)
    cfg, sde, net = load_for_inference(path)
    assert cfg.data.dataset == "toy" and isinstance(sde, sd.VPSDE)
    torch.testing.assert_close(next(net.parameters()), next(model.net.parameters()))


def test_load_refuses_a_classifier_and_a_missing_checkpoint(tmp_path):
    with pytest.raises(sd.checkpoint.CheckpointError, match="not found"):
        sd.load(tmp_path / "nothing.safetensors")
    with pytest.raises(sd.checkpoint.CheckpointError, match="no checkpoint"):
        sd.load(tmp_path)
    fake = tmp_path / "checkpoint_00000001.safetensors"
    sd.checkpoint.save_checkpoint(fake, {"model.w": torch.zeros(1)},
                                  {"format": sd.checkpoint.CLASSIFIER_FORMAT, "config": {}})  # fmt: skip
    with pytest.raises(sd.checkpoint.CheckpointError, match="classifier checkpoint, not a score model one"):
        sd.load(fake)


def test_evaluate_takes_a_loaded_model(toy_run):
    from scoresde.evaluate import evaluate

    model = sd.load(toy_run[1])
    report, x = evaluate(model, sampler="ddim", steps=5, n=40, batch_size=40, likelihood=False)
    by_path, _ = evaluate(toy_run[1], sampler="ddim", steps=5, n=40, batch_size=40, likelihood=False)
    assert report["checkpoint"] == str(toy_run[1]) and report["weights"] == "ema"
    assert report["mmd"] == by_path["mmd"] and x.shape == (40, 2)
    bare = sd.ScoreModel(model.net, model.sde, data_shape=(2,))
    with pytest.raises(ValueError, match="training config"):
        evaluate(bare, n=10)


def _count_reads(monkeypatch):
    """Count header and tensor reads per checkpoint file."""
    counts: dict[tuple[str, str], int] = {}
    header, tensors = checkpoint_module._read_header, checkpoint_module._read_tensors

    def counted(kind, read):
        def wrapper(path):
            counts[(kind, os.path.basename(path))] = counts.get((kind, os.path.basename(path)), 0) + 1
            return read(path)

        return wrapper

    monkeypatch.setattr(checkpoint_module, "_read_header", counted("header", header))
    monkeypatch.setattr(checkpoint_module, "_read_tensors", counted("tensors", tensors))
    return counts


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "-n", "6", "--steps", "5"],
        ["likelihood", "--rtol", "1e-2", "--atol", "1e-2"],
        ["evaluate", "-n", "20", "--sampler", "ddim", "--steps", "4", "--no-likelihood"],
        ["optimize-grid", "--sampler", "ddim", "--steps", "3", "-n", "16", "--name", "once"],
    ],
    ids=lambda c: c[0],
)
def test_each_command_reads_the_checkpoint_once(command, toy_run, tmp_path, monkeypatch):
    counts = _count_reads(monkeypatch)
    name, *flags = command
    out = [] if name == "optimize-grid" else ["--out", str(tmp_path / ("r.json" if name != "sample" else "s.npz"))]
    assert main([name, str(toy_run[1]), *flags, *out]) == 0
    file = toy_run[1].name
    assert counts == {("header", file): 1, ("tensors", file): 1}


def test_sample_cli_output_matches_the_python_api(toy_run, tmp_path):
    """``scoresde sample`` and ``sd.sample(sd.load(...))`` with the same per-sample noise give the same samples."""
    out = tmp_path / "s.npz"
    assert main(["sample", str(toy_run[1]), "-n", "7", "--steps", "6", "--seed", "3", "--out", str(out)]) == 0
    model = sd.load(toy_run[1])
    x = sd.sample(model, n=7, steps=6, generator=sd.SampleNoise(3, 7))
    np.testing.assert_allclose(np.load(out)["samples"], x.numpy(), rtol=1e-6, atol=1e-6)
