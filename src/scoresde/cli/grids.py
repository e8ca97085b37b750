"""The ``optimize-grid`` command and the ``--grid`` argument of ``sample`` and ``evaluate``.

``scoresde optimize-grid CHECKPOINT --sampler unipc --steps 10`` tunes the time grid of a
sampler and budget for the checkpoint's model (:func:`scoresde.sampling.optimize_grid`) and
saves it as ``<run>/grids/<name>.json`` (default name ``<sampler>-<steps>``). ``--grid`` then
takes a grid name (``uniform``, ``quadratic``, ``log_snr``, ``karras``), the name of a saved
grid of the checkpoint's run, or the path of a grid file.

``scoresde optimize-grid CHECKPOINT --likelihood`` tunes the grid of the likelihood's fixed-grid solver instead
(:func:`scoresde.optimize_likelihood_grid`, on ``-n`` training points; default name ``likelihood-<steps>``), for
``scoresde likelihood --grid NAME``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .args import DEVICE_HELP, FORMATTER, positive_int, progress_flag, seed, step_count

GRID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
SAMPLER_POINTS = 256
"""Default ``-n`` of ``optimize-grid`` for a sampler: prior draws."""
LIKELIHOOD_POINTS = 32
"""Default ``-n`` of ``optimize-grid --likelihood``: training points (each trial is a 40-NFE solve on them)."""
LIKELIHOOD_PURPOSE = "likelihood"
"""The ``purpose`` recorded in a likelihood grid's file."""


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
    p.add_argument("--sampler", default=None, help="a deterministic sampler (default dpm_solver++)")
    p.add_argument(
        "--steps",
        type=step_count,
        default=None,
        help="the budget (NFE for the fast solvers); with --likelihood the solver's steps (default 39)",
    )
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    p.add_argument(
        "--likelihood",
        action="store_true",
        help="tune the likelihood solver's grid (method adams) on -n training points instead",
    )
    p.add_argument(
        "-n",
        type=positive_int,
        default=None,
        help=f"starting points of the objective (default {SAMPLER_POINTS}; with --likelihood, training "
        f"points, default {LIKELIHOOD_POINTS})",
    )
    p.add_argument("--name", default=None, help="grid name (default <sampler>-<steps> or likelihood-<steps>)")
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

    if args.likelihood:
        from ..likelihood import ADAMS_STEPS

        if args.sampler is not None or args.option:
            raise ValueError("--likelihood tunes the likelihood solver's grid; --sampler/--option do not go with it")
        args.steps = ADAMS_STEPS if args.steps is None else args.steps
        args.n = LIKELIHOOD_POINTS if args.n is None else args.n
        if args.steps < 3:
            raise ValueError(f"--steps must be at least 3 for the likelihood solver, got {args.steps}")
        options, default_name = {}, f"{LIKELIHOOD_PURPOSE}-{args.steps}"
    else:
        args.sampler = args.sampler or "dpm_solver++"
        if args.steps is None:
            raise ValueError("--steps is required (the budget to tune the grid for)")
        args.n = SAMPLER_POINTS if args.n is None else args.n
        if args.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {args.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        options = parse_sampler_options(args.sampler, args.option)
        check_optimize_arguments(args.sampler, args.steps, args.n, options)
        default_name = f"{args.sampler}-{args.steps}"
    name = args.name or default_name
    name = name[: -len(".json")] if name.endswith(".json") else name
    if not GRID_NAME.match(name) or name in ("uniform", "quadratic", "log_snr", "karras"):
        raise ValueError(f"--name {name!r} must be a plain file name (letters, digits, _ . + -), not a grid kind")
    device = pick_device(args.device)
    ckpt = Checkpoint.open(args.checkpoint)
    check_config(ckpt.config, training=False, data=args.likelihood)
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
        if args.likelihood:
            return _optimize_likelihood(args, ckpt, device, out)
        return _optimize(args, ckpt, device, options, out)


def _optimize_likelihood(args, ckpt, device, out: Path) -> int:
    """The likelihood grid's search on the first ``-n`` training points (dequantized from ``--seed`` for images)."""
    import torch

    from ..build import load_dataset
    from ..data import ImageData
    from ..likelihood import (
        LIKELIHOOD_GRID_SWEEPS,
        LIKELIHOOD_REFERENCE_STEPS,
        dequantize,
        optimize_likelihood_grid,
    )
    from ..sampling.optimize import save_grid

    data = load_dataset(ckpt.config, "train")
    if args.n > len(data):
        raise ValueError(f"-n {args.n} is more than the training split's {len(data)} points")
    model = ckpt.load(ema=not args.no_ema, device=device)
    cfg, sde = model.config, model.sde
    generator = torch.Generator().manual_seed(args.seed)
    if isinstance(data, ImageData):
        lo, hi = cfg.data.data_range
        x = lo + (hi - lo) * dequantize(data.images[: args.n].to(torch.float64), data.levels, generator)
    else:
        x = data[: args.n]
    x = x.to(device=device, dtype=torch.float32)
    start = time.perf_counter()
    report = None if args.progress is False else print  # a line per sweep, in logs too (minutes apart)
    if report is not None:
        trials = LIKELIHOOD_GRID_SWEEPS * 2 * (args.steps - 1)
        report(f"tuning the likelihood grid ({args.steps} steps) on {args.n} training points: a reference solve of "
               f"{LIKELIHOOD_REFERENCE_STEPS} steps, then up to {trials} solves of {args.steps + 1} NFE "
               f"({LIKELIHOOD_GRID_SWEEPS} sweeps)", flush=True)  # fmt: skip
    times = optimize_likelihood_grid(sde, model, x, args.steps, seed=args.seed,
                                     batch_size=args.batch_size or cfg.eval.batch_size, report=report)  # fmt: skip
    seconds = time.perf_counter() - start
    info = {"sde": repr(sde), "purpose": LIKELIHOOD_PURPOSE, "method": "adams", "steps": args.steps, "n": args.n,
            "split": "train", "checkpoint": str(ckpt.path), "seconds": round(seconds, 1),
            "seed": args.seed}  # fmt: skip
    save_grid(out, times, info)
    print(f"likelihood grid of {args.steps} steps ({args.steps + 1} NFE) in {seconds:.0f} s -> {out}")
    print("times: " + ", ".join(f"{t:.5g}" for t in times))
    return 0


def _optimize(args, ckpt, device, options: dict, out: Path) -> int:
    """The search (minutes) and the grid file, with the name claimed."""
    import torch

    from ..sampling.optimize import grid_info, optimize_grid, save_grid

    path = ckpt.path
    model = ckpt.load(ema=not args.no_ema, device=device)
    cfg, sde, score = model.config, model.sde, model
    start = time.perf_counter()
    report = None if args.progress is False else print  # a line per sweep, in logs too (minutes apart)
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


def resolve_likelihood_grid(text: str, checkpoint: Path, sde: Any, method: str, steps_given: bool) -> list[float]:
    """``likelihood --grid``: a likelihood grid saved by ``optimize-grid --likelihood`` (its name in the checkpoint's
    run, or a path), checked against the checkpoint's SDE and the method before anything loads."""
    from ..sampling import GRIDS
    from ..sampling.grids import check_grid
    from ..sampling.optimize import load_grid

    if text in GRIDS:
        raise ValueError(f"--grid {text!r} is a sampler's grid kind; the likelihood takes a grid saved by "
                         "optimize-grid --likelihood (its name or path)")  # fmt: skip
    if method != "adams":
        raise ValueError(f"a likelihood grid is a grid of the fixed-grid method adams; method {method} does not take "
                         "one")  # fmt: skip
    if steps_given:
        raise ValueError("--steps does not go with --grid: the grid's steps are fixed")
    times, info = load_grid(text, checkpoint)
    if info.get("purpose") != LIKELIHOOD_PURPOSE:
        made = f"sampler {info['sampler']!r}" if "sampler" in info else "something else"
        raise ValueError(f"grid {text!r} was tuned for {made}, not for the likelihood; make one with "
                         "optimize-grid --likelihood")  # fmt: skip
    if "sde" in info and info["sde"] != repr(sde):
        raise ValueError(f"grid {text!r} was made for {info['sde']}, the checkpoint's SDE is {sde!r}")
    times = check_grid(sde, times)
    if len(times) < 4:
        raise ValueError(f"grid {text!r} has {len(times) - 1} steps; the likelihood solver needs at least 3")
    return times


COMMANDS = {"optimize-grid": optimize_grid_command}
