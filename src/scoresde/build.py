"""From a config to objects: the SDE, the dataset, the network, the score and the loss.

Every name a config may use is a key of a plain registry dict here (:data:`SDES`, :data:`DATASETS`,
:data:`ARCHS`, :data:`LOSSES`; :data:`NAMES` maps each config field to its registry). The checks of a whole
config are in :mod:`scoresde.validation`, devices in :mod:`scoresde.devices`, sampler options in
:mod:`scoresde.sampling.options`, loading a trained model in :mod:`scoresde.model`. Inference code never
imports the trainer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import SDE_KEYS, Config
from .data import (
    TOY_CLASSES,
    EpochOrder,
    ImageData,
    cached_image_folder,
    image_files,
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
    ddpm_loss,
    dsm_loss,
    smld_loss,
    training_noise,
)
from .nets import NCSNpp, TimeMLP, ddpm_cifar10, ddpmpp_cifar10, ddpmpp_small, ncsnpp_cifar10
from .sampling import SAMPLERS
from .score import PREDICTIONS, STDS, TIME_INPUTS, ModelScore
from .sde import EDMSDE, SDE, VESDE, VPSDE, CosineVPSDE, RectifiedFlow, SubVPSDE
from .training.ema import EMA_TYPES
from .training.loop import LR_DECAYS
from .training.options import PRECISIONS

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


STORAGES: dict[str, str] = {
    "memory": "decoded into memory at the start of every run (small folders: the fastest)",
    "memmap": "decoded once into a cache file of levels and read memory-mapped (any size; memory stays bounded)",
}
"""``data.storage`` of an image folder -> how it is read."""


def _read_folder(cfg: Config, root: Path, keep: Callable[[int], bool] | None = None) -> ImageData:
    d = cfg.data
    if d.storage == "memmap":
        return cached_image_folder(root, d.image_size, d.channels, d.cache or None, d.workers, keep)
    data = load_image_folder(root, d.image_size, d.channels)
    if keep is None:
        return data
    mask = torch.tensor([keep(i) for i in range(len(data))], dtype=torch.bool)
    return ImageData(data.images[mask], data.levels, None if data.labels is None else data.labels[mask])


def _held_out(i: int) -> bool:
    return i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1


def _trained_on(i: int) -> bool:
    return not _held_out(i)


def _image_folder(cfg: Config, split: str) -> ImageData:
    """``root/<split>/`` when the folder has ``train/`` and ``test/``; else the flat folder split deterministically:
    every :data:`HOLDOUT_EVERY`-th image is the test split, the rest the training split. Read as
    ``data.storage`` says (:data:`STORAGES`)."""
    root = Path(cfg.data.root)
    if (root / split).is_dir():
        return _read_folder(cfg, root / split)
    other = "test" if split == "train" else "train"
    if (root / other).is_dir():
        raise FileNotFoundError(f"image folder {root} has a {other}/ folder but no {split}/ folder; give it both "
                                f"(or neither: a flat folder holds out every {HOLDOUT_EVERY}th image as its test "
                                "split)")  # fmt: skip
    count = len(image_files(root)[0])
    if split == "test" and count < HOLDOUT_EVERY:
        raise ValueError(f"image folder {root} has {count} image(s): too few to hold out a test split (every "
                         f"{HOLDOUT_EVERY}th image); add images, or train/ and test/ folders")  # fmt: skip
    return _read_folder(cfg, root, _held_out if split == "test" else _trained_on)


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
    "data.storage": STORAGES,
    "training.precision": PRECISIONS,
    "training.lr_decay": LR_DECAYS,
    "training.ema_type": EMA_TYPES,
    "sampling.sampler": SAMPLERS,
}


# -- names and data checks the building needs ----------------------------------------------------


def check_choice(dotted: str, value: Any, allowed: Iterable[str]) -> None:
    """One-line error unless ``value`` (of the config field ``dotted``) is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {dotted} {value!r}; choose one of {', '.join(map(repr, allowed))}")


def with_absolute_root(cfg: Config) -> Config:
    """``cfg`` with ``data.root`` made absolute (a copy; ``cfg`` itself when it has no root), so that a checkpoint
    stores a data folder that later commands find from any working directory."""
    if not cfg.data.root:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    return cfg


def check_labels_exist(cfg: Config, what: str) -> None:
    """One-line error unless the configured dataset has class labels (image folders: by sub-folder)."""
    d = cfg.data
    if d.dataset == "toy" and d.toy not in TOY_CLASSES:
        raise ValueError(f"{what} needs class labels, and data.toy {d.toy!r} has none; labelled toys: "
                         f"{', '.join(TOY_CLASSES)}")  # fmt: skip


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


def resume_changes(old: Config, new: Config, read: Sequence[str], allowed: Collection[str]) -> list[str]:
    """What makes resuming a run of config ``old`` under ``new`` meaningless: the dotted keys of the sections ``read``
    by the run that differ, except the ``allowed`` ones, and ``"sde"`` when the processes differ as built."""
    changed = [] if same_process(old, new) else ["sde"]
    a, b = old.to_dict(), new.to_dict()
    for section in read:
        for key in sorted(set(a[section]) | set(b[section])):
            name = f"{section}.{key}"
            if name not in allowed and a[section].get(key) != b[section].get(key):
                changed.append(f"{name} ({a[section].get(key)!r} -> {b[section].get(key)!r})")
    return changed


def check_resume(old: Config, new: Config, path: Path, read: Sequence[str], allowed: Collection[str]) -> None:
    """A one-line error naming every change that :func:`resume_changes` finds, and the changes a resume allows."""
    changed = resume_changes(old, new, read, allowed)
    if changed:
        raise ValueError(f"{path} was written with another config ({'; '.join(changed)}); a resume may change "
                         f"only {', '.join(sorted(allowed))}: use a new workdir (or --overwrite to delete the old "
                         "run)")  # fmt: skip


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


def batch_indices(cfg: Config, n: int, batch_size: int, seed: int) -> Callable[[int, torch.Generator], Tensor]:
    """``indices(step, generator)``: the dataset rows of a step's batch. Memory-mapped image folders visit every
    image once per epoch in a seeded order (:class:`scoresde.data.EpochOrder`); data in memory are drawn uniformly
    with replacement from ``generator`` (the paper's sampling, and every earlier run's)."""
    if cfg.data.dataset == "image_folder" and cfg.data.storage == "memmap":
        order = EpochOrder(n, batch_size, seed)
        return lambda step, generator: order(step)
    return lambda step, generator: torch.randint(0, n, (batch_size,), generator=generator)


def model_batch(data: ImageData | Tensor, idx: Tensor, cfg: Config, generator: torch.Generator) -> Tensor:
    """A training batch in the model's space (dequantized, scaled, optionally flipped)."""
    if isinstance(data, Tensor):
        return data[idx]
    d = cfg.data
    return to_model(data.images[idx], data.levels, tuple(d.data_range), d.dequantize, generator, d.flip)
