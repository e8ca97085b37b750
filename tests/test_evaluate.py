"""Sample-quality evaluation of checkpoints: reports, floors, strict JSON, batch independence."""

import json
import math
from pathlib import Path

import pytest
import torch

from scoresde import metrics
from scoresde.config import load_config
from scoresde.data import load_digits
from scoresde.evaluate import _fraction_outside, evaluate, strict_json, write_report
from scoresde.features import digits_classifier_info, digits_features, load_digits_classifier
from scoresde.train import train

CONFIGS = Path(__file__).parents[1] / "configs"
FAST = ["sampling.steps=10", "training.log_every=10"]


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    over = ["training.n_iters=60", "training.snapshot_every=60", "data.toy_size=400", "sampling.n=37", *FAST]
    cfg = load_config(CONFIGS / "toy_mixture.toml", over)
    return train(cfg, tmp_path_factory.mktemp("toy"), progress=False)


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    tiny = ["training.n_iters=20", "training.snapshot_every=20", "training.batch_size=32", "model.net.nf=8"]
    cfg = load_config(CONFIGS / "digits_vp.toml", [*tiny, *FAST])
    return train(cfg, tmp_path_factory.mktemp("digits"), progress=False)


def test_the_shipped_classifier_classifies_the_test_digits():
    test = load_digits("test")
    _, probs = digits_features((test.images.double() + 0.5) / 17)
    accuracy = float((probs.argmax(1) == test.labels).double().mean())
    assert accuracy > 0.97
    assert digits_classifier_info()["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_digits_report_floors_are_the_independent_statistics(digits_checkpoint):
    report, x = evaluate(digits_checkpoint, sampler="ddim", steps=5, n=120, batch_size=50, likelihood=False)
    assert x.shape == (120, 1, 8, 8) and report["nfe"] == 6
    net = load_digits_classifier()
    train_imgs, test = load_digits("train"), load_digits("test")
    f_floor, _ = digits_features((train_imgs.images[:120].double() + 0.5) / 17, net)
    f_test, _ = digits_features((test.images.double() + 0.5) / 17, net)
    assert report["fd_floor"] == pytest.approx(metrics.frechet_distance(f_floor, f_test), rel=1e-9)
    assert report["reference_size"] == 297 and report["floor_size"] == 120
    assert report["fd"] > report["fd_floor"]  # 20 training steps are far from the data
    assert sum(report["class_histogram"]) == pytest.approx(1.0)
    assert 0.0 <= report["fraction_outside"] <= 1.0


def test_samples_do_not_depend_on_the_batch_size(toy_checkpoint):
    one, a = evaluate(toy_checkpoint, sampler="euler_maruyama", steps=10, n=90, batch_size=90, likelihood=False)
    many, b = evaluate(toy_checkpoint, sampler="euler_maruyama", steps=10, n=90, batch_size=20, likelihood=False)
    # the same noise per sample; only the network's batched matmuls round differently
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert one["mmd"] == pytest.approx(many["mmd"], rel=1e-3, abs=1e-6)


def test_toy_report_is_strict_json_with_floors(toy_checkpoint, tmp_path):
    report, _ = evaluate(toy_checkpoint, sampler="ode", n=200, options={"rtol": 1e-3, "atol": 1e-3})
    assert report["steps"] is None and report["nfe"] > 5
    for key in ("mmd", "sliced_wasserstein", "energy_distance"):
        assert math.isfinite(report[key]) and math.isfinite(report[f"{key}_floor"])
    assert set(report["mixture_errors"]) == {"tv", "std", "logp"}
    assert math.isfinite(report["nll_nats"])
    report["broken"] = [float("nan"), float("inf")]
    path = write_report(report, tmp_path / "report.json")
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert loaded["broken"] == [None, None]


def test_strict_json_and_outside_fraction():
    assert strict_json({"a": [1.0, float("-inf")], "b": {"c": float("nan")}}) == {"a": [1.0, None], "b": {"c": None}}
    x = torch.zeros(4, 1, 2, 2)
    x[1, 0, 0, 0] = 1.6  # beyond +1.5 for data in [-1, 1]
    x[2, 0, 1, 1] = -1.49  # inside the margin
    assert _fraction_outside(x, (-1.0, 1.0), toy=False) == 0.25


def test_images_without_a_feature_space_fail_before_sampling(digits_checkpoint, monkeypatch):
    import scoresde.evaluate as ev

    monkeypatch.setattr(ev, "sample", lambda *a, **k: pytest.fail("sampled before checking the feature space"))
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        evaluate(digits_checkpoint, n=10, inception="/nonexistent/pt_inception.pth")


def test_cli_evaluate_writes_a_report_and_samples(toy_checkpoint, tmp_path, capsys):
    from scoresde.cli import main

    out, png = tmp_path / "r.json", tmp_path / "s.png"
    args = ["evaluate", str(toy_checkpoint), "--sampler", "ddim", "--steps", "5", "-n", "120", "--no-likelihood"]
    assert main([*args, "--out", str(out), "--samples-out", str(png)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 120 and report["nfe"] == 6 and png.is_file()
    assert "MMD" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "r.txt"], ".json"),
        (["--samples-out", "s.gif"], ".png"),
        (["--inception", "/nonexistent/w.pth"], "pt_inception"),
        (["--sampler", "nope"], "nope"),
        (["--sampler", "ode", "--steps", "5"], "rk45"),
        (["--option", "eta=2"], "eta"),
        (["--grid", "cosine"], "grid"),
    ],
)
def test_cli_evaluate_checks_arguments_before_sampling(toy_checkpoint, tmp_path, monkeypatch, capsys, extra, message):
    import scoresde.evaluate as ev
    from scoresde.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ev, "sample", lambda *a, **k: pytest.fail("sampled before checking the arguments"))
    sampler = [] if "--sampler" in extra else ["--sampler", "ddim"]
    assert main(["evaluate", str(toy_checkpoint), *sampler, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_samples_do_not_depend_on_the_batch_size(toy_checkpoint, tmp_path):
    import numpy as np

    from scoresde.cli import main

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    base = ["sample", str(toy_checkpoint), "--sampler", "euler_maruyama", "--steps", "8", "-n", "60"]
    assert main([*base, "--batch-size", "60", "--out", str(a)]) == 0
    assert main([*base, "--batch-size", "7", "--out", str(b)]) == 0
    np.testing.assert_allclose(np.load(a)["samples"], np.load(b)["samples"], rtol=1e-5, atol=1e-5)


def test_cli_sample_count_defaults_to_the_config(toy_checkpoint, tmp_path):
    import numpy as np

    from scoresde.cli import main

    out = tmp_path / "s.npz"
    assert main(["sample", str(toy_checkpoint), "--steps", "3", "--out", str(out)]) == 0
    assert np.load(out)["samples"].shape == (37, 2)  # sampling.n of the checkpoint's config


@pytest.mark.slow
def test_the_training_script_reproduces_the_shipped_classifier(tmp_path):
    """The shipped weights come from scripts/train_digits_classifier.py (seeded; about 25 s on 2 CPU threads)."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    out = tmp_path / "classifier.safetensors"
    script = Path(__file__).parents[1] / "scripts" / "train_digits_classifier.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True, timeout=900)
    shipped = load_file(
        str(Path(__file__).parents[1] / "src" / "scoresde" / "assets" / "digits_classifier.safetensors")
    )
    fresh = load_file(str(out))
    assert sorted(fresh) == sorted(shipped)
    for key in shipped:
        assert torch.equal(fresh[key], shipped[key]), key
