"""The ``optimize-grid`` command and the ``--grid`` argument of ``sample`` and ``evaluate``.

``scoresde optimize-grid CHECKPOINT --sampler unipc --steps 10`` tunes the time grid of a
sampler and budget for the checkpoint's model (:func:`scoresde.sampling.optimize_grid`) and
saves it as ``<run>/grids/<name>.json`` (default name ``<sampler>-<steps>``). ``--grid`` then
takes a grid name (``uniform``, ``quadratic``, ``log_snr``, ``karras``), the name of a saved
grid of the checkpoint's run, or the path of a grid file.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .args import DEVICE_HELP, FORMATTER, positive_int, progress_flag, seed, show_progress, step_count

GRID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def add_parsers(sub) -> None:
    """Add ``optimize-grid`` to the CLI's subparsers."""
    fmt = FORMATTER
    p = sub.add_parser("optimize-grid", help="tune a sampler's time grid for a checkpoint and save it",
                       formatter_class=fmt,
                       description="Search the interior times of a deterministic sampler's grid so that its "
                                   "samples land where an accurate probability-flow ODE solve lands (n starting "
                                   "points), and save the grid under the run's grids/ folder for --grid NAME.",
                       epilog="example:\n  scoresde optimize-grid outputs/digits/checkpoints --sampler unipc --steps 10"
                              "\n  scoresde sample outputs/digits/checkpoints --sampler unipc --grid unipc-10 "
                              "--out fast.png")  # fmt: skip
    p.add_argument("checkpoint", help="checkpoint file or checkpoints folder (the newest)")
    p.add_argument("--sampler", default="dpm_solver++", help="a deterministic sampler (default dpm_solver++)")
    p.add_argument("--steps", type=step_count, required=True, help="the budget (NFE for the fast solvers)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    p.add_argument("-n", type=positive_int, default=256, help="starting points of the objective (default 256)")
    p.add_argument("--name", default=None, help="grid name (default <sampler>-<steps>)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the config's eval.batch_size")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    progress_flag(p, "(prints the search's progress)")


def optimize_grid_command(args) -> int:

    from ..checkpoint import Checkpoint, file_lock
    from ..devices import pick_device
    from ..plotting import check_writable_dir
    from ..sampling import SAMPLERS
    from ..sampling.optimize import check_optimize_arguments, grid_dir
    from ..sampling.options import parse_sampler_options
    from ..validation import check_config

    if args.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
    options = parse_sampler_options(args.sampler, args.option)
    check_optimize_arguments(args.sampler, args.steps, args.n, options)
    name = args.name or f"{args.sampler}-{args.steps}"
    name = name[: -len(".json")] if name.endswith(".json") else name
    if not GRID_NAME.match(name) or name in ("uniform", "quadratic", "log_snr", "karras"):
        raise ValueError(f"--name {name!r} must be a plain file name (letters, digits, _ . + -), not a grid kind")
    device = pick_device(args.device)
    ckpt = Checkpoint.open(args.checkpoint)
    check_config(ckpt.config, training=False, data=False)
    path = ckpt.path
    out = grid_dir(path) / f"{name}.json"
    if out.exists():
        raise FileExistsError(f"{out} exists; pass another --name or remove the file")
    check_writable_dir(out.parent, "the grid folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{out.name}.lock", f"{out} is being made by another optimize-grid run{{who}}; "
                   "pass another --name or wait for it"):  # fmt: skip
        if out.exists():  # made by a run that finished while this one started
            raise FileExistsError(f"{out} exists; pass another --name or remove the file")
        return _optimize(args, ckpt, device, options, out)


def _optimize(args, ckpt, device, options: dict, out: Path) -> int:
    """The search (minutes) and the grid file, with the name claimed."""
    import torch

    from ..sampling.optimize import grid_info, optimize_grid, save_grid

    path = ckpt.path
    model = ckpt.load(ema=not args.no_ema, device=device)
    cfg, sde, score = model.config, model.sde, model
    start = time.perf_counter()
    report = print if show_progress(args.progress) else None
    times = optimize_grid(sde, score, args.steps, shape=model.data_shape, sampler=args.sampler, n=args.n,
                          eps=cfg.sampling.eps or None, generator=torch.Generator().manual_seed(args.seed),
                          device=device, batch_size=args.batch_size or cfg.eval.batch_size, report=report,
                          **options)  # fmt: skip
    seconds = time.perf_counter() - start
    info = grid_info(sde, args.sampler, args.steps, options, args.n, extra={"checkpoint": str(path),
                     "seconds": round(seconds, 1), "seed": args.seed})  # fmt: skip
    save_grid(out, times, info)
    print(f"grid of {len(times) - 1} steps for {args.sampler} ({args.steps} NFE) in {seconds:.0f} s -> {out}")
    print("times: " + ", ".join(f"{t:.5g}" for t in times))
    return 0


def resolve_grid(text: str | None, checkpoint: Path, sde: Any, steps_given: bool) -> str | list[float] | None:
    """``--grid``: ``None``, a grid kind, a saved grid's name (``<run>/grids``) or a grid file; checked early."""
    from ..sampling import GRIDS
    from ..sampling.grids import check_grid
    from ..sampling.optimize import load_grid

    if text is None or text in GRIDS:
        return text
    times, info = load_grid(text, checkpoint)
    if "sde" in info and info["sde"] != repr(sde):
        raise ValueError(f"grid {text!r} was made for {info['sde']}, the checkpoint's SDE is {sde!r}")
    if steps_given:
        raise ValueError(f"--steps does not go with the saved grid {text!r}: its {len(times) - 1} steps are fixed")
    return check_grid(sde, times)


COMMANDS = {"optimize-grid": optimize_grid_command}
