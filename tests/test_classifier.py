"""The noise-conditional classifier: networks, training (accuracy, workdir conventions, exact resume), the
loader as a classifier_logp for classifier guidance, and the train-classifier / sample --classifier commands."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import scoresde as sd
import scoresde.build
import scoresde.checkpoint
import scoresde.classifier
import scoresde.model
from scoresde.checkpoint import list_checkpoints, load_checkpoint
from scoresde.classifier import (
    NoisyClassifier,
    TimeCNN,
    TimeMLPClassifier,
    accuracy_at_times,
    build_classifier,
    check_classifier_config,
    classifier_loss,
    classifier_lr,
    load_classifier,
    train_classifier,
)
from scoresde.cli import main
from scoresde.config import ConfigError, load_config
from scoresde.toy import demo_mixture
from scoresde.train import train

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
TOY = CONFIGS / "toy_mixture.toml"
TOY_CLASSIFIER = ["classifier.arch=mlp", "classifier.num_classes=3", "classifier.n_iters=150",
                  "classifier.snapshot_every=150", "classifier.log_every=50", "classifier.lr=3e-3",
                  "classifier.net={ hidden = 64, depth = 2 }", "data.toy_size=4000",
                  "classifier.eval_times=[0.01, 0.3, 1.0]"]  # fmt: skip


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# -- networks --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("channels", "height", "width"), [(1, 8, 8), (1, 28, 28), (3, 32, 32), (2, 5, 7)])
def test_cnn_classifies_images_of_any_size(channels, height, width):
    net = TimeCNN(channels, num_classes=4, nf=8, ch_mult=(1, 2, 2))
    logits = net(torch.randn(3, channels, height, width), torch.rand(3))
    assert logits.shape == (3, 4)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="expected images"):
        net(torch.randn(3, channels + 1, height, width), torch.rand(3))


def test_noisy_classifier_gives_log_probabilities_of_a_scaled_input():
    sde = sd.VESDE(sigma_max=50.0)
    net = TimeMLPClassifier(2, num_classes=3, hidden=16, depth=1)
    clf = NoisyClassifier(net, sde)
    x, t = 40 * torch.randn(5, 2), torch.full((5,), 0.9)
    logp = clf(x, t)
    assert logp.shape == (5, 3)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(5))
    alpha, sigma = sde.marginal_coeffs(t, x)
    scale = (alpha**2 + sigma**2).rsqrt()[:, None]
    torch.testing.assert_close(clf.logits(x, 0.9), net(x * scale, t))  # unit-scale input at every time
    with pytest.raises(ValueError, match="outside"):
        clf(x, 1.5)


def test_classifier_loss_is_the_cross_entropy_on_perturbed_data():
    sde = sd.VPSDE()
    clf = NoisyClassifier(TimeMLPClassifier(2, 3, hidden=16, depth=1), sde)
    gen = torch.Generator().manual_seed(0)
    x0, y = torch.randn(8, 2, generator=gen), torch.arange(8) % 3
    t, z = torch.rand(8, generator=gen), torch.randn(8, 2, generator=gen)
    mean, std = sde.marginal_prob(x0, t)
    xt = mean + std[:, None] * z
    expected = -clf(xt, t)[torch.arange(8), y].mean()
    torch.testing.assert_close(classifier_loss(clf, x0, y, t, z), expected)


# -- config ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["classifier.arch=cnn", "classifier.num_classes=3"], "images; use classifier.arch 'mlp'"),
        (["classifier.arch=mlp", "classifier.num_classes=2"], "'mixture' has 3 classes"),
        (["classifier.arch=mlp", "classifier.num_classes=3", "data.toy=swiss_roll"], "has none"),
        (["classifier.arch=mlp", "classifier.num_classes=3", "classifier.net.nf=4"], r"\['nf'\]"),
        (["classifier.arch=resnet"], "classifier.arch"),
        (["classifier.arch=mlp", "classifier.num_classes=3", "classifier.lr_decay=exp"], "classifier.lr_decay"),
    ],
)
def test_classifier_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_classifier_config(load_config(TOY, overrides), data=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("classifier.num_classes=1", "classifier.num_classes"),
        ("classifier.eval_times=[]", "eval_times"),
        ("classifier.eval_times=[0.0, 0.5]", "eval_times"),
        ("classifier.lr=0", "classifier.lr"),
        ("classifier.depth=3", "unknown key classifier.depth"),
    ],
)
def test_classifier_section_is_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "digits_classifier.toml", [override])


def test_classifier_learning_rate_decays_like_the_score_model():
    cfg = load_config(TOY, ["classifier.lr=1e-3", "classifier.warmup=10", "classifier.n_iters=110",
                            "classifier.lr_decay=linear"])  # fmt: skip
    assert classifier_lr(cfg, 9) == pytest.approx(1e-3) and classifier_lr(cfg, 10) == pytest.approx(1e-3)
    assert classifier_lr(cfg, 60) == pytest.approx(5e-4) and classifier_lr(cfg, 109) == pytest.approx(1e-5)


def test_the_digits_classifier_config_matches_the_main_job():
    clf, main_job = load_config(CONFIGS / "digits_classifier.toml"), load_config(CONFIGS / "digits_vp.toml")
    check_classifier_config(clf)
    assert clf.sde == main_job.sde and clf.data == main_job.data
    assert sum(p.numel() for p in build_classifier(clf).parameters()) < 100_000


# -- training --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_classifier(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy_classifier")
    final, report = train_classifier(load_config(TOY, TOY_CLASSIFIER), workdir, progress=False)
    return workdir, final, report


def test_toy_classifier_is_accurate_at_small_times_and_near_chance_at_T(toy_classifier):
    workdir, final, report = toy_classifier
    assert final.name == "checkpoint_00000150.safetensors"
    assert report == json.loads((workdir / "accuracy.json").read_text())
    accuracy = dict(zip(report["times"], report["accuracy"], strict=True))
    assert accuracy[0.01] > 0.97  # nine stds between the modes
    assert accuracy[1.0] < report["chance"] + 0.05  # pure noise: the majority class at best
    log = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [50, 100, 150]
    tensors, meta = load_checkpoint(final)
    assert meta["format"] == "scoresde-classifier-1" and all(k.split(".")[0] in ("model", "optim", "rng")
                                                             for k in tensors)  # fmt: skip


def test_loaded_classifier_guides_the_exact_unconditional_score(toy_classifier):
    _, final, _ = toy_classifier
    cfg, classifier = load_classifier(final)
    sde, gm = scoresde.build.build_sde(cfg), demo_mixture()
    assert not any(p.requires_grad for p in classifier.parameters())
    labels = torch.arange(300) % 3
    guided = sd.classifier_guided(gm.score_fn(sde), classifier, labels, scale=1.0)
    x = sd.sample(sde, guided, (300, 2), sampler="ddim", steps=50, generator=sd.SampleNoise(0, 300))
    assert float((gm.assign(x) == labels).double().mean()) > 0.95


def test_a_short_digits_classifier_is_better_than_chance(tmp_path):
    cfg = load_config(CONFIGS / "digits_classifier.toml", ["classifier.n_iters=40", "classifier.snapshot_every=40",
                                                           "classifier.log_every=20", "classifier.lr=4e-3",
                                                           "classifier.eval_times=[0.01, 1.0]"])  # fmt: skip
    _, report = train_classifier(cfg, tmp_path, progress=False)
    assert report["n"] == 297 and report["num_classes"] == 10
    assert report["accuracy"][0] > 2 * report["chance"], report


def test_resume_is_exact_and_the_workdir_conventions_hold(tmp_path, toy_classifier):
    _, final, _ = toy_classifier
    straight, _ = load_checkpoint(final)
    cfg = load_config(TOY, [*TOY_CLASSIFIER, "classifier.snapshot_every=75"])
    train_classifier(load_config(TOY, [*TOY_CLASSIFIER, "classifier.n_iters=75"]), tmp_path, progress=False)
    resumed, _ = load_checkpoint(train_classifier(cfg, tmp_path, progress=False)[0])
    assert all(torch.equal(resumed[k], straight[k]) for k in straight if k.startswith("model."))
    with pytest.raises(ValueError, match="already has"):
        train_classifier(cfg, tmp_path, resume=False, progress=False)
    with pytest.raises(ValueError, match=r"another config \(classifier.net "):
        train_classifier(load_config(TOY, [*TOY_CLASSIFIER, "classifier.net.hidden=32"]), tmp_path, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    train_classifier(load_config(TOY, [*TOY_CLASSIFIER, "classifier.n_iters=10", "classifier.snapshot_every=10"]),
                     tmp_path, overwrite=True, progress=False)  # fmt: skip
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["checkpoint_00000010.safetensors"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_score_and_classifier_runs_never_share_a_workdir(tmp_path, toy_classifier):
    workdir, _, _ = toy_classifier
    quick = ["training.n_iters=2", "training.snapshot_every=2", "sampling.steps=2", "data.toy_size=300"]
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="holds a noise-conditional classifier run"):
            train(load_config(TOY, quick), workdir, overwrite=overwrite, progress=False)
    train(load_config(TOY, quick), tmp_path, progress=False)
    with pytest.raises(ValueError, match="holds a score model run"):
        train_classifier(load_config(TOY, TOY_CLASSIFIER), tmp_path, overwrite=True, progress=False)
    with pytest.raises(scoresde.checkpoint.CheckpointError, match="score model checkpoint"):
        load_classifier(tmp_path / "checkpoints")
    with pytest.raises(scoresde.checkpoint.CheckpointError, match="classifier checkpoint, not a score model"):
        scoresde.model.load_for_inference(workdir / "checkpoints")


def test_accuracy_at_times_counts_argmax_hits():
    class Oracle(torch.nn.Module):  # the exact noisy classifier of the demo mixture
        def __init__(self):
            super().__init__()
            self.sde, self.gm, self.w = sd.VPSDE(), demo_mixture(), torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t):
            return self.gm.class_log_prob(x, t, self.sde)

    gm = demo_mixture()
    x0, labels = gm.sample(3000, generator=torch.Generator().manual_seed(0), return_labels=True)
    acc = accuracy_at_times(Oracle(), x0, labels, [0.01, 1.0], torch.Generator().manual_seed(1), batch_size=700)
    assert acc[0] > 0.99 and abs(acc[1] - float((labels == 0).double().mean())) < 0.03


# -- command line ----------------------------------------------------------------------------------
def test_train_classifier_command(tmp_path, capsys):
    args = ["--threads", "1", "train-classifier", str(TOY), "--workdir", str(tmp_path), "--no-progress"]
    overrides = [*TOY_CLASSIFIER, "classifier.n_iters=20", "classifier.snapshot_every=20"]
    sets = [item for override in overrides for item in ("--set", override)]
    assert main([*args, *sets]) == 0
    out = capsys.readouterr().out
    assert "accuracy of the noisy classifier" in out and "t = 0.01" in out and "accuracy.json" in out
    assert main([*args, *sets, "--no-resume"]) == 2
    assert "already has 1 checkpoint" in _error(capsys)
    assert main([*args, "--set", "classifier.arch=cnn"]) == 2
    assert "classifier.arch 'cnn' is for images" in _error(capsys)
    assert main(["train-classifier", str(TOY), "--workdir", str(tmp_path / "x"), "--set", "classifier.bad=1"]) == 2
    assert "unknown key classifier.bad" in _error(capsys)
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory):
    quick = ["training.n_iters=300", "training.snapshot_every=300", "sampling.steps=5", "data.toy_size=4000"]
    return train(load_config(TOY, quick), tmp_path_factory.mktemp("plain"), progress=False)


def _sample(ckpt, tmp_path, *extra):
    return main(["--threads", "1", "sample", str(ckpt), "--sampler", "ddim", "--steps", "20", "-n", "60",
                 "--out", str(tmp_path / "s.npz"), "--no-progress", *extra])  # fmt: skip


def test_sample_with_a_classifier(plain_ckpt, toy_classifier, tmp_path, capsys):
    _, final, _ = toy_classifier
    assert _sample(plain_ckpt, tmp_path, "--class", "all", "--classifier", str(final), "--guidance", "2") == 0
    assert "(classifier guidance 2)" in capsys.readouterr().out
    saved = np.load(tmp_path / "s.npz")
    labels = saved["labels"]
    assert labels.tolist() == [i % 3 for i in range(60)]
    hits = demo_mixture().assign(torch.from_numpy(saved["samples"]).double()).numpy() == labels
    assert hits.mean() > 0.8  # a 300-step score model and a 150-step classifier


def test_classifier_arguments_are_checked_before_any_work(plain_ckpt, toy_classifier, tmp_path, capsys,
                                                          monkeypatch):  # fmt: skip
    def forbidden(*args, **kwargs):
        raise AssertionError("the command did expensive work before rejecting its input")

    monkeypatch.setattr(scoresde.checkpoint.Checkpoint, "tensors", forbidden)
    monkeypatch.setattr(scoresde.classifier, "load_classifier", forbidden)
    _, final, _ = toy_classifier
    assert _sample(plain_ckpt, tmp_path, "--class", "3", "--classifier", str(final)) == 2
    assert "--class 3 is out of range: the --classifier has 3 classes" in _error(capsys)
    assert _sample(final, tmp_path) == 2
    assert "classifier checkpoint, not a score model" in _error(capsys)
    assert _sample(plain_ckpt, tmp_path, "--class", "1", "--classifier", str(tmp_path / "missing")) == 2
    assert "not found" in _error(capsys)
    ve = load_config(TOY, [*TOY_CLASSIFIER, "sde.type=ve", "classifier.n_iters=2", "classifier.snapshot_every=2"])
    other, _ = train_classifier(ve, tmp_path / "ve", progress=False)
    assert _sample(plain_ckpt, tmp_path, "--class", "1", "--classifier", str(other)) == 2
    assert "another SDE" in _error(capsys)
