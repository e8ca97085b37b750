"""The task commands (inpaint, colorize, encode, decode, interpolate) on tiny checkpoints: outputs that keep
what was given, and bad input rejected in one line before the model or the data is loaded."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import scoresde.build
import scoresde.checkpoint
from scoresde.cli import main
from scoresde.config import load_config
from scoresde.train import train

ROOT = Path(__file__).parents[1]
TINY = ["training.n_iters=2", "training.snapshot_every=2", "training.log_every=1", "training.batch_size=16"]


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    cfg = load_config(ROOT / "configs" / "digits_vp.toml", TINY)
    return train(cfg, tmp_path_factory.mktemp("digits"), progress=False)


@pytest.fixture(scope="module")
def colour_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colour_images")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = load_config(ROOT / "configs" / "digits_vp.toml",
                      [*TINY, "data.dataset=image_folder", f"data.root={folder}", "data.channels=3"])  # fmt: skip
    return train(cfg, tmp_path_factory.mktemp("colour"), progress=False)


def _run(*args) -> int:
    return main(["--threads", "1", *map(str, args)])


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the command did expensive work before rejecting its input")

    monkeypatch.setattr(scoresde.checkpoint.Checkpoint, "tensors", forbidden)


def test_inpaint_keeps_the_known_pixels_and_writes_pictures(digits_ckpt, tmp_path):
    out = tmp_path / "inpainted.npz"
    assert _run("inpaint", digits_ckpt, "-n", 5, "--steps", 5, "--missing", "left", "--out", out) == 0
    with np.load(out) as saved:
        x, mask, result = saved["originals"], saved["mask"], saved["results"]
    assert x.shape == result.shape == (5, 1, 8, 8) and mask[..., :4].sum() == 0 and mask[..., 4:].min() == 1
    np.testing.assert_array_equal(result[mask == 1], x[mask == 1])
    assert np.isfinite(result).all() and not np.allclose(result[mask == 0], x[mask == 0])
    png = tmp_path / "inpainted.png"
    assert _run("inpaint", digits_ckpt, "-n", 4, "--steps", 3, "--sampler", "ddim", "--method", "pigdm",
                "--out", png) == 0  # fmt: skip
    assert Image.open(png).size[0] > Image.open(png).size[1]  # three rows of four


def test_inpaint_with_a_mask_file_and_an_input_file(digits_ckpt, tmp_path):
    mask = np.ones((8, 8))
    mask[2:5, 2:5] = 0
    np.save(tmp_path / "mask.npy", mask)
    images = np.random.default_rng(1).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", samples=images)
    out = tmp_path / "out.npz"
    assert _run("inpaint", digits_ckpt, "--input", tmp_path / "in.npz", "-n", 3, "--mask-file", tmp_path / "mask.npy",
                "--steps", 4, "--out", out) == 0  # fmt: skip
    with np.load(out) as saved:
        np.testing.assert_array_equal(saved["results"][:, :, mask == 1], images[:, :, mask == 1])


def test_colorize_keeps_the_grey_level(colour_ckpt, digits_ckpt, tmp_path, capsys):
    out = tmp_path / "colour.npz"
    assert _run("colorize", colour_ckpt, "--split", "train", "-n", 4, "--steps", 5, "--out", out) == 0
    with np.load(out) as saved:
        scale = max(1.0, float(np.abs(saved["results"]).max()))  # an untrained model: float32 rounding of its values
        np.testing.assert_allclose(saved["results"].mean(1, keepdims=True), saved["gray"], atol=1e-6 * scale)
        assert saved["results"].shape == (4, 3, 8, 8)
    assert _run("colorize", colour_ckpt, "--split", "train", "-n", 4, "--steps", 3, "--out", tmp_path / "c.png") == 0
    assert _run("colorize", digits_ckpt, "--out", tmp_path / "x.png") == 2
    assert "colour images" in _error(capsys)


def test_encode_decode_round_trip_and_interpolate(digits_ckpt, tmp_path):
    latents = tmp_path / "latents.npz"
    assert _run("encode", digits_ckpt, "-n", 3, "--out", latents) == 0
    decoded = tmp_path / "decoded.npz"
    assert _run("decode", digits_ckpt, latents, "--out", decoded) == 0
    with np.load(latents) as z, np.load(decoded) as d:
        np.testing.assert_allclose(d["samples"], z["inputs"], atol=2e-3)
    path = tmp_path / "path.npz"
    assert _run("interpolate", digits_ckpt, "-n", 2, "--points", 4, "--out", path) == 0
    with np.load(path) as saved:
        assert saved["path"].shape == (4, 2, 1, 8, 8)
        np.testing.assert_allclose(saved["path"][0], saved["inputs"][0::2], atol=2e-2)
        np.testing.assert_allclose(saved["path"][-1], saved["inputs"][1::2], atol=2e-2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["inpaint", "{ckpt}", "--out", "{tmp}/x.txt"], "must end in"),
        (["inpaint", "{ckpt}", "-n", "400", "--out", "{tmp}/x.png"], "asks for more"),
        (["inpaint", "{ckpt}", "--first", "-3", "--out", "{tmp}/x.png"], "--first"),
        (["inpaint", "{ckpt}", "--sampler", "ode", "--out", "{tmp}/x.png"], "fixed-grid"),
        (["inpaint", "{ckpt}", "--mask-file", "{tmp}/bad_mask.npy", "--out", "{tmp}/x.png"], "mask-file"),
        (["inpaint", "{ckpt}", "--input", "{tmp}/wrong.npz", "--out", "{tmp}/x.png"], "the model takes"),
        (["inpaint", "{ckpt}", "--input", "{tmp}/levels200.npz", "--out", "{tmp}/x.png"], "integer levels 0 to 16"),
        (["inpaint", "{ckpt}", "--input", "{tmp}/levels_half.npz", "--out", "{tmp}/x.png"], "not all integers"),
        (["inpaint", "{ckpt}", "--input", "{tmp}/samples50.npz", "--out", "{tmp}/x.png"], "outside the model's data"),
        (["encode", "{ckpt}", "--out", "{tmp}/x.png"], "must end in .npz"),
        (["decode", "{ckpt}", "{tmp}/wrong.npz", "--out", "{tmp}/x.png"], "no 'latents'"),
        (["decode", "{ckpt}", "{tmp}/junk.npz", "--out", "{tmp}/x.png"], "junk.npz is not a NumPy .npy/.npz array"),
        (["inpaint", "{ckpt}", "--input", "{tmp}/junk.npz", "--out", "{tmp}/x.png"], "not a NumPy .npy/.npz"),
        (["inpaint", "{ckpt}", "--mask-file", "{tmp}/pickled.npy", "--out", "{tmp}/x.png"], "pickled Python objects"),
        (["inpaint", "{ckpt}", "--mask-file", "{tmp}/wrong.npz", "--out", "{tmp}/x.png"], "must be a single .npy"),
        (["interpolate", "{ckpt}", "--points", "1000000000", "--out", "{tmp}/x.png"], "--points must be from 2"),
        (["interpolate", "{ckpt}", "--points", "1", "--out", "{tmp}/x.png"], "--points"),
        (["encode", "{ckpt}", "--rtol", "-1", "--out", "{tmp}/x.npz"], "--rtol"),
    ],
)
def test_bad_input_is_one_line_before_any_work(digits_ckpt, tmp_path, capsys, no_work, args, message):
    np.save(tmp_path / "bad_mask.npy", np.full((8, 8), 0.5))
    np.savez(tmp_path / "wrong.npz", samples=np.zeros((3, 1, 4, 4), np.float32))
    np.savez(tmp_path / "levels200.npz", levels=np.full((3, 1, 8, 8), 200, np.uint8))  # the digits have 17 levels
    (tmp_path / "junk.npz").write_bytes(bytes(range(256)))
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "levels_half.npz", levels=np.full((3, 1, 8, 8), 2.5))
    np.savez(tmp_path / "samples50.npz", samples=np.full((3, 1, 8, 8), 50.0, np.float32))
    filled = [a.format(ckpt=digits_ckpt, tmp=tmp_path) for a in args]
    assert _run(*filled) == 2
    err = _error(capsys)
    assert message in err and "allow_pickle" not in err, err
    assert not (tmp_path / "x.png").exists()


def test_inpaint_takes_image_files_and_folders(digits_ckpt, tmp_path):
    """A PNG (any size: resized and cropped to 8x8) or a folder of them; pixel p is the model value
    -1 + 2 (p + 1/2) / 256."""
    pixels = np.random.default_rng(2).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "one.png")
    (tmp_path / "many").mkdir()
    for i in range(3):
        Image.fromarray(pixels).save(tmp_path / "many" / f"{i}.png")
    Image.fromarray(pixels).resize((16, 24)).save(tmp_path / "big.png")
    expected = -1 + 2 * (pixels.astype(np.float32) + 0.5) / 256
    for source, count in ((tmp_path / "one.png", 1), (tmp_path / "many", 3)):
        out = tmp_path / f"{source.stem}.npz"
        assert _run("inpaint", digits_ckpt, "--input", source, "--steps", 3, "--sampler", "ddim", "--out", out) == 0
        with np.load(out) as saved:
            assert saved["originals"].shape == (count, 1, 8, 8)  # every image of the input when -n is not given
            np.testing.assert_allclose(saved["originals"][0, 0], expected, atol=1e-6)
    assert _run("inpaint", digits_ckpt, "--input", tmp_path / "big.png", "--steps", 3, "--sampler", "ddim", "--out",
                tmp_path / "big.npz") == 0  # fmt: skip


def test_pictures_show_the_data_levels_with_grey_grid_lines(digits_ckpt, tmp_path):
    from scoresde.plotting import GRID_LINE

    out = tmp_path / "s.png"
    assert _run("sample", digits_ckpt, "-n", 4, "--steps", 3, "--sampler", "ddim", "--out", out) == 0
    picture = np.asarray(Image.open(out).convert("L"))
    assert picture[0, 0] == round(GRID_LINE * 255)  # the frame: mid-grey, so white or black samples stay visible
    tiles = picture[picture != round(GRID_LINE * 255)]
    levels = np.round(np.arange(17) / 16 * 255)  # the digits' 17 grey levels, 0 black and 16 white
    assert np.isin(tiles, levels).all()


def test_evaluate_without_a_feature_space_reports_what_it_can(colour_ckpt, tmp_path, capsys):
    import json

    out = tmp_path / "report.json"
    assert _run("evaluate", colour_ckpt, "-n", 4, "--steps", 3, "--sampler", "ddim", "--batch-size", 4, "--out",
                out) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["features"] is None and "fd" not in report and report["nfe"] == 4
    assert "pt_inception-2015-12-05-6726825d.pth" in report["features_note"]
    assert report["bits_per_dim"] > 0 and report["fraction_outside"] is not None
    assert "no FD/KID" in capsys.readouterr().out


def test_sample_warns_in_one_line_when_it_diverges_and_static_thresholding_helps(digits_ckpt, tmp_path, capsys):
    """The 2-step model's data prediction is far outside [-1, 1]: DPM-Solver++ ends outside and says so on one line
    of stderr; clipping every data prediction keeps the samples in range."""
    args = ["sample", digits_ckpt, "--sampler", "dpm_solver++", "--steps", 5, "-n", 16, "--out", tmp_path / "s.npz"]
    assert _run(*args) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("scoresde sample: warning: ") and "of the sampled values lie beyond" in err, err
    assert "\n" not in err
    assert _run(*args[:-1], tmp_path / "t.npz", "--option", "thresholding=static") == 0
    assert "warning" not in capsys.readouterr().err
    samples = np.load(tmp_path / "t.npz")["samples"]
    assert samples.min() >= -1.0 and samples.max() <= 1.0
