"""Add your own SDE and get every sampler and the likelihood for free.

A cosine-schedule VP SDE (Nichol & Dhariwal's alpha_bar(t) = cos^2(pi/2 (t + s)/(1 + s)))
written in a dozen lines: only ``T``, ``sde`` and ``marginal_prob``. It is then sampled
with several samplers and its exact likelihood is checked, all with the exact score of
the demo mixture.

    python examples/custom_sde.py
"""

from __future__ import annotations

import math

import torch

import scoresde as sd
from scoresde.toy import demo_mixture, mixture_errors


class CosineVPSDE(sd.SDE):
    """dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw with beta(t) = -d/dt log alpha_bar(t)."""

    def __init__(self, s: float = 0.008, t_max: float = 0.999, N: int = 1000) -> None:
        super().__init__(N)
        self.s, self.t_max = s, t_max

    @property
    def T(self) -> float:
        return self.t_max

    def _phase(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * math.pi * (t + self.s) / (1 + self.s)

    def sde(self, x, t):
        t = self._time(t, x)
        beta = math.pi / (1 + self.s) * torch.tan(self._phase(t))
        return -0.5 * beta.reshape(-1, *[1] * (x.ndim - 1)) * x, torch.sqrt(beta)

    def marginal_prob(self, x0, t):
        t = self._time(t, x0)
        alpha = torch.cos(self._phase(t)) / math.cos(self._phase(torch.zeros(())))
        return alpha.reshape(-1, *[1] * (x0.ndim - 1)) * x0, torch.sqrt(1 - alpha**2)


def main() -> None:
    torch.set_num_threads(2)
    sde = CosineVPSDE()
    mixture = demo_mixture()
    score = mixture.score_fn(sde)
    reference = mixture.sample(100_000, generator=torch.Generator().manual_seed(1))
    print(f"{'sampler':28s} {'NFE':>5s} {'TV':>7s} {'std err':>8s} {'logp err':>9s}")
    for name, steps, options in [("euler_maruyama", 500, {}), ("pc", 500, {"corrector": "ald"}),
                                 ("ode", None, {}), ("ddim", 100, {})]:  # fmt: skip
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
