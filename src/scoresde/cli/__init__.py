"""Command-line interface: ``scoresde train | sample | likelihood | evaluate | demo | train-classifier``,
the tasks of :mod:`scoresde.cli.tasks` (``inpaint | colorize | encode | decode | interpolate``),
``optimize-grid`` (:mod:`scoresde.cli.grids`) and ``convert-official`` (:mod:`scoresde.cli.official`).

One module per group of commands; :mod:`scoresde.cli.args` holds the argument types they share.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
