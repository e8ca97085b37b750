"""The paper's released models: read score_sde_pytorch checkpoints into scoresde networks.

A checkpoint of the reference code (``checkpoint_<k>.pth``, written by its ``save_checkpoint``)
is a ``torch.save`` of ``{"optimizer", "model", "ema", "step"}``:

* ``model``: the state dict of the network wrapped in ``DataParallel`` (every key starts with
  ``module.``): a flat ``all_modules.<i>.*`` list in construction order, the buffer ``sigmas``
  (the descending noise levels) and, for Fourier-embedding nets, the frozen frequencies
  ``all_modules.0.W``;
* ``ema``: ``{"decay", "num_updates", "shadow_params"}``, the averaged weights as an unnamed
  list in the order of the *trainable* parameters (the frozen ``W`` is not in it);
* ``step``: the training step.

:func:`read_official` loads it with ``torch.load(weights_only=True, map_location="cpu")``, so
nothing in the file runs. :func:`official_keys` walks a scoresde :class:`~scoresde.nets.NCSNpp`
in the reference's construction order and names, for every reference key, the scoresde key
it fills; :func:`convert_state` maps every entry by name and shape and fails with a list of
whatever does not fit (never a partial load). :func:`official_config` turns the reference's
config (its ``model``, ``data``, ``training`` and ``sampling`` sections; a preset name from
:data:`PRESETS`, a JSON file or a mapping) into a scoresde :class:`~scoresde.config.Config`
with the reference's score convention:

=======  ==========  ======================================  =================================
SDE      continuous  label fed to the network                score
=======  ==========  ======================================  =================================
VP       yes         ``999 t``                               ``-out / sigma(t)``
VP       no          ``(N - 1) t``                           ``-out / sqrt(1 - alphabar_i)``,
                                                             ``i = floor((N - 1) t)``
sub-VP   either      ``999 t``                               ``-out / sigma(t)``
VE       yes         ``sigma(t)``                            ``out``
VE       no          ``round((1 - t)(N - 1))`` (an index     ``out``
                     into the descending sigmas)
=======  ==========  ======================================  =================================

The data scaler is carried over: ``centered`` data live in [-1, 1] (``data_range``), the
others in [0, 1] (the networks map them to [-1, 1] inside).
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import SCORE_FORMAT, CheckpointError, latest_checkpoint, save_checkpoint
from .config import SDE_KEYS, Config, from_dict
from .nets import NCSNpp
from .score import ModelScore
from .sde import SDE, VESDE

# -- presets: the reference configs of the released models ----------------------------------------------
_CIFAR10_DATA = {"dataset": "CIFAR10", "image_size": 32, "num_channels": 3, "random_flip": True,
                 "uniform_dequantization": False}  # fmt: skip
_NCSNPP = {"name": "ncsnpp", "nf": 128, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 4, "attn_resolutions": [16],
           "dropout": 0.1, "resamp_with_conv": True, "conditional": True, "fir": True, "fir_kernel": [1, 3, 3, 1],
           "skip_rescale": True, "resblock_type": "biggan", "progressive": "none", "progressive_input": "residual",
           "progressive_combine": "sum", "attention_type": "ddpm", "init_scale": 0.0, "fourier_scale": 16,
           "conv_size": 3, "embedding_type": "fourier", "nonlinearity": "swish", "normalization": "GroupNorm",
           "scale_by_sigma": True, "ema_rate": 0.999, "sigma_min": 0.01, "sigma_max": 50, "num_scales": 1000,
           "beta_min": 0.1, "beta_max": 20.0}  # fmt: skip
_DDPMPP = _NCSNPP | {"fir": False, "progressive_input": "none", "embedding_type": "positional",
                     "scale_by_sigma": False, "ema_rate": 0.9999}  # fmt: skip
_DDPM = {"name": "ddpm", "nf": 128, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16],
         "dropout": 0.1, "resamp_with_conv": True, "conditional": True, "scale_by_sigma": False,
         "embedding_type": "fourier", "nonlinearity": "swish", "normalization": "GroupNorm", "ema_rate": 0.9999,
         "sigma_min": 0.01, "sigma_max": 50, "num_scales": 1000, "beta_min": 0.1, "beta_max": 20.0}  # fmt: skip
_HIGHRES = _NCSNPP | {"ch_mult": [1, 1, 2, 2, 2, 2, 2], "num_res_blocks": 2, "dropout": 0.0,
                      "progressive": "output_skip", "progressive_input": "input_skip", "num_scales": 2000}  # fmt: skip
_FFHQ_1024 = _HIGHRES | {"nf": 16, "ch_mult": [1, 2, 4, 8, 16, 32, 32, 32], "num_res_blocks": 1, "sigma_max": 1348,
                         "ema_rate": 0.9999}  # fmt: skip
_FFHQ_1024_DATA = _CIFAR10_DATA | {"dataset": "FFHQ", "image_size": 1024}
_PC_VE = {"method": "pc", "predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16, "n_steps_each": 1,
          "noise_removal": True, "probability_flow": False}  # fmt: skip
_PC_VP = _PC_VE | {"predictor": "euler_maruyama", "corrector": "none"}
_ANCESTRAL = _PC_VE | {"predictor": "ancestral_sampling", "corrector": "none"}


def _preset(model: dict, sde: str, continuous: bool, sampling: dict, centered: bool, reduce_mean: bool,
            data: dict = _CIFAR10_DATA) -> dict[str, Any]:  # fmt: skip
    return {"model": dict(model), "data": data | {"centered": centered},
            "training": {"sde": sde, "continuous": continuous, "reduce_mean": reduce_mean,
                         "likelihood_weighting": False},
            "sampling": dict(sampling)}  # fmt: skip


def _highres(dataset: str, sigma_max: float) -> dict[str, Any]:
    data = _CIFAR10_DATA | {"dataset": dataset, "image_size": 256}
    return _preset(_HIGHRES | {"sigma_max": sigma_max}, "vesde", True, _PC_VE | {"snr": 0.075}, centered=False,
                   reduce_mean=False, data=data)  # fmt: skip


PRESETS: dict[str, dict[str, Any]] = {
    "ve/cifar10_ncsnpp": _preset(_NCSNPP | {"embedding_type": "positional"}, "vesde", False, _PC_VE, False, False),
    "ve/cifar10_ncsnpp_continuous": _preset(_NCSNPP, "vesde", True, _PC_VE, False, False),
    "ve/cifar10_ncsnpp_deep_continuous": _preset(_NCSNPP | {"num_res_blocks": 8}, "vesde", True, _PC_VE, False, False),
    "vp/cifar10_ddpmpp": _preset(_DDPMPP, "vpsde", False, _ANCESTRAL, True, True),
    "vp/cifar10_ddpmpp_continuous": _preset(_DDPMPP, "vpsde", True, _PC_VP, True, True),
    "vp/cifar10_ddpmpp_deep_continuous": _preset(_DDPMPP | {"num_res_blocks": 8}, "vpsde", True, _PC_VP, True, True),
    "subvp/cifar10_ddpmpp_continuous": _preset(_DDPMPP, "subvpsde", True, _PC_VP, True, True),
    "subvp/cifar10_ddpmpp_deep_continuous": _preset(
        _DDPMPP | {"num_res_blocks": 8}, "subvpsde", True, _PC_VP, True, True
    ),
    "vp/cifar10_ddpm": _preset(_DDPM, "vpsde", False, _ANCESTRAL, True, True),
    "vp/cifar10_ddpm_continuous": _preset(_DDPM, "vpsde", True, _PC_VP, True, True),
    "subvp/cifar10_ddpm_continuous": _preset(_DDPM, "subvpsde", True, _PC_VP, True, True),
    "ve/celebahq_256_ncsnpp_continuous": _highres("CelebAHQ", 348),
    "ve/ffhq_256_ncsnpp_continuous": _highres("FFHQ", 348),
    "ve/church_ncsnpp_continuous": _highres("LSUN", 380),
    "ve/bedroom_ncsnpp_continuous": _highres("LSUN", 378),
    "ve/ffhq_1024_ncsnpp_continuous": _preset(
        _FFHQ_1024, "vesde", True, _PC_VE | {"snr": 0.15}, centered=False, reduce_mean=True, data=_FFHQ_1024_DATA
    ),
}
"""Reference configs of the released checkpoints, by the name of their release folder."""

SDE_NAMES = {"vesde": "ve", "vpsde": "vp", "subvpsde": "subvp"}
PREDICTOR_NAMES = {"reverse_diffusion": "reverse_diffusion", "euler_maruyama": "euler_maruyama",
                   "ancestral_sampling": "ancestral", "none": "none"}  # fmt: skip
CORRECTOR_NAMES = {"langevin": "langevin", "ald": "ald", "none": "none"}
NET_CLASSES = ("ncsnpp", "ddpm")
# the model keys every network class reads, and those only the NCSN++ class reads
_MODEL_KEYS = ("name", "nf", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv",
               "scale_by_sigma", "sigma_min", "sigma_max", "num_scales", "beta_min", "beta_max")  # fmt: skip
_NCSNPP_KEYS = ("conditional", "fir", "fir_kernel", "skip_rescale", "resblock_type", "progressive",
                "progressive_input", "progressive_combine", "embedding_type", "init_scale")  # fmt: skip


# -- the reference config -> a scoresde config --------------------------------------------------------
def reference_config(config: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The reference config named by ``config``: a key of :data:`PRESETS`, a JSON file (the sections, or an
    object with them under ``"config"``, as the reference fixtures are written) or a mapping of sections."""
    if isinstance(config, str) and config in PRESETS:
        return json.loads(json.dumps(PRESETS[config]))
    config_path = None
    if isinstance(config, (str, Path)):
        path = config_path = Path(config)
        if not path.is_file():
            raise ValueError(f"config {str(config)!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
        try:
            config = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"config file {path} is not readable JSON ({err})") from err
    if not isinstance(config, Mapping):
        if config_path is not None:
            raise ValueError(f"config file {config_path} holds a JSON {type(config).__name__}, not an object of "
                             "sections (model, data, training)")  # fmt: skip
        raise TypeError(f"config must be a preset name, a JSON file or a mapping, got {type(config).__name__}")
    if "config" in config and isinstance(config["config"], Mapping):
        config = config["config"]
    for section in ("model", "data", "training"):
        if not isinstance(config.get(section), Mapping):
            raise ValueError(f"the reference config has no [{section}] section (it needs model, data and training)")
    return json.loads(json.dumps(config))


def _require(section: Mapping[str, Any], name: str, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in section]
    if missing:
        raise ValueError(f"the reference config's {name} section lacks {', '.join(missing)}")


def _check_reference(ref: Mapping[str, Any]) -> None:
    m, d, t = ref["model"], ref["data"], ref["training"]
    _require(m, "model", _MODEL_KEYS)
    _require(d, "data", ("image_size", "num_channels", "centered"))
    _require(t, "training", ("sde", "continuous"))
    if m["name"] not in NET_CLASSES:
        raise ValueError(f"model.name {m['name']!r} is not supported; the released score_sde models use "
                         f"{' or '.join(map(repr, NET_CLASSES))}")  # fmt: skip
    if m["name"] == "ncsnpp":
        _require(m, "model", _NCSNPP_KEYS)
        if str(m["embedding_type"]).lower() == "fourier" and "fourier_scale" not in m:
            raise ValueError("the reference config's model section lacks fourier_scale")
    if m.get("nonlinearity", "swish") != "swish" or m.get("normalization", "GroupNorm") != "GroupNorm":
        raise ValueError(f"only swish networks with GroupNorm are supported, got nonlinearity "
                         f"{m.get('nonlinearity')!r} and normalization {m.get('normalization')!r}")  # fmt: skip
    if t["sde"] not in SDE_NAMES:
        raise ValueError(f"training.sde {t['sde']!r} is unknown; choose one of {', '.join(map(repr, SDE_NAMES))}")
    if m["name"] == "ncsnpp" and str(m["embedding_type"]).lower() == "fourier" and not t["continuous"]:
        raise ValueError("a Fourier-embedding network is a continuous-time model (training.continuous = true)")


def network_options(ref: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the :class:`~scoresde.nets.NCSNpp` that computes the reference's network."""
    m, d = ref["model"], ref["data"]
    common = {"image_size": int(d["image_size"]), "channels": int(d["num_channels"]), "nf": int(m["nf"]),
              "ch_mult": [int(c) for c in m["ch_mult"]], "num_res_blocks": int(m["num_res_blocks"]),
              "attn_resolutions": [int(r) for r in m["attn_resolutions"]], "dropout": float(m["dropout"]),
              "resamp_with_conv": bool(m["resamp_with_conv"]), "scale_by_sigma": bool(m["scale_by_sigma"]),
              "centered": bool(d["centered"])}  # fmt: skip
    if m["name"] == "ddpm":  # the DDPM class: positional embedding of the label, always time-conditional
        net = common | {"resblock_type": "ddpm", "fir": False, "skip_rescale": False, "progressive": "none",
                        "progressive_input": "none", "embedding_type": "positional", "conditional": True,
                        "norm_groups": "ddpm"}  # fmt: skip
    else:
        net = common | {k: m[k].lower() if isinstance(m[k], str) else m[k] for k in _NCSNPP_KEYS}  # it lowercases
        net["fir_kernel"] = [int(k) for k in m["fir_kernel"]]
        net["init_scale"] = float(m["init_scale"])
        if net["embedding_type"] == "fourier":
            net["fourier_scale"] = float(m["fourier_scale"])
    if net["embedding_type"] == "positional" and net["scale_by_sigma"]:  # the output is divided by sigmas[label]
        net["index_sigmas"] = [float(m["sigma_min"]), float(m["sigma_max"]), int(m["num_scales"])]
    return net


def _score_convention(sde: str, continuous: bool, n: int) -> dict[str, Any]:
    """``model`` section entries giving the reference's ``get_score_fn`` (see the module docstring)."""
    if sde == "vesde":
        if continuous:
            return {"prediction": "score", "time_input": "sigma", "time_scale": 1.0}
        return {"prediction": "score", "time_input": "sigma_index", "time_scale": 1.0}
    if sde == "vpsde" and not continuous:
        return {"prediction": "eps", "time_input": "t", "time_scale": float(n - 1), "std": "discrete"}
    return {"prediction": "eps", "time_input": "t", "time_scale": 999.0}


def _sampling(ref: Mapping[str, Any], n: int) -> dict[str, Any]:
    s = ref.get("sampling") or {}
    if s.get("method", "pc") == "ode":
        return {"sampler": "ode", "steps": n}
    predictor, corrector = s.get("predictor", "reverse_diffusion"), s.get("corrector", "langevin")
    if predictor not in PREDICTOR_NAMES or corrector not in CORRECTOR_NAMES:
        raise ValueError(f"sampling.predictor {predictor!r} / sampling.corrector {corrector!r}: known predictors "
                         f"{', '.join(PREDICTOR_NAMES)}, correctors {', '.join(CORRECTOR_NAMES)}")  # fmt: skip
    options = {"predictor": PREDICTOR_NAMES[predictor], "corrector": CORRECTOR_NAMES[corrector],
               "snr": float(s.get("snr", 0.16)), "corrector_steps": int(s.get("n_steps_each", 1)),
               "probability_flow": bool(s.get("probability_flow", False))}  # fmt: skip
    return {"sampler": "pc", "steps": n, "options": options}


def official_config(config: str | Path | Mapping[str, Any], data_root: str | Path | None = None) -> Config:
    """The scoresde :class:`Config` of a reference config (see :func:`reference_config`): the SDE, the data
    (shape, range from ``centered``; CIFAR-10 or an image folder at ``data_root``), the network, the
    score convention, the EMA rate and loss, and the reference's sampler."""
    ref = reference_config(config)
    _check_reference(ref)
    m, d, t = ref["model"], ref["data"], ref["training"]
    sde, continuous, n = t["sde"], bool(t["continuous"]), int(m["num_scales"])
    cifar10 = d.get("dataset") == "CIFAR10" and (d["num_channels"], d["image_size"]) == (3, 32)
    if continuous or sde == "subvpsde":
        loss = {"loss": "dsm", "weighting": "likelihood" if t.get("likelihood_weighting") else "sigma2"}
    else:
        loss = {"loss": "smld" if sde == "vesde" else "ddpm"}
    raw = {
        "sde": {"type": SDE_NAMES[sde], "N": n} | {key: float(m[key]) for key in SDE_KEYS[SDE_NAMES[sde]]},
        "data": {"dataset": "cifar10" if cifar10 else "image_folder", "root": str(data_root or ""),
                 "image_size": int(d["image_size"]), "channels": int(d["num_channels"]),
                 "data_range": [-1.0, 1.0] if d["centered"] else [0.0, 1.0],
                 "dequantize": bool(d.get("uniform_dequantization", False)), "flip": bool(d.get("random_flip", True))},
        "model": {"arch": "unet", "net": network_options(ref)} | _score_convention(sde, continuous, n),
        "training": {"ema": float(m.get("ema_rate", 0.9999)), "reduce": "mean" if t.get("reduce_mean") else "sum",
                     "eps": 1e-5} | loss,
        "sampling": _sampling(ref, n),
    }  # fmt: skip
    return from_dict(raw)


# -- the reference's key names ---------------------------------------------------------------------------
def official_layout(net: NCSNpp, indexed_pyramid: bool = False) -> list[str | None]:
    """The scoresde module filling each position of the reference's ``all_modules`` list, in order.

    ``None`` marks a position without parameters. The released code keeps the parameter-free
    pyramid resamplers of ``input_skip`` / ``output_skip`` outside the list; ``indexed_pyramid``
    gives the numbering of a variant of the code that appends them to it.
    """
    layout: list[str | None] = ["fourier"] if net.embedding_type == "fourier" else []
    if net.conditional:
        layout += ["temb.0", "temb.2"]
    layout.append("conv_in")
    for level, blocks in enumerate(net.down):
        attn = len(blocks["attn"]) > 0
        for i in range(len(blocks["res"])):
            layout.append(f"down.{level}.res.{i}")
            if attn:
                layout.append(f"down.{level}.attn.{i}")
        if "resample" in blocks:
            layout.append(f"down.{level}.resample")
            if net.progressive_input == "input_skip" and indexed_pyramid:
                layout.append(None)
            if "pyramid" in blocks:
                layout.append(f"down.{level}.pyramid")
    layout += ["mid.0", "mid.1", "mid.2"]
    for i, blocks in enumerate(net.up):
        layout += [f"up.{i}.res.{j}" for j in range(len(blocks["res"]))]
        if "attn" in blocks:
            layout.append(f"up.{i}.attn")
        pyramid = blocks["pyramid"] if "pyramid" in blocks else None  # noqa: SIM401 (a ModuleDict)
        if isinstance(pyramid, nn.Sequential):  # GroupNorm, act, conv
            if net.progressive == "output_skip" and i > 0 and indexed_pyramid:
                layout.append(None)
            layout += [f"up.{i}.pyramid.0", f"up.{i}.pyramid.2"]
        elif pyramid is not None:  # the residual pyramid's upsampling conv
            layout.append(f"up.{i}.pyramid")
        if "resample" in blocks:
            layout.append(f"up.{i}.resample")
    if hasattr(net, "head"):
        layout += ["head.0", "head.2"]
    return layout


def official_keys(net: NCSNpp, indexed_pyramid: bool = False) -> dict[str, str]:
    """``{reference key: scoresde key}`` for every parameter of ``net`` (reference keys without ``module.``)."""
    own = net.state_dict()
    names: dict[str, str] = {}
    for index, prefix in enumerate(official_layout(net, indexed_pyramid)):
        if prefix is None:
            continue
        for key in own:
            if key.startswith(prefix + "."):
                rest = key[len(prefix) + 1 :]
                # the FIR resampling convs are `Conv2d_0` (a bare weight/bias pair) in the reference
                theirs = rest.replace("Conv_0.", "Conv2d_0.") if _fir_conv(net, prefix) else rest
                names[f"all_modules.{index}.{theirs}"] = key
    return names


def _fir_conv(net: NCSNpp, prefix: str) -> bool:
    module = net.get_submodule(prefix)
    return getattr(module, "fir", False) and hasattr(module, "with_conv") and module.with_conv


# -- reading and converting -------------------------------------------------------------------------------
def read_official(path: str | Path) -> dict[str, Any]:
    """Load a score_sde_pytorch checkpoint without running anything in it (``weights_only``, on the CPU,
    memory-mapped when the file is in torch's zip format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        # memory-mapped (zip format): the optimizer's moments, twice the weights' size, are never read
        with warnings.catch_warnings():  # torch's advice about pickle protocols; our own errors follow
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        why = next((line for line in lines if "GLOBAL" in line), None)
        if why is None:  # torch's message opens with advice to load unsafely: name only the reader's finding
            found = next((line for line in lines if line.startswith("Unsupported")), "not a torch file of tensors")
            raise CheckpointError(f"{path} is not a readable torch checkpoint of tensors (a plain pickle, or not a "
                                  f"torch file at all; the weights-only reader found: {found})") from err  # fmt: skip
        raise CheckpointError(f"{path} holds Python objects other than tensors and plain containers, and scoresde "
                              f"never runs code from a checkpoint: {why}") from err  # fmt: skip
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(err).__name__}: {first})") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), Mapping):
        got = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a score_sde_pytorch checkpoint: expected a dict with 'model', 'ema' "
                              f"and 'step', got {got}")  # fmt: skip
    return ckpt


def _strip_module(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict without DataParallel's ``module.`` prefix (also accepted without it)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"the checkpoint's model entries {bad[:4]} are not tensors")
    return dict(state)


def _mismatch(names: dict[str, str], state: dict[str, Tensor], own: dict[str, Tensor]) -> list[str]:
    problems = []
    unplaced = [k for k in state if k != "sigmas" and k not in names]
    if unplaced:
        problems.append(f"{len(unplaced)} checkpoint entr{'y' if len(unplaced) == 1 else 'ies'} with no place in "
                        f"the network: {', '.join(unplaced[:6])}{' ...' if len(unplaced) > 6 else ''}")  # fmt: skip
    missing = [theirs for theirs in names if theirs not in state]
    if missing:
        problems.append(f"{len(missing)} network entr{'y' if len(missing) == 1 else 'ies'} missing in the "
                        f"checkpoint: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")  # fmt: skip
    for theirs, ours in names.items():
        if theirs in state and tuple(state[theirs].shape) != tuple(own[ours].shape):
            problems.append(f"{theirs}: checkpoint {tuple(state[theirs].shape)} vs network {tuple(own[ours].shape)}")
    return problems


def convert_state(
    ckpt: Mapping[str, Any], net: NCSNpp, levels: tuple[float, float, int] | None = None, ema: bool = True
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """``(model state, EMA state)`` of ``net`` (scoresde names) from a reference checkpoint.

    Every reference entry is placed by name and checked by shape; the EMA's unnamed list is
    matched to the trainable parameters in the reference's order. With ``levels``, the reference
    config's ``(sigma_min, sigma_max, num_scales)``, the checkpoint's ``sigmas`` buffer must equal
    those noise levels (the reference network keeps them whatever its SDE). Anything that does
    not fit raises :class:`CheckpointError` listing it. The EMA state is ``None`` when the
    checkpoint has none or with ``ema=False`` (then the EMA is not read at all).
    """
    state = _strip_module(ckpt["model"])
    own = net.state_dict()
    names, problems = {}, []
    for indexed in (False, True):
        names = official_keys(net, indexed)
        found = _mismatch(names, state, own)
        if not found:
            break
        problems = problems or found
    else:
        listed = "\n  ".join(problems[:12])
        raise CheckpointError(f"the checkpoint does not fit the network of this config:\n  {listed}")
    unfilled = sorted(set(own) - set(names.values()))
    if unfilled:  # every scoresde entry must come from the checkpoint
        raise CheckpointError(f"network entries without a reference counterpart: {', '.join(unfilled[:6])}")
    if levels is not None and "sigmas" in state:
        _check_sigmas(state["sigmas"], *levels)
    model_state = {ours: state[theirs].detach().to(own[ours].dtype) for theirs, ours in names.items()}
    average = ckpt.get("ema")
    if average is None or not ema:
        return model_state, None
    shadow = average.get("shadow_params") if isinstance(average, Mapping) else None
    if not isinstance(shadow, (list, tuple)):
        raise CheckpointError("the checkpoint's 'ema' has no shadow_params list")
    params = dict(net.named_parameters())
    frozen = {k for k, ours in names.items() if not params[ours].requires_grad}
    trainable = [k for k in state if k in names and k not in frozen]
    if len(shadow) != len(trainable):
        raise CheckpointError(f"the checkpoint's EMA has {len(shadow)} tensors for the network's {len(trainable)} "
                              "trainable parameters")  # fmt: skip
    ema_state = {}
    for i, (key, value) in enumerate(zip(trainable, shadow, strict=True)):
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(state[key].shape):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(f"EMA tensor {i} should be {key} {tuple(state[key].shape)}, got {got}")
        ema_state[names[key]] = value.detach().to(own[names[key]].dtype)
    return model_state, ema_state


def _check_sigmas(sigmas: Tensor, sigma_min: float, sigma_max: float, n: int) -> None:
    """The checkpoint's descending noise levels must be the config's (they fix sigma_min, sigma_max and N)."""
    expected = VESDE(sigma_min, sigma_max, n).discrete_sigmas().flip(0)
    got = sigmas.detach().double().reshape(-1)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=0):
        lo, hi = (float(got[-1]), float(got[0])) if got.numel() else (math.nan, math.nan)
        raise CheckpointError(f"the checkpoint's noise levels (N = {got.numel()}, sigma {lo:g} .. {hi:g}) are not "
                              f"the config's (N = {n}, sigma_min {sigma_min:g}, sigma_max {sigma_max:g}): "
                              "a config for another model?")  # fmt: skip


def _levels(config: str | Path | Mapping[str, Any]) -> tuple[float, float, int]:
    """The reference config's noise levels ``(sigma_min, sigma_max, num_scales)``."""
    m = reference_config(config)["model"]
    return float(m["sigma_min"]), float(m["sigma_max"]), int(m["num_scales"])


def _build(cfg: Config) -> tuple[SDE, NCSNpp]:
    from .build import build_model, build_sde
    from .validation import check_config

    check_config(cfg, training=False, data=False)
    return build_sde(cfg), build_model(cfg)


def load_official(
    path: str | Path, config: str | Path | Mapping[str, Any], ema: bool = True
) -> tuple[SDE, nn.Module, ModelScore]:
    """``(sde, model, score_fn)`` of a score_sde_pytorch checkpoint, on the CPU in eval mode.

    Args:
        path: the ``.pth`` file (``checkpoint_<k>.pth``).
        config: a preset name (:data:`PRESETS`), a JSON file or a mapping with the reference
            config's ``model``, ``data`` and ``training`` sections.
        ema: use the EMA weights (the reference's reported results do); ``False``: the raw ones.

    ``model(x, labels)`` is the network under the reference's label convention and
    ``score_fn(x, t)`` the score the reference's ``get_score_fn`` gives (module docstring).
    """
    cfg = official_config(config)
    sde, model = _build(cfg)
    model_state, ema_state = convert_state(read_official(path), model, _levels(config), ema=ema)
    if ema and ema_state is None:
        raise CheckpointError(f"{path} has no EMA weights; pass ema=False for the raw ones")
    with torch.no_grad():
        model.load_state_dict(model_state, strict=True)
        if ema:
            params = dict(model.named_parameters())
            for k, v in ema_state.items():
                params[k].copy_(v)
    model.eval()
    from .build import build_score

    return sde, model, build_score(model, sde, cfg)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_official(
    path: str | Path, config: str | Path | Mapping[str, Any], out: str | Path, data_root: str | Path | None = None
) -> Path:
    """Write a score_sde_pytorch checkpoint as a scoresde checkpoint ``OUT/checkpoints/checkpoint_<step>``.

    The result holds the raw (``model.*``) and EMA (``ema.*``) weights and the config of
    :func:`official_config` (with ``data_root`` as ``data.root``), so every scoresde command and
    function that takes a checkpoint uses it. ``OUT/checkpoints`` must not hold a checkpoint yet.
    """
    from . import __version__

    path, out = Path(path), Path(out)
    ckpt_dir = out / "checkpoints"
    if ckpt_dir.is_dir() and latest_checkpoint(ckpt_dir) is not None:
        raise FileExistsError(f"{ckpt_dir} already holds checkpoints; convert into a new folder")
    cfg = official_config(config, data_root)
    ref = reference_config(config)
    model = _build(cfg)[1]
    ckpt = read_official(path)
    model_state, ema_state = convert_state(ckpt, model, _levels(ref))
    if ema_state is None:
        raise CheckpointError(f"{path} has no EMA weights ('ema'), which a scoresde checkpoint carries")
    step = ckpt.get("step", 0)
    step = int(step) if isinstance(step, (int, Tensor)) and not isinstance(step, bool) else 0
    ema = ckpt["ema"]
    tensors = {f"model.{k}": v for k, v in model_state.items()} | {f"ema.{k}": v for k, v in ema_state.items()}
    metadata = {
        "format": SCORE_FORMAT,
        "step": step,
        "ema_updates": int(ema.get("num_updates") or 0),
        "config": cfg.to_dict(),
        "history": [],
        "source": {
            "kind": "score_sde_pytorch",
            "file": path.name,
            "sha256": _sha256(path),
            "preset": config if isinstance(config, str) and config in PRESETS else None,
            "ema_decay": ema.get("decay"),
            "reference_config": ref,
        },
        "versions": {"scoresde": __version__, "torch": torch.__version__},
    }
    return save_checkpoint(ckpt_dir / f"checkpoint_{step:08d}.safetensors", tensors, metadata)


__all__ = ["PRESETS", "convert_official", "convert_state", "load_official", "official_config", "official_keys",
           "official_layout", "read_official", "reference_config"]  # fmt: skip
