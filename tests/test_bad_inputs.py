"""Issue 17's silent wrong results and unclear messages, each now a correct result or a clear early error."""

import importlib

import pytest
import torch

import scoresde as sd
from scoresde.cli import main
from scoresde.toy import demo_mixture


class Conditional(torch.nn.Module):
    """A class-conditional 'network' (the exact score of the mixture ignores the label) for guidance checks."""

    num_classes = 3

    def __init__(self, mixture, sde):
        super().__init__()
        self.score = mixture.score_fn(sde)
        self.sde = sde

    def forward(self, x, label, y):
        sigma = self.sde.marginal_coeffs(label, x)[1][:, None]
        return -sigma * self.score(x, label)


class Pointwise(torch.nn.Module):
    """A one-layer 'network' net(x, t) for checks that need a ScoreModel but no trained weights."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, x, t):
        return self.conv(x)


def test_guidance_weights_are_bounded():
    sde, mixture = sd.VPSDE(), demo_mixture()
    score = sd.ModelScore(Conditional(mixture, sde), sde)
    with pytest.raises(ValueError, match="scale must be at most 1000"):
        sd.classifier_free_guided(score, 1, 1e30)
    with pytest.raises(ValueError, match="scale must be at most 1000"):
        sd.classifier_guided(mixture.score_fn(sde), mixture.classifier_fn(sde), 1, 1e30)
    with pytest.raises(ValueError, match="scale must be at most 1000"):
        sd.solve_inverse(sde, mixture.score_fn(sde), torch.zeros(4, 1), torch.tensor([[1.0, 0.0]]), noise_std=0.1,
                         method="dps", scale=1e30)  # fmt: skip
    assert main(["sample", "missing", "--class", "1", "--guidance", "1e30"]) == 2  # rejected by the parser


def test_a_classifier_returning_probabilities_is_refused():
    sde, mixture = sd.VPSDE(), demo_mixture()
    exact = mixture.classifier_fn(sde)
    guided = sd.classifier_guided(mixture.score_fn(sde), lambda x, t: exact(x, t).exp(), 2)
    with pytest.raises(ValueError, match="must return log-probabilities"):
        sd.sample(sde, guided, (8, 2), sampler="ddim", steps=5)
    fine = sd.classifier_guided(mixture.score_fn(sde), exact, 2)
    x = sd.sample(sde, fine, (400, 2), sampler="ddim", steps=100, generator=torch.Generator().manual_seed(0))
    assert float((mixture.assign(x) == 2).double().mean()) > 0.95  # the exact classifier steers to class 2


def test_counts_and_shapes_must_be_integers():
    sde, mixture = sd.VPSDE(), demo_mixture()
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        sd.sample(sde, mixture.score_fn(sde), (10, 2.7), sampler="ddim", steps=3)
    from scoresde.evaluate import evaluate

    with pytest.raises(ValueError, match="n must be an integer, got 10.7"):
        evaluate("missing.safetensors", n=10.7)


def test_option_types_are_checked_in_the_api():
    sde, mixture = sd.VPSDE(), demo_mixture()
    with pytest.raises(ValueError, match="probability_flow must be True or False for sampler 'euler_maruyama'"):
        sd.sample(sde, mixture.score_fn(sde), (4, 2), sampler="euler_maruyama", steps=3, probability_flow="no")
    with pytest.raises(ValueError, match="corrector_steps must be a finite number >= 0 for sampler 'pc', got 1.5"):
        sd.sample(sde, mixture.score_fn(sde), (4, 2), sampler="pc", steps=3, corrector_steps=1.5)
    own = sd.sampling.euler_maruyama_step  # a predictor function of one's own still passes
    assert sd.sample(sde, mixture.score_fn(sde), (4, 2), sampler="pc", steps=3, predictor=own).shape == (4, 2)


@pytest.mark.parametrize(("command", "said"), [("sample", "nothing was written"),
                                               ("train", "checkpoints written so far are intact")])  # fmt: skip
def test_ctrl_c_says_what_was_kept(command, said, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    cli_main = importlib.import_module("scoresde.cli.main")  # the module (scoresde.cli.main is the function)
    monkeypatch.setitem(cli_main.COMMANDS, command, interrupted)
    args = ["sample", "ckpt"] if command == "sample" else ["train", "toy_mixture", "--workdir", "w"]
    assert main(args) == 130
    assert capsys.readouterr().err.strip() == f"scoresde {command}: interrupted ({said})"


def test_inputs_outside_the_models_range_are_refused():
    """A ScoreModel knows its data range: inpaint and colorize refuse pixels or levels given in place of model-space
    values (a plain score function has no range, so nothing is checked)."""
    sde = sd.VPSDE()
    model = sd.ScoreModel(Pointwise(), sde, data_shape=(3, 4, 4), data_range=(-1.0, 1.0))
    gray = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"gray has values in \[1e\+06, 1e\+06\], outside the model's data range"):
        sd.colorize(model, gray + 1e6, steps=2)
    with pytest.raises(ValueError, match="x_known has values in"):
        sd.inpaint(model, torch.full((2, 3, 4, 4), 200.0), torch.ones(1, 3, 4, 4), steps=2)
    assert sd.colorize(model, gray + 1.2, steps=2, sampler="ddim").shape == (2, 3, 4, 4)  # within the slack


def test_noiseless_measurements_that_no_sample_meets_are_refused():
    sde, mixture = sd.VPSDE(), demo_mixture()
    with pytest.raises(ValueError, match=r"no x satisfies A x = y for measurement row 0 .*noise_std > 0"):
        sd.solve_inverse(sde, mixture.score_fn(sde), torch.full((4, 1), -1.5), torch.zeros(1, 2), steps=5)
    A = torch.tensor([[1.0, 1.0]])  # consistent: x1 + x2 = y has solutions
    x = sd.solve_inverse(sde, mixture.score_fn(sde), torch.full((4, 1), -1.5), A, steps=5)
    torch.testing.assert_close(x.sum(1), torch.full((4,), -1.5))


def test_a_resume_with_another_dataset_or_recipe_is_refused(tmp_path):
    from scoresde.config import load_config
    from scoresde.train import train

    base = ["training.n_iters=4", "training.snapshot_every=2", "training.batch_size=16", "data.toy_size=64"]
    train(load_config("toy_mixture", base), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"another config \(data.toy \('mixture' -> 'moons'\)\); a resume may change"):
        train(load_config("toy_mixture", [*base, "data.toy=moons"]), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"training.lr .*training.n_iters"):
        train(load_config("toy_mixture", [*base, "training.lr=0.5"]), tmp_path, progress=False)
    longer = train(load_config("toy_mixture", [*base, "training.n_iters=6", "training.log_every=1"]), tmp_path,
                   progress=False)  # fmt: skip
    assert longer.name == "checkpoint_00000006.safetensors"


def test_counts_and_tolerances_are_bounded_before_any_work():
    sde, mixture = sd.VPSDE(), demo_mixture()
    calls = []

    def counted(x, t):
        calls.append(1)
        return mixture.score_fn(sde)(x, t)

    cases = [
        (dict(steps=10**9), "steps must be an integer from 1 to 100,000"),
        (dict(sampler="dpm_solver++", steps=10**9), "must be at most 100,000"),
        (dict(sampler="pc", steps=3, corrector_steps=10**9), "corrector_steps must be at most 100"),
        (dict(sampler="ode", rtol=1e-14), r"rtol=1e-14 is below what float32 resolves \(at least 4.8e-07"),
        (dict(sampler="pc", steps=3, snr=float("inf")), "snr must be a finite number > 0"),
        (dict(sampler="ddim", steps=3, device="cuda" if not torch.cuda.is_available() else "cuda:99"), "device"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            sd.sample(sde, counted, (4, 2), **kwargs)
    with pytest.raises(ValueError, match=r"10,000,000,000 samples of shape \(2,\) would take 74.5 GiB"):
        sd.sample(sde, counted, (10**10, 2), sampler="ddim", steps=3)
    with pytest.raises(ValueError, match="n must be an integer from 2 to 1,000"):
        sd.interpolate(sde, counted, torch.zeros(1, 2), torch.ones(1, 2), n=10**9)
    assert not calls  # every refusal came before the first score evaluation
    x64 = sd.sample(sde, mixture.score_fn(sde), None, x_init=torch.randn(4, 2, dtype=torch.float64), sampler="ode",
                    rtol=1e-10, atol=1e-10)  # fmt: skip
    assert x64.dtype == torch.float64  # float64 resolves far tighter tolerances


def test_inputs_far_outside_the_range_are_blamed_not_the_model():
    sde, mixture = sd.VPSDE(), demo_mixture()
    with pytest.raises(FloatingPointError, match="inputs as large as 1e\\+30: the inputs are far outside"):
        sd.sample(sde, mixture.score_fn(sde), None, x_init=torch.full((4, 2), 1e30), sampler="ddim", steps=3)


def test_likelihood_inputs_are_checked_before_the_solve():
    sde, mixture = sd.VPSDE(), demo_mixture()
    with pytest.raises(TypeError, match="the likelihood needs float32 or float64 data, got torch.bfloat16"):
        sd.log_likelihood(sde, mixture.score_fn(sde), torch.zeros(4, 2, dtype=torch.bfloat16))
    levels = torch.randint(0, 256, (2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"data_range must be two finite numbers \(lo, hi\) with lo < hi"):
        sd.bits_per_dim(sde, lambda x, t: -x, levels, data_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        sd.bits_per_dim(sde, lambda x, t: -x, levels, levels=2.5)


def test_losses_refuse_undefined_times_and_non_finite_scores():
    from scoresde.losses import dsm_loss

    sde, mixture = sd.VPSDE(), demo_mixture()
    x0 = mixture.sample(8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"t must lie in \(0, T=1.0\]: at t = 0 the data are not noised"):
        dsm_loss(sde, mixture.score_fn(sde), x0, t=torch.zeros(8))
    with pytest.raises(FloatingPointError, match="score_fn returned NaN or inf on noised training data"):
        dsm_loss(sde, lambda x, t: torch.full_like(x, float("nan")), x0)
    assert torch.isfinite(dsm_loss(sde, mixture.score_fn(sde), x0, t=torch.full((8,), 0.5)))


def test_data_with_mismatched_labels_or_levels_is_refused():
    from scoresde.data import ImageData, to_model

    with pytest.raises(ValueError, match="3 images come with labels of shape \\(5,\\); each image needs exactly one"):
        ImageData(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), 256, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"levels_x must hold integer levels 0 to 16 \(levels=17\), got values in"):
        to_model(torch.full((2, 1, 2, 2), 200), 17)
    torch.testing.assert_close(to_model(torch.full((1, 1, 1, 1), 16), 17, dequantize=False), torch.full((1, 1, 1, 1),
                               -1 + 2 * 16.5 / 17))  # fmt: skip


class Constant(torch.nn.Module):
    """A 'network' whose data prediction is the constant ``value`` everywhere (prediction="x0")."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x, t):
        return torch.full_like(x, self.value)


def test_sample_warns_when_values_leave_the_data_range_and_thresholding_keeps_them_in():
    sde = sd.VPSDE()
    model = sd.ScoreModel(Constant(5.0), sde, prediction="x0", data_shape=(1, 4, 4), data_range=(-1.0, 1.0))
    with pytest.warns(sd.sampling.SamplingDivergenceWarning, match=r"100.0% of the sampled values lie beyond the "
                      r"data range \(-1.0, 1.0\)") as caught:  # fmt: skip
        x = sd.sample(model, n=4, sampler="dpm_solver++", steps=10, generator=torch.Generator().manual_seed(0))
    assert caught[0].filename == __file__  # the warning points at the caller's line, not inside torch
    torch.testing.assert_close(x, torch.full_like(x, 5.0), atol=0.05, rtol=0)
    import warnings

    for kind in ("static", "dynamic"):  # the prediction is pulled into the model's range: the samples end at 1
        with warnings.catch_warnings():
            warnings.simplefilter("error", sd.sampling.SamplingDivergenceWarning)
            x = sd.sample(model, n=4, sampler="dpm_solver++", steps=10, thresholding=kind,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
        torch.testing.assert_close(x, torch.ones_like(x), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="thresholding corrects data predictions"):
        sd.sample(model, n=4, sampler="unipc", steps=5, prediction="noise", thresholding="static")
    with pytest.raises(ValueError, match="unknown thresholding 'clip'"):
        sd.sample(model, n=4, sampler="dpm_solver++", steps=5, thresholding="clip")


def test_thresholding_against_hand_computed_values():
    import numpy as np

    from scoresde.sampling.exponential import thresholding_fn

    d = torch.tensor([[0.5, -3.0, 2.0, 1.0], [0.2, -0.4, 0.1, 0.9]])  # rows: one saturated sample, one inside
    torch.testing.assert_close(thresholding_fn("static")(d), d.clamp(-1, 1))
    dynamic = thresholding_fn("dynamic", (-1.0, 1.0), ratio=0.75)(d)
    s = max(float(np.quantile(np.abs(d[0].numpy()), 0.75)), 1.0)  # numpy's linear quantile of |u| = 2.25
    torch.testing.assert_close(dynamic[0], d[0].clamp(-s, s) / s)
    torch.testing.assert_close(dynamic[1], d[1])  # a prediction inside the range is left as it is
    shifted = thresholding_fn("dynamic", (0.0, 1.0), ratio=1.0)(torch.tensor([[0.5, 2.5]]))  # u = 2d - 1 = (0, 4)
    torch.testing.assert_close(shifted, torch.tensor([[0.5, 0.5 + 0.5 * 4 / 4]]))
    assert thresholding_fn("none") is None


def test_the_command_line_prints_a_warning_on_one_line(capsys):
    from scoresde.cli.main import _one_line_warning

    _one_line_warning("sample")(UserWarning("first\nsecond"), UserWarning, "f.py", 1)
    assert capsys.readouterr().err == "scoresde sample: warning: first; second\n"


def test_checkpoints_are_readable_by_others_and_failed_writes_and_reads_say_why(tmp_path, monkeypatch):
    import os
    import stat

    from safetensors import SafetensorError

    import scoresde.checkpoint as checkpoint

    umask = os.umask(0o022)
    try:
        path = checkpoint.save_checkpoint(tmp_path / "checkpoint_00000001.safetensors", {"w": torch.ones(2)}, {})
    finally:
        os.umask(umask)
    for written in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644  # as any file of ours: not 0600

    def denied(file, *args, **kwargs):  # another user's file (the tests may run as root, who reads anything)
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(checkpoint, "open", denied, raising=False)
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint_00000001.safetensors cannot be read: Permission"):
        checkpoint.Checkpoint.open(path)
    monkeypatch.undo()

    def full_disk(*args, **kwargs):  # what safetensors raises for ENOSPC
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(OSError, match="could not be written .*No space left on device.*is the disk full"):
        checkpoint.save_checkpoint(tmp_path / "checkpoint_00000003.safetensors", {"w": torch.ones(2)}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_00000001.json",
        "checkpoint_00000001.safetensors",
    ]  # no temporary left
