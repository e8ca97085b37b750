"""One object for a trained model: :func:`load` turns a checkpoint into a :class:`~scoresde.score.ScoreModel`.

.. code-block:: python

    import scoresde as sd

    model = sd.load("runs/digits/checkpoints")  # newest checkpoint, EMA weights, CPU
    x = sd.sample(model, n=64)                  # the sampler and steps it was configured with
    x = sd.sample(model, n=64, sampler="unipc", steps=10)

The model carries its process (``model.sde``), data shape, range and levels, parameterization,
class count, the training config and which weights were loaded, so every function that takes
``(sde, score_fn)`` takes the model alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .build import build_model, build_sde, data_shape
from .checkpoint import SCORE_FORMAT, Checkpoint, check_format, load_weights_strict, prefixed
from .config import Config
from .data import data_levels
from .devices import api_device
from .score import ScoreModel
from .sde import SDE


def score_model(
    net: nn.Module, cfg: Config, sde: SDE | None = None, weights: str = "ema", source: str | None = None
) -> ScoreModel:
    """The :class:`ScoreModel` of a network trained under ``cfg`` (its process, parameterization, data and
    sampling defaults read from the config's ``[sde]``, ``[model]``, ``[data]`` and ``[sampling]``)."""
    m, d, s = cfg.model, cfg.data, cfg.sampling
    sampling = {"sampler": s.sampler, "steps": s.steps, "eps": s.eps or None, "n": s.n, "options": dict(s.options)}
    return ScoreModel(
        net,
        build_sde(cfg) if sde is None else sde,
        prediction=m.prediction,
        time_input=m.time_input,
        time_scale=m.time_scale,
        std=m.std,
        sigma_data=m.sigma_data,
        data_shape=data_shape(cfg),
        data_range=None if d.dataset == "toy" else (d.data_range[0], d.data_range[1]),
        levels=None if d.dataset == "toy" else data_levels(d.dataset),
        sampling=sampling,
        config=cfg,
        weights=weights,
        source=source,
    )


def model_from_checkpoint(ckpt: Checkpoint, ema: bool = True, device: str | torch.device | None = None) -> ScoreModel:
    """Build the network of an opened score-model checkpoint, load its weights (EMA by default) strictly, and wrap
    it as a :class:`ScoreModel` in eval mode on ``device`` (default CPU). Reads the tensors once."""
    check_format(ckpt.meta, SCORE_FORMAT, ckpt.path)
    device = api_device(device) or torch.device("cpu")  # before the tensors are read
    net = build_model(ckpt.config)
    tensors = ckpt.tensors()
    load_weights_strict(net, prefixed(tensors, "model"))
    if ema:
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name, value in prefixed(tensors, "ema").items():
                params[name].copy_(value)
    model = score_model(net, ckpt.config, weights="ema" if ema else "raw", source=str(ckpt.path))
    return model.to(device).eval()


def load(
    path: str | Path,
    ema: bool = True,
    device: str | torch.device | None = None,
    data_root: str | Path | None = None,
) -> ScoreModel:
    """Load a trained score model: ``path`` is a checkpoint file, a checkpoints folder (its newest checkpoint) or
    a training workdir (its ``checkpoints/``), including a converted official run.

    Args:
        ema: the exponential moving average of the weights (default), or the raw weights.
        device: where to put it (default CPU).
        data_root: the dataset's folder on this machine, replacing the stored ``data.root`` (for the
            functions that read the data, e.g. :func:`scoresde.evaluate.evaluate`).

    Returns:
        a :class:`ScoreModel`: ``model(x, t)`` is the score; ``scoresde.sample(model, n=...)`` samples it.
    """
    return Checkpoint.open(path, data_root=data_root).load(ema=ema, device=device)


def load_for_inference(
    path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu", data_root: str | Path | None = None
) -> tuple[Config, SDE, nn.Module]:
    """Rebuild ``(config, sde, network)`` from a checkpoint, with the EMA weights by default; ``data_root``
    replaces the config's ``data.root``. :func:`scoresde.load` gives the same as one
    :class:`~scoresde.score.ScoreModel` (``model.config``, ``model.sde``, ``model.net``)."""
    model = Checkpoint.open(path, data_root=data_root).load(ema=use_ema, device=device)
    return model.config, model.sde, model.net
