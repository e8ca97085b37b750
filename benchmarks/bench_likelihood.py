"""Likelihood accuracy against NFE and wall time, and the cost of one function evaluation.

Part 1: on a 12-D Gaussian mixture with its exact score, under every process, the error of
``log_likelihood``'s integration (mean |logp - log p_eps| per dimension, nats, with the prior's
mismatch at T taken out) for several solvers, tolerances and divergence estimators, with NFE and
wall time; the default grid against a grid tuned for each process (``tuned``); then what stopping at eps costs
against the exact log p_0 (``truncation``).

Part 2: the cost of one probability-flow function evaluation with an MLP score
network: this library's single forward + vector-Jacobian product against a
reference-style evaluation that runs the network twice (drift without grad, then
again with grad for the divergence), measured in the same run.

Part 3: the adaptive solver on the tensor's device against scipy's RK45 fed through
numpy round trips (the reference code's approach), same ODE and tolerances.

    python benchmarks/bench_likelihood.py [--only part1|tuned|truncation|part2|part3]
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

import scoresde as sd
from scoresde.toy import GaussianMixture


def mixture_12d() -> GaussianMixture:
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    stds = 0.3 + 0.5 * torch.rand(3, 12, generator=gen, dtype=torch.float64)
    return GaussianMixture([0.5, 0.3, 0.2], means, stds)


PROCESSES = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE(sigma_max=100.0), "cosine": sd.CosineVPSDE(),
             "edm": sd.EDMSDE(), "rf": sd.RectifiedFlow()}  # fmt: skip


def start_time(name: str, sde) -> float:
    """The paper's eps = 1e-5 for VP, sub-VP and VE; the process's default otherwise."""
    return 1e-5 if name in ("vp", "subvp", "ve") else sd.default_eps(sde)


def part1() -> None:
    gm = mixture_12d()
    x = gm.sample(256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    print("## Likelihood error vs NFE (12-D mixture, 256 samples, float64, exact score)\n")
    print("Error: the integration's, per sample, against the exact log p_eps at the start time (the prior's")
    print("log-density at the latent replaced by the exact log p_T there, so that the prior's mismatch, a property of")
    print("the model and not of the solver, does not enter; it is the last column: mean |log N(z) - log p_T(z)| per")
    print("dim).\n")
    print("| SDE | solver | divergence | NFE | mean abs err (nats/dim) | batch-mean err (nats/dim) | time (s) | "
          "prior mismatch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    configs = [
        ("rk45 tol 1e-3", {"rtol": 1e-3, "atol": 1e-3}),
        ("rk45 tol 1e-5", {}),
        ("rk4 25 steps", {"method": "rk4", "steps": 25}),
        ("adams 24 steps", {"method": "adams", "steps": 24}),
        ("adams 29 steps", {"method": "adams", "steps": 29}),
        ("adams 39 steps (default)", {"method": "adams"}),
        ("adams 79 steps", {"method": "adams", "steps": 79}),
    ]
    sd.log_likelihood(sd.VPSDE(), gm.score_fn(sd.VPSDE()), x[:8])  # warm up before timing
    for name, sde in PROCESSES.items():
        eps = start_time(name, sde)
        true = gm.log_prob(x, eps, sde)
        for label, kw in configs:
            for div in ("exact", "hutchinson"):
                if div == "hutchinson" and label.startswith(("rk4", "adams 24", "adams 29", "adams 79")):
                    continue
                start = time.perf_counter()
                logp, z, nfe = sd.log_likelihood(sde, gm.score_fn(sde), x, divergence=div, eps=eps,
                                                 generator=torch.Generator().manual_seed(2), **kw)  # fmt: skip
                seconds = time.perf_counter() - start
                exact_prior = gm.log_prob(z, sde.T, sde)
                err = (logp - sde.prior_logp(z) + exact_prior - true) / gm.dim
                mismatch = float(((sde.prior_logp(z) - exact_prior) / gm.dim).abs().mean())
                print(f"| {name} | {label} | {div} | {nfe} | {float(err.abs().mean()):.2e} | "
                      f"{float(err.mean()):+.2e} | {seconds:.2f} | {mismatch:.1e} |", flush=True)  # fmt: skip


def tuned_grids() -> None:
    """The default grid against a grid tuned for each process's exact score (optimize_likelihood_grid on 128 other
    draws of the mixture, against the solver at 400 steps), both at 40 NFE, on part 1's 256 points."""
    gm = mixture_12d()
    x = gm.sample(256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tuning = gm.sample(128, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    print("\n## Tuned likelihood grids (12-D mixture, exact score and divergence, 40 NFE)\n")
    print("`optimize_likelihood_grid` (4 sweeps) on 128 other draws of the mixture against the same solver at 400")
    print("steps (never the exact density); errors as in part 1 on its 256 points.\n")
    print("| SDE | default grid (nats/dim) | tuned grid (nats/dim) | ratio | tuning time (s) |")
    print("|---|---|---|---|---|")
    for name, sde in PROCESSES.items():
        eps = start_time(name, sde)
        start = time.perf_counter()
        grid = sd.optimize_likelihood_grid(sde, gm.score_fn(sde), tuning, eps=eps, divergence="exact")
        seconds = time.perf_counter() - start
        errors = []
        for kw in ({"eps": eps}, {"grid": grid}):
            logp, z, nfe = sd.log_likelihood(sde, gm.score_fn(sde), x, method="adams", divergence="exact", **kw)
            assert nfe == 40
            err = (logp - sde.prior_logp(z) + gm.log_prob(z, sde.T, sde) - gm.log_prob(x, eps, sde)) / gm.dim
            errors.append(float(err.abs().mean()))
        print(f"| {name} | {errors[0]:.2e} | {errors[1]:.2e} | {errors[1] / errors[0]:.2f} | {seconds:.0f} |",
              flush=True)  # fmt: skip


def truncation() -> None:
    """Stopping at eps, per process: what the likelihood at eps scores against the exact log p_0 of the data."""
    gm = mixture_12d()
    x = gm.sample(20000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    log_p0 = gm.log_prob(x)
    print("\n## Truncation at eps (12-D mixture, 20,000 samples, exact densities; nats/dim, mean +- standard error)\n")
    print("`none`: log p_eps(x) - log p_0(x) (the model's density at eps scored at the data; either sign).")
    print("`decoder`: E_z[log p_eps(alpha x + sigma z)] + D log alpha - log p_0(x), the Gaussian-decoder bound's gap")
    print("(at most 0 in expectation).\n")
    print("| SDE | eps | sigma/alpha at eps | none | decoder |")
    print("|---|---|---|---|---|")
    for name, sde in PROCESSES.items():
        for eps in sorted({start_time(name, sde), 1e-3}):
            a, s = sde.schedule.alpha(eps), sde.schedule.sigma(eps)
            none = (gm.log_prob(x, eps, sde) - log_p0) / gm.dim
            dec = (gm.log_prob(a * x + s * z, eps, sde) + gm.dim * math.log(a) - log_p0) / gm.dim
            se = lambda v: float(v.std()) / math.sqrt(len(v))  # noqa: E731
            print(f"| {name} | {eps:g} | {s / a:.2e} | {float(none.mean()):+.2e} +- {se(none):.0e} | "
                  f"{float(dec.mean()):+.2e} +- {se(dec):.0e} |")  # fmt: skip


class MLPScore(nn.Module):
    def __init__(self, dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))  # fmt: skip

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None]], dim=1))


def part2(repeats: int = 30) -> None:
    torch.manual_seed(0)
    dim, batch = 64, 512
    sde = sd.VPSDE()
    score = sd.ModelScore(MLPScore(dim), sde, prediction="eps")
    flow = sde.reverse(score, probability_flow=True)
    x = torch.randn(batch, dim)
    v = torch.sign(torch.randn(batch, dim))
    t = 0.5

    def ours():
        with torch.enable_grad():
            xs = x.detach().requires_grad_(True)
            drift = flow.sde(xs, t)[0]
            (g,) = torch.autograd.grad(drift, xs, v)
        return drift.detach(), (g * v).sum(1)

    def two_pass():
        with torch.no_grad():
            drift = flow.sde(x, t)[0]
        with torch.enable_grad():
            xs = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad((flow.sde(xs, t)[0] * v).sum(), xs)
        return drift, (g * v).sum(1)

    for fn in (ours, two_pass):  # warm up
        fn()
    times = {}
    for name, fn in (("one forward + VJP (scoresde)", ours), ("two forwards + VJP (reference-style)", two_pass)):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        times[name] = (time.perf_counter() - start) / repeats
    print(f"\n## Cost of one likelihood function evaluation (MLP 3x512, D={dim}, batch {batch}, CPU)\n")
    print("| evaluation | ms | ratio to reference-style |")
    print("|---|---|---|")
    base = times["two forwards + VJP (reference-style)"]
    for name, sec in times.items():
        print(f"| {name} | {1000 * sec:.1f} | {sec / base:.2f} |")


def part3() -> None:
    try:
        from scipy.integrate import solve_ivp
    except ImportError:
        print("\n(scipy not installed: skipping the scipy comparison)")
        return
    gm = mixture_12d()
    sde = sd.VPSDE()
    x = gm.sample(256, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    rhs = sd.sampling.probability_flow_ode(sde, gm.score_fn(sde))

    def median_time(fn, repeats=15):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return out, sorted(times)[repeats // 2]

    (ours, nfe), t_ours = median_time(
        lambda: sd.integrators.dopri5(rhs, x, 1e-5, 1.0, rtol=1e-5, atol=1e-5, error_norm="batch")
    )

    def scipy_rhs(t, y):
        xt = torch.from_numpy(y).reshape(x.shape).to(torch.float32)
        return rhs(float(t), xt, None).double().numpy().reshape(-1)

    sol, t_scipy = median_time(
        lambda: solve_ivp(scipy_rhs, (1e-5, 1.0), x.double().numpy().reshape(-1), rtol=1e-5, atol=1e-5, method="RK45")
    )
    diff = float((ours.double() - torch.from_numpy(sol.y[:, -1]).reshape(x.shape)).abs().max())
    print("\n## Adaptive probability-flow ODE (encode 256 x 12-D, rtol=atol=1e-5, one error norm per batch)\n")
    print("| solver | NFE | median time of 15 (s) | ratio to scipy |")
    print("|---|---|---|---|")
    print(f"| scoresde dopri5 (torch, on device) | {nfe} | {t_ours:.3f} | {t_ours / t_scipy:.2f} |")
    print(f"| scipy RK45 + numpy round trips | {sol.nfev} | {t_scipy:.3f} | 1.00 |")
    print(f"\nmax |difference| between the two latents: {diff:.1e}")


PARTS = {"part1": part1, "tuned": tuned_grids, "truncation": truncation, "part2": part2, "part3": part3}

if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(PARTS), action="append", help="run only these parts (default all)")
    torch.set_num_threads(2)
    for part in parser.parse_args().only or list(PARTS):
        PARTS[part]()
