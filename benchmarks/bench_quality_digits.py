"""Sample quality of every sampler on the main-job digits model (FD and KID against the test split).

Each row draws ``n`` samples (default 1,000; one noise stream per sample, seed 0) with
one sampler and scores them in the feature space of the shipped digits classifier
against the 297 test digits. The baseline, measured in the same run, is the floor: the
same statistics for ``n`` training digits against the test digits (what a perfect model
scores with this many samples). ``FD / floor`` is the headline ratio.

    python benchmarks/bench_quality_digits.py [CHECKPOINT] [-n 1000] [--only ddim,heun]
    python benchmarks/bench_quality_digits.py outputs/digits/checkpoints --no-ema   # raw weights
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from scoresde.evaluate import evaluate

ROOT = Path(__file__).parents[1]
CASES = {  # label: (sampler, steps, grid, options)
    "euler_maruyama": ("euler_maruyama", 1000, "uniform", {}),
    "ancestral": ("ancestral", 1000, "uniform", {}),
    "pc": ("pc", 1000, "uniform", {"snr": 0.16}),
    "rk45": ("ode", None, "uniform", {}),
    "heun": ("ode", 50, "uniform", {"method": "heun"}),
    "ddim": ("ddim", 50, "uniform", {}),
    "ddim_quadratic": ("ddim", 50, "quadratic", {}),
    "euler_maruyama_100": ("euler_maruyama", 100, "uniform", {}),
    "ddim_10": ("ddim", 10, "quadratic", {}),
}
NAMES = {
    "euler_maruyama": "Euler-Maruyama",
    "ancestral": "ancestral",
    "pc": "PC (reverse diffusion + Langevin, snr 0.16)",
    "rk45": "PF-ODE RK45 (1e-5)",
    "heun": "PF-ODE Heun",
    "ddim": "DDIM",
    "ddim_quadratic": "DDIM, quadratic grid",
    "euler_maruyama_100": "Euler-Maruyama",
    "ddim_10": "DDIM, quadratic grid",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(ROOT / "outputs" / "digits" / "checkpoints"))
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--no-ema", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality_digits.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    cases = [c for c in CASES if not args.only or c in args.only.split(",")]
    weights = "raw weights" if args.no_ema else "EMA weights"
    lines = [
        f"digits model {args.checkpoint} ({weights}), {args.n} samples per sampler (seed 0), 2 threads, CPU, "
        f"{time.strftime('%Y-%m-%d')}",
        "",
        "| sampler | steps | NFE | FD | FD / floor | KID | KID floor | outside ±1.5 | confidence | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    floor_row = None
    for case in cases:
        sampler, steps, grid, options = CASES[case]
        report, _ = evaluate(args.checkpoint, sampler=sampler, steps=steps, grid=grid, options=options, n=args.n,
                             use_ema=not args.no_ema, likelihood=False)  # fmt: skip
        if floor_row is None:
            floor_row = (f"| floor: {report['floor_size']} training digits | - | - | {report['fd_floor']:.2f} | 1.00 "
                         f"| {report['kid_floor']:.1f} | - | 0.0 % | {report['reference_mean_confidence']:.3f} "
                         "(test digits) | - |")  # fmt: skip
            lines.append(floor_row)
        label = NAMES[case] + (f", {grid} grid" if grid != "uniform" and "grid" not in NAMES[case] else "")
        row = (f"| {label} | {steps or 'adaptive'} | {report['nfe']} | {report['fd']:.2f} | {report['fd_ratio']:.2f} "
               f"| {report['kid']:.1f} | {report['kid_floor']:.1f} | {100 * report['fraction_outside']:.1f} % "
               f"| {report['mean_confidence']:.3f} | {report['sampling_seconds']:.0f} |")  # fmt: skip
        lines.append(row)
        print(row, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
