"""Sampler accuracy against NFE on the 2-D mixture, driven by its exact score.

For each SDE and sampler configuration it prints NFE, the three errors of the
acceptance tests (mode-weight total variation, worst relative within-mode std error,
mean log-density gap in nats) and wall time, with the time ratio against
Euler-Maruyama at 1000 steps measured in the same run.

    python benchmarks/bench_samplers.py [--n 16000] [--sde vp subvp ve]
"""

from __future__ import annotations

import argparse
import time

import torch

import scoresde as sd
from scoresde.toy import demo_mixture, mixture_errors

CONFIGS = [
    ("euler_maruyama", {}, [25, 100, 250, 1000]),
    ("reverse_diffusion", {}, [25, 100, 250, 1000]),
    ("ancestral", {}, [25, 100, 250, 1000]),
    ("pc", {"corrector": "langevin", "snr": 0.16}, [25, 100, 250, 1000]),
    ("pc", {"predictor": "euler_maruyama", "corrector": "ald", "snr": 0.16}, [100, 1000]),
    ("ode", {"method": "euler"}, [25, 100, 1000]),
    ("ode", {"method": "heun"}, [10, 25, 50, 100]),
    ("ode", {"method": "rk4"}, [5, 10, 25]),
    ("ode", {"method": "rk45", "rtol": 1e-3, "atol": 1e-3}, [None]),
    ("ode", {"method": "rk45"}, [None]),
    ("ddim", {}, [10, 25, 50, 100, 250]),
    ("ddim", {"grid": "quadratic"}, [10, 25, 50, 100]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16_000)
    parser.add_argument("--sde", nargs="+", default=["vp", "subvp", "ve"], choices=["vp", "subvp", "ve"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    mixture = demo_mixture()
    reference = mixture.sample(200_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    factories = {"vp": sd.VPSDE, "subvp": sd.SubVPSDE, "ve": sd.VESDE}
    print(f"2-D mixture, {args.n} samples per run, exact score, torch {torch.__version__}, 2 threads\n")
    print("| SDE | sampler | options | steps | NFE | TV | std err | logp err | time (s) | time / EM-1000 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.sde:
        sde = factories[name]()
        score = mixture.score_fn(sde)

        def run(sampler, steps, options, sde=sde, score=score):
            options = dict(options)
            grid = options.pop("grid", "uniform")
            start = time.perf_counter()
            x, nfe = sd.sample(sde, score, (args.n, 2), sampler=sampler, steps=steps, grid=grid, return_nfe=True,
                               generator=torch.Generator().manual_seed(0), **options)  # fmt: skip
            return x, nfe, time.perf_counter() - start

        _, _, baseline = run("euler_maruyama", 1000, {})
        for sampler, options, step_list in CONFIGS:
            if sampler == "ancestral" and name == "subvp":
                continue
            for steps in step_list:
                x, nfe, seconds = run(sampler, steps, options)
                e = mixture_errors(mixture, x, reference)
                opts = ", ".join(f"{k}={v}" for k, v in options.items()) or "-"
                print(f"| {name} | {sampler} | {opts} | {steps or 'adaptive'} | {nfe} | {e['tv']:.4f} | "
                      f"{e['std']:.4f} | {e['logp']:+.4f} | {seconds:.2f} | {seconds / baseline:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
