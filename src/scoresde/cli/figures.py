"""The ``figures`` command: the six figures of the paper's walkthrough, computed by the library
(:mod:`scoresde.figures`), as PNGs and animated GIFs."""

from __future__ import annotations

import time

from .args import FORMATTER


def add_parsers(sub) -> None:
    """Add ``figures`` to the subparsers."""
    from ..figures import FIGURES

    p = sub.add_parser("figures", help="draw the six figures of the SDE walkthrough (PNG and GIF)",
                       formatter_class=FORMATTER,
                       description="Compute the walkthrough's figures exactly (a 2-D Gaussian mixture's closed-form "
                                   "score, density and noisy classifier, with the library's SDEs, samplers, corrector "
                                   "and guidance) and draw them: " + ", ".join(FIGURES) + ". Needs matplotlib "
                                   "(pip install 'scoresde[docs]').",
                       epilog="example:\n  scoresde figures --out docs/figures\n  scoresde figures --out figs "
                              "--only score_field corrector")  # fmt: skip
    p.add_argument("--out", required=True, help="folder for the PNG and GIF files")
    p.add_argument("--only", nargs="+", default=None, choices=list(FIGURES), metavar="NAME",
                   help="draw only these figures")  # fmt: skip


def figures_command(args) -> int:
    from ..figures import render
    from ..plotting import check_writable_dir

    check_writable_dir(args.out, "--out")
    start = time.perf_counter()
    written = render(args.out, args.only)
    print(f"{len(written)} files in {time.perf_counter() - start:.0f} s -> {args.out}")
    return 0


COMMANDS = {"figures": figures_command}
