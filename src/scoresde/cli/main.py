"""The ``scoresde`` command: the parser made of every command module's parsers, and :func:`main`.

Each module of the package adds its commands' parsers (``add_parsers``) and maps their names to
handlers (``COMMANDS``); a handler takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from . import configs, evaluate, figures, grids, likelihood, official, sample, tasks, training
from .args import FORMATTER, Parser, positive_int

WRITES_CHECKPOINTS = ("train", "train-classifier", "convert-official")
"""The commands that write checkpoints as they go (every other command writes its output once, at the end)."""
MODULES = (training, sample, likelihood, evaluate, tasks, grids, official, configs, figures)
COMMANDS = {name: handler for module in MODULES for name, handler in module.COMMANDS.items()}

EPILOG = """examples:
  scoresde configs                          # the preset configs: digits_vp (the main job), toy_mixture, ...
  scoresde train digits_vp --workdir outputs/digits
  scoresde init-config --root my_images --image-size 16 --out mine.toml
  scoresde train configs/toy_mixture.toml --workdir runs/toy --set training.lr=1e-3 --set training.n_iters=2000
  scoresde sample outputs/digits/checkpoints --sampler pc --steps 1000 -n 64 --out grid.png
  scoresde train-classifier configs/digits_classifier.toml --workdir outputs/digits_classifier
  scoresde sample outputs/digits/checkpoints --class 3 --guidance 2 --classifier outputs/digits_classifier/checkpoints
  scoresde likelihood outputs/digits/checkpoints --split test --repeats 5
  scoresde evaluate outputs/digits/checkpoints --sampler ddim --steps 50 -n 1000 --out report.json
  scoresde inpaint outputs/digits/checkpoints --missing bottom -n 16 --out inpainted.png
  scoresde encode outputs/digits/checkpoints -n 8 --out latents.npz
  scoresde interpolate outputs/digits/checkpoints -n 4 --points 8 --out path.png
  scoresde convert-official checkpoint_8.pth --config vp/cifar10_ddpmpp_continuous --out runs/vp_ddpmpp
  scoresde demo --out outputs/demo
"""


def build_parser() -> argparse.ArgumentParser:
    from ..config import presets

    listed = "\n".join(f"  {name}" for name in presets())
    parser = Parser(prog="scoresde", description="Score-based generative modeling through SDEs.",
                    epilog=f"{EPILOG}\npreset configs (scoresde train NAME --workdir DIR):\n{listed}\n",
                    formatter_class=FORMATTER)  # fmt: skip
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: $OMP_NUM_THREADS when set, else torch's own)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (2 with one line on stderr for bad input or a failed write)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (2, already reported in one line)
        return done.code if isinstance(done.code, int) else 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            return COMMANDS[args.command](args)
    except OSError as err:  # a path: missing, in the way, not writable, a full disk
        print(f"scoresde {args.command}: error: {_one_line(_os_error(err))}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, FloatingPointError, ImportError) as err:
        print(f"scoresde {args.command}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = "checkpoints written so far are intact" if args.command in WRITES_CHECKPOINTS else "nothing was written"
        print(f"scoresde {args.command}: interrupted ({kept})", file=sys.stderr)
        return 130


def _os_error(err: OSError) -> str:
    """``PATH: reason`` for an OSError from the system (a message of ours is kept as it is)."""
    if err.strerror is None:
        return str(err)
    if err.filename is None:
        return err.strerror
    target = f" -> {err.filename2}" if err.filename2 is not None else ""
    return f"{err.filename}{target}: {err.strerror}"


def _one_line_warning(command: str):
    """``warnings.showwarning`` for the command line: ``scoresde COMMAND: warning: ...`` on one line of stderr."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"scoresde {command}: warning: {_one_line(str(message))}", file=sys.stderr)

    return show


def _one_line(message: str) -> str:
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())
