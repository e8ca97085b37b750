"""Argument types and argument groups shared by the commands: one-line usage errors, positive numbers, seeds,
the progress flag, the device, the run (config, workdir, resume) and grid arguments."""

from __future__ import annotations

import argparse
import math
import sys

from ..guidance import MAX_SCALE

DEVICE_HELP = "cpu, cuda, cuda:N, mps or auto (default auto: the GPU when there is one, else the CPU)"
FORMATTER = argparse.RawDescriptionHelpFormatter


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parsed(text: str, cast, ok, need: str):
    """``cast(text)`` when it parses and ``ok`` holds, else the usage error ``must be {need}, got {text!r}``."""
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {need}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _parsed(text, int, lambda v: v >= 1, "a positive integer")


def step_count(text: str) -> int:
    """``--steps``: a positive integer, at most the samplers' bound on steps."""
    from ..sampling.grids import MAX_STEPS

    return _parsed(text, int, lambda v: 1 <= v <= MAX_STEPS, f"a positive integer (at most {MAX_STEPS:,})")


def non_negative_int(text: str) -> int:
    return _parsed(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _parsed(text, float, lambda v: math.isfinite(v) and v > 0, "a positive number")


def seed(text: str) -> int:
    return _parsed(text, int, lambda v: 0 <= v < 2**63, "a non-negative integer")


def guidance_scale(text: str) -> float:
    return _parsed(text, float, lambda v: math.isfinite(v) and 0 <= v <= MAX_SCALE,
                   f"a number >= 0 (at most {MAX_SCALE:g})")  # fmt: skip


def class_choice(text: str) -> int | str:
    """``--class``: a class index ``K >= 0`` or ``all``."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a class index >= 0 or 'all', got {text!r}")
    return value


def progress_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help=f"show a progress bar {what} (default: when stderr is a terminal)")  # fmt: skip


def show_progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def run_arguments(parser: argparse.ArgumentParser, config_help: str, workdir_help: str, deleted: str) -> None:
    """The arguments of a training command: config, workdir, overrides, resume or overwrite, progress."""
    parser.add_argument("config", help=config_help)
    parser.add_argument("--workdir", required=True, help=workdir_help)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    parser.add_argument("--no-resume", action="store_true",
                        help="start a new run; refused if WORKDIR has checkpoints (see --overwrite)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help=f"start over: delete WORKDIR's {deleted} first")
    progress_flag(parser, "while training")


def data_root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="the dataset's folder on this machine (default: the checkpoint's data.root)")  # fmt: skip


def grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grid",
        default=None,
        metavar="KIND|NAME|FILE",
        help="time grid: uniform, quadratic, log_snr or karras, a grid saved by optimize-grid "
        "(its name) or a grid file (default: the sampler's, log_snr for the fast solvers)",
    )
    parser.add_argument("--rho", type=positive_float, default=None, help="the karras grid's exponent (default 7)")
