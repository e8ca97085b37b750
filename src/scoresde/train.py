"""Training: optimize the score model that :mod:`scoresde.build` makes from a config.

Adam with linear warmup and gradient clipping, an exponential moving average of the
weights (and, with ``training.ema_type = "posthoc"``, EDM2's power-function profiles for
post-hoc EMA), checkpoints that resume exactly (weights, EMA, optimizer and every random
state), JSON-lines logs, periodic sample grids with the EMA weights, a tqdm bar, and
multi-process data parallelism with ``torch.distributed`` (launch with ``torchrun``); the
loop is :func:`scoresde.training.fit`, shared with the noise-conditional classifier.

A class-conditional model (``model.net.num_classes``) gets the batch's class labels, each
replaced by the null label with probability ``training.p_uncond`` (classifier-free
guidance); the label dropout is drawn from the data generator, so training stays
deterministic and resumes exactly. Its sample grids cycle through the classes.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .build import (
    batch_indices,
    build_loss,
    build_model,
    build_score,
    build_sde,
    build_training_noise,
    check_resume,
    data_shape,
    load_dataset,
    model_batch,
    with_absolute_root,
)
from .checkpoint import SCORE_FORMAT
from .config import Config, stored_config
from .data import data_levels, to_picture
from .devices import pick_device
from .distributed import init_from_env
from .losses import drop_labels
from .plotting import check_writable_dir, save_image_grid, save_line_plot, save_scatter_grid
from .sde import SDE
from .training.ema import EMA
from .training.loop import Objective, claimed_workdir, fit, learning_rate_schedule
from .training.options import FitOptions, check_fit_options, fit_options
from .validation import check_config, check_labels


# -- the trainer --------------------------------------------------------------------------------
def learning_rate(cfg: Config, step: int) -> float:
    """Linear warmup ``lr * min(1, (step + 1) / warmup)`` for the update that produces ``step + 1``, then
    ``training.lr_decay`` (:func:`scoresde.training.loop.learning_rate_schedule`)."""
    t = cfg.training
    return learning_rate_schedule(t.lr, t.warmup, step, t.n_iters, t.lr_decay)


def training_options(cfg: Config) -> FitOptions:
    """The :class:`~scoresde.training.FitOptions` of a config's ``[training]`` section."""
    t = cfg.training
    precision = "fp16" if t.amp else t.precision  # amp is the older name of fp16
    posthoc = tuple(t.posthoc_lengths) if t.ema_type == "posthoc" else ()
    return fit_options(t, precision=precision, posthoc=posthoc)


def train(cfg: Config, workdir: str | Path, resume: bool = True, progress: bool | None = None,
          overwrite: bool = False) -> Path:  # fmt: skip
    """Train the configured model in ``workdir``; returns the path of the final checkpoint.

    With ``resume`` (default) training continues from the newest checkpoint in
    ``workdir/checkpoints`` exactly where it stopped. ``resume=False`` refuses a workdir
    that already has checkpoints (nothing is deleted); ``overwrite=True`` starts over: it
    first deletes the previous run's checkpoints, ``log.jsonl``, ``loss.png``, ``samples/`` and
    ``posthoc/`` (nothing else). The workdir is locked for the whole run (by rank 0 under
    torchrun), so a second run in the same workdir fails at once. The config, the device
    and the workdir are checked before anything is loaded, built or written. ``progress``
    shows a tqdm bar (default: when stderr is a terminal; otherwise, as in a log, a plain line with the
    step, the loss, the speed and the time left at most every 30 s; ``progress=False``: nothing).
    The loop is :func:`scoresde.training.fit` (precision, compilation, gradient accumulation, ...).
    """
    workdir = Path(workdir)
    check_config(cfg)
    cfg = with_absolute_root(cfg)  # stored in the checkpoints: found again from any working directory
    device = pick_device(cfg.training.device)
    opts = training_options(cfg)
    check_writable_dir(workdir, "workdir")
    lines = progress is None and not sys.stderr.isatty()  # a log: plain progress lines instead of a bar
    if progress is None:
        progress = sys.stderr.isatty()
    rank, world = init_from_env(device)
    check_fit_options(opts, device, "training", world)
    same_run = partial(_check_same_run, cfg=cfg)
    with claimed_workdir(workdir, SCORE_FORMAT, resume, overwrite, RUN_OUTPUTS, same_run, rank, world):
        return fit(score_objective(cfg, workdir), opts, workdir, device, resume and not overwrite, progress, lines)


RUN_OUTPUTS = ("log.jsonl", "loss.png", "samples", "posthoc")
"""What a training run writes besides its checkpoints (deleted by ``overwrite``)."""

RESUMABLE = ("data.root", "data.cache", "data.workers", "training.n_iters", "training.log_every",
             "training.snapshot_every", "training.keep", "training.tensorboard", "training.device",
             "training.deterministic", "training.posthoc_every")  # fmt: skip
"""The config keys a resumed score-model run may change (where the data live and how they are decoded, how long,
what it logs and keeps, which device); any other change of the sections it reads is refused."""


def _check_same_run(saved: dict[str, Any], path: Path, cfg: Config) -> None:
    check_resume(stored_config(saved), cfg, path, ("data", "model", "training"), RESUMABLE)


def score_objective(cfg: Config, workdir: Path) -> Objective:
    """The score model's :class:`~scoresde.training.Objective`: the configured network (initialised from
    ``training.seed``), its batches (dequantized data, the loss's noise and times, dropped class labels) and
    its loss; after each checkpoint rank 0 draws a sample grid with the EMA weights and the loss curve."""
    t = cfg.training
    torch.manual_seed(t.seed)
    sde = build_sde(cfg)
    model = build_model(cfg)
    num_classes = getattr(model, "num_classes", None)
    labels = None
    if num_classes is None:
        data = load_dataset(cfg, "train")
    else:
        data, labels = load_dataset(cfg, "train", return_labels=True)
        check_labels(labels, num_classes, "model.net.num_classes")
    draw_noise = build_training_noise(cfg, sde)  # the loss's random inputs, times from training.time_sampling
    indices = batch_indices(cfg, len(data), t.batch_size, t.seed)

    def draw(step: int, generator: torch.Generator) -> dict[str, Tensor]:
        idx = indices(step, generator)
        x = model_batch(data, idx, cfg, generator)
        batch = {"x": x, **draw_noise(x, generator)}
        if labels is not None:
            batch["y"] = drop_labels(labels[idx], t.p_uncond, num_classes, generator)
        return batch

    def make_loss(network: nn.Module):
        loss_fn = build_loss(cfg, sde, build_score(network, sde, cfg), network)

        def loss(batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            noise = {k: v for k, v in batch.items() if k != "x"}
            return loss_fn(batch["x"], **noise), {}

        return loss

    def snapshot(step: int, history: list[dict], ema: EMA | None) -> None:
        _snapshot(workdir, step, cfg, sde, model, ema, data, history)

    return Objective(model=model, draw=draw, make_loss=make_loss, lr=partial(learning_rate, cfg),
                     metadata={"format": SCORE_FORMAT, "config": cfg.to_dict()},
                     check_resume=partial(_check_same_run, cfg=cfg),
                     adam={"betas": (t.beta1, 0.999), "eps": t.eps_adam, "weight_decay": t.weight_decay},
                     snapshot=snapshot)  # fmt: skip


# the sample grids drawn after each checkpoint: a 10-NFE solver (any process): 0.5 s for the main job's 64 digits
# on 2 CPU cores, where Euler-Maruyama's 200 steps took 9 s each time (three times a run)
SNAPSHOT_SAMPLER, SNAPSHOT_STEPS = "unipc", 10


def _snapshot(workdir: Path, step: int, cfg: Config, sde: SDE, model: nn.Module, ema: EMA | None, data,
              history: list[dict]) -> None:  # fmt: skip
    """Sample a small grid (or scatter) with the EMA weights and redraw the loss curve; a class-conditional
    model draws sample ``i`` from class ``i mod K``."""
    from .sampling import sample

    model.eval()
    try:
        with ema.applied(model) if ema is not None else nullcontext():
            n = 64 if cfg.data.dataset != "toy" else 2000
            num_classes = getattr(model, "num_classes", None)
            y = None if num_classes is None else torch.arange(n) % num_classes
            score = build_score(model, sde, cfg, y=y)
            x = sample(sde, score, (n, *data_shape(cfg)), sampler=SNAPSHOT_SAMPLER, steps=SNAPSHOT_STEPS,
                       generator=torch.Generator().manual_seed(0), device=next(model.parameters()).device)  # fmt: skip
    finally:
        model.train()
    samples_dir = workdir / "samples"
    if cfg.data.dataset == "toy":
        save_scatter_grid([("data", data[:n]), (f"step {step}", x)], samples_dir / f"step_{step:08d}.png", cols=2)
    else:
        nrow = getattr(model, "num_classes", None) or 8  # a class-conditional model: one class per column
        picture = to_picture(x, data_levels(cfg.data.dataset), tuple(cfg.data.data_range))  # quantized, as data are
        save_image_grid(picture, samples_dir / f"step_{step:08d}.png", nrow=nrow)
    if history:
        steps_, losses = [h["step"] for h in history], [h["loss"] for h in history]
        save_line_plot({"training loss": (steps_, losses)}, workdir / "loss.png", title="training loss",
                       xlabel="step", log_y=True)  # fmt: skip
