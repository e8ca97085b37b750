"""Config checks before any work: value ranges, names against the registries, and the combinations that cannot work.

:func:`check_config` validates a whole config up front (a wrong loss for the SDE, a network for the wrong kind of
data, a dataset with a fixed shape configured with another, ``model.net`` keys the network does not take, sampler
options the sampler does not take, class conditioning without labels), so that a bad run fails in one line before
any data is loaded or any network is built. It reads no data.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

from torch import Tensor

from .build import (
    ARCHS,
    DATASET_CLASSES,
    FIXED_SHAPES,
    LOSS_SDES,
    NAMES,
    ROOTED_DATASETS,
    build_sde,
    check_choice,
    check_labels_exist,
)
from .config import Config, check_ranges
from .data import TOY_CLASSES, TOYS
from .losses import check_time_sampling
from .nets import NCSNpp
from .sampling.options import check_sampler_options


def _field(cfg: Config, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


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


def known_classes(cfg: Config) -> int | None:
    """The number of classes of the configured dataset when it is known without reading it (``None`` otherwise)."""
    d = cfg.data
    return TOY_CLASSES.get(d.toy) if d.dataset == "toy" else DATASET_CLASSES.get(d.dataset)


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
