"""Loading the paper's released checkpoints (score_sde_pytorch .pth files).

Every number is checked against the official code's own outputs (tests/data/official: three
small checkpoints in the released format with the reference network's outputs and scores, and
the recorded state-dict keys of the CIFAR-10 networks), or against an independent derivation:
``reference_keys`` below rebuilds the reference's key names and shapes from its construction
rules, is checked on every recorded table, and then judges the converter on topologies
that have no recording.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde.build import build_model, build_score
from scoresde.checkpoint import CheckpointError, load_checkpoint, prefixed
from scoresde.cli import main
from scoresde.model import load_for_inference
from scoresde.official import (
    PRESETS,
    convert_official,
    load_official,
    official_config,
    official_keys,
    read_official,
    reference_config,
)

DATA = Path(__file__).parent / "data" / "official"
TINY = ("tiny_ve_ncsnpp", "tiny_vp_ddpmpp", "tiny_ddpm")
KEYS = {  # recorded keys file -> the presets whose network it is
    "keys_ve_cifar10_ncsnpp": ["ve/cifar10_ncsnpp"],
    "keys_ve_cifar10_ncsnpp_continuous": ["ve/cifar10_ncsnpp_continuous"],
    "keys_ve_cifar10_ncsnpp_deep_continuous": ["ve/cifar10_ncsnpp_deep_continuous"],
    "keys_vp_cifar10_ddpmpp_continuous": [
        "vp/cifar10_ddpmpp_continuous",
        "vp/cifar10_ddpmpp",
        "subvp/cifar10_ddpmpp_continuous",
    ],
    "keys_vp_cifar10_ddpmpp_deep_continuous": [
        "vp/cifar10_ddpmpp_deep_continuous",
        "subvp/cifar10_ddpmpp_deep_continuous",
    ],
    "keys_vp_ddpm_cifar10": ["vp/cifar10_ddpm", "vp/cifar10_ddpm_continuous", "subvp/cifar10_ddpm_continuous"],
}
TOL = 3e-5  # of the largest reference value: float32 round-off (the references' own is <= 7e-6)


def _json(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def _arrays(name: str) -> dict[str, torch.Tensor]:
    with np.load(DATA / f"{name}.npz") as arrays:
        return {k: torch.from_numpy(arrays[k]) for k in arrays.files}


def _close(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest difference relative to the largest reference value."""
    return float((got.double() - ref.double()).abs().max() / ref.double().abs().max())


def _with(config: dict, **training) -> dict:
    out = copy.deepcopy(config)
    out["training"].update(training)
    return out


# -- the three official-format checkpoints ----------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("ema", [False, True])
def test_network_outputs_match_the_official_code(name, ema):
    a = _arrays(name)
    sde, model, score = load_official(DATA / f"{name}.pth", DATA / f"{name}.json", ema=ema)
    assert not model.training
    with torch.no_grad():
        out = model(a["x"], a["labels"])
    assert _close(out, a["out_ema" if ema else "out_raw"]) < TOL
    other = a["out_raw" if ema else "out_ema"]  # raw and EMA weights differ everywhere in these files
    assert _close(out, other) > 100 * TOL


@pytest.mark.parametrize("name", TINY)
def test_scores_match_the_official_get_score_fn(name):
    a, config = _arrays(name), _json(name)["config"]
    path = DATA / f"{name}.pth"
    cases = [(config, "score_ema")] if name == "tiny_ve_ncsnpp" else [
        (_with(config, sde="vpsde", continuous=True), "score_ema_vp"),
        (_with(config, sde="subvpsde", continuous=True), "score_ema_subvp"),
        (_with(config, sde="subvpsde", continuous=False), "score_ema_subvp"),  # sub-VP is always continuous
        (_with(config, sde="vpsde", continuous=False), "score_ema_vp_discrete"),
    ]  # fmt: skip
    for cfg, key in cases:
        _, _, score = load_official(path, cfg)
        with torch.no_grad():
            got = score(a["x"], a["t"])
        assert _close(got, a[key]) < TOL, key


def test_discrete_vp_convention_feeds_unrounded_labels_and_the_ddpm_std():
    a, config = _arrays("tiny_ddpm"), _json("tiny_ddpm")["config"]  # vp/ddpm: continuous = false
    _, model, score = load_official(DATA / "tiny_ddpm.pth", config)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    with torch.no_grad():
        got = score(a["x"], a["t"])
    assert torch.allclose(seen[0].double(), a["labels_discrete"].double(), rtol=1e-6)
    std = torch.sqrt(1 - torch.cumprod(1 - torch.linspace(0.1 / 1000, 20 / 1000, 1000, dtype=torch.float64), 0))
    idx = torch.floor(a["t"].double() * 999).long()
    assert torch.allclose(std[idx], a["std_discrete"].double(), rtol=2e-5)
    assert _close(got, a["score_ema_vp_discrete"]) < TOL


def test_discrete_ve_convention_indexes_the_descending_sigmas():
    """VE, continuous = false: the label is round((1 - t)(N - 1)) and the net divides by sigmas[label]."""
    config = _with(_json("tiny_vp_ddpmpp")["config"], sde="vesde", continuous=False)
    config["model"]["scale_by_sigma"] = True
    torch.manual_seed(0)
    cfg = official_config(config)
    sde, model = _build(cfg)
    score = build_score(model, sde, cfg)
    plain = copy.deepcopy(model)
    plain.scale_by_sigma = False
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1e-3, 0.3, 0.7004, 1.0])
    index = torch.round((1 - t.double()) * 999)
    sigma = 50.0 * (0.01 / 50.0) ** (index / 999)
    with torch.no_grad():
        got = score(x, t)
        expected = plain(x, index.float()) / sigma.reshape(-1, 1, 1, 1)
    assert torch.allclose(got.double(), expected, rtol=1e-5)
    assert cfg.model.time_input == "sigma_index" and cfg.model.prediction == "score"


def _build(cfg):
    from scoresde.build import build_sde

    return build_sde(cfg), build_model(cfg).eval()


def test_converted_checkpoint_reproduces_the_official_outputs(tmp_path):
    for name in TINY:
        a = _arrays(name)
        path = convert_official(DATA / f"{name}.pth", DATA / f"{name}.json", tmp_path / name)
        tensors, meta = load_checkpoint(path)
        assert meta["step"] == 123 and meta["ema_updates"] == 123
        assert meta["source"]["ema_decay"] == _json(name)["checkpoint"]["ema"]["decay"]
        for ema in (False, True):
            cfg, sde, model = load_for_inference(path, use_ema=ema)
            with torch.no_grad():
                assert _close(model(a["x"], a["labels"]), a["out_ema" if ema else "out_raw"]) < TOL
        score = build_score(model, sde, cfg)
        with torch.no_grad():
            key = "score_ema" if name == "tiny_ve_ncsnpp" else "score_ema_vp_discrete" if name == "tiny_ddpm" else (
                "score_ema_vp")  # fmt: skip
            assert _close(score(a["x"], a["t"]), a[key]) < TOL
        centered = _json(name)["config"]["data"]["centered"]
        assert cfg.data.data_range == ([-1.0, 1.0] if centered else [0.0, 1.0])
        assert cfg.model.net["centered"] == centered


def test_the_pyramid_resamplers_of_another_code_version_are_numbered_too(tmp_path):
    """A variant of the official code appends the parameter-free input_skip / output_skip resamplers to
    all_modules, shifting every later index: such a file converts to the same network."""
    ckpt = read_official(DATA / "tiny_ve_ncsnpp.pth")
    roles = [m["role"] for m in _json("tiny_ve_ncsnpp")["all_modules"]]
    new_index, shift = {}, 0
    for i, role in enumerate(roles):
        if role.endswith("input_skip_combine") or (role.endswith("pyramid_groupnorm") and not role.startswith("up.1.")):
            shift += 1  # a resampler slot before the combiner / before a non-coarsest pyramid branch
        new_index[i] = i + shift
    renamed = {}
    for key, value in ckpt["model"].items():
        parts = key.split(".")
        if parts[1] == "all_modules":
            parts[2] = str(new_index[int(parts[2])])
        renamed[".".join(parts)] = value
    ckpt["model"] = renamed
    torch.save(ckpt, tmp_path / "shifted.pth")
    a = _arrays("tiny_ve_ncsnpp")
    _, model, _ = load_official(tmp_path / "shifted.pth", DATA / "tiny_ve_ncsnpp.json")
    with torch.no_grad():
        assert _close(model(a["x"], a["labels"]), a["out_ema"]) < TOL


# -- the released CIFAR-10 networks: every recorded key, by name and shape ----------------------------------
def _random_official_checkpoint(keys: dict, generator: torch.Generator) -> dict:
    """A checkpoint in the released format with the recorded names, shapes and dtypes, filled at random."""
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    model, ema = {}, {}
    cfg = keys["config"]["model"]
    for row in keys["state_dict"]:
        if row["key"] == "module.sigmas":
            n = cfg["num_scales"]
            value = torch.exp(torch.linspace(math.log(cfg["sigma_max"]), math.log(cfg["sigma_min"]), n,
                                             dtype=torch.float64))  # fmt: skip
        else:
            value = torch.randn(row["shape"], generator=generator, dtype=dtypes[row["dtype"]])
        model[row["key"]] = value
        if row.get("ema_index") is not None:
            ema[row["ema_index"]] = value + torch.randn(value.shape, generator=generator)
    shadow = [ema[i] for i in range(len(ema))]
    return {"optimizer": {"state": {}, "param_groups": []}, "model": model,
            "ema": {"decay": 0.999, "num_updates": 7, "shadow_params": shadow}, "step": 400001}  # fmt: skip


@pytest.mark.parametrize("keys_file", sorted(KEYS))
def test_presets_cover_every_recorded_key_and_shape(keys_file):
    keys = _json(keys_file)
    recorded = {row["key"].removeprefix("module."): tuple(row["shape"]) for row in keys["state_dict"]}
    for preset in KEYS[keys_file]:
        net = build_model(official_config(preset))
        names = official_keys(net)
        own = net.state_dict()
        assert set(names) == set(recorded) - {"sigmas"}, preset
        assert sorted(names.values()) == sorted(own), preset  # every scoresde entry is filled, once
        assert all(tuple(own[ours].shape) == recorded[theirs] for theirs, ours in names.items()), preset
        assert sum(p.numel() for p in net.parameters()) == keys["total_params"]


@pytest.mark.parametrize("keys_file", sorted(KEYS))
def test_presets_are_the_recorded_configs(keys_file):
    recorded = _json(keys_file)["config"]
    preset = PRESETS[KEYS[keys_file][0]]
    for section in ("model", "data", "training", "sampling"):
        for key, value in recorded[section].items():
            assert preset[section][key] == value, f"{section}.{key}"
    for name, changes in _json(keys_file)["same_network_configs"].items():
        name = name.replace("vp/ddpm/cifar10", "vp/cifar10_ddpm")
        if name in PRESETS:
            assert PRESETS[name]["training"]["sde"] == changes["training.sde"]
            assert PRESETS[name]["training"]["continuous"] == changes["training.continuous"]


# the deep variants repeat their shallow twins' layout with more blocks per level (10 s each): slow
CONVERT = ["keys_ve_cifar10_ncsnpp_continuous", "keys_vp_cifar10_ddpmpp_continuous", "keys_vp_ddpm_cifar10",
           pytest.param("keys_ve_cifar10_ncsnpp_deep_continuous", marks=pytest.mark.slow),
           pytest.param("keys_vp_cifar10_ddpmpp_deep_continuous", marks=pytest.mark.slow),
           pytest.param("keys_ve_cifar10_ncsnpp", marks=pytest.mark.slow)]  # fmt: skip


@pytest.mark.parametrize("keys_file", CONVERT)
def test_random_cifar10_checkpoint_converts_saves_and_reloads_exactly(keys_file, tmp_path):
    """Load a random state dict of the recorded names and shapes, save it as scoresde, reload, compare."""
    keys = _json(keys_file)
    ckpt = _random_official_checkpoint(keys, torch.Generator().manual_seed(0))
    torch.save(ckpt, tmp_path / "checkpoint_8.pth")
    preset = KEYS[keys_file][0]
    path = convert_official(tmp_path / "checkpoint_8.pth", preset, tmp_path / "run")
    net = build_model(official_config(preset))
    names = official_keys(net)
    tensors, meta = load_checkpoint(path)
    assert meta["step"] == 400001 and meta["source"]["preset"] == preset
    model, ema = prefixed(tensors, "model"), prefixed(tensors, "ema")
    shadow = ckpt["ema"]["shadow_params"]
    ema_index = {row["key"].removeprefix("module."): row.get("ema_index") for row in keys["state_dict"]}
    for theirs, ours in names.items():
        assert torch.equal(model[ours], ckpt["model"]["module." + theirs].float()), theirs
        if ema_index[theirs] is None:  # the frozen Fourier frequencies: no EMA entry
            assert ours not in ema
        else:
            assert torch.equal(ema[ours], shadow[ema_index[theirs]]), theirs
    assert set(model) == set(net.state_dict())
    # and the reloaded network carries them: EMA weights by default, raw ones on request
    _, _, reloaded = load_for_inference(path)
    params = dict(reloaded.named_parameters())
    for theirs, ours in list(names.items())[:: max(1, len(names) // 40)]:
        expected = shadow[ema_index[theirs]] if ema_index[theirs] is not None else ckpt["model"]["module." + theirs]
        assert torch.equal(params[ours].detach(), expected)


# -- an independent derivation of the reference's names, for topologies nobody recorded ----------------------
def reference_keys(model: dict, channels: int, image_size: int) -> dict[str, tuple[int, ...]]:
    """The reference network's parameter keys and shapes (without ``module.`` and ``sigmas``), in order,
    written from its construction rules (the fixtures' README, section 5)."""
    keys: dict[str, tuple[int, ...]] = {}
    position = 0

    def add(*groups):
        nonlocal position
        for name, params in groups:
            for p, shape in params:
                keys[f"all_modules.{position}.{name + '.' if name else ''}{p}"] = shape
        position += 1

    def gn(c):
        return [("weight", (c,)), ("bias", (c,))]

    def conv(i, o, k=3):
        return [("weight", (o, i, k, k)), ("bias", (o,))]

    def nin(i, o):
        return [("W", (i, o)), ("b", (o,))]

    ddpm_class = model["name"] == "ddpm"
    nf, mult, blocks = model["nf"], model["ch_mult"], model["num_res_blocks"]
    biggan = not ddpm_class and model["resblock_type"] == "biggan"
    fir = not ddpm_class and model["fir"]
    conditional = ddpm_class or model["conditional"]
    fourier = not ddpm_class and model["embedding_type"] == "fourier"
    prog = "none" if ddpm_class else model["progressive"]
    prog_in = "none" if ddpm_class else model["progressive_input"]
    temb = 4 * nf

    def resblock(i, o=None, resample=False):
        o = o or i
        parts = [("GroupNorm_0", gn(i)), ("Conv_0", conv(i, o)), ("Dense_0", [("weight", (o, temb)), ("bias", (o,))]),
                 ("GroupNorm_1", gn(o)), ("Conv_1", conv(o, o))]  # fmt: skip
        if biggan and (i != o or resample):
            parts.append(("Conv_2", conv(i, o, 1)))
        if not biggan and i != o:
            parts.append(("NIN_0", nin(i, o)))
        add(*parts)

    def attn(c):
        add(("GroupNorm_0", gn(c)), *[(f"NIN_{k}", nin(c, c)) for k in range(4)])

    def resampler(i, o, with_conv):  # Up/Downsample: FIR conv pair, plain conv or nothing
        add(("Conv2d_0" if fir else "Conv_0", conv(i, o) if with_conv else []))

    if fourier:
        add(("", [("W", (nf,))]))
    if conditional:
        add(("", [("weight", (temb, 2 * nf if fourier else nf)), ("bias", (temb,))]))
        add(("", [("weight", (temb, temb)), ("bias", (temb,))]))
    add(("", conv(channels, nf)))
    sizes = [image_size // 2**i for i in range(len(mult))]
    skips, ch, pyramid = [nf], nf, channels
    for level, m in enumerate(mult):
        for _ in range(blocks):
            resblock(ch, nf * m)
            ch = nf * m
            if sizes[level] in model["attn_resolutions"]:
                attn(ch)
            skips.append(ch)
        if level != len(mult) - 1:
            if biggan:
                resblock(ch, resample=True)
            else:
                resampler(ch, ch, model["resamp_with_conv"])
            if prog_in == "input_skip":
                add(("Conv_0", conv(pyramid, ch, 1)))
                ch *= 2 if model["progressive_combine"] == "cat" else 1
            elif prog_in == "residual":
                resampler(pyramid, ch, True)
                pyramid = ch
            skips.append(ch)
    for part in (lambda: resblock(ch), lambda: attn(ch), lambda: resblock(ch)):
        part()
    pyramid = 0
    for level in reversed(range(len(mult))):
        for _ in range(blocks + 1):
            resblock(ch + skips.pop(), nf * mult[level])
            ch = nf * mult[level]
        if sizes[level] in model["attn_resolutions"]:
            attn(ch)
        if prog == "output_skip":
            add(("", gn(ch)))
            add(("", conv(ch, channels)))
        elif prog == "residual":
            if level == len(mult) - 1:
                add(("", gn(ch)))
                add(("", conv(ch, ch)))
            else:
                resampler(pyramid, ch, True)
            pyramid = ch
        if level != 0:
            if biggan:
                resblock(ch, resample=True)
            else:
                resampler(ch, ch, model["resamp_with_conv"])
    if prog != "output_skip":
        add(("", gn(ch)))
        add(("", conv(ch, channels)))
    return keys


@pytest.mark.parametrize("name", sorted(KEYS) + list(TINY))
def test_the_independent_derivation_reproduces_every_recorded_table(name):
    record = _json(name)
    data = record["config"]["data"]
    expected = [(r["key"].removeprefix("module."), tuple(r["shape"])) for r in record["state_dict"]]
    expected = [e for e in expected if e[0] != "sigmas"]
    derived = reference_keys(record["config"]["model"], data["num_channels"], data["image_size"])
    assert list(derived.items()) == expected  # names, shapes and order (the EMA's order)


def _topologies():
    base = _json("tiny_ve_ncsnpp")["config"]["model"] | {"nf": 8, "ch_mult": [1, 2, 2], "attn_resolutions": [8]}
    # the option sets the official code can run (fixtures' README, section 6)
    blocks = [("biggan", True, "none", True), ("biggan", True, "output_skip", True), ("biggan", False, "none", True),
              ("ddpm", True, "none", False), ("ddpm", True, "output_skip", False)]  # fmt: skip
    inputs = [("none", "sum"), ("input_skip", "sum"), ("input_skip", "cat"), ("residual", "sum")]
    for (resblock, fir, prog, with_conv), (prog_in, combine), embedding, n_blocks, conditional in itertools.product(
        blocks, inputs, ("fourier", "positional"), (0, 1, 2), (True, False)
    ):
        yield base | {"resblock_type": resblock, "fir": fir, "progressive": prog, "resamp_with_conv": with_conv,
                      "progressive_input": prog_in, "progressive_combine": combine, "embedding_type": embedding,
                      "num_res_blocks": n_blocks, "conditional": conditional}  # fmt: skip
    ddpm = _json("tiny_ddpm")["config"]["model"]
    for n_blocks, with_conv, mult, attn in itertools.product((0, 1, 2), (True, False), ([1, 2], [2, 1, 2]), ([4], [8])):
        yield ddpm | {"num_res_blocks": n_blocks, "resamp_with_conv": with_conv, "ch_mult": mult,
                      "attn_resolutions": attn}  # fmt: skip


def test_converter_names_agree_with_the_derivation_on_every_runnable_topology():
    checked = 0
    for model in _topologies():
        config = {"model": model, "data": {"image_size": 16, "num_channels": 3, "centered": False},
                  "training": {"sde": "vesde", "continuous": True}}  # fmt: skip
        net = build_model(official_config(config))
        names = official_keys(net)
        own = net.state_dict()
        derived = reference_keys(model, 3, 16)
        assert set(names) == set(derived), model
        assert sorted(names.values()) == sorted(own)
        assert all(tuple(own[ours].shape) == derived[theirs] for theirs, ours in names.items()), model
        checked += 1
    assert checked == 5 * 4 * 2 * 3 * 2 + 24


# -- bad input: one clear error, before any work, nothing overwritten ----------------------------------------
def test_a_checkpoint_for_another_network_is_refused_with_the_mismatches_listed():
    with pytest.raises(CheckpointError, match="does not fit the network") as err:
        load_official(DATA / "tiny_vp_ddpmpp.pth", DATA / "tiny_ve_ncsnpp.json")
    assert "all_modules." in str(err.value)


def test_noise_levels_of_another_model_are_refused():
    config = _json("tiny_ve_ncsnpp")["config"]
    config["model"]["sigma_max"] = 378  # e.g. the bedroom preset on the church checkpoint
    with pytest.raises(CheckpointError, match="noise levels"):
        load_official(DATA / "tiny_ve_ncsnpp.pth", config)


def test_missing_entries_and_a_short_ema_are_refused(tmp_path):
    ckpt = read_official(DATA / "tiny_vp_ddpmpp.pth")
    broken = copy.deepcopy(ckpt)
    del broken["model"]["module.all_modules.5.Conv_1.weight"]
    torch.save(broken, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing in the checkpoint: all_modules\.5\.Conv_1\.weight"):
        load_official(tmp_path / "missing.pth", DATA / "tiny_vp_ddpmpp.json")
    short = copy.deepcopy(ckpt)
    short["ema"]["shadow_params"] = short["ema"]["shadow_params"][:-1]
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="EMA has"):
        load_official(tmp_path / "short.pth", DATA / "tiny_vp_ddpmpp.json")
    _, model, _ = load_official(tmp_path / "short.pth", DATA / "tiny_vp_ddpmpp.json", ema=False)  # raw still loads
    swapped = copy.deepcopy(ckpt)
    shadow = swapped["ema"]["shadow_params"]
    shadow[0], shadow[2] = shadow[2], shadow[0]
    torch.save(swapped, tmp_path / "swapped.pth")
    with pytest.raises(CheckpointError, match="EMA tensor 0"):
        load_official(tmp_path / "swapped.pth", DATA / "tiny_vp_ddpmpp.json")
    bare = {"model": {k.removeprefix("module."): v for k, v in ckpt["model"].items()}, "ema": ckpt["ema"]}
    torch.save(bare, tmp_path / "bare.pth")  # saved without DataParallel: accepted
    a = _arrays("tiny_vp_ddpmpp")
    _, model, _ = load_official(tmp_path / "bare.pth", DATA / "tiny_vp_ddpmpp.json")
    with torch.no_grad():
        assert _close(model(a["x"], a["labels"]), a["out_ema"]) < TOL


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_runs_code_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"model": {}, "ema": None, "step": 1, "x": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="never runs code"):
        read_official(tmp_path / "evil.pth")
    assert not marker.exists()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_official(tmp_path / "junk.pth")
    torch.save(torch.zeros(2), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="not a score_sde_pytorch checkpoint"):
        read_official(tmp_path / "tensor.pth")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["model"].update(name="ncsnv2_64"), "not supported"),
        (lambda c: c["model"].pop("nf"), "lacks nf"),
        (lambda c: c["training"].update(sde="cosine"), "training.sde"),
        (lambda c: c["training"].update(continuous=False), "continuous-time model"),  # a Fourier net
        (lambda c: c["model"].update(nonlinearity="elu"), "swish"),
        (lambda c: c.pop("data"), "no \\[data\\] section"),
        (lambda c: c["sampling"].update(predictor="heun"), "known predictors"),
    ],
)
def test_bad_reference_configs_fail_in_one_line(change, message):
    config = copy.deepcopy(_json("tiny_ve_ncsnpp")["config"])
    change(config)
    with pytest.raises(ValueError, match=message) as err:
        official_config(config)
    assert "\n" not in str(err.value)


def test_config_names(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        reference_config("ve/cifar10_ncsnpp_continous")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        reference_config(tmp_path / "bad.json")
    assert reference_config("vp/cifar10_ddpm") == PRESETS["vp/cifar10_ddpm"]
    assert reference_config(DATA / "tiny_ddpm.json") == _json("tiny_ddpm")["config"]  # the fixture layout
    assert reference_config({"config": _json("tiny_ddpm")["config"]}) == _json("tiny_ddpm")["config"]
    shouted = _json("tiny_ve_ncsnpp")["config"]  # the reference lower-cases its option strings
    shouted["model"].update(resblock_type="BigGAN", progressive="Output_Skip", embedding_type="Fourier")
    assert official_config(shouted).model.net == official_config(DATA / "tiny_ve_ncsnpp.json").model.net


def test_existing_checkpoints_are_never_overwritten(tmp_path):
    first = convert_official(DATA / "tiny_ddpm.pth", DATA / "tiny_ddpm.json", tmp_path / "run")
    before = first.read_bytes()
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        convert_official(DATA / "tiny_vp_ddpmpp.pth", DATA / "tiny_vp_ddpmpp.json", tmp_path / "run")
    assert first.read_bytes() == before and len(list(first.parent.glob("*.safetensors"))) == 1


def test_presets_of_the_high_resolution_models():
    counts = {"ve/celebahq_256_ncsnpp_continuous": 65_574_549, "ve/ffhq_256_ncsnpp_continuous": 65_574_549,
              "ve/church_ncsnpp_continuous": 65_574_549, "ve/bedroom_ncsnpp_continuous": 65_574_549,
              "ve/ffhq_1024_ncsnpp_continuous": 105_785_896}  # fmt: skip
    for name, count in counts.items():
        cfg = official_config(name)
        assert sum(p.numel() for p in build_model(cfg).parameters()) == count
        assert cfg.sde.type == "ve" and cfg.sde.N == 2000 and cfg.data.data_range == [0.0, 1.0]
    assert official_config("ve/church_ncsnpp_continuous").sde.sigma_max == 380
    assert official_config("ve/bedroom_ncsnpp_continuous").sde.sigma_max == 378


# -- the command line: convert, then sample, score bits/dim and inpaint ----------------------------------------
@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    from PIL import Image

    from scoresde.data import load_digits

    root = tmp_path_factory.mktemp("digits_png")
    for split in ("train", "test"):
        data = load_digits(split)
        (root / split).mkdir()
        for i in range(12):
            level = data.images[i, 0].numpy().astype(np.float64) * 255 / (data.levels - 1)
            Image.fromarray(level.round().astype(np.uint8), mode="L").save(root / split / f"{i:02d}.png")
    return root


def test_cli_converts_then_samples_scores_bits_per_dim_and_inpaints(tmp_path, digit_folder, capsys):
    run = tmp_path / "run"
    assert main(["convert-official", str(DATA / "tiny_vp_ddpmpp.pth"), "--config", str(DATA / "tiny_vp_ddpmpp.json"),
                 "--out", str(run), "--data-root", str(digit_folder)]) == 0  # fmt: skip
    ckpts = str(run / "checkpoints")
    assert main(["sample", ckpts, "--sampler", "dpm_solver++", "--steps", "8", "-n", "6",
                 "--out", str(tmp_path / "s.npz")]) == 0  # fmt: skip
    with np.load(tmp_path / "s.npz") as s:
        assert s["samples"].shape == (6, 1, 8, 8) and np.isfinite(s["samples"]).all()
    assert main(["likelihood", ckpts, "--split", "test", "--rtol", "1e-3", "--atol", "1e-3",
                 "--out", str(tmp_path / "bpd.json")]) == 0  # fmt: skip
    bpd = json.loads((tmp_path / "bpd.json").read_text())
    assert math.isfinite(bpd["mean"]) and bpd["mean"] > 0
    assert main(["inpaint", ckpts, "-n", "2", "--steps", "10", "--out", str(tmp_path / "inp.npz")]) == 0
    with np.load(tmp_path / "inp.npz") as r:
        known = r["mask"].astype(bool)
        assert np.allclose(r["results"][np.broadcast_to(known, r["results"].shape)],
                           r["originals"][np.broadcast_to(known, r["originals"].shape)], atol=1e-5)  # fmt: skip
    out = capsys.readouterr().out
    assert "converted" in out and "bits/dim" in out


def test_cli_reports_bad_input_in_one_line_before_reading_the_checkpoint(tmp_path, capsys):
    source = DATA / "tiny_vp_ddpmpp.pth"
    cases = [
        (["convert-official", str(source), "--config", "no/such_preset", "--out", str(tmp_path / "a")], "preset"),
        (["convert-official", str(tmp_path / "none.pth"), "--config", "vp/cifar10_ddpm", "--out", str(tmp_path)],
         "not found"),
        (["convert-official", str(source), "--config", str(DATA / "tiny_vp_ddpmpp.json"), "--out",
          str(tmp_path / "b"), "--data-root", str(tmp_path / "nowhere")], "not a directory"),
        (["convert-official", str(source), "--config", "vp/cifar10_ddpm", "--out", str(tmp_path / "c")],
         "does not fit"),
        (["convert-official", str(source), "--config", str(tmp_path / "list.json"), "--out", str(tmp_path / "d")],
         "holds a JSON list, not an object of sections"),
        (["convert-official", str(tmp_path / "random.pth"), "--config", str(DATA / "tiny_vp_ddpmpp.json"), "--out",
          str(tmp_path / "e")], "is not a readable torch checkpoint of tensors"),
        (["convert-official", str(tmp_path / "plain.pth"), "--config", str(DATA / "tiny_vp_ddpmpp.json"), "--out",
          str(tmp_path / "f")], "is not a readable torch checkpoint of tensors (a plain pickle"),
    ]  # fmt: skip
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "random.pth").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "plain.pth").write_bytes(pickle.dumps({"model": [1, 2]}, protocol=4))
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "weights_only" not in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c" / "checkpoints").exists()


def test_convert_official_is_a_console_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "scoresde.cli", "convert-official", "--help"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "ve/celebahq_256_ncsnpp_continuous" in done.stdout and "weights_only" in done.stdout


def test_training_does_not_resume_from_a_converted_checkpoint(tmp_path, digit_folder):
    from scoresde.checkpoint import checkpoint_config
    from scoresde.train import train

    path = convert_official(DATA / "tiny_vp_ddpmpp.pth", DATA / "tiny_vp_ddpmpp.json", tmp_path / "run",
                            data_root=digit_folder)  # fmt: skip
    cfg = checkpoint_config(load_checkpoint(path)[1], path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="holds weights only"):
        train(cfg, tmp_path / "run")
    assert path.read_bytes() == before


def test_data_root_given_at_use_instead_of_at_conversion(tmp_path, digit_folder, capsys):
    run = tmp_path / "run"
    assert main(["convert-official", str(DATA / "tiny_vp_ddpmpp.pth"), "--config", str(DATA / "tiny_vp_ddpmpp.json"),
                 "--out", str(run)]) == 0  # fmt: skip
    ckpts = str(run / "checkpoints")
    capsys.readouterr()
    assert main(["likelihood", ckpts, "--rtol", "1e-2", "--atol", "1e-2"]) == 2
    assert "--data-root" in capsys.readouterr().err
    missing = str(tmp_path / "no")
    assert main(["inpaint", ckpts, "-n", "1", "--out", str(tmp_path / "x.png"), "--data-root", missing]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["likelihood", ckpts, "--rtol", "1e-2", "--atol", "1e-2", "--data-root", str(digit_folder)]) == 0
    assert "bits/dim" in capsys.readouterr().out
    assert main(["inpaint", ckpts, "-n", "1", "--steps", "5", "--out", str(tmp_path / "i.png"),
                 "--data-root", str(digit_folder)]) == 0  # fmt: skip
    assert (tmp_path / "i.png").is_file()
