"""The ``evaluate`` command: sample a checkpoint and score the samples (FD, KID, class statistics, bits/dim)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .args import (
    DEVICE_HELP,
    FORMATTER,
    data_root_argument,
    grid_arguments,
    positive_int,
    progress_flag,
    seed,
    show_progress,
    step_count,
)
from .common import grid_choice, inference_setup, save_samples


def add_parsers(sub) -> None:
    """Add ``evaluate`` to the subparsers."""
    fmt = FORMATTER
    ev = sub.add_parser("evaluate", help="sample a checkpoint and score the samples (FD, KID, bits/dim)",
                        formatter_class=fmt,
                        description="Draw N samples (in batches, one noise stream per sample) and report the "
                                    "Fréchet distance and KID against the test split next to their floor (N "
                                    "training images against the test split), the classifier's class histogram "
                                    "and confidence, NFE, wall time and the bits/dim of the split. 2-D toy "
                                    "checkpoints get MMD, sliced Wasserstein and energy distance against fresh "
                                    "data. Defaults come from the checkpoint's [sampling] and [eval] sections.",
                        epilog="example:\n  scoresde evaluate outputs/digits/checkpoints --sampler ode --steps 50 "
                               "--option method=heun -n 1000 --out report.json --samples-out samples.png\n"
                               "  scoresde evaluate cifar_ckpt.safetensors --inception pt_inception-2015-12-05-"
                               "6726825d.pth -n 10000")  # fmt: skip
    ev.add_argument("checkpoint")
    ev.add_argument("--sampler", default=None, help="sampler name (default: the config's)")
    ev.add_argument("--steps", type=step_count, default=None, help="steps (default: the config's)")
    ev.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    grid_arguments(ev)
    ev.add_argument("-n", type=positive_int, default=None, help="number of samples (default: eval.n, 1000)")
    ev.add_argument("--batch-size", type=positive_int, default=None, help="default: the config's eval.batch_size")
    ev.add_argument("--seed", type=seed, default=0)
    ev.add_argument("--device", default="auto", help=DEVICE_HELP)
    ev.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    ev.add_argument("--likelihood", action=argparse.BooleanOptionalAction, default=None,
                    help="also report the split's bits/dim or NLL (default: the config's eval.likelihood)")  # fmt: skip
    ev.add_argument("--likelihood-grid", default=None, metavar="NAME",
                    help="a grid saved by optimize-grid --likelihood (its name in the run, or a path) for the "
                         "likelihood (default: the solver's own grid)")  # fmt: skip
    ev.add_argument("--inception", default=None, metavar="PATH",
                    help="Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth): the feature space for "
                         "images other than the digits; never downloaded")  # fmt: skip
    ev.add_argument("--out", default=None, help="write the report here (.json; strictly valid JSON)")
    ev.add_argument("--samples-out", default=None, help="also save the samples: .png (the first 64) or .npz")
    data_root_argument(ev)
    progress_flag(ev, "while sampling")


def evaluate_command(args) -> int:
    from ..evaluate import evaluate, summary, write_report
    from ..plotting import check_output_file
    from ..sampling import ADAPTIVE_STEPS, is_adaptive
    from ..sampling.options import check_sampler_options, parse_sampler_options

    ckpt, cfg, device = inference_setup(args, (".json",), data=True)
    if args.samples_out is not None:
        check_output_file(args.samples_out, (".png", ".npz"), "--samples-out")
    sampler = args.sampler or cfg.sampling.sampler
    options = dict(cfg.sampling.options) if args.sampler is None else {}
    options = check_sampler_options(sampler, options | parse_sampler_options(sampler, args.option))
    grid, rho = grid_choice(args, ckpt.path, cfg, sampler, options)
    likelihood_grid = None
    if args.likelihood_grid is not None:
        from ..build import build_sde
        from .grids import resolve_likelihood_grid

        if not (cfg.eval.likelihood if args.likelihood is None else args.likelihood):
            raise ValueError("--likelihood-grid is a grid for the likelihood, which is off (--no-likelihood or "
                             "eval.likelihood = false)")  # fmt: skip
        likelihood_grid = resolve_likelihood_grid(args.likelihood_grid, ckpt.path, build_sde(cfg),
                                                  cfg.eval.likelihood_method, False)  # fmt: skip
    if is_adaptive(sampler, options) and args.steps is not None:
        raise ValueError(ADAPTIVE_STEPS)
    inception = args.inception or cfg.eval.inception or None
    if inception is not None and not Path(inception).is_file():
        raise FileNotFoundError(f"Inception-v3 weights {inception} not found (the file "
                                "pt_inception-2015-12-05-6726825d.pth; scoresde never downloads it)")  # fmt: skip
    report, x = evaluate(ckpt, sampler=sampler, steps=args.steps, options=options, n=args.n,
                         batch_size=args.batch_size, seed=args.seed, device=str(device), use_ema=not args.no_ema,
                         likelihood=args.likelihood, inception=inception, grid=grid, rho=rho,
                         progress=show_progress(args.progress), likelihood_grid=likelihood_grid)  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(summary(report))
    if args.samples_out:
        title = f"{sampler} ({report['nfe']} NFE)"
        print(f"samples -> {save_samples(x, args.samples_out, cfg, title)}")
    if args.out:
        print(f"report -> {write_report(report, args.out)}")
    return 0


COMMANDS = {"evaluate": evaluate_command}
