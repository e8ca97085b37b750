"""Inverse problems against exact posteriors: every method and sampler on Gaussian mixtures with exact scores.

Two problems, both with closed-form posteriors (``GaussianMixture.posterior``):

* ``y = A x + n`` on a 12-D three-component mixture, a random 5 x 12 ``A``, noiseless and
  with noise std 0.2: the error of the sample mean (in posterior standard deviations, worst
  coordinate) and the relative Frobenius error of the sample covariance, 2,000 samples;
* inpainting one coordinate of the 2-D demo mixture: the total variation between the component
  frequencies of the samples and the exact posterior component probabilities, 2,000 samples, for
  known values that the modes share (x1 = -1.5, -1.0: the odds come from the unknown coordinate)
  and values that single out a mode (x0 = -2.0, 1.8, 0.5: the known coordinate decides).

The baseline in the same run is the Monte-Carlo floor: the same statistics for 2,000 exact posterior
draws. Writes ``benchmarks/results/inverse.md``.

    python benchmarks/bench_inverse.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.inverse import inpaint, solve_inverse
from scoresde.toy import GaussianMixture, demo_mixture, mixture_moments, sample_mixtures

ROOT = Path(__file__).parents[1]
SDES = {"VP": sd.VPSDE(), "sub-VP": sd.SubVPSDE(), "VE": sd.VESDE(sigma_max=20.0)}
CASES = [  # (method, noise std, sampler, steps)
    ("projection", 0.0, "pc", 500),
    ("projection", 0.0, "euler_maruyama", 500),
    ("projection", 0.0, "ddim", 100),
    ("pigdm", 0.0, "euler_maruyama", 500),
    ("pigdm", 0.0, "ddim", 100),
    ("pigdm", 0.2, "euler_maruyama", 500),
    ("dps", 0.2, "euler_maruyama", 500),
    ("ddnm", 0.0, "euler_maruyama", 500),
    ("ddnm", 0.2, "euler_maruyama", 500),
]
KNOWN = [(1, -1.5), (1, -1.0), (0, -2.0), (0, 1.8), (0, 0.5)]


def problem() -> tuple[GaussianMixture, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    means = 2.0 * torch.randn(3, 12, generator=gen, dtype=torch.float64)
    stds = 0.3 + 0.4 * torch.rand(3, 12, generator=gen, dtype=torch.float64)
    gm = GaussianMixture([0.5, 0.3, 0.2], means, stds)
    A = torch.randn(5, 12, generator=gen, dtype=torch.float64) / 12**0.5
    return (
        gm,
        A,
        gm.sample(1, generator=gen, dtype=torch.float64),
        torch.randn(1, 5, generator=gen, dtype=torch.float64),
    )


def moment_errors(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    mean_err = float(((x.mean(0) - mean).abs() / cov.diagonal().sqrt()).max())
    return mean_err, float(torch.linalg.norm(torch.cov(x.T) - cov) / torch.linalg.norm(cov))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="VP only")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inverse.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    sdes = {"VP": SDES["VP"]} if args.quick else SDES
    n = 2000
    gm, A, x_true, z = problem()
    lines = [f"Inverse problems with exact scores, {time.strftime('%Y-%m-%d')}, CPU, 2 threads, {n} samples per row.",
             "", "### y = A x + n, 12-D three-component mixture, A random 5 x 12", "",
             "| SDE | method | noise std | sampler | steps | NFE | mean error (posterior stds) | cov error (rel.) "
             "| A x = y (max abs) | time (s) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for noise in (0.0, 0.2):
        y = x_true @ A.T + noise * z
        w, mu, covs = gm.posterior(A, y, noise)
        mean, cov = (v[0] for v in mixture_moments(w, mu, covs))
        draws = sample_mixtures(w.expand(n, -1), mu.expand(n, -1, -1), covs, torch.Generator().manual_seed(9))
        me, ce = moment_errors(draws, mean, cov)
        lines.append(f"| - | exact posterior draws (floor) | {noise} | - | - | - | {me:.3f} | {ce:.3f} | - | - |")
    for name, sde in sdes.items():
        for method, noise, sampler, steps in CASES:
            y = x_true @ A.T + noise * z
            mean, cov = (v[0] for v in mixture_moments(*gm.posterior(A, y, noise)))
            start = time.perf_counter()
            x, nfe = solve_inverse(sde, gm.score_fn(sde), y.expand(n, -1), A, noise, method, sampler=sampler,
                                   steps=steps, generator=sd.SampleNoise(0, n), return_nfe=True)  # fmt: skip
            seconds = time.perf_counter() - start
            me, ce = moment_errors(x, mean, cov)
            resid = f"{float((x @ A.T - y).abs().max()):.1e}" if noise == 0 else "-"
            row = (f"| {name} | {method} | {noise} | {sampler} | {steps} | {nfe} | {me:.3f} | {ce:.3f} | "
                   f"{resid} | {seconds:.1f} |")  # fmt: skip
            lines.append(row)
            print(row, flush=True)
    lines += ["", "### Inpainting one coordinate of the 2-D demo mixture: TV of the component frequencies", "",
              "| SDE | method | sampler | steps | " + " | ".join(f"x{d} = {v}" for d, v in KNOWN) + " |",
              "|---|---|---|---|" + "---|" * len(KNOWN)]  # fmt: skip
    demo = demo_mixture()
    for name, sde in sdes.items():
        for method, sampler, steps in (("projection", "pc", 500), ("projection", "euler_maruyama", 500),
                                       ("projection", "ddim", 100), ("pigdm", "euler_maruyama", 500),
                                       ("ddnm", "euler_maruyama", 500)):  # fmt: skip
            tvs = []
            for dim, value in KNOWN:
                known = torch.zeros(n, 2, dtype=torch.float64)
                known[:, dim] = value
                mask = torch.zeros(1, 2)
                mask[0, dim] = 1
                sel = torch.zeros(1, 2, dtype=torch.float64)
                sel[0, dim] = 1
                weights = demo.posterior(sel, known[:1, dim : dim + 1])[0][0]
                x = inpaint(sde, demo.score_fn(sde), known, mask, method=method, sampler=sampler, steps=steps,
                            generator=sd.SampleNoise(0, n))  # fmt: skip
                freq = torch.bincount(demo.assign(x), minlength=3).double() / n
                tvs.append(0.5 * float((freq - weights).abs().sum()))
            row = f"| {name} | {method} | {sampler} | {steps} | " + " | ".join(f"{v:.3f}" for v in tvs) + " |"
            lines.append(row)
            print(row, flush=True)
    exact = []
    for dim, value in KNOWN:
        sel = torch.zeros(1, 2, dtype=torch.float64)
        sel[0, dim] = 1
        weights = demo.posterior(sel, torch.tensor([[value]], dtype=torch.float64))[0][0]
        draws = torch.multinomial(weights, n, replacement=True, generator=torch.Generator().manual_seed(3))
        freq = torch.bincount(draws, minlength=3).double() / n
        exact.append(f"{0.5 * float((freq - weights).abs().sum()):.3f} ({', '.join(f'{v:.2f}' for v in weights)})")
    lines.append("| - | exact draws (floor; the exact odds) | - | - | " + " | ".join(exact) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
