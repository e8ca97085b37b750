"""What ``sample``, ``likelihood`` and ``evaluate`` share: the checks before work, the grid choice, saving samples."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def inference_setup(args, suffixes: tuple[str, ...], data: bool = False):
    """Checks shared by ``sample`` and ``likelihood``, all before any work: the output path, the
    device, the checkpoint (opened once: its header) and, with ``data``, the dataset's files.
    Returns ``(checkpoint, config, device)``; ``checkpoint.load`` then reads the weights once."""
    from ..checkpoint import Checkpoint
    from ..devices import pick_device
    from ..plotting import check_output_file
    from ..validation import check_config

    if args.out is not None:
        check_output_file(args.out, suffixes, "--out")
    device = pick_device(args.device)
    ckpt = Checkpoint.open(args.checkpoint, data_root=getattr(args, "data_root", None))
    return ckpt, check_config(ckpt.config, training=False, data=data), device


def grid_choice(args, path: Path, cfg, sampler: str, options: dict) -> tuple[str | list[float] | None, float | None]:
    """``--grid`` and ``--rho`` checked against the sampler and the checkpoint, before the model loads."""
    from ..build import build_sde
    from ..sampling import is_adaptive
    from .grids import resolve_grid

    if is_adaptive(sampler, options) and (args.grid is not None or args.rho is not None):
        raise ValueError(f"--grid/--rho do not apply to the adaptive sampler {sampler!r} (it picks its own steps)")
    if args.rho is not None and args.grid != "karras":
        raise ValueError("--rho sets the karras grid's exponent; pass --grid karras with it")
    return resolve_grid(args.grid, path, build_sde(cfg), args.steps is not None), args.rho


def save_samples(x: torch.Tensor, out: str | Path, cfg, title: str, labels: torch.Tensor | None = None,
                 nrow: int | None = None) -> Path:  # fmt: skip
    """Samples as a .npz (model-space values, integer levels for images, and the class labels of guided
    samples) or a .png (grid or 2-D scatter; with ``nrow`` classes, one class per column over ``nrow`` rows)."""
    from ..data import data_levels, to_levels, to_picture
    from ..plotting import atomic_write, save_image_grid, save_scatter_grid

    out = Path(out)
    rng = tuple(cfg.data.data_range)
    levels = None if cfg.data.dataset == "toy" else data_levels(cfg.data.dataset)
    if out.suffix == ".npz":
        arrays = {"samples": x.cpu().numpy()}
        if levels is not None:
            arrays["levels"] = to_levels(x, levels, rng).cpu().numpy().astype(np.uint8)
        if labels is not None:
            arrays["labels"] = labels.cpu().numpy()
        atomic_write(out, lambda handle: np.savez(handle, **arrays))
    elif cfg.data.dataset == "toy":
        save_scatter_grid([(title, x)], out, cols=1)
    else:  # shown as the data are: quantized back to the dataset's levels
        shown = 64 if nrow is None else nrow * nrow
        save_image_grid(to_picture(x[:shown], levels, rng), out, nrow=nrow)
    return out


class LogProgress:
    """Plain progress lines for logs, where no progress bar is drawn (stderr not a terminal): at most one line every
    ``every`` seconds, ``what: done/total unit, extra, elapsed``."""

    def __init__(self, what: str, total: int, unit: str, enabled: bool, every: float = 30.0) -> None:
        self.what, self.total, self.unit, self.enabled, self.every = what, total, unit, enabled, every
        self.done, self.start = 0, time.perf_counter()
        self.last = self.start

    def step(self, extra: str = "") -> None:
        self.done += 1
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.every or self.done == self.total):
            self.last = now
            more = f", {extra}" if extra else ""
            print(f"{self.what}: {self.done}/{self.total} {self.unit}{more}, {now - self.start:.0f} s", flush=True)
