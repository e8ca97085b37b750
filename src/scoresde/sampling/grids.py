r"""Time grids shared by every fixed-step sampler, all read off the SDE's schedule view.

A grid is a decreasing list of ``steps + 1`` Python floats from ``T`` to ``eps``.
It lives on the host as plain floats, so samplers never branch on device tensors.

* ``"uniform"``: equal steps in ``t`` (the paper's grid).
* ``"quadratic"``: :math:`t_i = \epsilon + (T-\epsilon)(1 - i/N)^2`, denser near the data.
* ``"log_snr"``: equal steps in :math:`\lambda(t) = \log(\alpha(t)/\sigma(t))`, the natural
  grid of exponential-integrator and DDIM-style samplers at few steps.
* ``"karras"``: Karras et al. (2022): equal steps in :math:`\hat\sigma^{1/\rho}` with
  :math:`\hat\sigma = \sigma/\alpha = e^{-\lambda}` the EDM noise level (``rho``, default 7).
* an explicit decreasing sequence of times (e.g. from :func:`scoresde.sampling.optimize_grid`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from .._checks import check_count, check_eps, check_options
from ..sde import SDE

GRIDS = ("uniform", "quadratic", "log_snr", "karras")
DEFAULT_RHO = 7.0

Grid = str | Sequence[float]
"""A grid name from :data:`GRIDS` or an explicit decreasing sequence of times."""


MAX_STEPS = 100_000
"""The most steps (or NFE) a sampler may be asked for: a bound on the work and the grid's memory."""


def time_grid(sde: SDE, steps: int, eps: float, kind: str = "uniform", rho: float = DEFAULT_RHO) -> list[float]:
    """Return ``steps + 1`` decreasing times from ``sde.T`` to ``eps`` on the grid ``kind``."""
    check_options("grid", kind, GRIDS)
    steps = check_count("steps", steps, 1, MAX_STEPS)
    if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    steps = int(steps)
    T = sde.T
    eps = check_eps(eps, T)
    frac = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    schedule = sde.schedule
    if kind == "uniform":
        ts = T + (eps - T) * frac
    elif kind == "quadratic":
        ts = eps + (T - eps) * (1.0 - frac) ** 2
    elif kind == "log_snr":
        lam_T, lam_eps = schedule.log_snr(T), schedule.log_snr(eps)
        ts = schedule.t_from_log_snr(lam_T + (lam_eps - lam_T) * frac)
    else:
        hi, lo = schedule.edm_sigma(T) ** (1 / rho), schedule.edm_sigma(eps) ** (1 / rho)
        ts = schedule.t_from_edm_sigma((hi + (lo - hi) * frac) ** rho)
    grid = ts.tolist()
    grid[0], grid[-1] = T, eps
    return grid


def check_grid(sde: SDE, grid: Sequence[float]) -> list[float]:
    """Validate an explicit grid: at least two finite, strictly decreasing times in ``(0, T]``, starting at ``T``."""
    size = len(grid) if hasattr(grid, "__len__") else None
    if size is not None and size > MAX_STEPS + 1:
        raise ValueError(f"an explicit grid may have at most {MAX_STEPS + 1:,} times, got {size:,}")
    try:
        ts = [float(t) for t in grid]
    except (TypeError, ValueError):
        raise TypeError(f"an explicit grid must be a sequence of numbers, got {grid!r:.80}") from None
    if len(ts) < 2:
        raise ValueError(f"an explicit grid needs at least two times (T and the end time), got {len(ts)}")
    if not all(math.isfinite(t) for t in ts):
        raise ValueError("an explicit grid must contain finite times only")
    if abs(ts[0] - sde.T) > 1e-9 * max(1.0, sde.T):
        raise ValueError(f"an explicit grid must start at T={sde.T} (the prior's time), got {ts[0]}")
    if any(b >= a for a, b in itertools.pairwise(ts)):
        raise ValueError("an explicit grid must be strictly decreasing")
    if ts[-1] <= 0:
        raise ValueError(f"an explicit grid must end at a time > 0, got {ts[-1]}")
    ts[0] = sde.T
    return ts
