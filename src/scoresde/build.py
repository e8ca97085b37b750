"""From a config to objects: the SDE, the dataset, the network, the score, the loss, the device.

Every name a config may use is a key of a plain registry dict here (:data:`SDES`,
:data:`DATASETS`, :data:`ARCHS`, :data:`LOSSES`). :func:`check_config` validates a whole
config up front (value ranges, names, and the combinations that cannot work, e.g. the
``ddpm`` loss with a VE SDE) so that a bad run fails before any data is loaded or any
network is built. :func:`parse_sampler_options` turns ``KEY=VALUE`` strings into sampler
options type-checked against the sampler's own keyword defaults.

Inference code (``scoresde sample``, ``scoresde likelihood``) uses this module and
:mod:`scoresde.checkpoint` only; it never imports the trainer.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import math
import os
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import Checkpoint
from .config import SDE_KEYS, Config, check_ranges, parse_value
from .data import (
    TOY_CLASSES,
    TOYS,
    ImageData,
    load_cifar10,
    load_digits,
    load_image_folder,
    load_mnist,
    to_model,
    toy_data,
)
from .losses import (
    REDUCTIONS,
    TIME_SAMPLINGS,
    WEIGHTINGS,
    check_time_sampling,
    ddpm_loss,
    dsm_loss,
    smld_loss,
    training_noise,
)
from .nets import NCSNpp, TimeMLP, ddpm_cifar10, ddpmpp_cifar10, ddpmpp_small, ncsnpp_cifar10
from .sampling import SAMPLERS, sampler_options, spec_of
from .sampling import is_adaptive as sampling_is_adaptive
from .score import PREDICTIONS, STDS, TIME_INPUTS, ModelScore
from .sde import EDMSDE, SDE, VESDE, VPSDE, CosineVPSDE, RectifiedFlow, SubVPSDE

# -- registries ---------------------------------------------------------------------------------
SDES: dict[str, Callable[..., SDE]] = {
    "vp": VPSDE,
    "subvp": SubVPSDE,
    "ve": VESDE,
    "cosine": CosineVPSDE,
    "rectified_flow": RectifiedFlow,
    "edm": EDMSDE,
}
"""``[sde] type`` -> the process; its keys are :data:`scoresde.config.SDE_KEYS` (unset ones take the defaults)."""


HOLDOUT_EVERY = 10
"""A flat image folder (no ``train/`` and ``test/`` sub-folders) keeps every 10th image (in path order) as its test
split and trains on the others."""


def _image_folder(cfg: Config, split: str) -> ImageData:
    """``root/<split>/`` when the folder has ``train/`` and ``test/``; else the flat folder split deterministically:
    every :data:`HOLDOUT_EVERY`-th image is the test split, the rest the training split."""
    root, d = Path(cfg.data.root), cfg.data
    if (root / split).is_dir():
        return load_image_folder(root / split, d.image_size, d.channels)
    other = "test" if split == "train" else "train"
    if (root / other).is_dir():
        raise FileNotFoundError(f"image folder {root} has a {other}/ folder but no {split}/ folder; give it both "
                                f"(or neither: a flat folder holds out every {HOLDOUT_EVERY}th image as its test "
                                "split)")  # fmt: skip
    data = load_image_folder(root, d.image_size, d.channels)
    held = torch.arange(len(data)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    if split == "test" and not bool(held.any()):
        raise ValueError(f"image folder {root} has {len(data)} image(s): too few to hold out a test split (every "
                         f"{HOLDOUT_EVERY}th image); add images, or train/ and test/ folders")  # fmt: skip
    keep = held if split == "test" else ~held
    return ImageData(data.images[keep], data.levels, None if data.labels is None else data.labels[keep])


def _toy(cfg: Config, split: str, return_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    seed = cfg.training.seed + (0 if split == "train" else 1)
    gen = torch.Generator().manual_seed(seed)
    return toy_data(cfg.data.toy, cfg.data.toy_size, generator=gen, return_labels=return_labels)


DATASETS: dict[str, Callable[[Config, str], ImageData | Tensor]] = {
    "digits": lambda cfg, split: load_digits(split),
    "toy": _toy,
    "image_folder": _image_folder,
    "cifar10": lambda cfg, split: load_cifar10(cfg.data.root, split),
    "mnist": lambda cfg, split: load_mnist(cfg.data.root, split),
}
# datasets read from files under data.root, and the (channels, image_size) of those with a fixed shape
ROOTED_DATASETS = ("image_folder", "cifar10", "mnist")
FIXED_SHAPES: dict[str, tuple[int, int]] = {"digits": (1, 8), "cifar10": (3, 32), "mnist": (1, 28)}
# the number of classes of the labelled datasets with a fixed label set (image folders: one per sub-folder)
DATASET_CLASSES: dict[str, int] = {"digits": 10, "cifar10": 10, "mnist": 10}

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "ncsnpp": ncsnpp_cifar10,
    "ddpmpp": ddpmpp_cifar10,
    "ddpm": ddpm_cifar10,
    "ddpmpp_small": ddpmpp_small,
    "unet": NCSNpp,
    "mlp": TimeMLP,
}


def _dsm(cfg: Config, sde: SDE, score: ModelScore, model: nn.Module) -> Callable[..., Tensor]:
    t = cfg.training
    return partial(dsm_loss, sde, score, weighting=t.weighting, reduce=t.reduce, eps=t.eps,
                   importance_sampling=t.importance_sampling, time_sampling=t.time_sampling,
                   sigma_data=cfg.model.sigma_data, gamma=t.min_snr_gamma, time_mean=t.time_mean,
                   time_std=t.time_std)  # fmt: skip


def _ddpm(cfg: Config, sde: SDE, score: ModelScore, model: nn.Module) -> Callable[..., Tensor]:
    return partial(ddpm_loss, sde, model, reduce=cfg.training.reduce)


def _smld(cfg: Config, sde: SDE, score: ModelScore, model: nn.Module) -> Callable[..., Tensor]:
    return partial(smld_loss, sde, score, reduce=cfg.training.reduce)


LOSSES: dict[str, Callable[[Config, SDE, ModelScore, nn.Module], Callable[..., Tensor]]] = {
    "dsm": _dsm,
    "ddpm": _ddpm,
    "smld": _smld,
}
# losses tied to one SDE's discretization -> the sde.type they need
LOSS_SDES: dict[str, str] = {"ddpm": "vp", "smld": "ve"}

# the allowed values of a config's name fields
NAMES: dict[str, Iterable[str]] = {
    "sde.type": SDES,
    "data.dataset": DATASETS,
    "model.arch": ARCHS,
    "model.prediction": PREDICTIONS,
    "model.time_input": TIME_INPUTS,
    "model.std": STDS,
    "training.loss": LOSSES,
    "training.weighting": WEIGHTINGS,
    "training.time_sampling": TIME_SAMPLINGS,
    "training.reduce": REDUCTIONS,
    "sampling.sampler": SAMPLERS,
}


# -- validation ---------------------------------------------------------------------------------
def _field(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def check_choice(dotted: str, value: Any, allowed: Iterable[str]) -> None:
    """One-line error unless ``value`` (of the config field ``dotted``) is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {dotted} {value!r}; choose one of {', '.join(map(repr, allowed))}")


def net_options(arch: str) -> set[str] | None:
    """The ``model.net`` keys an architecture accepts (``None``: any)."""
    params = dict(inspect.signature(ARCHS[arch]).parameters)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # the presets forward to NCSNpp
        params |= inspect.signature(NCSNpp).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return {name for name, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_config(cfg: Config, training: bool = True, data: bool | None = None) -> Config:
    """Raise a one-line ``ValueError`` unless ``cfg`` can be built (and trained); cheap, reads no data.

    Checks the value ranges (:func:`scoresde.config.check_ranges`), every name against its
    registry, and the combinations that cannot work: a discrete loss with the wrong SDE,
    a network for the wrong kind of data, a dataset with a fixed shape configured with
    another, ``model.net`` keys the network does not take, and sampler options the
    configured sampler does not take. With ``data`` (default: ``training``) the dataset's
    ``data.root`` must be a directory; with ``training`` an optional package the run
    needs (tensorboard) must be installed.
    """
    data = training if data is None else data
    check_ranges(cfg)
    for dotted, allowed in NAMES.items():
        check_choice(dotted, _field(cfg, dotted), allowed)
    d, m, t = cfg.data, cfg.model, cfg.training
    build_sde(cfg)  # the process's own parameter checks (e.g. sigma_min < sigma_max with its defaults)
    check_time_sampling(t.time_sampling, t.weighting, t.importance_sampling, t.time_mean, t.time_std, t.loss)
    check_data_config(cfg, data)
    needed = LOSS_SDES.get(t.loss)
    if needed is not None and cfg.sde.type != needed:
        raise ValueError(f"training.loss {t.loss!r} needs sde.type {needed!r}, got {cfg.sde.type!r}; "
                         f"use training.loss 'dsm', which works with every SDE")  # fmt: skip
    if (m.arch == "mlp") != (d.dataset == "toy"):
        what = "2-D toy data (data.dataset 'toy')" if m.arch == "mlp" else "images; use model.arch 'mlp' for toy data"
        raise ValueError(f"model.arch {m.arch!r} is for {what}, got data.dataset {d.dataset!r}")
    if m.std == "discrete" and (cfg.sde.type != "vp" or m.prediction != "eps"):
        raise ValueError(f"model.std 'discrete' (DDPM's discrete noise levels) needs sde.type 'vp' and "
                         f"model.prediction 'eps', got {cfg.sde.type!r} and {m.prediction!r}")  # fmt: skip
    accepted = net_options(m.arch)
    unknown = sorted(set(m.net) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(f"model.net has option(s) {unknown} that model.arch {m.arch!r} does not accept; "
                         f"it takes {sorted(accepted - {'image_size', 'channels', 'dim'})}")  # fmt: skip
    check_sampler_options(cfg.sampling.sampler, cfg.sampling.options, what="sampling.options")
    check_conditioning(cfg)
    if training and t.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("training.tensorboard = true needs the tensorboard package (pip install tensorboard)")
    return cfg


def check_data_config(cfg: Config, data: bool) -> None:
    """The ``[data]`` section: the toy's name, the shape of a fixed-shape dataset and, with ``data``, that
    ``data.root`` is a directory for a dataset read from files."""
    d = cfg.data
    if d.dataset == "toy":
        check_choice("data.toy", d.toy, TOYS)
    if d.dataset in FIXED_SHAPES:
        channels, size = FIXED_SHAPES[d.dataset]
        if (d.channels, d.image_size) != (channels, size):
            raise ValueError(f"data.dataset {d.dataset!r} has {channels} channel(s) of {size}x{size}; set "
                             f"data.channels = {channels} and data.image_size = {size} (got {d.channels} and "
                             f"{d.image_size})")  # fmt: skip
    if data and d.dataset in ROOTED_DATASETS:
        if not d.root:
            raise ValueError(f"data.root must point at the {d.dataset} files (--data-root DIR on the command line)")
        if not Path(d.root).is_dir():
            raise FileNotFoundError(f"data.root {d.root} is not a directory (the {d.dataset} files go there)")


def with_absolute_root(cfg: Config) -> Config:
    """``cfg`` with ``data.root`` made absolute (a copy; ``cfg`` itself when it has no root), so that a checkpoint
    stores a data folder that later commands find from any working directory."""
    if not cfg.data.root:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    return cfg


def known_classes(cfg: Config) -> int | None:
    """The number of classes of the configured dataset when it is known without reading it (``None`` otherwise)."""
    d = cfg.data
    return TOY_CLASSES.get(d.toy) if d.dataset == "toy" else DATASET_CLASSES.get(d.dataset)


def check_labels_exist(cfg: Config, what: str) -> None:
    """One-line error unless the configured dataset has class labels (image folders: by sub-folder)."""
    d = cfg.data
    if d.dataset == "toy" and d.toy not in TOY_CLASSES:
        raise ValueError(f"{what} needs class labels, and data.toy {d.toy!r} has none; labelled toys: "
                         f"{', '.join(TOY_CLASSES)}")  # fmt: skip


def check_class_count(num_classes: int, cfg: Config, what: str) -> None:
    """One-line error when the configured dataset is known to have more classes than ``num_classes``."""
    known = known_classes(cfg)
    if known is not None and num_classes < known:
        name = cfg.data.toy if cfg.data.dataset == "toy" else cfg.data.dataset
        raise ValueError(f"{what} = {num_classes}, but {name!r} has {known} classes")


def check_conditioning(cfg: Config) -> None:
    """``model.net.num_classes`` (class-conditional score model) and ``training.p_uncond`` (label dropout)."""
    num_classes = cfg.model.net.get("num_classes")
    if num_classes is None:
        if cfg.training.p_uncond > 0:
            raise ValueError(f"training.p_uncond = {cfg.training.p_uncond} drops class labels, but the model is "
                             "unconditional; set model.net.num_classes (or p_uncond = 0)")  # fmt: skip
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"model.net.num_classes must be a positive integer (the number of classes), got "
                         f"{num_classes!r}")  # fmt: skip
    check_labels_exist(cfg, "a class-conditional model (model.net.num_classes)")
    check_class_count(num_classes, cfg, "model.net.num_classes")


def check_labels(labels: Tensor, num_classes: int, what: str) -> None:
    """One-line error unless the data labels lie in ``[0, num_classes)`` (one host sync)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"the data's class labels lie in [{int(labels.min())}, {int(labels.max())}], outside "
                         f"[0, {num_classes}) for {what} = {num_classes}")  # fmt: skip


# -- devices ------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` as a usable device, else a one-line ``ValueError``.

    ``"auto"`` and ``"cuda"`` without an index take the process's ``LOCAL_RANK`` GPU under torchrun.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available to this torch "
                             f"({torch.__version__}); use 'cpu'")  # fmt: skip
        if device.index is None:
            device = torch.device(f"cuda:{local}")
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} asked for, but MPS is not available; use 'cpu'")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return device


# -- sampler options ----------------------------------------------------------------------------
def sampler_option_defaults(sampler: str) -> dict[str, Any]:
    """``{option: default}`` of a named sampler, read from its signature."""
    check_choice("sampler", sampler, SAMPLERS)
    params = inspect.signature(SAMPLERS[sampler]).parameters
    return {name: params[name].default for name in sampler_options(sampler)}


def _typed_option(sampler: str, key: str, value: Any, default: Any, what: str) -> Any:
    where = f"{what} {key} of sampler {sampler!r}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"{where} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if not number or not math.isfinite(value):
            raise ValueError(f"{where} must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {value!r}")
    rule = spec_of(SAMPLERS[sampler]).rules.get(key)  # the sampler's own rule for this option
    if rule is not None and rule.choices is not None and value not in rule.choices:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, rule.choices))}, got {value!r}")
    if rule is not None and rule.check is not None and number and not rule.check(value):
        raise ValueError(f"{where} {rule.message}, got {value!r}")
    return value


def check_sampler_options(sampler: str, options: Mapping[str, Any], what: str = "option") -> dict[str, Any]:
    """Options of a named sampler, checked against the defaults in its signature.

    Unknown options are errors; a boolean option takes only ``true``/``false``, an integer
    only an integer, a float any number, and a string option with a fixed set of values
    (``method``, ``error_norm``, ``predictor``, ``corrector``) only one of them.
    """
    defaults = sampler_option_defaults(sampler)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown} for sampler {sampler!r}; it accepts {list(defaults)}")
    return {key: _typed_option(sampler, key, value, defaults[key], what) for key, value in options.items()}


def parse_sampler_options(sampler: str, items: Iterable[str]) -> dict[str, Any]:
    """``["snr=0.1", "probability_flow=true"]`` to options of ``sampler``, checked by :func:`check_sampler_options`."""
    raw: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or "." in key:
            raise ValueError(f"sampler option {item!r} must look like KEY=VALUE, e.g. snr=0.16")
        raw[key] = parse_value(text)
    return check_sampler_options(sampler, raw)


def is_adaptive(sampler: str, options: Mapping[str, Any]) -> bool:
    """Whether the named sampler picks its own steps (``adaptive_sde``, the ``ode`` sampler's ``rk45``)."""
    check_choice("sampler", sampler, SAMPLERS)
    return sampling_is_adaptive(sampler, dict(options))


# -- building -----------------------------------------------------------------------------------
def build_sde(cfg: Config) -> SDE:
    """The configured forward process; a parameter it refuses is a one-line error naming the ``[sde]`` section."""
    s = cfg.sde
    check_choice("sde.type", s.type, SDES)
    given = {arg: getattr(s, key) for key, arg in SDE_KEYS[s.type].items() if getattr(s, key) is not None}
    try:
        return SDES[s.type](**given, N=s.N)
    except ValueError as err:
        raise ValueError(f"[sde] type {cfg.sde.type!r}: {err}") from None


def same_process(a: Config, b: Config) -> bool:
    """Whether two configs describe the same forward process (compared as built: unset keys take the defaults)."""
    return repr(build_sde(a)) == repr(build_sde(b))


def load_dataset(
    cfg: Config, split: str = "train", return_labels: bool = False
) -> ImageData | Tensor | tuple[ImageData | Tensor, Tensor]:
    """The configured dataset: :class:`ImageData` for images, a ``[N, 2]`` tensor for toys.

    ``return_labels`` also returns the ``[N]`` class labels (an error for a dataset without them).
    """
    d = cfg.data
    check_choice("data.dataset", d.dataset, DATASETS)
    if d.dataset in ROOTED_DATASETS and not d.root:
        raise ValueError(f"data.root must point at the {d.dataset} files")
    if not return_labels:
        return DATASETS[d.dataset](cfg, split)
    check_labels_exist(cfg, "this run")
    if d.dataset == "toy":  # the one dataset given as a plain tensor: its labels come with the draw
        return _toy(cfg, split, return_labels=True)
    data = DATASETS[d.dataset](cfg, split)
    if data.labels is None:
        raise ValueError(f"data.dataset {d.dataset!r} ({split} split) has no class labels")
    return data, data.labels


def data_shape(cfg: Config) -> tuple[int, ...]:
    d = cfg.data
    return (2,) if d.dataset == "toy" else (d.channels, d.image_size, d.image_size)


def build_model(cfg: Config) -> nn.Module:
    m, shape = cfg.model, data_shape(cfg)
    check_choice("model.arch", m.arch, ARCHS)
    kwargs = dict(m.net)
    if m.arch == "mlp":
        kwargs.setdefault("dim", shape[0])
    else:
        kwargs = {"image_size": shape[1], "channels": shape[0]} | kwargs
    try:
        return ARCHS[m.arch](**kwargs)
    except TypeError as err:
        raise ValueError(f"model.net has an option {m.arch!r} does not accept: {err}") from err


def build_score(model: nn.Module, sde: SDE, cfg: Config, y: int | Tensor | None = None) -> ModelScore:
    """The configured score of ``model``; ``y``: fixed class labels of a class-conditional model."""
    m = cfg.model
    return ModelScore(model, sde, prediction=m.prediction, time_input=m.time_input, time_scale=m.time_scale, y=y,
                      std=m.std, sigma_data=m.sigma_data)  # fmt: skip


def build_training_noise(cfg: Config, sde: SDE) -> Callable[[Tensor, torch.Generator], dict[str, Tensor]]:
    """``noise(x, generator)``: every random input of the configured loss for the batch ``x`` (its keyword
    arguments), the times from ``training.time_sampling`` (:func:`scoresde.losses.training_noise`)."""
    t = cfg.training
    return partial(_draw_noise, t.loss, sde, t.eps, t.importance_sampling, t.time_sampling, t.time_mean, t.time_std)


def _draw_noise(loss: str, sde: SDE, eps: float, importance: bool, kind: str, mean: float | None, std: float | None,
                x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:  # fmt: skip
    return training_noise(loss, sde, x, eps, generator, importance_sampling=importance, time_sampling=kind,
                          time_mean=mean, time_std=std)  # fmt: skip


def build_loss(cfg: Config, sde: SDE, score: ModelScore, model: nn.Module) -> Callable[..., Tensor]:
    """``loss(x, **noise)`` for the configured objective (``noise`` from :func:`scoresde.losses.training_noise`)."""
    check_choice("training.loss", cfg.training.loss, LOSSES)
    return LOSSES[cfg.training.loss](cfg, sde, score, model)


def model_batch(data: ImageData | Tensor, idx: Tensor, cfg: Config, generator: torch.Generator) -> Tensor:
    """A training batch in the model's space (dequantized, scaled, optionally flipped)."""
    if isinstance(data, Tensor):
        return data[idx]
    d = cfg.data
    return to_model(data.images[idx], data.levels, tuple(d.data_range), d.dequantize, generator, d.flip)


def load_for_inference(
    path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu", data_root: str | Path | None = None
) -> tuple[Config, SDE, nn.Module]:
    """Rebuild ``(config, sde, network)`` from a checkpoint, with the EMA weights by default; ``data_root``
    replaces the config's ``data.root``. :func:`scoresde.load` gives the same as one
    :class:`~scoresde.score.ScoreModel` (``model.config``, ``model.sde``, ``model.net``)."""
    model = Checkpoint.open(path, data_root=data_root).load(ema=use_ema, device=device)
    return model.config, model.sde, model.net
