"""The conditioning path: labels from the data to the loss, class-conditional networks, ModelScore with labels,
label dropout, classifier-free guidance against the exact scores of a Gaussian mixture, and the sample CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde as sd
import scoresde.build
import scoresde.checkpoint
import scoresde.classifier
import scoresde.model
from scoresde.build import build_model, build_score, load_dataset
from scoresde.checkpoint import load_checkpoint
from scoresde.cli import main
from scoresde.config import ConfigError, load_config
from scoresde.guidance import classifier_free_guided, classifier_guided
from scoresde.losses import ddpm_loss, drop_labels, dsm_loss
from scoresde.nets import NCSNpp, TimeMLP, count_parameters, ddpm_cifar10, ddpmpp_cifar10, ddpmpp_small, ncsnpp_cifar10
from scoresde.score import ModelScore
from scoresde.toy import demo_mixture
from scoresde.train import train
from scoresde.validation import check_config

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
TOY = CONFIGS / "toy_mixture.toml"
COND = ["model.net.num_classes=3", "training.p_uncond=0.2"]
QUICK = ["training.n_iters=20", "training.snapshot_every=20", "training.log_every=10", "sampling.steps=5",
         "data.toy_size=500"]  # fmt: skip


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# -- networks --------------------------------------------------------------------------------------
PRESETS = {
    "ncsnpp": (ncsnpp_cifar10, 62_758_915, 512),
    "ddpmpp": (ddpmpp_cifar10, 61_804_419, 512),
    "ddpm": (ddpm_cifar10, 35_218_947, 512),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_conditional_presets_add_only_the_class_table(name):
    factory, reference, temb_dim = PRESETS[name]
    with torch.device("meta"):
        assert count_parameters(factory()) == reference  # unconditional: the paper's count, unchanged
        # num_classes + 1 rows (the last one the null label) of the time-embedding width
        assert count_parameters(factory(num_classes=10)) == reference + 11 * temb_dim


def test_conditional_unet_forward_null_label_and_errors():
    torch.manual_seed(0)
    net = ddpmpp_small(8, 1, nf=16, num_classes=4)
    x, label = torch.randn(5, 1, 8, 8), torch.tensor([1.0, 10.0, 100.0, 500.0, 999.0])
    assert count_parameters(net) == count_parameters(ddpmpp_small(8, 1, nf=16)) + 5 * 64
    with torch.no_grad():
        torch.nn.init.normal_(net.class_embed.weight)
        for p in net.parameters():  # the zero-initialised output layers would hide the labels
            p.add_(0.01 * torch.randn_like(p))
        out = net(x, label, torch.tensor([0, 1, 2, 3, 4]))
        assert out.shape == x.shape
        torch.testing.assert_close(net(x, label), net(x, label, torch.full((5,), 4)))  # None is the null label
        assert not torch.allclose(net(x, label, torch.zeros(5, dtype=torch.long)), net(x, label))
    with pytest.raises(ValueError, match="not class-conditional"):
        ddpmpp_small(8, 1, nf=16)(x, label, torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        net(x, label, torch.zeros(5))
    with pytest.raises(ValueError, match=r"\[B\]"):
        net(x, label, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="conditional=True"):
        NCSNpp(image_size=8, channels=1, nf=16, ch_mult=(1,), conditional=False, num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        ddpmpp_small(8, 1, num_classes=0)


def test_a_fresh_conditional_network_is_its_unconditional_counterpart():
    torch.manual_seed(0)
    cond = TimeMLP(2, hidden=32, depth=2, num_classes=3)
    torch.manual_seed(0)
    plain = TimeMLP(2, hidden=32, depth=2)
    torch.nn.init.normal_(cond.out.weight)
    plain.out.weight.data.copy_(cond.out.weight)
    x, t = torch.randn(6, 2), torch.rand(6)
    torch.testing.assert_close(cond(x, t, torch.tensor([0, 1, 2, 3, 0, 1])), plain(x, t))  # zero class table


# -- ModelScore with labels ------------------------------------------------------------------------
class MixtureNet:
    """A 'network' returning exact scores of the demo mixture: class k < K is component k diffused, K the mixture."""

    def __init__(self, sde):
        self.gm, self.sde = demo_mixture(), sde
        self.num_classes = self.gm.n_components
        self.calls, self.rows = 0, []

    def component_score(self, x, t, y):
        alpha, sigma = (c[:, None] for c in self.sde.marginal_coeffs(t, x))
        mu, std = self.gm.means.to(x)[y], self.gm.stds.to(x)[y]
        return -(x - alpha * mu) / (alpha**2 * std**2 + sigma**2)

    def __call__(self, x, t, y):
        self.calls += 1
        self.rows.append(x.shape[0])
        null = y == self.num_classes
        cond = self.component_score(x, t, y.clamp_max(self.num_classes - 1))
        return torch.where(null[:, None], self.gm.score(x, t, self.sde), cond)


def _mixture_score(sde, **kwargs):
    net = MixtureNet(sde)
    return net, ModelScore(net, sde, prediction="score", time_input="t", time_scale=1.0, **kwargs)


def test_model_score_takes_fixed_or_per_call_labels():
    sde = sd.VPSDE()
    net, score = _mixture_score(sde)
    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(6, 2, generator=gen, dtype=torch.float64)
    t = torch.full((6,), 0.3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(score(x, t), net.gm.score(x, t, sde))  # y=None: the null label
    torch.testing.assert_close(score(x, t, y=y), net.component_score(x, t, y))
    torch.testing.assert_close(_mixture_score(sde, y=2)[1](x, t), net.component_score(x, t, torch.full((6,), 2)))
    torch.testing.assert_close(_mixture_score(sde, y=y)[1](x, t), net.component_score(x, t, y))
    with pytest.raises(ValueError, match="3 classes"):
        _mixture_score(sde, y=3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        _mixture_score(sde, y=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="whole batch"):
        score(x, t, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not class-conditional"):
        ModelScore(TimeMLP(2), sde, y=1)
    with pytest.raises(ValueError, match="not class-conditional"):
        ModelScore(TimeMLP(2), sde)(x.float(), t.float(), y=1)


# -- classifier-free guidance ----------------------------------------------------------------------
SDES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE(sigma_max=20.0), "cosine": sd.CosineVPSDE(),
        "rf": sd.RectifiedFlow(), "edm": sd.EDMSDE(sigma_max=20.0)}  # fmt: skip


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 3.0])
def test_guided_score_is_the_formula_with_one_network_call(name, scale):
    sde = SDES[name]
    net, score = _mixture_score(sde)
    gen = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    t = 0.02 + 0.9 * torch.rand(64, generator=gen, dtype=torch.float64)
    for y in (0, 2, torch.arange(64) % 3):
        labels = y if isinstance(y, torch.Tensor) else torch.full((64,), y)
        cond, uncond = net.component_score(x, t, labels), net.gm.score(x, t, sde)
        net.calls = 0
        guided = classifier_free_guided(score, y, scale)(x, t)
        assert net.calls == 1
        torch.testing.assert_close(guided, uncond + scale * (cond - uncond), rtol=1e-12, atol=1e-12)
    # one doubled batch [x, x] with labels [y, null] unless w is 0 or 1
    assert net.rows[-1] == (64 if scale in (0.0, 1.0) else 128)


def test_scale_one_is_the_exact_conditional_as_with_the_exact_classifier():
    sde = sd.VPSDE()
    net, score = _mixture_score(sde)
    gen = torch.Generator().manual_seed(2)
    x = 3 * torch.randn(32, 2, generator=gen, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(32, generator=gen, dtype=torch.float64)
    for y in range(3):
        exact = classifier_guided(net.gm.score_fn(sde), net.gm.classifier_fn(sde), y, scale=1.0)(x, t)
        torch.testing.assert_close(classifier_free_guided(score, y, 1.0)(x, t), exact, rtol=1e-8, atol=1e-8)
        # w = 2 on the exact scores is classifier guidance at w = 2 with the exact classifier
        sharp = classifier_guided(net.gm.score_fn(sde), net.gm.classifier_fn(sde), y, scale=2.0)(x, t)
        torch.testing.assert_close(classifier_free_guided(score, y, 2.0)(x, t), sharp, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    ("sampler", "steps", "options"),
    [("euler_maruyama", 40, {}), ("reverse_diffusion", 40, {}), ("ancestral", 40, {}),
     ("pc", 20, {"corrector": "ald"}), ("ode", None, {}), ("ode", 20, {"method": "heun"}), ("ddim", 20, {})],
)  # fmt: skip
def test_every_sampler_takes_the_guided_score_at_one_call_per_evaluation(sampler, steps, options):
    sde = sd.VPSDE()
    net, score = _mixture_score(sde)
    guided = classifier_free_guided(score, 2, scale=2.0)
    x, nfe = sd.sample(sde, guided, (300, 2), sampler=sampler, steps=steps, generator=sd.SampleNoise(0, 300),
                       return_nfe=True, batch_size=150, **options)  # fmt: skip
    assert x.shape == (300, 2) and bool(torch.isfinite(x).all())
    assert net.calls >= nfe and all(rows % 2 == 0 for rows in net.rows)  # each call the doubled batch
    assert float((net.gm.assign(x) == 2).double().mean()) >= 0.99


def test_plain_conditional_samples_keep_the_component_spread():
    sde = sd.VPSDE()
    net, score = _mixture_score(sde)
    labels = torch.arange(600) % 3
    x = sd.sample(sde, classifier_free_guided(score, labels, 1.0), (600, 2), sampler="ddim", steps=50,
                  generator=sd.SampleNoise(1, 600))  # fmt: skip
    assert float((net.gm.assign(x) == labels).double().mean()) >= 0.99
    for k in range(3):
        assert float(x[labels == k].std(0).max() / net.gm.stds[k, 0]) == pytest.approx(1.0, abs=0.15)


def test_classifier_free_guidance_rejects_bad_input():
    sde = sd.VPSDE()
    _, score = _mixture_score(sde)
    x, t = torch.randn(4, 2), torch.full((4,), 0.5)
    with pytest.raises(ValueError, match="class-conditional"):
        classifier_free_guided(ModelScore(TimeMLP(2), sde), 0)
    with pytest.raises(ValueError, match="3 classes"):
        classifier_free_guided(score, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        classifier_free_guided(score, torch.tensor([0, 3, 1, 1]))
    with pytest.raises(ValueError, match="scale"):
        classifier_free_guided(score, 0, scale=-0.5)
    with pytest.raises(ValueError, match="whole batch"):
        classifier_free_guided(score, torch.tensor([0, 1]), scale=2.0)(x, t)
    with pytest.raises(TypeError):
        classifier_free_guided(score, 1.0)


# -- losses and label dropout ----------------------------------------------------------------------
def test_label_dropout_rate_and_determinism():
    y = torch.arange(200_000) % 10
    dropped = drop_labels(y, 0.1, 10, torch.Generator().manual_seed(0))
    null = dropped == 10
    assert abs(float(null.double().mean()) - 0.1) < 4 * (0.1 * 0.9 / 200_000) ** 0.5
    assert torch.equal(dropped[~null], y[~null])
    assert torch.equal(dropped, drop_labels(y, 0.1, 10, torch.Generator().manual_seed(0)))
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    assert drop_labels(y, 0.0, 10, gen) is y and torch.equal(gen.get_state(), state)  # p = 0: no draw
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="p_uncond"):
            drop_labels(y, bad, 10)


def test_losses_pass_the_labels_on():
    sde = sd.VPSDE()
    net, score = _mixture_score(sde)
    x0 = net.gm.sample(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(64) % 4  # 3 is the null label
    gen = torch.Generator().manual_seed(1)
    noise = {"t": 0.05 + 0.9 * torch.rand(64, generator=gen, dtype=torch.float64),
             "z": torch.randn(64, 2, generator=gen, dtype=torch.float64)}  # fmt: skip
    with_labels = dsm_loss(sde, score, x0, y=y, **noise)
    by_hand = dsm_loss(sde, lambda x, t: score(x, t, y=y), x0, **noise)
    assert float(with_labels) == float(by_hand) and float(with_labels) != float(dsm_loss(sde, score, x0, **noise))
    seen = {}

    def model(x, levels, y=None):
        seen["y"] = y
        return torch.zeros_like(x)

    ddpm_loss(sde, model, x0.float(), y=y)
    assert torch.equal(seen["y"], y)
    with pytest.raises(TypeError, match="integer"):
        dsm_loss(sde, score, x0, y=y.double())
    with pytest.raises(ValueError, match=r"\[B\]"):
        dsm_loss(sde, score, x0, y=y[:3])


# -- data, configs and the trainer -----------------------------------------------------------------
def test_datasets_expose_their_labels():
    cfg = load_config(TOY, ["data.toy_size=3000"])
    x, labels = load_dataset(cfg, "train", return_labels=True)
    assert torch.equal(x, load_dataset(cfg, "train"))  # the same points with or without labels
    assert float((demo_mixture().assign(x) == labels).double().mean()) > 0.99
    x, labels = load_dataset(load_config(TOY, ["data.toy=moons", "data.toy_size=100"]), "test", return_labels=True)
    assert set(labels.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="no class labels|has none"):
        load_dataset(load_config(TOY, ["data.toy=swiss_roll"]), "train", return_labels=True)
    data, labels = load_dataset(load_config(CONFIGS / "digits_vp.toml"), "test", return_labels=True)
    assert len(labels) == len(data) == 297 and set(labels.tolist()) == set(range(10))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.p_uncond=0.1"], "model.net.num_classes"),
        (["model.net.num_classes=2"], "'mixture' has 3 classes"),
        (["model.net.num_classes=3", "data.toy=checkerboard"], "has none"),
        (["model.net.num_classes=true"], "positive integer"),
        (["model.net.num_classes=0"], "positive integer"),
    ],
)
def test_conditioning_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_config(load_config(TOY, overrides), training=False)


def test_p_uncond_range_is_checked_at_load():
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match="training.p_uncond"):
            load_config(TOY, [f"training.p_uncond={bad}"])


def test_the_conditional_digits_config_is_the_main_job_plus_labels():
    cond, plain = load_config(CONFIGS / "digits_vp_cond.toml"), load_config(CONFIGS / "digits_vp.toml")
    check_config(cond, training=False)
    assert cond.model.net == plain.model.net | {"num_classes": 10} and cond.training.p_uncond > 0
    assert cond.sde == plain.sde and cond.data == plain.data
    assert count_parameters(build_model(cond)) == count_parameters(build_model(plain)) + 11 * 128


@pytest.fixture(scope="module")
def cond_ckpt(tmp_path_factory):
    cfg = load_config(TOY, [*COND, *QUICK])
    return train(cfg, tmp_path_factory.mktemp("cond"), progress=False)


def test_conditional_training_learns_every_row_and_resumes_exactly(cond_ckpt, tmp_path):
    tensors, meta = load_checkpoint(cond_ckpt)
    table = tensors["model.class_embed.weight"]
    assert table.shape == (4, 128) and bool((table.abs().sum(1) > 0).all())  # the classes and the null label
    # label dropout comes from the data generator: 10 + 10 resumed steps are bit-identical to 20 straight
    cfg = load_config(TOY, [*COND, *QUICK, "training.snapshot_every=10"])
    train(load_config(TOY, [*COND, *QUICK, "training.n_iters=10", "training.snapshot_every=10"]), tmp_path,
          progress=False)  # fmt: skip
    resumed, _ = load_checkpoint(train(cfg, tmp_path, progress=False))
    assert all(torch.equal(resumed[k], tensors[k]) for k in tensors if k.startswith(("model.", "ema.")))


def test_a_few_steps_of_the_conditional_digits_config(tmp_path):
    cfg = load_config(CONFIGS / "digits_vp_cond.toml", ["training.n_iters=2", "training.snapshot_every=2",
                                                        "training.log_every=1", "sampling.steps=3"])  # fmt: skip
    ckpt = train(cfg, tmp_path, progress=False)
    assert (tmp_path / "samples" / "step_00000002.png").is_file()
    _, sde, model = scoresde.model.load_for_inference(ckpt)
    score = build_score(model, sde, cfg)
    x = sd.sample(sde, classifier_free_guided(score, torch.arange(10), 2.0), (10, 1, 8, 8), sampler="ddim", steps=3)
    assert x.shape == (10, 1, 8, 8) and bool(torch.isfinite(x).all())


# -- the sample command ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory):
    return train(load_config(TOY, QUICK), tmp_path_factory.mktemp("plain"), progress=False)


@pytest.fixture
def no_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the command did expensive work before rejecting its input")

    monkeypatch.setattr(scoresde.checkpoint.Checkpoint, "tensors", forbidden)
    monkeypatch.setattr(scoresde.classifier, "load_classifier", forbidden)


def _sample(ckpt, tmp_path, *extra):
    return main(["--threads", "1", "sample", str(ckpt), "--sampler", "ddim", "--steps", "5", "-n", "12",
                 "--out", str(tmp_path / "s.npz"), "--no-progress", *extra])  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--guidance", "2"], "--guidance needs --class"),
        (["--class", "3"], "out of range.*3 classes"),
        (["--class", "x"], "class index"),
        (["--class", "-1"], "class index"),
        (["--class", "1", "--guidance", "-1"], ">= 0"),
        (["--class", "1", "--guidance", "nan"], ">= 0"),
    ],
)
def test_sample_guidance_arguments_are_checked_before_any_work(cond_ckpt, tmp_path, capsys, no_work, extra, message):
    assert _sample(cond_ckpt, tmp_path, *extra) == 2
    assert re.search(message, _error(capsys))


def test_an_unconditional_checkpoint_needs_a_classifier(plain_ckpt, tmp_path, capsys, no_work):
    assert _sample(plain_ckpt, tmp_path, "--class", "1") == 2
    err = _error(capsys)
    assert "not class-conditional" in err and "--classifier" in err
    assert _sample(plain_ckpt, tmp_path, "--classifier", str(plain_ckpt)) == 2
    assert "--classifier needs --class" in _error(capsys)
    assert _sample(plain_ckpt, tmp_path, "--class", "1", "--classifier", str(plain_ckpt)) == 2
    assert "score model checkpoint, not a noise-conditional classifier" in _error(capsys)


def test_guidance_above_one_needs_label_dropout(tmp_path, capsys, no_work):
    ckpt = train(load_config(TOY, ["model.net.num_classes=3", *QUICK, "training.n_iters=2"]), tmp_path / "run",
                 progress=False)  # fmt: skip
    assert _sample(ckpt, tmp_path, "--class", "1", "--guidance", "3") == 2
    assert "p_uncond = 0" in _error(capsys)


def test_sample_classes_with_classifier_free_guidance(cond_ckpt, tmp_path, capsys):
    assert _sample(cond_ckpt, tmp_path, "--class", "all", "--guidance", "2") == 0
    assert "of class all (classifier-free guidance 2)" in capsys.readouterr().out
    every = np.load(tmp_path / "s.npz")
    assert every["labels"].tolist() == [i % 3 for i in range(12)]
    # sample i of class k is the one drawn for class k alone (its own noise stream, any batching)
    assert _sample(cond_ckpt, tmp_path, "--class", "1", "--guidance", "2", "--batch-size", "5") == 0
    ones = np.load(tmp_path / "s.npz")
    assert ones["labels"].tolist() == [1] * 12
    np.testing.assert_allclose(ones["samples"][1::3], every["samples"][1::3], rtol=1e-5, atol=1e-5)
    assert main(["--threads", "1", "sample", str(cond_ckpt), "--sampler", "ddim", "--steps", "5", "-n", "9",
                 "--class", "all", "--out", str(tmp_path / "grid.png"), "--no-progress"]) == 0  # fmt: skip
    assert (tmp_path / "grid.png").is_file()


def test_unguided_sampling_of_a_conditional_checkpoint_is_unconditional(cond_ckpt, tmp_path):
    assert _sample(cond_ckpt, tmp_path) == 0
    assert "labels" not in np.load(tmp_path / "s.npz")
    assert _sample(cond_ckpt, tmp_path, "--class", "0", "--guidance", "0") == 0
    unguided = np.load(tmp_path / "s.npz")["samples"]
    assert _sample(cond_ckpt, tmp_path) == 0  # w = 0 is the null label: the same samples
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["samples"], unguided)


def test_guided_sampling_does_not_import_the_trainer(cond_ckpt, tmp_path):
    script = (
        "import sys\n"
        "from scoresde.cli import main\n"
        f"code = main(['--threads', '1', 'sample', {str(cond_ckpt)!r}, '--sampler', 'ddim', '--steps', '3', "
        f"'-n', '4', '--class', '2', '--guidance', '2', '--out', {str(tmp_path / 'x.npz')!r}, '--no-progress'])\n"
        "print(json.dumps({'code': code, 'train': 'scoresde.train' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + script], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"code": 0, "train": False}
