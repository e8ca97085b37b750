"""The 2-D demo: sample a known Gaussian mixture with every sampler, driven by its exact score.

For VP, sub-VP and VE it draws samples with each sampler, writes one PNG with a
density panel per (SDE, sampler), prints a table of the three errors against the
truth (mode weights, within-mode stds, mean log-density) with NFE and wall time, and
checks the exact likelihood against the true log-density.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import VESDE, VPSDE, SubVPSDE, log_likelihood, sample
from .plotting import atomic_write, save_scatter_grid
from .toy import demo_mixture, mixture_errors

SDE_FACTORIES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
# (label, sampler, steps, options)
DEMO_CASES = [
    ("Euler-Maruyama 1000", "euler_maruyama", 1000, {}),
    ("reverse diffusion 1000", "reverse_diffusion", 1000, {}),
    ("ancestral 1000", "ancestral", 1000, {}),
    ("PC RD+Langevin 1000", "pc", 1000, {"predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16}),
    ("PC EM+ALD 1000", "pc", 1000, {"predictor": "euler_maruyama", "corrector": "ald", "snr": 0.16}),
    ("PF-ODE rk45 1e-5", "ode", None, {"method": "rk45"}),
    ("PF-ODE heun 50", "ode", 50, {"method": "heun"}),
    ("DDIM 100", "ddim", 100, {}),
]


def run_demo(
    out_dir: str | Path = "outputs/demo", n: int = 5000, seed: int = 0, progress: bool = False, quick: bool = False
) -> list[dict]:
    """Run the demo, write ``samples.png`` and ``results.json`` into ``out_dir``, return the table rows.

    ``quick`` divides every step count by 10 (a smoke run; the errors grow accordingly).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mixture = demo_mixture()
    truth = mixture.sample(n, generator=torch.Generator().manual_seed(seed))
    reference = mixture.sample(200_000, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    rows, panels = [], []
    header = f"{'SDE':6s} {'sampler':24s} {'NFE':>6s} {'TV':>7s} {'std err':>8s} {'logp err':>9s} {'time s':>7s}"
    print(header)
    print("-" * len(header))
    for sde_name, factory in SDE_FACTORIES.items():
        sde = factory()
        score = mixture.score_fn(sde)
        panels.append((f"{sde_name}: true data", truth))
        for label, sampler, steps, options in DEMO_CASES:
            if sampler == "ancestral" and sde_name == "subvp":
                panels.append((f"{sde_name}: (ancestral: VP/VE only)", truth[:0]))
                continue
            if quick and steps is not None:
                steps = max(steps // 10, 5)
                label = label.rsplit(" ", 1)[0] + f" {steps}"
            start = time.perf_counter()
            x, nfe = sample(sde, score, (n, 2), sampler=sampler, steps=steps, return_nfe=True, progress=progress,
                            generator=torch.Generator().manual_seed(seed + 2), **options)  # fmt: skip
            seconds = time.perf_counter() - start
            err = mixture_errors(mixture, x, reference)
            row = {"sde": sde_name, "sampler": label, "nfe": nfe, "seconds": round(seconds, 3), **err}
            rows.append(row)
            panels.append((f"{sde_name}: {label}", x))
            print(f"{sde_name:6s} {label:24s} {nfe:6d} {err['tv']:7.4f} {err['std']:8.4f} {err['logp']:+9.4f} "
                  f"{seconds:7.2f}")  # fmt: skip
    print("\nExact log-likelihood (probability-flow ODE, exact divergence) vs the true log-density:")
    data = mixture.sample(256, generator=torch.Generator().manual_seed(seed + 3), dtype=torch.float64)
    for sde_name, factory in SDE_FACTORIES.items():
        sde = factory()
        start = time.perf_counter()
        logp, _, nfe = log_likelihood(sde, mixture.score_fn(sde), data, divergence="exact")
        err = float((logp - mixture.log_prob(data, 1e-5, sde)).abs().mean())
        row = {"sde": sde_name, "sampler": "log_likelihood", "nfe": nfe, "seconds": time.perf_counter() - start,
               "mean_abs_logp_error": err}  # fmt: skip
        rows.append(row)
        print(f"  {sde_name:6s} mean |error| {err:.2e} nats/sample  (NFE {nfe}, {row['seconds']:.2f} s)")
    png = save_scatter_grid(panels, out / "samples.png", cols=len(DEMO_CASES) + 1)
    _write_json(rows, out / "results.json")
    print(f"\nwrote {png} and {out / 'results.json'}")
    return rows


def _write_json(obj: object, path: Path) -> None:
    atomic_write(path, lambda handle: handle.write(json.dumps(obj, indent=2).encode()))
