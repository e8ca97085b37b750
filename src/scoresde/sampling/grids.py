r"""Time grids shared by every fixed-step sampler.

A grid is a decreasing list of ``steps + 1`` Python floats from ``T`` to ``eps``.
It lives on the host as plain floats, so samplers never branch on device tensors.

* ``"uniform"``: equal steps in ``t`` (the paper's grid).
* ``"quadratic"``: :math:`t_i = \epsilon + (T-\epsilon)(1 - i/N)^2`, denser near the data.
* ``"log_snr"``: equal steps in :math:`\lambda(t) = \log(\alpha(t)/\sigma(t))`, the natural
  grid of exponential-integrator and DDIM-style samplers at few steps.
"""

from __future__ import annotations

import torch

from .._checks import check_eps, check_options
from ..sde import SDE

GRIDS = ("uniform", "quadratic", "log_snr")


def time_grid(sde: SDE, steps: int, eps: float, kind: str = "uniform") -> list[float]:
    """Return ``steps + 1`` decreasing times from ``sde.T`` to ``eps``."""
    check_options("grid", kind, GRIDS)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    steps = int(steps)
    T = sde.T
    eps = check_eps(eps, T)
    frac = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "uniform":
        ts = T + (eps - T) * frac
    elif kind == "quadratic":
        ts = eps + (T - eps) * (1.0 - frac) ** 2
    else:
        lam_T, lam_eps = (float(v) for v in log_snr(sde, torch.tensor([T, eps], dtype=torch.float64)))
        ts = _invert_log_snr(sde, lam_T + (lam_eps - lam_T) * frac, eps, T)
    grid = ts.tolist()
    grid[0], grid[-1] = T, eps
    return grid


def log_snr(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    r"""Half log signal-to-noise ratio :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)`."""
    alpha, sigma = sde.marginal_coeffs(t, t)
    return torch.log(alpha) - torch.log(sigma)


def _invert_log_snr(sde: SDE, lam: torch.Tensor, lo: float, hi: float, iters: int = 80) -> torch.Tensor:
    """Solve ``log_snr(t) = lam`` for ``t`` in ``[lo, hi]`` by bisection (log-SNR decreases in t)."""
    a = torch.full_like(lam, lo)
    b = torch.full_like(lam, hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        above = log_snr(sde, mid) > lam
        a = torch.where(above, mid, a)
        b = torch.where(above, b, mid)
    return 0.5 * (a + b)
