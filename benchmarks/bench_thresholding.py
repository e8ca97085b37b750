"""Divergence of the fast solvers on under-trained digits models, and thresholding of the data prediction.

A briefly trained model's data prediction overshoots the data range at high noise; a fast data-prediction solver
(DPM-Solver++, UniPC, SDE-DPM-Solver++) takes its few steps straight along it and ends far outside the range, while
Euler-Maruyama's small steps do not. ``sample`` warns when more than 1 % of the values lie beyond the data range
widened by a quarter of its width (beyond +-1.5 for [-1, 1]); the data-prediction solvers take
``thresholding="static"`` (clip the prediction to the range) or ``"dynamic"`` (Saharia et al. 2022's percentile
rule, ratio 0.995, as in the DPM-Solver++ paper).

For checkpoints of the main job's run at several training steps, every row draws 1,000 samples per seed (seeds 0
and 1, one noise stream per sample) and reports the share of values beyond the widened range, and the Frechet
distance against the 297 test digits in two feature spaces: the shipped digits classifier's features (FD) and the
raw 64 pixels (FD_pix), both on the samples quantized to the 17 levels, next to their floors (1,000 training
digits against the same test digits). The checkpoints come from the main job's config with a snapshot every 200
steps::

    scoresde train configs/digits_vp.toml --workdir outputs/digits --set training.snapshot_every=200 \\
        --set training.keep=20
    python benchmarks/bench_thresholding.py [--steps 200,400,2500]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
from digits_spaces import DigitsSpaces

import scoresde as sd

ROOT = Path(__file__).parents[1]
ROWS = [  # label, sampler, options, NFE
    ("Euler-Maruyama (baseline)", "euler_maruyama", {}, 200),
    ("DPM-Solver 2M (noise prediction)", "dpm_solver", {}, 10),
    ("DPM-Solver++ 2M", "dpm_solver++", {}, 10),
    ("DPM-Solver++ 2M, static", "dpm_solver++", {"thresholding": "static"}, 10),
    ("DPM-Solver++ 2M, dynamic", "dpm_solver++", {"thresholding": "dynamic"}, 10),
    ("UniPC 2", "unipc", {}, 10),
    ("UniPC 2, dynamic", "unipc", {"thresholding": "dynamic"}, 10),
    ("SDE-DPM-Solver++ 2M", "sde_dpm_solver++", {}, 10),
    ("SDE-DPM-Solver++ 2M, dynamic", "sde_dpm_solver++", {"thresholding": "dynamic"}, 10),
    ("DPM-Solver++ 2M", "dpm_solver++", {}, 20),
    ("DPM-Solver++ 2M, dynamic", "dpm_solver++", {"thresholding": "dynamic"}, 20),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "outputs" / "digits" / "checkpoints"))
    parser.add_argument("--steps", default="200,400,2500", help="training steps of the checkpoints to compare")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "thresholding.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    first = sd.load(Path(args.run) / f"checkpoint_{int(args.steps.split(',')[0]):08d}.safetensors")
    spaces = DigitsSpaces(first.config, first.levels, first.data_range, args.n)
    floors, ref = spaces.floors, spaces.ref
    lines = [
        f"# Divergence and thresholding on under-trained digits models ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/bench_thresholding.py`: checkpoints of {_shown(args.run)} (EMA weights), {args.n} samples "
        f"per row and seed (seeds {args.seeds}; mean, range in brackets), 'outside': the share of sampled values "
        "beyond the data range widened by a quarter of its width (beyond +-1.5; `sample` warns above 1 %), FD in the "
        "shipped digits classifier's features and FD_pix in pixels of the quantized samples against the "
        f"{ref[0].shape[0]} test digits. Floors ({args.n} training digits): FD **{floors[0]:.2f}**, FD_pix "
        f"**{floors[1]:.2f}**. torch {torch.__version__}, 2 threads, CPU.",
        "",
    ]
    for step in (int(s) for s in args.steps.split(",")):
        model = sd.load(Path(args.run) / f"checkpoint_{step:08d}.safetensors")
        lines += [f"## After {step} training steps", "",
                  "| sampler | NFE | outside | FD | FD / floor | FD_pix | FD_pix / floor | time (s) |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, sampler, options, nfe in ROWS:
            got = []
            for seed in seeds:
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", sd.sampling.SamplingDivergenceWarning)
                    x = sd.sample(model, n=args.n, sampler=sampler, steps=nfe, generator=sd.SampleNoise(seed, args.n),
                                  batch_size=500, **options)  # fmt: skip
                seconds = time.perf_counter() - start
                fd, fd_pix = spaces.fd(x)
                got.append((_outside(x, model.data_range), fd, fd_pix, seconds))
            out, fd, fd_pix, seconds = (statistics.fmean(g[i] for g in got) for i in range(4))

            lines.append(f"| {label} | {nfe} | {out:.1%} | {fd:.2f} {_span(got, 1)} | {fd / floors[0]:.2f} | "
                         f"{fd_pix:.2f} {_span(got, 2)} | {fd_pix / floors[1]:.2f} | {seconds:.1f} |")  # fmt: skip
            print(lines[-1], flush=True)
        lines.append("")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"-> {args.out}")


def _shown(path: str) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return path


def _span(rows: list[tuple[float, ...]], i: int) -> str:
    return f"({min(r[i] for r in rows):.2f}-{max(r[i] for r in rows):.2f})"


def _outside(x: torch.Tensor, data_range: tuple[float, float]) -> float:
    """The share of values of ``x`` beyond the widened data range (the quantity ``sample`` warns about)."""
    from scoresde._checks import range_bounds

    lo, hi = range_bounds(data_range)
    return float(((x < lo) | (x > hi)).double().mean())


if __name__ == "__main__":
    main()
