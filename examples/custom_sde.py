"""Add your own process and get every sampler and the likelihood for free.

A process is its kernel x_t = alpha(t) x0 + sigma(t) z. Here the trigonometric path of
v-diffusion, alpha = cos(pi t / 2), sigma = sin(pi t / 2), is written in two lines with
``sd.LinearSDE``: the drift f = d log(alpha)/dt and the diffusion g^2 = d sigma^2/dt - 2 f sigma^2
are derived by autograd, the schedule's inverses by bisection. It is then sampled with
several samplers (paper samplers, ancestral, a fast solver) and its exact likelihood is
checked, all with the exact score of the demo mixture. (Subclassing ``sd.SDE`` with ``T``,
``sde`` and ``marginal_prob`` works too, for a drift that is not linear.)

    python examples/custom_sde.py
"""

from __future__ import annotations

import math

import torch

import scoresde as sd
from scoresde.toy import demo_mixture, mixture_errors

# the signal vanishes at t = 1 (alpha = 0): end the path a little earlier, as RectifiedFlow and CosineVPSDE do
TRIG = sd.LinearSDE(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t), T=0.995)


def main() -> None:
    torch.set_num_threads(2)
    sde = TRIG
    mixture = demo_mixture()
    score = mixture.score_fn(sde)
    reference = mixture.sample(100_000, generator=torch.Generator().manual_seed(1))
    print(f"{'sampler':28s} {'NFE':>5s} {'TV':>7s} {'std err':>8s} {'logp err':>9s}")
    for name, steps, options in [("euler_maruyama", 500, {}), ("pc", 500, {"corrector": "ald"}),
                                 ("ancestral", 500, {}), ("ode", None, {}), ("ddim", 100, {}),
                                 ("unipc", 15, {})]:  # fmt: skip
        x, nfe = sd.sample(sde, score, (10_000, 2), sampler=name, steps=steps, return_nfe=True,
                           generator=torch.Generator().manual_seed(0), **options)  # fmt: skip
        e = mixture_errors(mixture, x, reference)
        print(f"{name + ' ' + str(options or ''):28s} {nfe:5d} {e['tv']:7.4f} {e['std']:8.4f} {e['logp']:+9.4f}")
    data = mixture.sample(200, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logp, _, nfe = sd.log_likelihood(sde, score, data, divergence="exact")
    err = (logp - mixture.log_prob(data, 1e-5, sde)).abs().mean()
    print(f"exact likelihood: mean |error| {float(err):.2e} nats/sample ({nfe} NFE)")


if __name__ == "__main__":
    main()
